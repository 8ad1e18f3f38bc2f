"""Saving a case's blank areas as an edit the reviewer can take back: removing marked areas is confirmed
first (a removed area stops being blanked in every later export), and the change goes on the window's
undo stack (Edit ▸ Undo / Redo, with the bookmark edits) when the window has one."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PySide6.QtGui import QUndoCommand, QUndoStack
from PySide6.QtWidgets import QMessageBox, QWidget

from engine.store import BlankArea, CaseStore, StoreError

__all__ = ["save_blank_areas"]


class _SetBlankAreas(QUndoCommand):
    """Replace the case's blank areas; undo puts the previous ones back."""

    def __init__(self, store: Callable[[], CaseStore | None], old: list[BlankArea], new: list[BlankArea]):
        super().__init__(f"Blank areas ({len(old)} → {len(new)})")
        self._store, self._old, self._new = store, old, new
        self.error: StoreError | None = None

    def _write(self, areas: list[BlankArea]) -> None:
        store = self._store()
        if store is None:
            return
        try:
            store.set_blank_areas(areas)
        except StoreError as exc:
            self.error = exc

    def redo(self) -> None:
        self._write(self._new)

    def undo(self) -> None:
        self._write(self._old)


def save_blank_areas(
    parent: QWidget,
    store: Callable[[], CaseStore | None],
    old: Sequence[BlankArea],
    new: Sequence[BlankArea],
) -> bool:
    """Store ``new`` in place of ``old`` (asking first when marked areas would go); True when stored.
    Raises ``StoreError`` when the store refuses the write."""
    old, new = list(old), list(new)
    removed = [area for area in old if area not in new]
    if removed:
        n = len(removed)
        answer = QMessageBox.question(
            parent,
            "Remove blank areas?",
            f"{n} marked area{'s' if n != 1 else ''} will no longer be painted black in exports of this case. "
            "Remove them? (Edit ▸ Undo brings them back.)",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        if answer != QMessageBox.StandardButton.Yes:
            return False
    command = _SetBlankAreas(store, old, new)
    stack = parent.window().findChild(QUndoStack) if parent is not None else None
    if stack is not None:
        stack.push(command)  # runs redo()
    else:
        command.redo()
    if command.error is not None:
        if stack is not None:
            stack.undo()  # nothing was written: leave no step to undo
        raise command.error
    return True
