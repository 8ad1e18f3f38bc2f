"""Undo and redo of the reviewer's edits on the Edit menu's QUndoStack (shared with bookmark edits, so
Ctrl+Z undoes the last edit of either kind).

An edit runs first (the labels decide what it changes and give the new rows their ids); only a change
that did something is pushed, as one command holding its :class:`engine.review_rows.ReviewChange`.
Undo applies the change's inverse and redo the change itself, so the same rows with the same ids come
and go. When the store refuses (the labels changed meanwhile: another window, an import), the reviewer
is told in one message, nothing changes, and the command leaves the stack (it can never apply again).
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtGui import QUndoCommand, QUndoStack

from app.review_session import ReviewSession
from engine.review_labels import ReviewChange, ReviewError, ReviewLabels

__all__ = ["ReviewCommand", "ReviewUndo"]


class ReviewUndo:
    """Runs reviewer edits and keeps them undoable; ``warn(text)`` says why an edit did not happen."""

    def __init__(self, review: ReviewSession, stack: QUndoStack, warn: Callable[[str], None]):
        self.review, self.stack, self.warn = review, stack, warn

    def run(self, make: Callable[[], ReviewChange]) -> ReviewChange | None:
        """Run ``make`` (an edit through :class:`ReviewSession`) and push it; None when it was refused."""
        try:
            change = make()
        except ReviewError as exc:
            self.warn(str(exc))
            return None
        if not change.empty:
            self.stack.push(ReviewCommand(self, change))
        return change

    def edit(self, edit: Callable[[ReviewLabels], ReviewChange], kind: str = "phase") -> ReviewChange | None:
        """One edit of the labels (attributed to the analysis on screen for ``kind``), undoable."""
        return self.run(lambda: self.review.edit(edit, kind))


class ReviewCommand(QUndoCommand):
    """One reviewer edit: redo applies the change, undo its inverse (the first redo: already done)."""

    def __init__(self, owner: ReviewUndo, change: ReviewChange):
        super().__init__(_title(change.action))
        self.owner, self.change = owner, change
        self._done = True  # pushed after the edit ran

    def redo(self) -> None:
        if self._done:
            self._done = False
            return
        self._apply(self.change)

    def undo(self) -> None:
        self._apply(self.change.inverse())

    def _apply(self, change: ReviewChange) -> None:
        try:
            self.owner.review.apply(change)
        except ReviewError as exc:
            self.setObsolete(True)  # the stack drops it: it cannot apply to these labels
            self.owner.warn(f"{exc}. Nothing was changed.")


def _title(action: str) -> str:
    """The Edit menu's "Undo …" text: the edit in words."""
    return f"review: {action}"
