"""The reviewer's labels as rows: what the case store's review tables hold, the change an edit makes, and
a snapshot with look-ups by frame. Editing is :mod:`engine.review_labels`; this module only describes.

Each row class names its table and columns and converts itself both ways, so one generic routine can
delete and insert any of them (and an edit's inverse is just its rows swapped).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from engine.chain import CvsState, TripletMention
from engine.store import FrameResult

__all__ = [
    "CHAIN_VERDICTS",
    "ITEM_VERDICTS",
    "KINDS",
    "ChainVerdict",
    "CvsRange",
    "ItemLabel",
    "ModelRef",
    "PhaseSegment",
    "ReviewChange",
    "ReviewError",
    "ReviewSet",
    "ReviewTruth",
    "Row",
    "text_sha",
    "triplet_label",
]

Box = tuple[float, float, float, float]
KINDS = ("instrument", "triplet")
ITEM_VERDICTS = ("accepted", "rejected", "edited", "added", "none")
KEPT_VERDICTS = ("accepted", "edited", "added")  # what the reviewer says is there
CHAIN_VERDICTS = ("accepted", "rejected")


class ReviewError(ValueError):
    """An edit that cannot be made (no segment there, a boundary out of range, an unknown label, labels
    changed meanwhile); one line, and the store is unchanged."""


@dataclass(frozen=True)
class ModelRef:
    """The analysis whose output a label corrects (the one on screen when it was made)."""

    model_id: str
    prompt_version: str
    task: str


# ------------------------------------------------------------------------------------- rows
def _box(text: str | None) -> Box | None:
    return None if text is None else tuple(float(v) for v in json.loads(text))  # type: ignore[return-value]


def _box_text(box: Sequence[float] | None) -> str | None:
    if box is None:
        return None
    if len(box) != 4:
        raise ReviewError(f"a box is [x1, y1, x2, y2], got {list(box)}")
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1):
        raise ReviewError(f"a box needs x2 > x1 and y2 > y1, got {[x1, y1, x2, y2]}")
    return json.dumps([round(v, 2) for v in (x1, y1, x2, y2)])


def _ref(row: sqlite3.Row | tuple, start: int) -> ModelRef | None:
    model_id, version, task = row[start : start + 3]
    return None if model_id is None else ModelRef(model_id, version, task)


def _ref_values(model: ModelRef | None) -> tuple[str | None, str | None, str | None]:
    return (model.model_id, model.prompt_version, model.task) if model else (None, None, None)


@dataclass(frozen=True)
class PhaseSegment:
    """The reviewer's phase over frames ``start`` .. ``end - 1``."""

    start: int
    end: int
    phase: str  # canonical Cholec80 name
    reviewer: str = ""
    created: float = 0.0
    model: ModelRef | None = None
    source: str = ""  # "viewer", "import cholec80 video01-phase.txt", ...
    id: int | None = None

    TABLE: ClassVar[str] = "review_phase"
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "id", "start_frame", "end_frame", "phase", "reviewer", "created", "model_id", "prompt_version", "task",
        "source",
    )  # fmt: skip

    def values(self) -> tuple:
        return (self.id, self.start, self.end, self.phase, self.reviewer, self.created, *_ref_values(self.model),
                self.source)  # fmt: skip

    @classmethod
    def from_row(cls, row: tuple) -> PhaseSegment:
        return cls(row[1], row[2], row[3], row[4], row[5], _ref(row, 6), row[9], row[0])


@dataclass(frozen=True)
class CvsRange:
    """The reviewer's state of one criterion (1..3) over frames ``start`` .. ``end - 1``; ``value``: a rater
    mean in 0..1 where one was imported (Endoscapes), kept so an export writes it back."""

    criterion: int
    start: int
    end: int
    state: CvsState
    value: float | None = None
    reviewer: str = ""
    created: float = 0.0
    model: ModelRef | None = None
    source: str = ""
    id: int | None = None

    TABLE: ClassVar[str] = "review_cvs"
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "id", "criterion", "start_frame", "end_frame", "state", "value", "reviewer", "created", "model_id",
        "prompt_version", "task", "source",
    )  # fmt: skip

    def values(self) -> tuple:
        return (self.id, self.criterion, self.start, self.end, self.state.value, self.value, self.reviewer,
                self.created, *_ref_values(self.model), self.source)  # fmt: skip

    @classmethod
    def from_row(cls, row: tuple) -> CvsRange:
        return cls(row[1], row[2], row[3], CvsState(row[4]), row[5], row[6], row[7], _ref(row, 8), row[11], row[0])


