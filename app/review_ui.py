"""The reviewer's tools in the viewer, wired in one call so the main window only names them.

:func:`install_review` builds the Qt-free :class:`app.review_session.ReviewSession` for the window's case
session and around it: the timeline's reviewer rows (``app.widgets.review_track``), the box editor over
the video (``app.widgets.box_editor``), the chain verdicts and item fixes under the reasoning
(``app.widgets.chain_verdict``), the agreement in the status bar, a Review menu and the reviewer's keys
(``app.shortcuts``: E, M, F1–F3, D / Shift+D). Every edit is a command on the Edit menu's undo stack (the
bookmarks' stack: one history); an edit the labels refuse is explained in a message box and changes
nothing.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QLabel, QMainWindow, QMessageBox

from app.review_session import ReviewSession
from app.review_undo import ReviewUndo
from app.shortcuts import DEFAULTS, keymap
from app.widgets.box_editor import BoxEditor
from app.widgets.chain_verdict import ChainVerdictBox
from app.widgets.review_track import ReviewTracks

__all__ = ["REVIEW_ACTIONS", "ReviewUI", "install_review", "reviewer_name"]

REVIEW_ACTIONS = (
    "review_phase",
    "review_boundary",
    "review_c1",
    "review_c2",
    "review_c3",
    "next_disagreement",
    "prev_disagreement",
)


def reviewer_name(settings: Any) -> str:
    """Who labels: ``review/reviewer`` in the settings, else the login name."""
    name = settings.value("review/reviewer") if settings is not None else None
    if isinstance(name, str) and name.strip():
        return name.strip()
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


@dataclass
class ReviewUI:
    """What :func:`install_review` built (the window keeps it as ``window.review``)."""

    session: ReviewSession
    undo: ReviewUndo
    tracks: ReviewTracks
    boxes: BoxEditor
    verdicts: ChainVerdictBox
    status: QLabel


def install_review(window: Any) -> ReviewUI:
    """Add the reviewer's tools to a :class:`app.main_window.SurgviewWindow` (after its actions exist)."""
    review = ReviewSession(window.session, reviewer_name(window.settings))
    undo = ReviewUndo(review, window.bookmarks.undo.stack, lambda text: _warn(window, text))
    tracks = ReviewTracks(window.timeline, review, undo)
    boxes = BoxEditor(window.canvas, review, undo)
    verdicts = ChainVerdictBox(review, undo)
    verdicts.setVisible(False)
    window.panel.add_review_widget(verdicts)
    status = QLabel()
    status.setObjectName("reviewAgreement")
    window.statusBar().addPermanentWidget(status)
    ui = ReviewUI(review, undo, tracks, boxes, verdicts, status)
    review.subscribe(lambda name, value: _show_agreement(ui) if name in ("agreement", "labels") else None)
    library_timer = QTimer(window, singleShot=True, interval=2000)  # the library's agreement line, throttled
    library_timer.timeout.connect(window.library.refresh)
    review.subscribe(lambda name, value: library_timer.start() if name == "labels" and review.labels else None)
    _add_actions(window, ui)
    _show_agreement(ui)
    return ui


def _warn(window: QMainWindow, text: str) -> None:
    QMessageBox.warning(window, "Review not changed", text)


def _show_agreement(ui: ReviewUI) -> None:
    """The status bar's agreement line, with the frames behind each figure in its tooltip."""
    review = ui.session
    ui.status.setText(review.status_text())
    found = review.agreement
    if found is None:
        ui.status.setToolTip("The model's answers against the reviewer's labels (none to compare yet)")
        return
    criteria = ", ".join(f"C{k + 1} on {n} frames" for k, n in enumerate(found.cvs_frames))
    ui.status.setToolTip(
        f"Phase accuracy on {found.phase_frames} reviewed analysed frames; CVS agreement {criteria}; "
        f"{len(review.found)} frames disagree (D / Shift+D step through them)"
    )


def _jump(window: Any, ui: ReviewUI, forward: bool) -> None:
    found = ui.session.next_disagreement(window.session.here, forward)
    if found is None:
        window.statusBar().showMessage("no further disagreement" if forward else "no earlier disagreement", 4000)
        return
    window.seek(found.frame)
    window.statusBar().showMessage(f"frame {found.frame}: the reviewer differs on {', '.join(found.fields)}", 8000)


def _add_actions(window: Any, ui: ReviewUI) -> None:
    """The reviewer's keys (window-wide, as every shortcut) and a Review menu listing them."""
    keys = keymap(window.settings)
    described = {s.action: s.description for s in DEFAULTS}
    handlers = {
        "review_phase": ui.tracks.phase_menu_at_playhead,
        "review_boundary": ui.tracks.move_boundary_here,
        "review_c1": lambda: ui.tracks.toggle_cvs(1, window.session.here),
        "review_c2": lambda: ui.tracks.toggle_cvs(2, window.session.here),
        "review_c3": lambda: ui.tracks.toggle_cvs(3, window.session.here),
        "next_disagreement": lambda: _jump(window, ui, True),
        "prev_disagreement": lambda: _jump(window, ui, False),
    }
    menu = window.menuBar().addMenu("&Review")
    help_menu = next((a for a in window.menuBar().actions() if a.text() == "&Help"), None)
    if help_menu is not None:
        window.menuBar().insertMenu(help_menu, menu)
    for name in REVIEW_ACTIONS:
        action = QAction(described[name].removeprefix("Reviewer: "), window)
        action.setShortcuts([QKeySequence(k) for k in keys[name]])
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.triggered.connect(handlers[name])
        window.addAction(action)
        menu.addAction(action)
        window.actions_by_name[name] = action
    menu.addSeparator()
    menu.addAction("Start from the model's phases", lambda: ui.undo.run(ui.session.start_from_model))
