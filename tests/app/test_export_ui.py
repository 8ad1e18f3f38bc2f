"""The viewer's export menu: a clip exported in a worker thread with progress and cancel; blank
areas drawn on the frame and kept in the case store; the report written from the menu's path."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtWidgets import QDialog, QPushButton

from app.export.ui import ClipDialog
from engine.store import BlankArea, CaseStore, case_store_path
from engine.timecode import format_time
from engine.video import FrameTimes
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


def test_clip_dialog_shows_and_reads_presentation_times(qtbot):
    """A variable-rate video (10 fps for 10 s, then 30 fps): the range is shown as the frames'
    presentation times and typed timecodes name the frames on screen then."""
    tb = Fraction(1, 30)
    times = FrameTimes(np.array([3 * i if i < 100 else 200 + i for i in range(400)], np.int64), 600, tb)
    fps = 20.0  # the average rate: frames × it would be seconds off
    dialog = ClipDialog(
        None,
        fps,
        400,
        60,
        160,
        0,
        timecode=lambda frame: format_time(times.time_of(frame), fps),
        index_at=times.index_at,
    )
    qtbot.addWidget(dialog)
    assert (dialog.start.text(), dialog.stop.text()) == ("00:00:06.00", "00:00:12.00")
    assert dialog.range() == (60, 160)
    dialog.stop.setText("00:00:13.00")
    assert dialog.range() == (60, 190)
    dialog.start.setText("12")  # a frame number stays a frame number
    assert dialog.range() == (12, 190)
    plain = ClipDialog(None, fps, 400, 60, 160, 0)  # no presentation times: nominal-rate timecodes
    qtbot.addWidget(plain)
    assert (plain.start.text(), plain.stop.text()) == ("00:00:03.00", "00:00:08.00")
    assert plain.range() == (60, 160)


def test_clip_dialog_from_the_menu_uses_the_session_times(window, monkeypatch):
    shown: list[ClipDialog] = []

    def exec_(dialog: ClipDialog) -> int:
        shown.append(dialog)
        return QDialog.DialogCode.Rejected

    monkeypatch.setattr(ClipDialog, "exec", exec_)
    session = window.exports.session
    assert window.exports.clip() is None
    (dialog,) = shown
    start, stop = session.default_range()
    assert (dialog.start.text(), dialog.stop.text()) == (session.timecode(start), session.timecode(stop))
    assert dialog.index_at is not None and dialog.range() == (start, stop)


def test_export_report_asks_for_a_title_and_reviewer(qtbot, window, tmp_path, monkeypatch):
    from app.export.ui import ReportDialog

    dialog = ReportDialog("Dr A")
    qtbot.addWidget(dialog)
    title, reviewer = dialog.values()
    assert title.startswith("Laparoscopic cholecystectomy review") and "Case " not in title
    assert reviewer == "Dr A"
    monkeypatch.setattr(ReportDialog, "exec", lambda self: QDialog.DialogCode.Rejected)
    assert window.exports.report() is None  # cancelled at the title: nothing asked further
    out = tmp_path / "titled.html"
    worker = window.exports.report(out, title="M&M review", reviewer="Dr B")
    qtbot.waitUntil(lambda: worker.isFinished() and out.exists(), timeout=30000)
    text = out.read_text(encoding="utf-8")
    assert "M&amp;M review" in text and "Dr B" in text and "Review and sign-off" in text