@dataclass(frozen=True)
class ItemLabel:
    """The reviewer's word on one instrument or triplet of one frame.

    ``verdict``: *accepted* / *rejected* (the model's item, ``model_label``/``model_box``, as it was),
    *edited* (the model's item is really ``label`` at ``box``), *added* (the model missed it), *none* (the
    reviewer states the frame has no item of this kind; written by imports). Labels are canonical: a Cholec80
    tool name for an instrument, ``instrument,verb,target`` (CholecT50 names) for a triplet, whose ``box`` is
    the instrument's and ``target_box`` the target's. Boxes are in pixels of the source frame.
    """

    frame: int
    kind: str
    verdict: str
    label: str
    box: Box | None = None
    target_box: Box | None = None
    model_label: str | None = None
    model_box: Box | None = None
    reviewer: str = ""
    created: float = 0.0
    model: ModelRef | None = None
    source: str = ""
    id: int | None = None

    TABLE: ClassVar[str] = "review_items"
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "id", "frame", "kind", "verdict", "label", "box", "target_box", "model_label", "model_box", "reviewer",
        "created", "model_id", "prompt_version", "task", "source",
    )  # fmt: skip

    @property
    def kept(self) -> bool:
        """The reviewer says this item is in the frame."""
        return self.verdict in KEPT_VERDICTS

    def values(self) -> tuple:
        return (self.id, self.frame, self.kind, self.verdict, self.label, _box_text(self.box),
                _box_text(self.target_box), self.model_label, _box_text(self.model_box), self.reviewer,
                self.created, *_ref_values(self.model), self.source)  # fmt: skip

    @classmethod
    def from_row(cls, row: tuple) -> ItemLabel:
        return cls(row[1], row[2], row[3], row[4], _box(row[5]), _box(row[6]), row[7], _box(row[8]), row[9],
                   row[10], _ref(row, 11), row[14], row[0])  # fmt: skip


@dataclass(frozen=True)
class ChainVerdict:
    """A whole stored chain (one frame, one question) accepted or rejected; ``text_sha`` ties the verdict to
    the text the reviewer read, so a re-asked frame's new answer is not taken as verified."""

    frame: int
    model: ModelRef
    verdict: str
    text_sha: str
    reviewer: str = ""
    created: float = 0.0
    id: int | None = None

    TABLE: ClassVar[str] = "review_chains"
    COLUMNS: ClassVar[tuple[str, ...]] = (
        "id", "frame", "model_id", "prompt_version", "task", "verdict", "text_sha", "reviewer", "created",
    )  # fmt: skip

    def values(self) -> tuple:
        return (self.id, self.frame, *_ref_values(self.model), self.verdict, self.text_sha, self.reviewer,
                self.created)  # fmt: skip

    @classmethod
    def from_row(cls, row: tuple) -> ChainVerdict:
        return cls(row[1], ModelRef(row[2], row[3], row[4]), row[5], row[6], row[7], row[8], row[0])

    def matches(self, result: FrameResult) -> bool:
        """The verdict is about this stored answer (same key and the same text)."""
        return (result.frame, result.model_id, result.prompt_version, result.task) == (
            self.frame,
            self.model.model_id,
            self.model.prompt_version,
            self.model.task,
        ) and text_sha(result.raw_text) == self.text_sha


Row = PhaseSegment | CvsRange | ItemLabel | ChainVerdict
ROW_TYPES: tuple[type, ...] = (PhaseSegment, CvsRange, ItemLabel, ChainVerdict)


def triplet_label(triplet: TripletMention) -> str:
    """A model's triplet as the reviewer's item label (``instrument,verb,target``; text where unknown)."""
    return ",".join(m.label or m.text for m in (triplet.instrument, triplet.verb, triplet.target))


