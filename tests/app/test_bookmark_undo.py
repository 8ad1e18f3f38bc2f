"""Edit ▸ Undo / Redo of bookmark edits with real key presses: a deleted bookmark (asked first)
comes back with its note on Ctrl+Z and goes again on redo; adding and renaming undo too."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

CTRL = Qt.KeyboardModifier.ControlModifier


def marks(window) -> list[tuple[int, str, str]]:
    return [(b.frame, b.title, b.note) for b in window.session.bookmarks]


def test_ctrl_z_brings_a_deleted_bookmark_back_with_its_note(qtbot, open_viewer, video, monkeypatch):
    window = open_viewer(video)
    menus = [a.text() for a in window.menuBar().actions()]
    assert menus.index("&Edit") == menus.index("&File") + 1
    window.save_bookmark(300, "C1 visible", "duct and artery both seen")
    window.save_bookmark(900, "first clip")
    assert marks(window) == [(300, "C1 visible", "duct and artery both seen"), (900, "first clip", "")]

    asked: list[str] = []
    answer = [QMessageBox.StandardButton.No]
    monkeypatch.setattr(QMessageBox, "question", lambda parent, title, text, *a: (asked.append(text), answer[0])[1])
    window.bookmark_list.setCurrentRow(0)
    window.bookmarks.delete()  # refused: nothing deleted
    assert asked and "C1 visible" in asked[0] and len(marks(window)) == 2
    answer[0] = QMessageBox.StandardButton.Yes
    window.bookmarks.delete()
    assert marks(window) == [(900, "first clip", "")]

    qtbot.keyClick(window, Qt.Key.Key_Z, CTRL)
    qtbot.waitUntil(lambda: len(marks(window)) == 2, timeout=3000)
    assert marks(window)[0] == (300, "C1 visible", "duct and artery both seen")

    qtbot.keyClick(window, Qt.Key.Key_Z, CTRL | Qt.KeyboardModifier.ShiftModifier)  # redo: deleted again
    qtbot.waitUntil(lambda: marks(window) == [(900, "first clip", "")], timeout=3000)
    qtbot.keyClick(window, Qt.Key.Key_Z, CTRL)
    qtbot.waitUntil(lambda: len(marks(window)) == 2, timeout=3000)

    window.bookmarks.undo.rename(window.session.bookmarks[0].id, "CVS")  # renamed under its new id
    assert marks(window)[0][1] == "CVS"
    qtbot.keyClick(window, Qt.Key.Key_Z, CTRL)
    qtbot.waitUntil(lambda: marks(window)[0][1] == "C1 visible", timeout=3000)
    qtbot.keyClick(window, Qt.Key.Key_Z, CTRL)  # the rename dropped the redo of the delete: undo the adding
    qtbot.waitUntil(lambda: marks(window) == [(300, "C1 visible", "duct and artery both seen")], timeout=3000)
