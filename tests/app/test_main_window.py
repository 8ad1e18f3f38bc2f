"""The viewer end to end (offscreen): open, play, step, seek by timeline and Ctrl+G, stream a
chain from the tiny model, survive the engine's death, refuse a corrupt file with a dialog."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent
from PySide6.QtWidgets import QMessageBox, QTableWidget

from app.main_window import SurgviewWindow
from app.shortcuts import DEFAULTS
from engine.store import CaseStore
from engine.tiny_model import build_tiny_model

pytestmark = pytest.mark.usefixtures("data_home")


@pytest.fixture
def warnings(monkeypatch) -> list[tuple[str, str]]:
    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda parent, title, text, *a, **k: shown.append((title, text)))
    return shown


def make_window(qtbot, settings, spec=None) -> SurgviewWindow:
    window = SurgviewWindow(engine_spec=spec, settings=settings, start_engine=spec is not None)
    qtbot.addWidget(window)
    window.resize(1280, 800)
    window.show()
    return window


def shows(window: SurgviewWindow, frame: int) -> bool:
    """The frame on screen is ``frame``, and every read-out agrees with the decoded frame."""
    return (
        window.playhead.displayed == frame
        and window.canvas.index == frame
        and window.frame_label.text().startswith(f"frame {frame} /")
    )


def key(qtbot, window, key, modifier=Qt.KeyboardModifier.NoModifier):
    qtbot.keyClick(window, key, modifier)


def test_navigation_always_shows_the_decoded_frame(qtbot, settings, video):
    window = make_window(qtbot, settings)
    window.open_case(video)
    qtbot.waitUntil(lambda: shows(window, 0), timeout=10000)
    assert window.case.frame_count == 1500 and window.time_label.text() == "00:00:00.00"

    steps = [
        (Qt.Key.Key_Right, None, 1),
        (Qt.Key.Key_Period, None, 2),
        (Qt.Key.Key_Left, None, 1),
        (Qt.Key.Key_Comma, None, 0),
        (Qt.Key.Key_Right, Qt.KeyboardModifier.ShiftModifier, 25),
        (Qt.Key.Key_End, None, 1499),
        (Qt.Key.Key_Left, None, 1498),
        (Qt.Key.Key_Home, None, 0),
    ]
    for k, mod, expected in steps:
        key(qtbot, window, k, mod or Qt.KeyboardModifier.NoModifier)
        qtbot.waitUntil(lambda e=expected: shows(window, e), timeout=5000)

    assert window.go_to("00:00:10.05")
    qtbot.waitUntil(lambda: shows(window, 255), timeout=5000)
    assert window.time_label.text() == "00:00:10.05"
    assert window.go_to("1234")
    qtbot.waitUntil(lambda: shows(window, 1234), timeout=5000)
    assert not window.go_to("99:99") and not window.go_to("5000")  # refused with a message, no move
    assert shows(window, 1234)

    timeline = window.timeline
    point = timeline.viewport_point(40.0, "phase")
    qtbot.mouseClick(timeline.viewport(), Qt.MouseButton.LeftButton, pos=point)
    qtbot.waitUntil(lambda: abs(window.playhead.displayed - 1000) <= 3, timeout=5000)
    assert shows(window, window.playhead.displayed)
    assert timeline.playhead == window.playhead.displayed


def test_play_and_pause_keep_the_source_rate(qtbot, settings, video):
    window = make_window(qtbot, settings)
    window.open_case(video)
    qtbot.waitUntil(lambda: shows(window, 0), timeout=10000)
    key(qtbot, window, Qt.Key.Key_Space)
    qtbot.waitUntil(lambda: window.playhead.playing, timeout=10000)
    started = time.perf_counter()
    qtbot.wait(1200)
    key(qtbot, window, Qt.Key.Key_Space)
    qtbot.waitUntil(lambda: not window.playhead.playing, timeout=10000)
    elapsed = time.perf_counter() - started
    shown = window.playhead.displayed
    assert 0.5 * 25 * elapsed < shown < 1.6 * 25 * elapsed + 5
    assert shows(window, shown)


def test_a_corrupt_file_gets_a_dialog_and_the_window_stays_usable(qtbot, settings, video, tmp_path, warnings):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(os.urandom(4000))
    window = make_window(qtbot, settings)
    window.open_case(bad)
    qtbot.waitUntil(lambda: bool(warnings), timeout=5000)
    assert "broken.mp4" in warnings[0][1]
    window.open_case(video)
    qtbot.waitUntil(lambda: shows(window, 0), timeout=10000)


def test_bookmarks_are_stored_listed_and_jumped_to(qtbot, settings, video):
    window = make_window(qtbot, settings)
    window.open_case(video)
    qtbot.waitUntil(lambda: shows(window, 0), timeout=10000)
    window.save_bookmark(300, "C1 visible", "duct and artery both seen")
    window.save_bookmark(900, "first clip")
    assert window.bookmark_list.count() == 2 and window.timeline.bookmark_count() == 2
    key(qtbot, window, Qt.Key.Key_BraceRight)
    qtbot.waitUntil(lambda: shows(window, 300), timeout=5000)
    key(qtbot, window, Qt.Key.Key_BraceRight)
    qtbot.waitUntil(lambda: shows(window, 900), timeout=5000)
    window.close()
    with CaseStore.for_video(video, readonly=True) as store:
        assert [(b.frame, b.title) for b in store.bookmarks()] == [(300, "C1 visible"), (900, "first clip")]
        assert [n.text for n in store.notes()] == ["duct and artery both seen"]


def test_help_lists_every_shortcut_and_cases_are_remembered(qtbot, settings, video):
    window = make_window(qtbot, settings)
    window.open_case(video)
    qtbot.waitUntil(lambda: shows(window, 0), timeout=10000)
    window.trigger("help")
    table = window.help_dialog.findChild(QTableWidget)
    assert table.rowCount() == len(DEFAULTS)
    qtbot.waitUntil(lambda: window.library.count() == 1, timeout=5000)  # once the first frame has settled
    assert settings.value("cases/recent", [], type=list)[0] == str(video)


def test_dropping_a_file_opens_it(qtbot, settings, video):
    window = make_window(qtbot, settings)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(video))])
    event = QDropEvent(
        QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    )
    window.dropEvent(event)
    qtbot.waitUntil(lambda: shows(window, 0), timeout=10000)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", seed=1, init_std=0.1)


def test_streams_the_tiny_models_chain_and_recovers_when_the_engine_dies(qtbot, settings, video, tiny, data_home):
    spec = {
        "kind": "transformers",
        "model": str(tiny),
        "threads": 1,
        "stride_s": 20.0,
        "max_new_tokens": 24,
        "task": "frame_analysis",
    }
    window = make_window(qtbot, settings, spec)
    qtbot.waitUntil(lambda: window.analysis.engine == "ready", timeout=60000)
    window.open_case(video)
    qtbot.waitUntil(lambda: shows(window, 0), timeout=10000)
    window.seek(333)
    qtbot.waitUntil(lambda: shows(window, 333), timeout=5000)
    with CaseStore.for_video(video, readonly=True) as store:
        qtbot.waitUntil(
            lambda: 333 in store.analysed_frames(window.model_id, window.prompt_version, "frame_analysis"),
            timeout=30000,
        )
        stored = store.get_result(333, window.model_id, window.prompt_version, "frame_analysis")
    # The child commits before its last pieces and "done" arrive: the panel catches up.
    qtbot.waitUntil(lambda: window.panel.raw_text == stored.raw_text, timeout=10000)

    os.kill(window.engine.pid, signal.SIGKILL)
    qtbot.waitUntil(lambda: window.analysis.engine == "died", timeout=10000)
    assert window.restart_button.isVisibleTo(window) and "engine stopped" in window.model_label.text()
    qtbot.mouseClick(window.restart_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: window.analysis.engine == "ready", timeout=60000)
    window.seek(777)
    with CaseStore.for_video(video, readonly=True) as store:
        qtbot.waitUntil(
            lambda: 777 in store.analysed_frames(window.model_id, window.prompt_version, "frame_analysis"),
            timeout=60000,
        )
        after_restart = store.get_result(777, window.model_id, window.prompt_version, "frame_analysis")
    qtbot.waitUntil(
        lambda: window.panel.frame == 777 and window.panel.raw_text == after_restart.raw_text, timeout=10000
    )
    window.seek(333)  # stored before the engine died: shown at once, from the store
    qtbot.waitUntil(lambda: shows(window, 333) and window.panel.raw_text == stored.raw_text, timeout=5000)
    window.close()
