"""The Bookmarks dock: the open case's bookmarks listed, added, renamed, deleted and jumped to.

The list follows :class:`app.session.CaseSession` (its ``bookmarks`` event); edits go through the
session (which writes the case store and reads the list back), never onto the widget directly;
with a :class:`app.bookmark_undo.BookmarkUndo`, through its undo stack (Edit ▸ Undo). Deleting asks
first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
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

    def edit(self) -> None:
        item = self.list.currentItem()
        if item is None or self.session.store is None:
            return
        mark_id, _ = item.data(Qt.ItemDataRole.UserRole)
        title, ok = QInputDialog.getText(self, "Edit bookmark", "Title:", text=item.data(_TITLE_ROLE))
        if ok:
            (self.undo.rename if self.undo is not None else self.session.rename_bookmark)(mark_id, title)

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
