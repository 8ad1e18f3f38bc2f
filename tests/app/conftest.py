"""Fixtures the viewer's tests share: private settings and data folders, the synthetic case's
video, a shown timeline widget, and the viewer opened on a case."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings

from app.main_window import SurgviewWindow
from app.widgets.timeline_view import TimelineView

TIMELINE_FPS = 25.0
TIMELINE_FRAMES = 1500


@pytest.fixture
def settings(tmp_path) -> QSettings:
    """The viewer's settings in a file of this test's own (never the user's)."""
    return QSettings(str(tmp_path / "surgview.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def data_home(tmp_path, monkeypatch) -> Path:
    """A data folder of this test's own (case stores, demo case)."""
    monkeypatch.setenv("SURGVIEW_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture
def video(synth_case) -> Path:
    """The synthetic case's video (1 minute, 25 fps, 1,500 frames)."""
    return synth_case[0] / "cholec80" / "videos" / "video01.mp4"


@pytest.fixture
def view(qtbot) -> TimelineView:
    """A shown timeline on a case of 1,500 frames at 25 fps."""
    w = TimelineView()
    qtbot.addWidget(w)
    w.resize(1200, 300)
    w.show()
    qtbot.waitExposed(w)
    w.set_case(TIMELINE_FPS, TIMELINE_FRAMES)
    return w


@pytest.fixture
def open_viewer(qtbot, settings, data_home) -> Callable[..., SurgviewWindow]:
    """Opens the viewer (no engine) on a video and waits for a decoded frame and the case store."""

    def open_(video: Path, window_settings: QSettings | None = None) -> SurgviewWindow:
        w = SurgviewWindow(settings=window_settings or settings, start_engine=False)
        qtbot.addWidget(w)
        w.resize(1200, 800)
        w.show()
        w.open_case(video)
        qtbot.waitUntil(
            lambda: w.playhead.displayed >= 0 and w.canvas.index is not None and w.store is not None, timeout=10000
        )
        return w

    return open_
