"""The reviewer's labels of the open case, as a Qt-free model beside :class:`app.session.CaseSession`.

``ReviewSession`` keeps one :class:`engine.review_labels.ReviewLabels` for the session's case store and a
snapshot of the labels (:class:`engine.review_rows.ReviewSet`), taken again after every change, so views
read frames by bisection and never query the store while drawing. It also keeps how far the model agrees
with the reviewer and where they differ, recomputed when the labels or the model's timelines change (both
cheap: the merged rows are already in memory).

Edits go through :meth:`ReviewSession.edit` (a function of the labels returning its
:class:`~engine.review_rows.ReviewChange`) and :meth:`ReviewSession.apply` (undo/redo); both raise
:class:`~engine.review_rows.ReviewError` unchanged, so the caller (``app.review_undo``) decides how to say
it. Events, ``(name, value)`` as the session's: ``labels`` (the new ReviewSet), ``agreement``
(:class:`engine.review_agreement.ReviewAgreement` or None).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.session import CaseSession
from app.state import Listener
from app.timeline_model import Runs
from engine.chain import CvsState
from engine.review_agreement import (
    Disagreement,
    ReviewAgreement,
    agreement,
    disagreements,
    next_disagreement,
    stored_agreement,
)
from engine.review_labels import ModelRef, ReviewChange, ReviewError, ReviewLabels, ReviewSet
from engine.store import StoreError, case_store_path

__all__ = ["TASK_PREFERENCE", "ReviewSession", "cvs_runs", "library_agreement", "phase_runs"]

# Which of a profile's questions a reviewer's label of each kind corrects (the first the profile asks).
TASK_PREFERENCE: dict[str, tuple[str, ...]] = {
    "phase": ("phase", "phase_mcq", "frame_analysis"),
    "cvs": ("cvs", "frame_analysis"),
    "instrument": ("localisation", "tools", "frame_analysis"),
    "triplet": ("triplet", "frame_analysis"),
}


def phase_runs(review: ReviewSet) -> Runs:
    """The reviewer's phase segments as timeline runs."""
    segs = review.segments
    return Runs(
        np.array([s.start for s in segs], np.int64), np.array([s.end for s in segs], np.int64), [s.phase for s in segs]
    )


def cvs_runs(review: ReviewSet, criterion: int) -> Runs:
    """The reviewer's ranges of one CVS criterion (1..3) as timeline runs labelled by state."""
    ranges = review.cvs[criterion - 1]
    return Runs(
        np.array([r.start for r in ranges], np.int64),
        np.array([r.end for r in ranges], np.int64),
        [r.state.value for r in ranges],
    )


def library_agreement(video: Path) -> str:
    """The agreement line of a case for the library of cases ("" when it was never reviewed or has no
    store): the store opened read-only, its index and review tables read, nothing parsed or written."""
    try:
        found = stored_agreement(case_store_path(video))
    except (StoreError, OSError):
        return ""
    return found.text() if found is not None and found.frames_reviewed else ""


