"""The reviewer's word beside the model's, in the viewer, with real mouse and key events: the Reviewed
phase track and the reviewer's CVS rows on the timeline, boxes on the video, chain verdicts and item fixes
in the reasoning panel, each edit undone and redone from the Edit menu's stack; checked against the
store (a fresh ReviewLabels snapshot) and against what is drawn (the reviewer's colours, not the model's)."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QPoint, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QMenu

from app import palette
from engine.review_labels import ReviewLabels, ReviewSet
from tests.app.test_viewer_profiles import engine_ready, fill_surg_r1

CTRL = Qt.KeyboardModifier.ControlModifier
SHIFT = Qt.KeyboardModifier.ShiftModifier
LEFT, RIGHT = Qt.MouseButton.LeftButton, Qt.MouseButton.RightButton
CALOT, CLIPPING = "CalotTriangleDissection", "ClippingCutting"


def stored(window) -> ReviewSet:
    """The labels as the store holds them (read afresh, not the window's snapshot)."""
    return ReviewLabels(window.session.store).snapshot()


def segments(window) -> list[tuple[int, int, str]]:
    return [(s.start, s.end, s.phase) for s in stored(window).segments]


def activate(qtbot, window) -> None:
    """The window active again (a menu that closed took the focus with it), so its shortcuts fire."""
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow, timeout=3000)


def undo(qtbot, window) -> None:
    activate(qtbot, window)
    qtbot.keyClick(window, Qt.Key.Key_Z, CTRL)


def redo(qtbot, window) -> None:
    activate(qtbot, window)
    qtbot.keyClick(window, Qt.Key.Key_Z, CTRL | SHIFT)


def at(qtbot, window, frame: int) -> None:
    """The playhead at ``frame`` and the window active."""
    window.seek(frame)
    qtbot.waitUntil(lambda: window.playhead.displayed == frame, timeout=5000)
    activate(qtbot, window)


def colours_up(window, frame: int, key: str) -> set[str]:
    """The colours drawn on a vertical line through ``key``'s track at ``frame``, from its middle up."""
    view = window.timeline
    point = view.viewport_point((frame + 0.5) / 25.0, key)
    image = view.viewport().grab().toImage()
    return {image.pixelColor(point.x(), point.y() - dy).name() for dy in range(0, 12)}


def choose(menu: QMenu, text: str) -> None:
    """Trigger the entry of a shown menu (or of one of its submenus) whose text starts with ``text``, and
    close the menu as a click on the entry does."""
    find(menu, text).trigger()
    menu.close()


def find(menu: QMenu, text: str):
    for action in menu.actions():
        if action.text().replace("&", "").startswith(text):
            return action
        if action.menu() is not None:
            try:
                return find(action.menu(), text)
            except LookupError:
                continue
    raise LookupError(f"no entry {text!r} in {[a.text() for a in menu.actions()]}")


@pytest.fixture
def window(open_viewer, video, monkeypatch):
    fill_surg_r1(video)
    w = open_viewer(video)
    engine_ready(w)
    w.refresh_timelines()
    w.warnings = []
    monkeypatch.setattr("app.review_ui.QMessageBox.warning", lambda parent, title, text: w.warnings.append(text))
    return w


def phase_by_key(qtbot, window, frame: int, number: int) -> None:
    """E at ``frame``, then the phase's number in the menu (a keyboard-only phase edit)."""
    at(qtbot, window, frame)
    qtbot.keyClick(window, Qt.Key.Key_E)
    menu = window.review.tracks.menu
    assert menu is not None
    qtbot.waitUntil(menu.isVisible, timeout=3000)
    qtbot.keyClick(menu, getattr(Qt.Key, f"Key_{number}"))
    qtbot.waitUntil(lambda: not menu.isVisible(), timeout=3000)


