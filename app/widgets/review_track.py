"""The reviewer's rows on the timeline: a *Reviewed* phase track under the model's phase track and a
reviewer row under each of the model's CVS rows, edited with the mouse and the keyboard.

The rows are :class:`app.timeline_model.ExtraTrack`\\ s the timeline draws like its own; they are told
apart from the model's by a band in ``palette.REVIEWER`` along the top of every reviewer run, the
reviewer's own CVS colours (``palette.REVIEW_CVS_COLORS``) and a legend group of their own. Editing works
through an event filter on the timeline's viewport, installed after the timeline's own so it sees presses
first and passes on what it does not edit (a click still seeks, Shift+drag still selects):

* drag a reviewed phase boundary (the cursor turns to a resize arrow within a few pixels of it); the run
  follows the mouse and one edit is made on release;
* right click on the Reviewed track: relabel the segment, split it here, merge with the next or the
  previous one, delete it; on a gap, set a phase here (the model's segment under the mouse) or start
  from the model's phases; with a selection, set or clear the selection's phase;
* right click on a reviewer CVS row: the criterion's state here (or over the selection); a double click
  toggles it here (met ↔ not met);
* keys (``app.shortcuts``): E sets the phase from the playhead (or of the selection) from a menu whose
  entries are numbered (E, then 2: Calot triangle dissection); M moves the nearest reviewed boundary to
  the playhead; F1–F3 toggle C1–C3 at the playhead.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, QObject, QPoint, QPointF, Qt
from PySide6.QtGui import QAction, QMouseEvent
from PySide6.QtWidgets import QMenu

from app import palette
from app.review_session import ReviewSession, cvs_runs, phase_runs
from app.review_undo import ReviewUndo
from app.timeline_model import ExtraTrack, Runs, display_name
from app.widgets.timeline_view import TimelineView
from engine.chain import CvsState
from engine.ontology import load_ontology
from engine.review_labels import ReviewChange, ReviewLabels

__all__ = ["EDGE_PX", "REVIEW_CVS_KEYS", "REVIEW_PHASE_KEY", "ReviewTracks", "phase_names"]

REVIEW_PHASE_KEY = "reviewed"
REVIEW_CVS_KEYS = ("reviewed_c1", "reviewed_c2", "reviewed_c3")
EDGE_PX = 5  # how near (pixels) a reviewed boundary a press must be to drag it
_STATES = (CvsState.MET, CvsState.NOT_MET, CvsState.NOT_ASSESSABLE)


def phase_names() -> list[str]:
    """The phases a reviewer can choose, canonical, in the ontology's (clinical) order."""
    return load_ontology().phase.names


def legend_rows() -> tuple[tuple[str, str, str], ...]:
    """The reviewer's legend group: the band, then the reviewer's CVS colours."""
    rows = [(palette.REVIEWER, "reviewer's band", "a label the reviewer set (phases in the phase colours)")]
    rows += [
        (palette.REVIEW_CVS_COLORS[s.value], f"{s.value} (reviewer)", f"the reviewer says {s.value}") for s in _STATES
    ]
    return tuple(rows)