class ReviewSession:
    """The open case's reviewer labels, their agreement with the model and the disagreements."""

    def __init__(self, session: CaseSession, reviewer: str = ""):
        self.session = session
        self.reviewer = reviewer
        self.labels: ReviewLabels | None = None
        self.review = ReviewSet()
        self.agreement: ReviewAgreement | None = None
        self.found: list[Disagreement] = []
        self._listeners: list[Listener] = []
        session.subscribe(self._on_session)
        if session.store is not None:
            self._on_session("store", session.store)

    # ------------------------------------------------------------------ events
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, name: str, value: Any) -> None:
        for listener in list(self._listeners):
            listener(name, value)

    def _on_session(self, name: str, value: Any) -> None:
        if name == "store":
            self.labels = ReviewLabels(value, reviewer=self.reviewer, source="viewer") if value is not None else None
            self.reload()
        elif name == "timelines":
            self._measure()

    # ------------------------------------------------------------------ reading
    def reload(self) -> None:
        """Read the labels again (one snapshot) and recompute the agreement."""
        self.review = self.labels.snapshot() if self.labels is not None else ReviewSet()
        self._emit("labels", self.review)
        self._measure()

    def _measure(self) -> None:
        timelines = self.session.timelines
        rows = timelines.rows if timelines is not None else []
        # Nothing reviewed: nothing to compare (spared a walk over every row each time the timelines change).
        compare = bool(rows) and self.labels is not None and not self.review.empty
        self.agreement = agreement(self.review, rows) if compare else None
        self.found = disagreements(self.review, rows) if compare else []
        self._emit("agreement", self.agreement)

    def status_text(self) -> str:
        """The status bar's line: the agreement, or why there is none."""
        if self.labels is None:
            return ""
        if self.agreement is None:
            return "review: nothing analysed to compare" if not self.review.empty else "not reviewed"
        return self.agreement.text()

    def next_disagreement(self, frame: int, forward: bool = True) -> Disagreement | None:
        """The first frame after (before) ``frame`` where the model and the reviewer differ."""
        return next_disagreement(self.found, frame, forward)

    def model_ref(self, kind: str) -> ModelRef | None:
        """The analysis on screen whose ``kind`` (phase, cvs, instrument, triplet) output a label corrects."""
        session = self.session
        tasks = session.profile.tasks
        if not session.model_id or not tasks:
            return None
        task = next((t for t in TASK_PREFERENCE.get(kind, ()) if t in tasks), tasks[0])
        return ModelRef(session.model_id, session.prompt_version, task)

    def model_phase(self, frame: int) -> str | None:
        """The model's smoothed phase at ``frame`` (what its phase track shows)."""
        timelines = self.session.timelines
        if timelines is None:
            return None
        return next((s.label for s in timelines.phase if s.start <= frame < s.end), None)

    def model_cvs(self, criterion: int, frame: int) -> CvsState | None:
        """The model's state of a criterion at ``frame`` (its CVS track), for a toggle's starting point."""
        timelines = self.session.timelines
        if timelines is None:
            return None
        label = next((s.label for s in timelines.cvs[criterion - 1].segments if s.start <= frame < s.end), None)
        try:
            return CvsState(label) if label is not None else None
        except ValueError:
            return None

    # ------------------------------------------------------------------ editing
    def edit(self, make: Callable[[ReviewLabels], ReviewChange], kind: str = "phase") -> ReviewChange:
        """Run one edit on the labels, attributed to the analysis on screen; the snapshot follows."""
        labels = self._labels()
        labels.model = self.model_ref(kind)
        change = make(labels)
        if not change.empty:
            self.reload()
        return change

    def apply(self, change: ReviewChange) -> ReviewChange:
        """Apply a change (undo: its inverse; redo: itself); ReviewError when the labels changed meanwhile."""
        done = self._labels().apply(change)
        self.reload()
        return done

    def _labels(self) -> ReviewLabels:
        if self.labels is None:
            raise ReviewError("no case is open (or its store could not be opened): nothing to review")
        return self.labels

    # ------------------------------------------------------------------ phase edits by position
    def set_phase_from(self, frame: int, phase: str, selection: tuple[int, int] | None = None) -> ReviewChange:
        """The keyboard's phase edit: the selection (first, last) becomes ``phase``; without one, the
        phase starts at ``frame`` (the reviewer's segment there is split, or relabelled at its start);
        with no reviewer segment there, the model's phase segment under ``frame`` becomes ``phase``."""
        if selection is not None:
            first, last = selection
            return self.edit(lambda labels: labels.set_phase(first, last + 1, phase))
        seg = self.review.segment_at(frame)
        if seg is not None:
            if seg.start == frame:
                return self.edit(lambda labels: labels.relabel_segment(seg.id, phase))  # type: ignore[arg-type]
            return self.edit(lambda labels: labels.split_segment(frame, phase))
        start, end = self._model_span(frame)
        return self.edit(lambda labels: labels.set_phase(start, end, phase))

    def _model_span(self, frame: int) -> tuple[int, int]:
        """The model's phase segment under ``frame``, cut where the reviewer's segments begin; where the model
        has none, from ``frame`` to the reviewer's next segment (or the end of the case)."""
        timelines = self.session.timelines
        seg = next((s for s in timelines.phase if s.start <= frame < s.end), None) if timelines else None
        start, end = (seg.start, seg.end) if seg is not None else (frame, max(frame + 1, self.session.case.frame_count))
        for mine in self.review.segments:
            if mine.end <= frame:
                start = max(start, mine.end)
            elif mine.start > frame:
                end = min(end, mine.start)
        return start, end

    def boundaries(self) -> list[int]:
        """Every frame where a reviewer's segment starts or ends (the edges a drag can move)."""
        return sorted({s.start for s in self.review.segments} | {s.end for s in self.review.segments})

    def nearest_boundary(self, frame: int, within: int | None = None) -> int | None:
        """The reviewer's segment edge nearest ``frame`` (within ``within`` frames when given)."""
        edges = self.boundaries()
        if not edges:
            return None
        best = min(edges, key=lambda e: abs(e - frame))
        return best if within is None or abs(best - frame) <= within else None

    def move_nearest_boundary(self, frame: int) -> ReviewChange:
        """Move the reviewer's segment edge nearest ``frame`` to ``frame`` (the keyboard's boundary drag)."""
        at = self.nearest_boundary(frame)
        if at is None:
            raise ReviewError("no reviewed phase segment: set a phase first (E)")
        return self.edit(lambda labels: labels.move_boundary(at, frame))

    def start_from_model(self) -> ReviewChange:
        """The model's smoothed phase segments become the reviewer's (one change), to be corrected."""
        timelines = self.session.timelines
        if timelines is None or not timelines.phase:
            raise ReviewError("the model has no phase timeline yet")
        runs = [(s.start, s.end, s.label) for s in timelines.phase if s.end > s.start]
        return self.edit(lambda labels: labels.set_phases(runs, source="viewer: the model's phases"))

    def toggle_cvs(self, criterion: int, frame: int) -> ReviewChange:
        """F1..F3: flip a criterion at ``frame`` from the reviewer's state there, else the model's."""
        model = self.model_cvs(criterion, frame)
        return self.edit(lambda labels: labels.toggle_cvs(criterion, frame, model), kind="cvs")
