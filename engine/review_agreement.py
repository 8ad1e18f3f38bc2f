"""How far the model agrees with the reviewer: computed from both, never stored.

The model's side is its merged per-frame record of each analysed frame (the timeline rows of
:class:`engine.frame_record.CaseAnalysis`, read from the store's covering index: no chain is parsed,
so this is cheap enough for a status bar or a library of cases). The reviewer's side is a
:class:`engine.review_labels.ReviewSet`. Only analysed frames the reviewer labelled count:

* phase accuracy: frames with a reviewer phase; a model that stated no phase there is wrong;
* CVS agreement, per criterion: frames where both stated the criterion;
* frames reviewed: analysed frames with any reviewer label.

A figure with no frame behind it is None, never 0 or 1.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.frame_record import CaseAnalysis, case_analyses
from engine.review_labels import ReviewLabels, ReviewSet
from engine.store import CaseStore, StoreError
from engine.timeline import TimelineRow

__all__ = [
    "Disagreement",
    "ReviewAgreement",
    "agreement",
    "case_agreement",
    "disagreements",
    "next_disagreement",
    "stored_agreement",
]

CRITERIA = ("C1", "C2", "C3")


@dataclass(frozen=True)
class ReviewAgreement:
    phase_accuracy: float | None
    cvs_agreement: tuple[float | None, float | None, float | None]
    frames_reviewed: int
    phase_frames: int = 0  # frames behind phase_accuracy
    cvs_frames: tuple[int, int, int] = (0, 0, 0)  # frames behind each criterion's agreement

    @classmethod
    def none(cls) -> ReviewAgreement:
        """Nothing reviewed."""
        return cls(None, (None, None, None), 0)

    def to_json(self) -> dict[str, Any]:
        """The report's ``review`` object."""

        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {
            "phase_accuracy": rounded(self.phase_accuracy),
            "cvs_agreement": {name: rounded(v) for name, v in zip(CRITERIA, self.cvs_agreement, strict=True)},
            "frames_reviewed": self.frames_reviewed,
        }

    def text(self) -> str:
        """One line for a status bar: "reviewed 120 frames · phase 92% · CVS 88/75/–%"."""
        if not self.frames_reviewed:
            return "not reviewed"

        def pct(value: float | None) -> str:
            return "–" if value is None else f"{100 * value:.0f}"

        cvs = "/".join(pct(v) for v in self.cvs_agreement)
        return f"reviewed {self.frames_reviewed} frames · phase {pct(self.phase_accuracy)}% · CVS {cvs}%"


def agreement(review: ReviewSet, rows: Sequence[TimelineRow]) -> ReviewAgreement:
    """The model's merged rows (one per analysed frame) against the reviewer's labels."""
    phase_n = phase_ok = reviewed = 0
    cvs_n, cvs_ok = [0, 0, 0], [0, 0, 0]
    for row in rows:
        truth = review.truth_at(row.frame)
        reviewed += truth.labelled
        if truth.phase is not None:
            phase_n += 1
            phase_ok += row.phase == truth.phase
        for k in range(3):
            mine, model = truth.cvs[k], row.cvs[k]
            if mine is not None and model is not None:
                cvs_n[k] += 1
                cvs_ok[k] += mine == model
    return ReviewAgreement(
        phase_ok / phase_n if phase_n else None,
        tuple(ok / n if n else None for ok, n in zip(cvs_ok, cvs_n, strict=True)),  # type: ignore[arg-type]
        reviewed,
        phase_n,
        tuple(cvs_n),  # type: ignore[arg-type]
    )


def case_agreement(store: CaseStore, analysis: CaseAnalysis | None = None) -> ReviewAgreement | None:
    """The agreement of ``analysis`` (else the most recent one) in a store; None when nothing is analysed.
    Two index reads and the review tables: for a library of cases or a status bar."""
    if analysis is None:
        analyses = case_analyses(store)
        if not analyses:
            return None
        analysis = analyses[0]
    return agreement(ReviewLabels(store).snapshot(), analysis.timeline_rows(store))


def stored_agreement(store_path: Path) -> ReviewAgreement | None:
    """The agreement of the case store at ``store_path`` (``engine.store.case_store_path(video)``), opened
    read-only; None when there is no store, no analysis, or a store from before reviewer labels."""
    if not Path(store_path).is_file():
        return None
    try:
        with CaseStore.open(store_path, readonly=True) as store:
            return case_agreement(store)
    except StoreError:
        return None


@dataclass(frozen=True)
class Disagreement:
    """A frame where the reviewer and the model differ, and on what: ``phase``, ``C1``..``C3``,
    ``instruments``, ``triplets`` (the reviewer rejected, edited or added one) or ``chain`` (rejected)."""

    frame: int
    fields: tuple[str, ...]


def disagreements(review: ReviewSet, rows: Sequence[TimelineRow]) -> list[Disagreement]:
    """Every frame where they differ, in frame order (for a key that jumps to the next one)."""
    by_frame: dict[int, list[str]] = {}
    for row in rows:
        truth = review.truth_at(row.frame)
        found = by_frame.setdefault(row.frame, [])
        if truth.phase is not None and truth.phase != row.phase:
            found.append("phase")
        found += [
            name
            for name, mine, model in zip(CRITERIA, truth.cvs, row.cvs, strict=True)
            if mine is not None and model is not None and mine != model
        ]
        if truth.instruments is not None and row.tools is not None and _labels(truth.instruments) != set(row.tools):
            found.append("instruments")
    for item in review.items:
        if item.verdict in ("rejected", "edited", "added"):
            kind = f"{item.kind}s"
            if kind not in by_frame.setdefault(item.frame, []):
                by_frame[item.frame].append(kind)
    for verdict in review.chains:
        if verdict.verdict == "rejected" and "chain" not in by_frame.setdefault(verdict.frame, []):
            by_frame[verdict.frame].append("chain")
    return [Disagreement(frame, tuple(fields)) for frame, fields in sorted(by_frame.items()) if fields]


def _labels(items) -> set[str]:
    return {i.label for i in items}


def next_disagreement(found: Sequence[Disagreement], frame: int, forward: bool = True) -> Disagreement | None:
    """The first disagreement after ``frame`` (before it when not ``forward``); None at the end."""
    frames = [d.frame for d in found]
    if forward:
        i = bisect.bisect_right(frames, frame)
        return found[i] if i < len(found) else None
    i = bisect.bisect_left(frames, frame) - 1
    return found[i] if i >= 0 else None
