"""Per-user locations (XDG base directories): the demo case, case stores, settings, models."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def data_home() -> Path:
    """``$SURGVIEW_DATA``, else ``$XDG_DATA_HOME/surgview``, else ``~/.local/share/surgview``."""
    explicit = os.environ.get("SURGVIEW_DATA")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "surgview"


def bundled_demo_dir() -> Path | None:
    """The demo case and model shipped inside a desktop bundle (PyInstaller), read in place."""
    bundle = getattr(sys, "_MEIPASS", None) if getattr(sys, "frozen", False) else None
    if bundle is None or not (Path(bundle) / "demo" / "synth.json").is_file():
        return None
    return Path(bundle) / "demo"


def demo_dir() -> Path:
    """The bundle's demo when running from a desktop install, else ``<data home>/demo``."""
    return bundled_demo_dir() or data_home() / "demo"


def demo_video() -> Path:
    return demo_dir() / "cholec80" / "videos" / "video01.mp4"