def text_sha(text: str) -> str:
    """The hash a chain verdict keeps of the text it judged."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True)
class ReviewChange:
    """What one edit did: rows removed and rows added (with their ids). ``inverse()`` undoes it."""

    action: str
    removed: tuple[Row, ...] = ()
    added: tuple[Row, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.removed and not self.added

    def inverse(self) -> ReviewChange:
        return ReviewChange(f"undo {self.action}", self.added, self.removed)

    @property
    def frames(self) -> tuple[int, int] | None:
        """First and one-past-last frame the change touched (for a viewer's redraw); None when empty."""
        spans = [_span(r) for r in (*self.removed, *self.added)]
        return (min(s for s, _ in spans), max(e for _, e in spans)) if spans else None


def _span(row: Row) -> tuple[int, int]:
    if isinstance(row, PhaseSegment | CvsRange):
        return row.start, row.end
    return row.frame, row.frame + 1


# ------------------------------------------------------------------------------------- the snapshot
@dataclass(frozen=True)
class ReviewTruth:
    """The reviewer's truth at one frame; None where the reviewer has not said."""

    frame: int
    phase: str | None = None
    cvs: tuple[CvsState | None, CvsState | None, CvsState | None] = (None, None, None)
    instruments: tuple[ItemLabel, ...] | None = None  # kept items; () when the reviewer says none
    triplets: tuple[ItemLabel, ...] | None = None
    chains: tuple[ChainVerdict, ...] = ()

    @property
    def labelled(self) -> bool:
        return (
            self.phase is not None
            or any(c is not None for c in self.cvs)
            or self.instruments is not None
            or self.triplets is not None
            or bool(self.chains)
        )


@dataclass(frozen=True)
class ReviewSet:
    """All of a case's reviewer labels at one moment, with look-ups by frame."""

    segments: tuple[PhaseSegment, ...] = ()  # ordered by start, never overlapping
    cvs: tuple[tuple[CvsRange, ...], tuple[CvsRange, ...], tuple[CvsRange, ...]] = ((), (), ())
    items: tuple[ItemLabel, ...] = ()  # ordered by frame, then id
    chains: tuple[ChainVerdict, ...] = ()  # ordered by frame
    _starts: tuple[int, ...] = field(default=(), repr=False)
    _cvs_starts: tuple[tuple[int, ...], ...] = field(default=((), (), ()), repr=False)
    _item_frames: tuple[int, ...] = field(default=(), repr=False)
    _chain_frames: tuple[int, ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, segments, cvs, items, chains) -> ReviewSet:
        segments = tuple(sorted(segments, key=lambda s: s.start))
        per = tuple(tuple(sorted((r for r in cvs if r.criterion == c), key=lambda r: r.start)) for c in (1, 2, 3))
        items = tuple(sorted(items, key=lambda i: (i.frame, i.id or 0)))
        chains = tuple(sorted(chains, key=lambda c: (c.frame, c.id or 0)))
        return cls(
            segments,
            per,  # type: ignore[arg-type]
            items,
            chains,
            tuple(s.start for s in segments),
            tuple(tuple(r.start for r in rs) for rs in per),
            tuple(i.frame for i in items),
            tuple(c.frame for c in chains),
        )

    @property
    def empty(self) -> bool:
        return not (self.segments or any(self.cvs) or self.items or self.chains)

    def segment_at(self, frame: int) -> PhaseSegment | None:
        i = bisect.bisect_right(self._starts, frame) - 1
        return self.segments[i] if i >= 0 and self.segments[i].end > frame else None

    def phase_at(self, frame: int) -> str | None:
        seg = self.segment_at(frame)
        return seg.phase if seg is not None else None

    def cvs_range_at(self, criterion: int, frame: int) -> CvsRange | None:
        ranges, starts = self.cvs[criterion - 1], self._cvs_starts[criterion - 1]
        i = bisect.bisect_right(starts, frame) - 1
        return ranges[i] if i >= 0 and ranges[i].end > frame else None

    def cvs_at(self, frame: int) -> tuple[CvsState | None, CvsState | None, CvsState | None]:
        states = [r.state if (r := self.cvs_range_at(c, frame)) is not None else None for c in (1, 2, 3)]
        return tuple(states)  # type: ignore[return-value]

    def items_at(self, frame: int, kind: str | None = None) -> tuple[ItemLabel, ...]:
        lo, hi = bisect.bisect_left(self._item_frames, frame), bisect.bisect_right(self._item_frames, frame)
        return tuple(i for i in self.items[lo:hi] if kind is None or i.kind == kind)

    def chains_at(self, frame: int) -> tuple[ChainVerdict, ...]:
        lo, hi = bisect.bisect_left(self._chain_frames, frame), bisect.bisect_right(self._chain_frames, frame)
        return self.chains[lo:hi]

    def kept_items(self, frame: int, kind: str) -> tuple[ItemLabel, ...] | None:
        """What the reviewer says is in the frame (None: not reviewed; () when none is)."""
        mine = self.items_at(frame, kind)
        return tuple(i for i in mine if i.kept) if mine else None

    def truth_at(self, frame: int) -> ReviewTruth:
        """The reviewer's truth at ``frame``."""
        return ReviewTruth(
            frame,
            self.phase_at(frame),
            self.cvs_at(frame),
            self.kept_items(frame, "instrument"),
            self.kept_items(frame, "triplet"),
            self.chains_at(frame),
        )

    def labelled(self, frame: int) -> bool:
        return (
            self.segment_at(frame) is not None
            or any(self.cvs_range_at(c, frame) is not None for c in (1, 2, 3))
            or bool(self.items_at(frame))
            or bool(self.chains_at(frame))
        )

    def labelled_frames(self, frames: Iterable[int]) -> list[int]:
        """Those of ``frames`` on which the reviewer said anything."""
        return [f for f in frames if self.labelled(f)]

    def item_frames(self, kind: str | None = None) -> list[int]:
        return sorted({i.frame for i in self.items if kind is None or i.kind == kind})