def test_the_reviewed_track_sits_under_the_models_phase_and_is_told_apart(qtbot, window):
    keys = window.timeline.track_keys()
    assert keys.index("reviewed") == keys.index("phase") + 1
    assert [keys.index(f"reviewed_c{k}") - keys.index(f"cvs{k}") for k in (1, 2, 3)] == [1, 1, 1]
    assert "Reviewer" in window.timeline.legend_text() and "met (reviewer)" in window.timeline.legend_text()
    assert window.review.status.text() == "not reviewed"

    phase_by_key(qtbot, window, 100, 2)  # E, 2: Calot triangle dissection over the model's segment
    assert segments(window) == [(0, 750, CALOT)] or segments(window)[0][2] == CALOT
    start, end, _ = segments(window)[0]
    assert start == 0 and end >= 700
    model_colours, mine = colours_up(window, 100, "phase"), colours_up(window, 100, "reviewed")
    phase = QColor(palette.PHASE_COLORS[CALOT]).name()
    reviewer = QColor(palette.REVIEWER).name()
    assert phase in model_colours and reviewer not in model_colours
    assert {phase, reviewer} <= mine
    qtbot.waitUntil(lambda: window.review.status.text().startswith("reviewed"), timeout=3000)
    assert "phase 100%" in window.review.status.text()

    undo(qtbot, window)
    qtbot.waitUntil(lambda: segments(window) == [], timeout=3000)
    assert reviewer not in colours_up(window, 100, "reviewed")
    redo(qtbot, window)
    qtbot.waitUntil(lambda: segments(window) == [(start, end, CALOT)], timeout=3000)


def test_keys_split_at_the_playhead_and_move_the_nearest_boundary(qtbot, window):
    phase_by_key(qtbot, window, 0, 2)
    end = segments(window)[0][1]
    phase_by_key(qtbot, window, 500, 3)  # a new phase from the playhead: the segment is split at 500
    assert segments(window) == [(0, 500, CALOT), (500, end, CLIPPING)]
    at(qtbot, window, 450)
    qtbot.keyClick(window, Qt.Key.Key_M)  # the nearest boundary (500) comes to the playhead
    qtbot.waitUntil(lambda: segments(window) == [(0, 450, CALOT), (450, end, CLIPPING)], timeout=3000)
    undo(qtbot, window)
    qtbot.waitUntil(lambda: segments(window) == [(0, 500, CALOT), (500, end, CLIPPING)], timeout=3000)
    undo(qtbot, window)
    qtbot.waitUntil(lambda: segments(window) == [(0, end, CALOT)], timeout=3000)
    redo(qtbot, window)
    redo(qtbot, window)
    qtbot.waitUntil(lambda: segments(window) == [(0, 450, CALOT), (450, end, CLIPPING)], timeout=3000)


def test_dragging_a_reviewed_boundary_moves_it_in_one_undoable_edit(qtbot, window):
    phase_by_key(qtbot, window, 0, 2)
    end = segments(window)[0][1]
    phase_by_key(qtbot, window, 500, 3)
    view, port = window.timeline, window.timeline.viewport()
    view.set_visible_seconds(10.0, 30.0)  # 20 s over the width: a few frames per pixel at most
    edge = view.viewport_point(500 / 25.0, "reviewed")
    target = view.viewport_point(400 / 25.0, "reviewed")
    qtbot.mousePress(port, LEFT, pos=edge)
    for x in range(edge.x(), target.x() - 1, -10):
        qtbot.mouseMove(port, QPoint(x, edge.y()))
    qtbot.mouseMove(port, target)
    assert window.timeline.track_runs("reviewed")[0][1] in range(395, 406)  # the run follows the mouse
    assert segments(window)[0][1] == 500  # nothing written before the release
    qtbot.mouseRelease(port, LEFT, pos=target)
    qtbot.waitUntil(lambda: segments(window)[0][1] != 500, timeout=3000)
    moved = segments(window)[0][1]
    assert 395 <= moved <= 405 and segments(window)[1] == (moved, end, CLIPPING)
    assert window.playhead.displayed == 500  # a drag on a boundary does not seek
    undo(qtbot, window)
    qtbot.waitUntil(lambda: segments(window) == [(0, 500, CALOT), (500, end, CLIPPING)], timeout=3000)
    redo(qtbot, window)
    qtbot.waitUntil(lambda: segments(window)[0][1] == moved, timeout=3000)


def right_click_menu(qtbot, window, frame: int, key: str) -> QMenu:
    port = window.timeline.viewport()
    point = window.timeline.viewport_point((frame + 0.5) / 25.0, key)
    qtbot.mouseClick(port, RIGHT, pos=point)
    menu = window.review.tracks.menu
    assert menu is not None
    qtbot.waitUntil(menu.isVisible, timeout=3000)
    return menu


