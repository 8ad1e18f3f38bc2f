"""Fixtures shared by the engine's tests: a private data folder and the synthetic case's video."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def data_home(tmp_path, monkeypatch) -> Path:
    """``SURGVIEW_DATA`` pointed at a folder of this test's own (not made yet)."""
    home = tmp_path / "data"
    monkeypatch.setenv("SURGVIEW_DATA", str(home))
    return home


@pytest.fixture
def video(synth_case) -> Path:
    """The synthetic case's video (shared by the session: copy it before changing it)."""
    return synth_case[0] / "cholec80" / "videos" / "video01.mp4"
