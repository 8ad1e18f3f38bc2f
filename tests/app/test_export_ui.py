"""The viewer's export menu: a clip exported in a worker thread with progress and cancel; blank
areas drawn on the frame and kept in the case store; the report written from the menu's path."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QPushButton

from engine.store import BlankArea, CaseStore, case_store_path
from train.synth.truth_store import store_truth_chains


@pytest.fixture
def window(open_viewer, synth_case, video, data_home):
    store_truth_chains(synth_case[0], every=2)
    w = open_viewer(video)
    assert w.playhead.displayed == 0
    return w


def test_menu_has_the_exports(window):
    texts = [a.text() for a in window.menuBar().actions()[0].menu().actions()]
    assert {"Export report…", "Export clip…", "Blank areas…"} <= set(texts)


def test_clip_export_runs_off_the_ui_thread_and_cancel_leaves_nothing(qtbot, window, tmp_path):
    out = tmp_path / "clip.mp4"
    worker = window.exports.clip(out, frames=(0, 49))
    qtbot.waitUntil(lambda: worker.isFinished() and out.exists(), timeout=30000)
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 50
    qtbot.waitUntil(lambda: "exported clip.mp4" in window.statusBar().currentMessage(), timeout=5000)

    target = tmp_path / "cancelled.mp4"
    worker = window.exports.clip(target, frames=(0, 1499))
    qtbot.waitUntil(lambda: window.exports.progress.dialog.value() >= 3, timeout=30000)
    qtbot.mouseClick(window.exports.progress.dialog.findChild(QPushButton), Qt.MouseButton.LeftButton)  # Cancel
    qtbot.waitUntil(worker.isFinished, timeout=30000)
    qtbot.waitUntil(lambda: "export cancelled" in window.statusBar().currentMessage(), timeout=5000)
    assert not target.exists() and not list(tmp_path.glob(".cancelled*"))


def test_blank_areas_are_drawn_on_the_frame_and_stored(qtbot, window):
    dialog = window.exports.blank_areas()
    canvas = dialog.canvas
    qtbot.waitUntil(canvas.isVisible, timeout=5000)
    target = canvas._target()
    scale = target.width() / 320

    def at(x: float, y: float) -> QPoint:
        return QPoint(round(target.x() + x * scale), round(target.y() + y * scale))

    qtbot.mousePress(canvas, Qt.MouseButton.LeftButton, pos=at(10, 10))
    qtbot.mouseMove(canvas, at(60, 30))
    qtbot.mouseRelease(canvas, Qt.MouseButton.LeftButton, pos=at(110, 40))
    qtbot.mouseClick(canvas, Qt.MouseButton.LeftButton, pos=at(200, 100))  # a click is not a rectangle
    assert len(dialog.areas) == 1
    area = dialog.areas[0]
    assert abs(area.x - 10) <= 1 and abs(area.y - 10) <= 1 and abs(area.width - 100) <= 2 and abs(area.height - 30) <= 2
    dialog.accept()
    with CaseStore.open(case_store_path(window.case.video), readonly=True) as store:
        assert store.blank_areas() == dialog.areas
    window.store.set_blank_areas([BlankArea(0, 0, 5, 5)])
    again = window.exports.blank_areas()
    assert again.areas == [BlankArea(0, 0, 5, 5)]
    again.reject()


def test_report_from_the_menu_path(qtbot, window, tmp_path):
    out = tmp_path / "case.html"
    worker = window.exports.report(out)
    qtbot.waitUntil(lambda: worker.isFinished() and out.exists(), timeout=30000)
    assert "Critical view of safety" in Path(out).read_text(encoding="utf-8")