def test_right_click_relabels_splits_merges_and_deletes_a_segment(qtbot, window):
    phase_by_key(qtbot, window, 0, 2)
    end = segments(window)[0][1]
    choose(right_click_menu(qtbot, window, 300, "reviewed"), "Split here")
    assert segments(window) == [(0, 300, CALOT), (300, end, CALOT)]
    choose(right_click_menu(qtbot, window, 400, "reviewed"), "4 Gallbladder")  # relabel the right part
    assert segments(window) == [(0, 300, CALOT), (300, end, "GallbladderDissection")]
    choose(right_click_menu(qtbot, window, 100, "reviewed"), "Merge with the next")
    assert segments(window) == [(0, end, CALOT)]
    choose(right_click_menu(qtbot, window, 100, "reviewed"), "Delete this")
    assert segments(window) == []
    for expected in ([(0, end, CALOT)], [(0, 300, CALOT), (300, end, "GallbladderDissection")]):
        undo(qtbot, window)
        qtbot.waitUntil(lambda expected=expected: segments(window) == expected, timeout=3000)
    redo(qtbot, window)
    qtbot.waitUntil(lambda: segments(window) == [(0, end, CALOT)], timeout=3000)


def test_a_selection_gets_its_phase_from_the_timelines_menu(qtbot, window):
    window.case.selection = (200, 299)
    menu = right_click_menu(qtbot, window, 100, "reviewed")
    selection_menu = find(menu, "Set the selection's phase to").menu()
    choose(selection_menu, "5 Gallbladder")
    menu.close()
    assert segments(window) == [(200, 300, "GallbladderPackaging")]
    timeline_menu = window.timeline.context_menu()  # the timeline's own menu offers it too
    choose(find(timeline_menu, "Reviewed phase of the selection").menu(), "Clear the reviewed phase")
    assert segments(window) == []
    undo(qtbot, window)
    qtbot.waitUntil(lambda: segments(window) == [(200, 300, "GallbladderPackaging")], timeout=3000)


def test_f1_to_f3_toggle_the_reviewers_criteria_at_the_playhead(qtbot, window):
    at(qtbot, window, 600)
    qtbot.keyClick(window, Qt.Key.Key_F1)
    qtbot.waitUntil(lambda: len(stored(window).cvs[0]) == 1, timeout=3000)
    row = stored(window).cvs[0][0]
    assert (row.start, row.end, row.state.value) == (600, 601, "met") and row.reviewer == window.review.session.reviewer
    qtbot.keyClick(window, Qt.Key.Key_F1)  # again: met → not met
    qtbot.waitUntil(lambda: stored(window).cvs[0][0].state.value == "not met", timeout=3000)
    qtbot.keyClick(window, Qt.Key.Key_F3)
    qtbot.waitUntil(lambda: len(stored(window).cvs[2]) == 1, timeout=3000)
    assert window.timeline.colour_of("reviewed_c1", "not met") == palette.REVIEW_CVS_COLORS["not met"]
    assert window.timeline.colour_of("cvs1", "not met") == palette.CVS_COLORS["not met"]
    assert palette.REVIEW_CVS_COLORS["not met"] != palette.CVS_COLORS["not met"]
    undo(qtbot, window)
    qtbot.waitUntil(lambda: not stored(window).cvs[2], timeout=3000)
    undo(qtbot, window)
    qtbot.waitUntil(lambda: stored(window).cvs[0][0].state.value == "met", timeout=3000)
    redo(qtbot, window)
    qtbot.waitUntil(lambda: stored(window).cvs[0][0].state.value == "not met", timeout=3000)
    port = window.timeline.viewport()
    qtbot.mouseDClick(port, LEFT, pos=window.timeline.viewport_point(700.5 / 25.0, "reviewed_c2"))  # the mouse's toggle
    qtbot.waitUntil(lambda: len(stored(window).cvs[1]) == 1, timeout=3000)
    assert (stored(window).cvs[1][0].start, stored(window).cvs[1][0].state.value) == (700, "met")