class ReviewTracks(QObject):
    """Draws and edits the reviewer's rows of ``timeline`` (see the module's docstring)."""

    def __init__(self, timeline: TimelineView, review: ReviewSession, undo: ReviewUndo):
        super().__init__(timeline)
        self.timeline, self.review, self.undo = timeline, review, undo
        self.menu: QMenu | None = None  # the last menu shown (right click or E)
        self._drag: tuple[int, int, int] | None = None  # (boundary frame, lowest, highest) while dragging
        self._drag_to: int | None = None
        self._right_press: QPointF | None = None
        timeline.viewport().installEventFilter(self)
        review.subscribe(lambda name, value: self.render() if name == "labels" else None)
        self.selection_action = QAction("Reviewed phase of the selection", timeline)
        self.selection_action.setMenu(self._phase_menu(self._set_selection_phase, clear=self._clear_selection_phase))
        self.selection_action.setEnabled(False)
        timeline.addAction(self.selection_action)  # listed in the timeline's own right-click menu
        timeline.selectionChanged.connect(lambda frames: self.selection_action.setEnabled(frames is not None))
        review.session.case.subscribe(
            lambda name, value: self.selection_action.setEnabled(value is not None) if name == "selection" else None
        )
        self.render()

    # ------------------------------------------------------------------ drawing
    def tracks(self, phase: Runs | None = None) -> list[ExtraTrack]:
        """The reviewer's rows (none without a case store); ``phase``: runs to show instead (a drag)."""
        if self.review.labels is None:
            return []
        group, legend = "Reviewer", legend_rows()
        rows = [
            ExtraTrack(
                REVIEW_PHASE_KEY, "Reviewed", "phase", phase if phase is not None else phase_runs(self.review.review),
                palette.PHASE_COLORS, 0.8, palette.REVIEWER, group, legend,
            )
        ]  # fmt: skip
        for k, key in enumerate(REVIEW_CVS_KEYS, 1):
            runs = cvs_runs(self.review.review, k)
            rows.append(
                ExtraTrack(key, f"Reviewed C{k}", f"cvs{k}", runs, palette.REVIEW_CVS_COLORS, 0.5, palette.REVIEWER)
            )
        return rows

    def render(self, phase: Runs | None = None) -> None:
        self.timeline.set_extra_tracks(self.tracks(phase))

    # ------------------------------------------------------------------ positions
    def _fps(self) -> float:
        return self.review.session.case.fps or 25.0

    def _x(self, frame: int) -> float:
        return float(self.timeline.viewport_point(frame / self._fps()).x())

    def edge_at(self, pos: QPointF) -> int | None:
        """The reviewed boundary within :data:`EDGE_PX` of ``pos`` on the Reviewed track, else None."""
        if self.timeline.track_at(pos) != REVIEW_PHASE_KEY:
            return None
        near = [(abs(self._x(e) - pos.x()), e) for e in self.review.boundaries()]
        best = min(near, default=None)
        return best[1] if best is not None and best[0] <= EDGE_PX else None

    def _limits(self, at: int) -> tuple[int, int]:
        """Where the boundary at ``at`` may go (as ``ReviewLabels.move_boundary`` allows)."""
        segs = self.review.review.segments
        left = next((g for g in segs if g.end == at), None)
        right = next((g for g in segs if g.start == at), None)
        before = max((g.end for g in segs if g.end <= at and g is not left), default=0)
        after = min(
            (g.start for g in segs if g.start >= at and g is not right), default=self.review.session.case.frame_count
        )
        lo = left.start + 1 if left is not None else before
        hi = right.end - 1 if right is not None else after
        return lo, hi

    def _moved_runs(self, at: int, to: int) -> Runs:
        runs = phase_runs(self.review.review)
        starts, ends = runs.starts.copy(), runs.ends.copy()
        starts[starts == at], ends[ends == at] = to, to
        return Runs(starts, ends, runs.labels)

    # ------------------------------------------------------------------ mouse
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        kind = event.type()
        if kind not in (
            QEvent.Type.MouseButtonPress,
            QEvent.Type.MouseButtonDblClick,
            QEvent.Type.MouseMove,
            QEvent.Type.MouseButtonRelease,
        ):
            return False
        assert isinstance(event, QMouseEvent)
        pos, track = event.position(), self.timeline.track_at(event.position())
        mine = track == REVIEW_PHASE_KEY or track in REVIEW_CVS_KEYS
        if kind == QEvent.Type.MouseMove:
            return self._mouse_move(pos)
        if kind == QEvent.Type.MouseButtonRelease:
            return self._release(event, track)
        if event.button() == Qt.MouseButton.RightButton and mine:
            self._right_press = pos
            return True
        if event.button() != Qt.MouseButton.LeftButton or not mine:
            return False
        if kind == QEvent.Type.MouseButtonDblClick and track in REVIEW_CVS_KEYS:
            frame = self.timeline.frame_at(pos)
            if frame is not None:
                self.toggle_cvs(REVIEW_CVS_KEYS.index(track) + 1, frame)
            return True
        if event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            return False  # a selection
        edge = self.edge_at(pos)
        if edge is None:
            return False  # a click seeks, as anywhere on the timeline
        lo, hi = self._limits(edge)
        self._drag, self._drag_to = (edge, lo, hi), edge
        return True

    def _mouse_move(self, pos: QPointF) -> bool:
        if self._drag is not None:
            frame = self.timeline.frame_at(pos)
            at, lo, hi = self._drag
            if frame is not None:
                edge = frame + 1 if abs(self._x(frame + 1) - pos.x()) < abs(self._x(frame) - pos.x()) else frame
                self._drag_to = min(max(edge, lo), hi)
                self.render(self._moved_runs(at, self._drag_to))
            return True
        if self._right_press is not None:
            return True
        if self.edge_at(pos) is not None:
            self.timeline.viewport().setCursor(Qt.CursorShape.SplitHCursor)
            return True
        return False

    def _release(self, event: QMouseEvent, track: str | None) -> bool:
        if self._drag is not None and event.button() == Qt.MouseButton.LeftButton:
            (at, _, _), to = self._drag, self._drag_to
            self._drag, self._drag_to = None, None
            if to is not None and to != at:
                self.edit(lambda labels: labels.move_boundary(at, to))
            self.render()
            return True
        if self._right_press is not None and event.button() == Qt.MouseButton.RightButton:
            self._right_press = None
            frame = self.timeline.frame_at(event.position())
            if frame is not None and track is not None:
                menu = self.segment_menu(frame) if track == REVIEW_PHASE_KEY else None
                if track in REVIEW_CVS_KEYS:
                    menu = self.cvs_menu(REVIEW_CVS_KEYS.index(track) + 1, frame)
                if menu is not None:
                    self.menu = menu
                    menu.popup(event.globalPosition().toPoint())
            return True
        return False

    # ------------------------------------------------------------------ menus
    def _phase_menu(
        self, choose: Callable[[str], None], title: str = "", clear: Callable[[], None] | None = None
    ) -> QMenu:
        """The phases, numbered 1..7 in the clinical order (a key picks one)."""
        menu = QMenu(title, self.timeline)
        for k, phase in enumerate(phase_names(), 1):
            menu.addAction(f"&{k} {display_name(phase)}", lambda phase=phase: choose(phase))
        if clear is not None:
            menu.addSeparator()
            menu.addAction("&Clear the reviewed phase", clear)
        return menu

    def segment_menu(self, frame: int) -> QMenu:
        """The Reviewed track's menu at ``frame``."""
        menu = QMenu(self.timeline)
        review, seg = self.review.review, self.review.review.segment_at(frame)
        if seg is not None and seg.id is not None:
            seg_id, name = seg.id, display_name(seg.phase)
            menu.addMenu(self._phase_menu(lambda p: self.edit(lambda labels: labels.relabel_segment(seg_id, p)),
                                          f"Relabel {name} as"))  # fmt: skip
            if frame > seg.start:
                menu.addAction(
                    f"Split here (frame {frame})", lambda: self.edit(lambda labels: labels.split_segment(frame))
                )
            if review.segment_at(seg.end) is not None and review.segment_at(seg.end).start == seg.end:  # type: ignore[union-attr]
                menu.addAction(
                    "Merge with the next segment", lambda: self.edit(lambda labels: labels.merge_at(seg.end))
                )
            before = review.segment_at(seg.start - 1) if seg.start > 0 else None
            if before is not None and before.end == seg.start:
                menu.addAction(
                    "Merge with the previous segment",
                    lambda: self.edit(lambda labels: labels.merge_at(seg.start, "right")),
                )
            menu.addAction(
                f"Delete this {name} segment", lambda: self.edit(lambda labels: labels.delete_segment(seg_id))
            )
        else:
            menu.addMenu(self._phase_menu(lambda p: self.set_phase_from(frame, p, None), "Set the phase here to"))
            if not review.segments and self.review.session.timelines is not None:
                menu.addAction("Start from the model's phases", lambda: self.undo.run(self.review.start_from_model))
        if self.review.session.case.selection is not None:
            menu.addSeparator()
            menu.addMenu(self._phase_menu(self._set_selection_phase, "Set the selection's phase to",
                                          clear=self._clear_selection_phase))  # fmt: skip
        return menu

    def cvs_menu(self, criterion: int, frame: int) -> QMenu:
        """A reviewer CVS row's menu: the criterion's state at ``frame`` or over the selection."""
        menu = QMenu(self.timeline)
        selection = self.review.session.case.selection
        first, end = (selection[0], selection[1] + 1) if selection is not None else (frame, frame + 1)
        where = f"frames {first}–{end - 1}" if selection is not None else f"frame {frame}"
        for state in _STATES:
            menu.addAction(
                f"C{criterion} {state.value} on {where}",
                lambda state=state: self.edit(lambda labels: labels.set_cvs(criterion, first, end, state), "cvs"),
            )
        menu.addAction(
            f"Clear C{criterion} on {where}",
            lambda: self.edit(lambda labels: labels.clear_cvs(criterion, first, end), "cvs"),
        )
        return menu

    def phase_menu_at_playhead(self) -> QMenu | None:
        """E: the phase menu for the playhead (or the selection), shown at the playhead on the Reviewed track."""
        if self.review.labels is None:
            return None
        here = self.review.session.here
        menu = self._phase_menu(lambda p: self.set_phase_from(here, p, self.review.session.case.selection),
                                "Reviewed phase from here")  # fmt: skip
        point = self.timeline.viewport_point(here / self._fps(), REVIEW_PHASE_KEY)
        self.menu = menu
        menu.popup(self.timeline.viewport().mapToGlobal(QPoint(point.x(), point.y())))
        return menu

    # ------------------------------------------------------------------ edits
    def edit(self, make: Callable[[ReviewLabels], ReviewChange], kind: str = "phase") -> ReviewChange | None:
        return self.undo.edit(make, kind)

    def set_phase_from(self, frame: int, phase: str, selection: tuple[int, int] | None) -> None:
        self.undo.run(lambda: self.review.set_phase_from(frame, phase, selection))

    def _set_selection_phase(self, phase: str) -> None:
        selection = self.review.session.case.selection
        if selection is not None:
            self.set_phase_from(selection[0], phase, selection)

    def _clear_selection_phase(self) -> None:
        selection = self.review.session.case.selection
        if selection is not None:
            first, last = selection
            self.edit(lambda labels: labels.clear_phase(first, last + 1))

    def toggle_cvs(self, criterion: int, frame: int) -> None:
        self.undo.run(lambda: self.review.toggle_cvs(criterion, frame))

    def move_boundary_here(self) -> None:
        self.undo.run(lambda: self.review.move_nearest_boundary(self.review.session.here))
