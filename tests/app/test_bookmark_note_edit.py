"""Editing a bookmark opens the roomy bookmark dialog with its title and note; the change is one step of
Edit ▸ Undo / Redo (Ctrl+Z, Ctrl+Shift+Z), and emptying the note removes it, undoably too."""

from __future__ import annotations

from PySide6.QtCore import Qt

CTRL = Qt.KeyboardModifier.ControlModifier


def marks(window) -> list[tuple[int, str, str]]:
    return [(b.frame, b.title, b.note) for b in window.session.bookmarks]


def test_edit_changes_title_and_note_in_one_undoable_step(qtbot, open_viewer, video):
    window = open_viewer(video)
    window.save_bookmark(300, "C1 visible", "duct seen")
    window.bookmark_list.setCurrentRow(0)
    dialog = window.bookmarks.edit()
    assert (dialog.title.text(), dialog.note.text()) == ("C1 visible", "duct seen")  # the note is editable
    dialog.title.setText("C1 and C2 visible")
    dialog.note.setText("duct and artery seen\ntriangle cleared")
    dialog.accept()
    assert marks(window) == [(300, "C1 and C2 visible", "duct and artery seen\ntriangle cleared")]
    assert "duct and artery seen" in window.bookmark_list.item(0).toolTip()

    qtbot.keyClick(window, Qt.Key.Key_Z, CTRL)  # one step takes back both
    qtbot.waitUntil(lambda: marks(window) == [(300, "C1 visible", "duct seen")], timeout=3000)
    qtbot.keyClick(window, Qt.Key.Key_Z, CTRL | Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: marks(window)[0][1] == "C1 and C2 visible", timeout=3000)

    window.bookmark_list.setCurrentRow(0)
    dialog = window.bookmarks.edit()
    dialog.note.setText("")
    dialog.accept()
    assert marks(window) == [(300, "C1 and C2 visible", "")]
    qtbot.keyClick(window, Qt.Key.Key_Z, CTRL)
    qtbot.waitUntil(lambda: marks(window)[0][2] == "duct and artery seen\ntriangle cleared", timeout=3000)