def test_d_steps_through_the_disagreements(qtbot, window):
    window.case.selection = (100, 249)
    window.review.tracks._set_selection_phase(CLIPPING)  # the model says Calot there
    window.case.selection = None
    assert segments(window) == [(100, 250, CLIPPING)]
    at(qtbot, window, 0)
    qtbot.keyClick(window, Qt.Key.Key_D)
    qtbot.waitUntil(lambda: window.playhead.displayed == 100, timeout=3000)
    assert "phase" in window.statusBar().currentMessage()
    qtbot.keyClick(window, Qt.Key.Key_D)
    qtbot.waitUntil(lambda: window.playhead.displayed == 125, timeout=3000)
    qtbot.keyClick(window, Qt.Key.Key_D, SHIFT)
    qtbot.waitUntil(lambda: window.playhead.displayed == 100, timeout=3000)
    assert window.review.status.text().startswith("reviewed 6 frames · phase 0%")


def test_an_undo_the_store_refuses_is_explained_and_changes_nothing(qtbot, window):
    phase_by_key(qtbot, window, 0, 2)
    other = ReviewLabels(window.session.store, reviewer="someone else")
    other.delete_segment(stored(window).segments[0].id)  # another window deleted it meanwhile
    other.set_phase(0, 10, "Preparation")
    before = segments(window)
    undo(qtbot, window)
    qtbot.waitUntil(lambda: bool(window.warnings), timeout=3000)
    assert "changed meanwhile" in window.warnings[0] and "Nothing was changed" in window.warnings[0]
    assert segments(window) == before
    assert window.bookmarks.undo.stack.count() == 0  # the command cannot apply again: dropped


# ------------------------------------------------------------------------------------------ the canvas
def canvas_colours(window, x: float, y: float) -> set[str]:
    """The colours drawn on the canvas (and over it) within a pixel of ``(x, y)``."""
    image = window.canvas.grab().toImage()
    return {image.pixelColor(round(x) + dx, round(y) + dy).name() for dx in (-1, 0, 1) for dy in (-1, 0, 1)}


def items(window) -> list[tuple[str, str, tuple | None]]:
    return [(i.verdict, i.label, i.box) for i in stored(window).items_at(0, "instrument")]


@pytest.fixture
def canvas(qtbot, window, monkeypatch):
    monkeypatch.setattr("app.widgets.box_editor.QInputDialog.getItem", lambda *a: ("Clipper", True))
    at(qtbot, window, 0)
    editor = window.review.boxes
    qtbot.waitUntil(lambda: len(editor.model_boxes()) == 2, timeout=5000)
    return editor


def test_a_model_box_is_accepted_by_click_and_enter_and_drawn_in_the_reviewers_colour(qtbot, window, canvas):
    (grasper, box), _ = canvas.model_boxes()
    rect = canvas.to_widget(box)
    assert grasper == "Grasper"
    qtbot.mouseClick(window.canvas, LEFT, pos=rect.center().toPoint())
    assert canvas.selected is not None and canvas.selected.is_model
    qtbot.keyClick(window.canvas, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: items(window) == [("accepted", "Grasper", box)], timeout=3000)
    left_edge = (rect.left(), rect.center().y())
    reviewer, model = QColor(palette.REVIEWER).name(), QColor(palette.BOX).name()
    qtbot.waitUntil(lambda: reviewer in canvas_colours(window, *left_edge), timeout=3000)
    hook = canvas.to_widget(canvas.model_boxes()[0][1])  # the box nobody judged: the model's blue
    assert model in canvas_colours(window, hook.left(), hook.center().y())
    assert reviewer not in canvas_colours(window, hook.left(), hook.center().y())
    undo(qtbot, window)
    qtbot.waitUntil(lambda: items(window) == [], timeout=3000)
    qtbot.waitUntil(lambda: reviewer not in canvas_colours(window, *left_edge), timeout=3000)
    redo(qtbot, window)
    qtbot.waitUntil(lambda: items(window) == [("accepted", "Grasper", box)], timeout=3000)
    qtbot.waitUntil(lambda: reviewer in canvas_colours(window, *left_edge), timeout=3000)
    window.layers.boxes = False  # key 1 hides the reviewer's boxes with the model's
    qtbot.waitUntil(lambda: reviewer not in canvas_colours(window, *left_edge), timeout=3000)


