"""A frame range selected on the timeline (Shift+drag) is drawn over the tracks, held in the case
state, offered as a clip from the context menu and used as the clip dialog's default; a plain click
or Esc clears it."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog

from app.export import ui
from app.widgets.timeline_view import TimelineView

FPS = 25.0
SHIFT = Qt.KeyboardModifier.ShiftModifier
LEFT = Qt.MouseButton.LeftButton


def shift_drag(qtbot, view: TimelineView, start_s: float, stop_s: float) -> None:
    vp = view.viewport()
    qtbot.mousePress(vp, LEFT, SHIFT, view.viewport_point(start_s, "phase"))
    qtbot.mouseMove(vp, view.viewport_point((start_s + stop_s) / 2, "raw"))
    qtbot.mouseRelease(vp, LEFT, SHIFT, view.viewport_point(stop_s, "confidence"))


def test_shift_drag_selects_a_range_drawn_over_the_tracks_without_seeking(qtbot, view):
    seeks: list[int] = []
    view.seekRequested.connect(seeks.append)
    assert view.selection is None and view.selection_seconds() is None
    with qtbot.waitSignal(view.selectionChanged, timeout=10000) as sig:
        shift_drag(qtbot, view, 40.0, 12.0)  # right to left: ordered all the same
    first, last = sig.args[0]
    assert view.selection == (first, last)
    assert abs(first - 12 * FPS) <= 2 and abs(last - 40 * FPS) <= 2
    assert view.selection_seconds() == (first / FPS, (last + 1) / FPS)
    assert seeks == []  # selecting does not move the playhead

    view.addAction("Owner's action")
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.RightButton, pos=view.viewport_point(20.0, "phase"))
    qtbot.waitUntil(lambda: view.menu is not None and view.menu.isVisible(), timeout=10000)
    assert [a.text() for a in view.menu.actions() if not a.isSeparator()] == ["Owner's action", "Clear selection"]
    view.menu.close()
    assert view.selection == (first, last)  # a right click keeps the selection

    with qtbot.waitSignal(view.selectionChanged, timeout=10000) as sig:
        qtbot.mouseClick(view.viewport(), LEFT, pos=view.viewport_point(20.0, "phase"))
    assert sig.args[0] is None and view.selection is None and view.selection_seconds() is None
    assert len(seeks) == 1  # the click still seeks


def test_shift_click_selects_from_the_playhead_and_esc_clears(qtbot, view):
    view.set_playhead(100)
    with qtbot.waitSignal(view.selectionChanged, timeout=10000) as sig:
        qtbot.mouseClick(view.viewport(), LEFT, SHIFT, view.viewport_point(30.0, "phase"))
    assert sig.args[0][0] == 100 and abs(sig.args[0][1] - 30 * FPS) <= 2

    view.viewport().setFocus()
    with qtbot.waitSignal(view.selectionChanged, timeout=10000) as sig:
        qtbot.keyClick(view.viewport(), Qt.Key.Key_Escape)
    assert sig.args[0] is None and view.selection_seconds() is None


def test_set_selection_orders_and_clamps_and_a_new_case_clears(view):
    view.set_selection((2000, 1400))
    assert view.selection == (1400, 1499)
    assert view.selection_seconds() == (1400 / FPS, 1500 / FPS)
    view.set_case(FPS, 300)
    assert view.selection is None and view.selection_seconds() is None


@pytest.fixture
def window(open_viewer, video):
    w = open_viewer(video)
    assert w.playhead.displayed == 0
    return w


@pytest.fixture
def dialogs(monkeypatch) -> list[ui.ClipDialog]:
    """Clip dialogs opened, closed at once (Cancel) after their defaults are recorded."""
    opened: list[ui.ClipDialog] = []

    def cancel(dialog: ui.ClipDialog) -> int:
        opened.append(dialog)
        return QDialog.DialogCode.Rejected

    monkeypatch.setattr(ui.ClipDialog, "exec", cancel)
    return opened


def test_the_selection_is_case_state_and_the_clip_default(qtbot, window, dialogs):
    timeline = window.timeline
    fps = window.case.fps
    action = window.actions_by_name["export_clip_selection"]
    assert window.case.selection is None and not action.isEnabled()

    shift_drag(qtbot, timeline, 10.0, 30.0)
    selected = window.case.selection
    assert selected is not None and selected == timeline.selection
    assert abs(selected[0] - 10 * fps) <= 3 and abs(selected[1] - 30 * fps) <= 3
    assert timeline.selection_seconds() == (selected[0] / fps, (selected[1] + 1) / fps)
    assert "selected" in window.statusBar().currentMessage()

    menu = timeline.context_menu()
    offered = {a.text(): a for a in menu.actions()}
    assert offered["Export clip of selection…"].isEnabled() and "Clear selection" in offered
    offered["Export clip of selection…"].trigger()
    window.trigger("export_clip")  # File ▸ Export clip… defaults to the selection too
    assert [d.range() for d in dialogs] == [selected, selected]

    window.case.selection = (5, 60)  # the state drives the widget
    assert timeline.selection_seconds() == (5 / fps, 61 / fps)

    timeline.setFocus()
    qtbot.keyClick(timeline.viewport(), Qt.Key.Key_Escape)
    assert window.case.selection is None and timeline.selection_seconds() is None and not action.isEnabled()
    assert "Clear selection" not in [a.text() for a in timeline.context_menu().actions()]
    window.trigger("export_clip")  # without a selection: the range around the playhead, as before
    assert dialogs[-1].range() == window.session.default_range() != selected


def test_opening_a_case_clears_the_selection(qtbot, window, synth_case):
    window.case.selection = (0, 10)
    window.open_case(window.case.video)
    assert window.case.selection is None and window.timeline.selection_seconds() is None


def test_dragging_an_edge_moves_it_and_a_click_on_an_edge_changes_nothing(qtbot, view):
    view.set_selection((10 * 25, 20 * 25 - 1))  # 10 s .. 20 s
    vp = view.viewport()
    right_edge = view.viewport_point(20.0, "phase")
    seeks: list[int] = []
    view.seekRequested.connect(seeks.append)

    qtbot.mouseMove(vp, right_edge)
    assert vp.cursor().shape() == Qt.CursorShape.SizeHorCursor  # the edge can be grabbed
    with qtbot.waitSignal(view.selectionChanged, timeout=10000) as sig:
        qtbot.mousePress(vp, LEFT, pos=right_edge)
        qtbot.mouseMove(vp, view.viewport_point(25.0, "raw"))
        qtbot.mouseRelease(vp, LEFT, pos=view.viewport_point(30.0, "phase"))
    first, last = sig.args[0]
    assert first == 250 and abs(last - 30 * FPS) <= 2 and view.selection == (first, last)

    left_edge = view.viewport_point(10.0, "phase")  # dragged past the other edge: the range flips over
    with qtbot.waitSignal(view.selectionChanged, timeout=10000) as sig:
        qtbot.mousePress(vp, LEFT, pos=left_edge)
        qtbot.mouseRelease(vp, LEFT, pos=view.viewport_point(40.0, "phase"))
    assert sig.args[0][0] == last and abs(sig.args[0][1] - 40 * FPS) <= 2

    before = view.selection
    changes: list[object] = []
    view.selectionChanged.connect(changes.append)
    qtbot.mouseClick(vp, LEFT, pos=view.viewport_point(before[0] / FPS, "phase"))
    assert view.selection == before and changes == [] and seeks == []  # neither cleared nor seeking

    qtbot.mouseMove(vp, view.viewport_point(60.0, "phase"))
    assert vp.cursor().shape() == Qt.CursorShape.ArrowCursor
