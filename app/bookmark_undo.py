"""Undo and redo of bookmark edits: adding (with its note), renaming and deleting, on a QUndoStack
shown as Edit ▸ Undo / Redo (Ctrl+Z, Ctrl+Shift+Z / Ctrl+Y).

Edits go through :class:`app.session.CaseSession` as before. A deleted bookmark comes back under a
new id, so commands name bookmarks by the id they first had and look the current one up in a map
shared by the stack's commands. Notes are kept by frame in the case store and outlive a deleted
bookmark; undoing a delete brings the note back only if it is gone.
"""

from __future__ import annotations

from PySide6.QtGui import QKeySequence, QUndoCommand, QUndoStack
from PySide6.QtWidgets import QMenu, QMenuBar, QWidget

from app.session import BookmarkRow, CaseSession

__all__ = ["BookmarkUndo", "add_edit_menu"]


class BookmarkUndo:
    """The bookmark edits of the open case, undoable (the stack is cleared when the store changes)."""

    def __init__(self, session: CaseSession, parent: QWidget | None = None):
        self.session = session
        self.stack = QUndoStack(parent)
        self.ids: dict[int, int] = {}  # first id → current id (a bookmark brought back by undo)
        session.subscribe(lambda name, value: self.stack.clear() if name == "store" else None)

    def current(self, first_id: int) -> int:
        return self.ids.get(first_id, first_id)

    def row(self, first_id: int) -> BookmarkRow | None:
        wanted = self.current(first_id)
        return next((b for b in self.session.bookmarks if b.id == wanted), None)

    def add(self, frame: int, title: str, note: str = "") -> None:
        self.stack.push(_Add(self, frame, title, note))

    def rename(self, bookmark_id: int, title: str) -> None:
        row = self.row(bookmark_id)
        if row is not None:
            self.stack.push(_Rename(self, bookmark_id, row.title, title))

    def delete(self, bookmark_id: int) -> None:
        row = self.row(bookmark_id)
        if row is not None:
            self.stack.push(_Delete(self, row))


class _Add(QUndoCommand):
    def __init__(self, owner: BookmarkUndo, frame: int, title: str, note: str):
        super().__init__(f"Add bookmark “{title or frame}”")
        self.owner, self.frame, self.title, self.note = owner, frame, title, note
        self.first: int | None = None

    def redo(self) -> None:
        new = self.owner.session.add_bookmark(self.frame, self.title, self.note)  # StoreError: not pushed
        if new is not None:
            if self.first is None:
                self.first = new
            self.owner.ids[self.first] = new

    def undo(self) -> None:
        if self.first is not None:
            self.owner.session.delete_bookmark(self.owner.current(self.first))


class _Rename(QUndoCommand):
    def __init__(self, owner: BookmarkUndo, first: int, old: str, new: str):
        super().__init__(f"Rename bookmark “{old}”")
        self.owner, self.first, self.old, self.new = owner, first, old, new

    def redo(self) -> None:
        self.owner.session.rename_bookmark(self.owner.current(self.first), self.new)

    def undo(self) -> None:
        self.owner.session.rename_bookmark(self.owner.current(self.first), self.old)


class _Delete(QUndoCommand):
    def __init__(self, owner: BookmarkUndo, row: BookmarkRow):
        super().__init__(f"Delete bookmark “{row.title}”")
        self.owner, self.row = owner, row
        self.first = next((f for f, c in owner.ids.items() if c == row.id), row.id)

    def redo(self) -> None:
        self.owner.session.delete_bookmark(self.owner.current(self.first))

    def undo(self) -> None:
        new = self.owner.session.add_bookmark(self.row.frame, self.row.title, self.row.note)
        if new is not None:
            self.owner.ids[self.first] = new


def add_edit_menu(bar: QMenuBar, undo: BookmarkUndo, before: QMenu | None = None) -> QMenu:
    """Edit ▸ Undo / Redo of the bookmark edits, placed before ``before`` (the View menu)."""
    menu = QMenu("&Edit", bar)
    for action, keys in (
        (undo.stack.createUndoAction(menu, "&Undo"), QKeySequence.StandardKey.Undo),
        (undo.stack.createRedoAction(menu, "&Redo"), QKeySequence.StandardKey.Redo),
    ):
        action.setShortcuts(keys)
        menu.addAction(action)
        bar.window().addAction(action)  # the keys work with the menu closed
    bar.insertMenu(before.menuAction(), menu) if before is not None else bar.addMenu(menu)
    return menu