def test_dragging_a_model_box_records_the_reviewers_box_and_a_corner_resizes_it(qtbot, window, canvas):
    _, (hook, box) = canvas.model_boxes()
    rect = canvas.to_widget(box)
    start = rect.center().toPoint()
    qtbot.mousePress(window.canvas, LEFT, pos=start)
    for step in range(1, 6):
        qtbot.mouseMove(window.canvas, start + QPoint(6 * step, 4 * step))
    qtbot.mouseRelease(window.canvas, LEFT, pos=start + QPoint(30, 20))
    qtbot.waitUntil(lambda: len(items(window)) == 1, timeout=3000)
    verdict, label, moved = items(window)[0]
    scale = window.canvas.image.width() / window.canvas.image_rect().width()
    assert (verdict, label) == ("edited", hook)
    assert moved[0] - box[0] == pytest.approx(30 * scale, abs=0.6) and moved[1] - box[1] == pytest.approx(
        20 * scale, abs=0.6
    )
    item = stored(window).items_at(0, "instrument")[0]
    assert item.model_box == box  # the model's box it corrects, kept

    corner = canvas.to_widget(moved).bottomRight().toPoint()  # the reviewer's box is selected: grab its corner
    qtbot.mousePress(window.canvas, LEFT, pos=corner)
    qtbot.mouseMove(window.canvas, corner + QPoint(10, 10))
    qtbot.mouseRelease(window.canvas, LEFT, pos=corner + QPoint(20, 16))
    qtbot.waitUntil(lambda: items(window)[0][2] != moved, timeout=3000)
    grown = items(window)[0][2]
    assert grown[:2] == moved[:2] and grown[2] > moved[2] and grown[3] > moved[3]
    undo(qtbot, window)
    qtbot.waitUntil(lambda: items(window) == [("edited", hook, moved)], timeout=3000)
    undo(qtbot, window)
    qtbot.waitUntil(lambda: items(window) == [], timeout=3000)
    assert canvas.model_boxes()[1] == (hook, box)  # the model's box is untouched, and judged by nobody again


def test_ctrl_drag_adds_a_named_box_and_delete_removes_it_undoably(qtbot, window, canvas):
    area = window.canvas.image_rect()
    start = QPoint(round(area.left()) + 4, round(area.bottom()) - 60)
    end = start + QPoint(50, 40)
    qtbot.mousePress(window.canvas, LEFT, CTRL, pos=start)
    qtbot.mouseMove(window.canvas, start + QPoint(25, 20))
    qtbot.mouseRelease(window.canvas, LEFT, CTRL, pos=end)
    qtbot.waitUntil(lambda: [v for v, _, _ in items(window)] == ["added"], timeout=3000)
    assert items(window)[0][1] == "Clipper"
    assert canvas.selected is not None and canvas.selected.item is not None
    qtbot.keyClick(window.canvas, Qt.Key.Key_Delete)
    qtbot.waitUntil(lambda: items(window) == [], timeout=3000)
    undo(qtbot, window)
    qtbot.waitUntil(lambda: [v for v, _, _ in items(window)] == ["added"], timeout=3000)


def test_right_click_rejects_a_model_box_which_is_crossed_out(qtbot, window, canvas):
    (grasper, box), _ = canvas.model_boxes()
    rect = canvas.to_widget(box)
    qtbot.mouseClick(window.canvas, RIGHT, pos=rect.center().toPoint())
    assert canvas.menu is not None
    choose(canvas.menu, "Reject Grasper")
    qtbot.waitUntil(lambda: [(v, label) for v, label, _ in items(window)] == [("rejected", grasper)], timeout=3000)
    assert [label for label, _ in canvas.model_boxes()] == ["Hook"]  # judged: no longer offered
    cross = rect.center() + (rect.topLeft() - rect.center()) * 0.5  # on the diagonal
    rejected = QColor(palette.REVIEW_REJECTED).name()
    qtbot.waitUntil(lambda: rejected in canvas_colours(window, cross.x(), cross.y()), timeout=3000)
    undo(qtbot, window)
    qtbot.waitUntil(lambda: items(window) == [], timeout=3000)


