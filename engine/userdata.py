"""Per-user locations (XDG base directories): the demo case, case stores, settings, models."""

from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    """``$SURGVIEW_DATA``, else ``$XDG_DATA_HOME/surgview``, else ``~/.local/share/surgview``."""
    explicit = os.environ.get("SURGVIEW_DATA")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "surgview"


def demo_dir() -> Path:
    return data_home() / "demo"


def demo_video() -> Path:
    return demo_dir() / "cholec80" / "videos" / "video01.mp4"
