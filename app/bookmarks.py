"""The Bookmarks dock: the open case's bookmarks listed, added, edited (title and note), deleted and jumped to.

The list follows :class:`app.session.CaseSession` (its ``bookmarks`` event); edits go through the
session (which writes the case store and reads the list back), never onto the widget directly;
with a :class:`app.bookmark_undo.BookmarkUndo`, through its undo stack (Edit ▸ Undo). Deleting asks
first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QUndoCommand
from PySide6.QtWidgets import (
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.bookmark_undo import BookmarkUndo
from app.dialogs import add_ok_cancel
from app.session import BookmarkRow, CaseSession
from engine.store import StoreError

__all__ = ["BookmarkDialog", "BookmarksPanel"]


_TITLE_ROLE = Qt.ItemDataRole.UserRole + 1


class _NoteEdit(QPlainTextEdit):
    """A multi-line note with a line edit's ``text``/``setText``."""

    def text(self) -> str:
        return self.toPlainText().strip()

    def setText(self, text: str) -> None:
        self.setPlainText(text)


class BookmarkDialog(QDialog):
    def __init__(self, parent: QWidget, where: str):
        super().__init__(parent)
        self.setWindowTitle(f"Bookmark — {where}")
        self.setMinimumWidth(480)
        form = QFormLayout(self)
        self.title = QLineEdit()
        self.title.setPlaceholderText("e.g. critical view achieved")
        self.note = _NoteEdit()
        self.note.setPlaceholderText("reviewer's note (optional): what you saw, what to discuss")
        self.note.setTabChangesFocus(True)
        self.note.setMinimumHeight(self.note.fontMetrics().lineSpacing() * 6)
        form.addRow("Title", self.title)
        form.addRow("Note", self.note)
        add_ok_cancel(self, form)


class BookmarksPanel(QWidget):
    """List + Add / Edit / Delete; activating a row calls ``seek(frame)``."""

    def __init__(
        self,
        session: CaseSession,
        seek: Callable[[int], Any],
        parent: QWidget | None = None,
        undo: BookmarkUndo | None = None,
    ):
        super().__init__(parent)
        self.session, self.undo = session, undo
        self.list = QListWidget()
        col = QVBoxLayout(self)
        col.setContentsMargins(4, 4, 4, 4)
        col.addWidget(self.list)
        row = QHBoxLayout()
        for text, slot in (("Add", self.add), ("Edit", self.edit), ("Delete", self.delete)):
            b = QPushButton(text)
            b.clicked.connect(slot)
            row.addWidget(b)
        col.addLayout(row)
        self.list.itemActivated.connect(lambda item: seek(item.data(Qt.ItemDataRole.UserRole)[1]))
        session.subscribe(lambda name, value: self._show(value) if name == "bookmarks" else None)

    def _show(self, rows: list[BookmarkRow]) -> None:
        self.list.clear()
        for mark in rows:
            when = self.session.timecode(mark.frame)
            text = f"{when}  {mark.title}"
            if mark.note:
                first = mark.note.splitlines()[0]
                more = "…" if len(first) > 60 or len(mark.note.splitlines()) > 1 else ""
                text += f"\n      {first[:60]}{more}"
            item = QListWidgetItem(text)
            item.setToolTip(f"{mark.title}\n{when} · frame {mark.frame}" + (f"\n\n{mark.note}" if mark.note else ""))
            item.setData(Qt.ItemDataRole.UserRole, (mark.id, mark.frame))
            item.setData(_TITLE_ROLE, mark.title)
            self.list.addItem(item)

    def add(self) -> None:
        frame = self.session.playhead.displayed
        if self.session.store is None or frame < 0:
            return
        dialog = BookmarkDialog(self, f"Frame {frame} ({self.session.timecode(frame)})")
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.save(frame, dialog.title.text(), dialog.note.text())

    def save(self, frame: int, title: str, note: str = "") -> None:
        try:
            if self.undo is not None:
                self.undo.add(frame, title, note)
            else:
                self.session.add_bookmark(frame, title, note)
        except StoreError as exc:
            QMessageBox.warning(self, "Bookmark not saved", str(exc))

    def edit(self) -> BookmarkDialog | None:
        """Edit the selected bookmark's title and note in the bookmark dialog (one undo step for both)."""
        item = self.list.currentItem()
        if item is None or self.session.store is None:
            return None
        mark_id, frame = item.data(Qt.ItemDataRole.UserRole)
        row = next((b for b in self.session.bookmarks if b.id == mark_id), None)
        dialog = BookmarkDialog(self, f"Frame {frame} ({self.session.timecode(frame)})")
        dialog.setWindowTitle(f"Edit bookmark — frame {frame}")
        dialog.title.setText(item.data(_TITLE_ROLE))
        dialog.note.setText(row.note if row is not None else "")
        dialog.accepted.connect(lambda: self._apply_edit(mark_id, frame, row, dialog))
        dialog.open()
        return dialog

    def _apply_edit(self, mark_id: int, frame: int, row: BookmarkRow | None, dialog: BookmarkDialog) -> None:
        title, note = dialog.title.text().strip(), dialog.note.text()
        old_title, old_note = (row.title, row.note) if row is not None else ("", "")
        stack = self.undo.stack if self.undo is not None else None
        try:
            if stack is not None:
                stack.beginMacro(f"Edit bookmark at frame {frame}")
            if title and title != old_title:
                (self.undo.rename if self.undo is not None else self.session.rename_bookmark)(mark_id, title)
            if note != old_note:
                command = _SetNote(self.session, frame, old_note, note)
                stack.push(command) if stack is not None else command.redo()
        except StoreError as exc:
            QMessageBox.warning(self, "Bookmark not saved", str(exc))
        finally:
            if stack is not None:
                stack.endMacro()

    def delete(self) -> None:
        item = self.list.currentItem()
        if item is None or self.session.store is None:
            return
        mark_id, frame = item.data(Qt.ItemDataRole.UserRole)
        answer = QMessageBox.question(
            self,
            "Delete bookmark",
            f"Delete the bookmark “{item.text().split('  ', 1)[-1]}” at {self.session.timecode(frame)}?"
            + (" Edit ▸ Undo brings it back." if self.undo is not None else ""),
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        if answer != QMessageBox.StandardButton.Yes:
            return
        (self.undo.delete if self.undo is not None else self.session.delete_bookmark)(mark_id)


class _SetNote(QUndoCommand):
    """Set the note shown for a bookmarked frame (its latest note: replaced, added, or removed when
    emptied); undo puts the previous text back."""

    def __init__(self, session: CaseSession, frame: int, old: str, new: str):
        super().__init__(f"Note at frame {frame}")
        self.session, self.frame, self.old, self.new = session, frame, old, new

    def _write(self, text: str) -> None:
        store = self.session.store
        if store is None:
            return
        mine = [n for n in store.notes() if n.frame == self.frame]
        if mine and text:
            store.update_note(mine[-1].id, text=text)
        elif mine:
            store.delete_note(mine[-1].id)
        elif text:
            store.add_note(text, frame=self.frame)
        self.session.load_bookmarks()

    def redo(self) -> None:
        self._write(self.new)

    def undo(self) -> None:
        self._write(self.old)