def test_right_click_changes_a_boxs_label(qtbot, window, canvas):
    _, (hook, box) = canvas.model_boxes()
    centre = canvas.to_widget(box).center().toPoint()
    qtbot.mouseClick(window.canvas, RIGHT, pos=centre)
    choose(canvas.menu, "Scissors")  # the model's hook is really scissors, at the same place
    qtbot.waitUntil(lambda: items(window) == [("edited", "Scissors", box)], timeout=3000)
    assert stored(window).items_at(0, "instrument")[0].model_label == hook
    qtbot.mouseClick(window.canvas, RIGHT, pos=centre)  # now the reviewer's box: relabel it again
    choose(canvas.menu, "Clipper")
    qtbot.waitUntil(lambda: items(window) == [("edited", "Clipper", box)], timeout=3000)
    undo(qtbot, window)
    qtbot.waitUntil(lambda: items(window) == [("edited", "Scissors", box)], timeout=3000)


# ------------------------------------------------------------------------------------------ the panel
def test_the_panel_accepts_and_rejects_chains_and_fixes_an_item(qtbot, window):
    at(qtbot, window, 0)
    box = window.review.verdicts
    qtbot.waitUntil(box.isVisible, timeout=3000)
    accept = box.findChild(type(box.accept_item), "acceptChain:phase")
    qtbot.mouseClick(accept, LEFT)
    qtbot.waitUntil(lambda: [c.verdict for c in stored(window).chains_at(0)] == ["accepted"], timeout=3000)
    assert stored(window).chains_at(0)[0].model.task == "phase"
    assert "you accepted" in box.rows["phase"][0].text() and palette.REVIEWER in box.rows["phase"][0].text()
    qtbot.mouseClick(box.findChild(type(box.accept_item), "rejectChain:triplet"), LEFT)
    qtbot.waitUntil(lambda: len(stored(window).chains_at(0)) == 2, timeout=3000)
    qtbot.mouseClick(accept, LEFT)  # the verdict in force again: withdrawn
    qtbot.waitUntil(lambda: [c.verdict for c in stored(window).chains_at(0)] == ["rejected"], timeout=3000)
    undo(qtbot, window)
    qtbot.waitUntil(lambda: len(stored(window).chains_at(0)) == 2, timeout=3000)

    texts = [box.items.itemText(k) for k in range(box.items.count())]
    assert texts == ["Instrument: Grasper", "Instrument: Hook", "Triplet: hook, dissect, cystic_duct"]
    box.items.setFocus()
    qtbot.keyClick(box.items, Qt.Key.Key_Down)  # Hook
    qtbot.mouseClick(box.reject_item, LEFT)
    qtbot.waitUntil(lambda: [(v, label) for v, label, _ in items(window)] == [("rejected", "Hook")], timeout=3000)
    assert "you rejected" in box.item_state.text()
    qtbot.keyClick(box.items, Qt.Key.Key_Down)  # the triplet
    box.fix_to.setEditText("")
    qtbot.keyClicks(box.fix_to, "grasper,retract,gallbladder")
    qtbot.mouseClick(box.fix_button, LEFT)
    qtbot.waitUntil(lambda: bool(stored(window).items_at(0, "triplet")), timeout=3000)
    fixed = stored(window).items_at(0, "triplet")[0]
    assert (fixed.verdict, fixed.model_label, fixed.label) == (
        "edited",
        "hook,dissect,cystic_duct",
        "grasper,retract,gallbladder",
    )
    undo(qtbot, window)
    qtbot.waitUntil(lambda: not stored(window).items_at(0, "triplet"), timeout=3000)
    window.playhead.playing = True  # while the video plays the box waits
    assert not box.isEnabled()
    window.playhead.playing = False
    assert box.isEnabled()


def test_the_verdict_box_shows_its_texts_whole_in_the_default_layout(qtbot, window):
    window.resize(1440, 900)
    at(qtbot, window, 0)
    box = window.review.verdicts
    qtbot.waitUntil(box.isVisible, timeout=3000)
    qtbot.waitUntil(lambda: box.items.count() > 0, timeout=3000)
    for label, accept, reject in box.rows.values():
        # A status longer than its column wraps instead of being cut ("not rev…" in the last review).
        assert label.wordWrap() and label.heightForWidth(label.width()) <= label.height() + 1
        assert accept.width() >= accept.sizeHint().width() and reject.width() >= reject.sizeHint().width()
    text = box.items.currentText()
    assert box.items.fontMetrics().horizontalAdvance(text) < box.items.width()  # "Instrument: Grasp…" was cut
