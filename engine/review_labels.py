"""The reviewer's labels of a case: beside the model's results in the case store, never over them.

A reviewer who sees the model get a phase, a CVS criterion, an instrument or a triplet wrong records the
truth here: phase segments (frame ranges), CVS criteria over frame ranges (one frame for a toggle at the
playhead), per-frame verdicts on instruments and triplets (accepted, rejected, edited, added, each with its
box) and verdicts on whole chains. Every row says who and when, and which model output it corrects
(model id, prompt version and task of the analysis on screen; its frames).

Every edit is one transaction that returns a :class:`ReviewChange`: the rows it removed and the rows it
added, with their ids. ``labels.apply(change.inverse())`` undoes it exactly (the same rows, ids, names and
times come back) and ``labels.apply(change)`` redoes it, so a viewer's undo stack needs nothing else. An
inverse applied to labels that changed meanwhile (another window, another process) is refused with a
:class:`ReviewError` and changes nothing.

Reads go through a :class:`ReviewSet`, a snapshot of all labels loaded in four queries, with frame
look-ups by bisection (a viewer keeps one and takes a new one after each change).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from engine.chain import CvsState
from engine.ontology import load_ontology
from engine.store import CaseStore, FrameResult

__all__ = [
    "ChainVerdict",
    "CvsRange",
    "ItemLabel",
    "ModelRef",
    "PhaseSegment",
    "ReviewChange",
    "ReviewError",
    "ReviewLabels",
    "ReviewSet",
    "ReviewTruth",
    "canonical_item",
    "paint_ranges",
    "text_sha",
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


# ------------------------------------------------------------------------------------- labels
def canonical_item(kind: str, label: str) -> str:
    """The canonical spelling of an instrument (Cholec80 tool) or triplet (``instrument,verb,target``)."""
    onto = load_ontology()
    if kind == "instrument":
        tool = onto.tool.resolve(label)
        found = tool.name if tool is not None else _tool_of_instrument(label)
        if found is None:
            raise ReviewError(f"unknown instrument {label!r}")
        return found
    if kind == "triplet":
        parts = [p.strip() for p in label.replace(";", ",").split(",")]
        if len(parts) != 3:
            raise ReviewError(f"a triplet is 'instrument,verb,target', got {label!r}")
        names = []
        for vocab, part, what in zip((onto.instrument, onto.verb, onto.target), parts, KIND_PARTS, strict=True):
            found = vocab.resolve(part)
            if found is None:
                raise ReviewError(f"unknown triplet {what} {part!r} in {label!r}")
            names.append(found.name)
        return ",".join(names)
    raise ReviewError(f"unknown item kind {kind!r}; known: {', '.join(KINDS)}")


KIND_PARTS = ("instrument", "verb", "target")


def _tool_of_instrument(label: str) -> str | None:
    onto = load_ontology()
    instrument = onto.instrument.resolve(label)
    return onto.tool_for_instrument(instrument).name if instrument is not None else None


def _phase_name(phase: str) -> str:
    found = load_ontology().phase.resolve(phase)
    if found is None:
        raise ReviewError(f"unknown phase {phase!r}")
    return found.name


def _range(start: int, end: int) -> None:
    if not (0 <= start < end):
        raise ReviewError(f"a frame range needs 0 <= start < end, got {start}..{end}")


# ------------------------------------------------------------------------------------- editing
RangeRow = PhaseSegment | CvsRange


def paint_ranges(
    rows: Sequence[RangeRow], start: int, end: int, new: RangeRow | None, same: Callable[[RangeRow], bool]
) -> tuple[list[RangeRow], list[RangeRow]]:
    """Rows removed and added to give frames ``start..end-1`` to ``new`` (None: to nobody). The parts of
    overlapped rows outside the range keep their labels and authors; touching or overlapped rows equal to
    ``new`` are merged into it, so equal labels never lie side by side as two segments."""
    removed: list[RangeRow] = []
    added: list[RangeRow] = []
    lo, hi = start, end
    for row in rows:
        overlaps = row.start < end and row.end > start
        touches = row.end == start or row.start == end
        if new is not None and same(row) and (overlaps or touches):
            removed.append(row)
            lo, hi = min(lo, row.start), max(hi, row.end)
        elif overlaps:
            removed.append(row)
            if row.start < start:
                added.append(replace(row, end=start, id=None))
            if row.end > end:
                added.append(replace(row, start=end, id=None))
    if new is not None:
        if len(removed) == 1 and not added and same(removed[0]) and (removed[0].start, removed[0].end) == (lo, hi):
            return [], []  # already so
        added.append(replace(new, start=lo, end=hi))
    return removed, sorted(added, key=lambda r: r.start)


class ReviewLabels:
    """Reads and edits a case's reviewer labels; every edit is attributed to ``reviewer`` and to ``model``
    (the analysis on screen) and returns its :class:`ReviewChange`."""

    def __init__(self, store: CaseStore, reviewer: str = "", model: ModelRef | None = None, source: str = "viewer"):
        self.store = store
        self.reviewer = reviewer
        self.model = model
        self.source = source

    # ----------------------------------------------------------------- reading
    def snapshot(self) -> ReviewSet:
        """Every label now, in one read."""
        with self.store.reading("read the reviewer's labels") as conn:
            return self._snapshot(conn)

    @staticmethod
    def _snapshot(conn: sqlite3.Connection) -> ReviewSet:
        def rows(cls: type) -> list:
            sql = f"SELECT {', '.join(cls.COLUMNS)} FROM {cls.TABLE}"  # type: ignore[attr-defined]
            return [cls.from_row(r) for r in conn.execute(sql).fetchall()]  # type: ignore[attr-defined]

        return ReviewSet.of(rows(PhaseSegment), rows(CvsRange), rows(ItemLabel), rows(ChainVerdict))

    def log(self) -> list[tuple[float, str, str, dict[str, Any]]]:
        """(time, reviewer, action, detail) of every edit, oldest first."""
        with self.store.reading("read the review log") as conn:
            rows = conn.execute("SELECT created, reviewer, action, detail FROM review_log ORDER BY id").fetchall()
        return [(c, r, a, json.loads(d)) for c, r, a, d in rows]

    # ----------------------------------------------------------------- applying
    def apply(self, change: ReviewChange) -> ReviewChange:
        """Apply a change (an edit's inverse to undo it, the edit itself to redo it) in one transaction;
        refused with :class:`ReviewError`, changing nothing, when the labels differ from what it expects."""
        return self._edit(change.action, lambda _: (list(change.removed), list(change.added)))

    def _edit(self, action: str, plan: Callable[[ReviewSet], tuple[list[Row], list[Row]]]) -> ReviewChange:
        with self.store.transaction(action) as conn:
            removed, added = plan(self._snapshot(conn))
            if not removed and not added:
                return ReviewChange(action)
            for row in removed:
                cols = row.COLUMNS
                found = conn.execute(f"SELECT {', '.join(cols)} FROM {row.TABLE} WHERE id = ?", (row.id,)).fetchone()
                if found is None or tuple(found) != row.values():
                    raise ReviewError(f"cannot {action}: the labels changed meanwhile (reload the case)")
                conn.execute(f"DELETE FROM {row.TABLE} WHERE id = ?", (row.id,))
            written = []
            for row in added:
                cols = row.COLUMNS
                try:
                    cur = conn.execute(
                        f"INSERT INTO {row.TABLE} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                        row.values(),
                    )
                except sqlite3.IntegrityError as exc:
                    raise ReviewError(f"cannot {action}: the labels changed meanwhile ({exc})") from None
                written.append(replace(row, id=cur.lastrowid) if row.id is None else row)
            detail = {
                "removed": [[r.TABLE, r.id] for r in removed],
                "added": [[r.TABLE, r.id] for r in written],
            }
            conn.execute(
                "INSERT INTO review_log (created, reviewer, action, detail) VALUES (?, ?, ?, ?)",
                (time.time(), self.reviewer, action, json.dumps(detail)),
            )
        return ReviewChange(action, tuple(removed), tuple(written))

    def _stamp(self) -> dict[str, Any]:
        return {"reviewer": self.reviewer, "created": time.time(), "model": self.model, "source": self.source}

    # ----------------------------------------------------------------- phase
    def set_phase(self, start: int, end: int, phase: str) -> ReviewChange:
        """Frames ``start..end-1`` are ``phase`` (parts of segments outside the range keep their labels)."""
        _range(start, end)
        new = PhaseSegment(start, end, _phase_name(phase), **self._stamp())
        return self._edit(
            f"set phase {new.phase} on {start}..{end - 1}",
            lambda s: paint_ranges(s.segments, start, end, new, lambda r: r.phase == new.phase),  # type: ignore[union-attr]
        )

    def clear_phase(self, start: int, end: int) -> ReviewChange:
        """Frames ``start..end-1`` carry no reviewer phase."""
        _range(start, end)
        return self._edit(
            f"clear phase on {start}..{end - 1}", lambda s: paint_ranges(s.segments, start, end, None, lambda r: False)
        )

    def relabel_segment(self, segment_id: int, phase: str) -> ReviewChange:
        """The whole segment becomes ``phase`` (merging with touching segments of that phase)."""
        seg = self._segment(segment_id)
        return self.set_phase(seg.start, seg.end, phase)

    def delete_segment(self, segment_id: int) -> ReviewChange:
        seg = self._segment(segment_id)
        return self.clear_phase(seg.start, seg.end)

    def split_segment(self, frame: int, phase: str | None = None) -> ReviewChange:
        """Split the segment holding ``frame`` so that a new segment starts at ``frame`` (of ``phase``, else
        the same phase, to be relabelled)."""
        stamp = self._stamp()

        def plan(s: ReviewSet) -> tuple[list[Row], list[Row]]:
            seg = s.segment_at(frame)
            if seg is None or seg.start == frame:
                raise ReviewError(f"no segment to split at frame {frame}")
            right_phase = _phase_name(phase) if phase else seg.phase
            left = replace(seg, end=frame, id=None)
            right = PhaseSegment(frame, seg.end, right_phase, **stamp)
            return [seg], [left, right]

        return self._edit(f"split the phase segment at {frame}", plan)

    def merge_at(self, boundary: int, keep: str = "left") -> ReviewChange:
        """Merge the segments that meet at ``boundary`` into one of the ``keep`` (left or right) side's phase."""
        if keep not in ("left", "right"):
            raise ReviewError("keep is 'left' or 'right'")
        stamp = self._stamp()

        def plan(s: ReviewSet) -> tuple[list[Row], list[Row]]:
            left = s.segment_at(boundary - 1) if boundary > 0 else None
            right = s.segment_at(boundary)
            if left is None or right is None or left.end != boundary or right.start != boundary:
                raise ReviewError(f"no two phase segments meet at frame {boundary}")
            phase = left.phase if keep == "left" else right.phase
            merged = PhaseSegment(left.start, right.end, phase, **stamp)
            removed, added = paint_ranges(s.segments, left.start, right.end, merged, lambda r: r.phase == phase)
            return removed, added  # type: ignore[return-value]

        return self._edit(f"merge the phase segments at {boundary}", plan)

    def move_boundary(self, at: int, to: int) -> ReviewChange:
        """Drag the segment edge at frame ``at`` (a start or an end) to ``to``. A boundary between two touching
        segments moves for both and stays strictly inside them; a lone edge may grow into the gap beside it
        up to the next segment, and shrink its segment to one frame."""
        stamp = self._stamp()

        def plan(s: ReviewSet) -> tuple[list[Row], list[Row]]:
            left = next((g for g in s.segments if g.end == at), None)
            right = next((g for g in s.segments if g.start == at), None)
            if left is None and right is None:
                raise ReviewError(f"no phase segment edge at frame {at}")
            before = max((g.end for g in s.segments if g.end <= at), default=0)
            after = min((g.start for g in s.segments if g.start >= at), default=2**62)
            lo = left.start + 1 if left is not None else before
            hi = right.end - 1 if right is not None else after
            if not lo <= to <= hi:
                raise ReviewError(f"the edge at frame {at} can move within {lo}..{hi}, not to {to}")
            if to == at:
                return [], []
            removed = [g for g in (left, right) if g is not None]
            added = [replace(g, **stamp, id=None, end=to) for g in (left,) if g is not None]
            added += [replace(g, **stamp, id=None, start=to) for g in (right,) if g is not None]
            return removed, added  # type: ignore[return-value]

        return self._edit(f"move the phase boundary {at} to {to}", plan)

    def _segment(self, segment_id: int) -> PhaseSegment:
        seg = next((g for g in self.snapshot().segments if g.id == segment_id), None)
        if seg is None:
            raise ReviewError(f"no phase segment {segment_id}")
        return seg

    # ----------------------------------------------------------------- CVS
    def set_cvs(
        self, criterion: int, start: int, end: int, state: CvsState | str, value: float | None = None
    ) -> ReviewChange:
        """Criterion ``criterion`` (1..3) is ``state`` on frames ``start..end-1``."""
        _range(start, end)
        if criterion not in (1, 2, 3):
            raise ReviewError(f"CVS criteria are 1, 2 and 3, not {criterion}")
        try:
            state = CvsState(state)
        except ValueError:
            raise ReviewError(f"a CVS state is met, not met or not assessable, not {state!r}") from None
        new = CvsRange(criterion, start, end, state, value, **self._stamp())
        return self._edit(
            f"set C{criterion} {state.value} on {start}..{end - 1}",
            lambda s: paint_ranges(  # type: ignore[return-value]
                s.cvs[criterion - 1], start, end, new, lambda r: (r.state, r.value) == (state, value)
            ),
        )

    def clear_cvs(self, criterion: int, start: int, end: int) -> ReviewChange:
        _range(start, end)
        return self._edit(
            f"clear C{criterion} on {start}..{end - 1}",
            lambda s: paint_ranges(s.cvs[criterion - 1], start, end, None, lambda r: False),  # type: ignore[return-value]
        )

    def toggle_cvs(self, criterion: int, frame: int, model_state: CvsState | None = None) -> ReviewChange:
        """F1..F3 at the playhead: the criterion flips at ``frame`` (met ↔ not met) from the reviewer's state
        there, else from the model's (``model_state``); with neither, it becomes met."""
        current = self.snapshot().cvs_range_at(criterion, frame)
        state = current.state if current is not None else model_state
        return self.set_cvs(criterion, frame, frame + 1, CvsState.NOT_MET if state is CvsState.MET else CvsState.MET)

    # ----------------------------------------------------------------- instruments and triplets
    def _item(self, frame: int, kind: str, verdict: str, label: str, **kw: Any) -> ItemLabel:
        if frame < 0:
            raise ReviewError(f"frame must not be negative, got {frame}")
        row = ItemLabel(frame, kind, verdict, canonical_item(kind, label), **kw, **self._stamp())
        row.values()  # boxes checked here, before any write
        return row

    def _judge(self, row: ItemLabel, action: str) -> ReviewChange:
        """Write ``row``, replacing the earlier verdict on the same model item and any 'none' statement."""

        def plan(s: ReviewSet) -> tuple[list[Row], list[Row]]:
            old = [
                i
                for i in s.items_at(row.frame, row.kind)
                if i.verdict == "none"
                or (row.model_label is not None and (i.model_label, i.model_box) == (row.model_label, row.model_box))
            ]
            return old, [row]  # type: ignore[return-value]

        return self._edit(action, plan)

    def accept_item(self, frame: int, kind: str, label: str, box: Sequence[float] | None = None) -> ReviewChange:
        """The model's item (``label`` at ``box``, as the model gave it) is right."""
        name = canonical_item(kind, label)
        row = self._item(frame, kind, "accepted", name, box=_tuple(box), model_label=name, model_box=_tuple(box))
        return self._judge(row, f"accept {kind} {name} at {frame}")

    def reject_item(self, frame: int, kind: str, label: str, box: Sequence[float] | None = None) -> ReviewChange:
        """The model's item is not there."""
        name = canonical_item(kind, label)
        row = self._item(frame, kind, "rejected", name, box=_tuple(box), model_label=name, model_box=_tuple(box))
        return self._judge(row, f"reject {kind} {name} at {frame}")

    def edit_item(
        self,
        frame: int,
        kind: str,
        model_label: str,
        model_box: Sequence[float] | None,
        label: str,
        box: Sequence[float] | None,
        target_box: Sequence[float] | None = None,
    ) -> ReviewChange:
        """The model's item (``model_label`` at ``model_box``) is really ``label`` at ``box``."""
        original = canonical_item(kind, model_label)
        row = self._item(
            frame, kind, "edited", label, box=_tuple(box), target_box=_tuple(target_box), model_label=original,
            model_box=_tuple(model_box),
        )  # fmt: skip
        return self._judge(row, f"edit {kind} {original} at {frame}")

    def add_item(
        self,
        frame: int,
        kind: str,
        label: str,
        box: Sequence[float] | None = None,
        target_box: Sequence[float] | None = None,
    ) -> ReviewChange:
        """An item the model missed."""
        row = self._item(frame, kind, "added", label, box=_tuple(box), target_box=_tuple(target_box))
        return self._judge(row, f"add {kind} {row.label} at {frame}")

    def update_item(
        self, item_id: int, *, label: str | None = None, box: Sequence[float] | None = None
    ) -> ReviewChange:
        """Change the label or box of a reviewer's item (a box dragged on the canvas); a verdict on the model's
        item becomes *edited* when its label or box changes."""

        def plan(s: ReviewSet) -> tuple[list[Row], list[Row]]:
            old = next((i for i in s.items if i.id == item_id), None)
            if old is None:
                raise ReviewError(f"no reviewed item {item_id}")
            new = replace(
                old,
                label=canonical_item(old.kind, label) if label is not None else old.label,
                box=_tuple(box) if box is not None else old.box,
                id=None,
                **self._stamp(),
            )
            if old.verdict in ("accepted", "rejected") and (new.label, new.box) != (old.label, old.box):
                new = replace(new, verdict="edited")
            new.values()
            return [old], [new]

        return self._edit(f"change reviewed item {item_id}", plan)

    def remove_item(self, item_id: int) -> ReviewChange:
        """Withdraw a verdict (or an added item)."""

        def plan(s: ReviewSet) -> tuple[list[Row], list[Row]]:
            old = next((i for i in s.items if i.id == item_id), None)
            if old is None:
                raise ReviewError(f"no reviewed item {item_id}")
            return [old], []

        return self._edit(f"remove reviewed item {item_id}", plan)

    def set_frame_items(self, frame: int, kind: str, items: Iterable[ItemLabel]) -> ReviewChange:
        """Replace the frame's items of ``kind`` with ``items`` (an empty list: 'none there'); for imports."""
        rows = [self._item(frame, kind, i.verdict, i.label, box=i.box, target_box=i.target_box) for i in items]
        if not rows:
            if kind not in KINDS:
                raise ReviewError(f"unknown item kind {kind!r}; known: {', '.join(KINDS)}")
            rows = [ItemLabel(frame, kind, "none", "", **self._stamp())]

        def plan(s: ReviewSet) -> tuple[list[Row], list[Row]]:
            return list(s.items_at(frame, kind)), rows  # type: ignore[return-value]

        return self._edit(f"set the {kind}s of frame {frame}", plan)

    # ----------------------------------------------------------------- chains
    def judge_chain(self, result: FrameResult, verdict: str) -> ReviewChange:
        """Accept or reject a whole stored answer (replacing an earlier verdict on it)."""
        if verdict not in CHAIN_VERDICTS:
            raise ReviewError(f"a chain verdict is accepted or rejected, not {verdict!r}")
        model = ModelRef(result.model_id, result.prompt_version, result.task)
        row = ChainVerdict(result.frame, model, verdict, text_sha(result.raw_text), self.reviewer, time.time())

        def plan(s: ReviewSet) -> tuple[list[Row], list[Row]]:
            old = [c for c in s.chains_at(result.frame) if c.model == model]
            return old, [row]  # type: ignore[return-value]

        return self._edit(f"{verdict[:-2]} the {result.task} chain at {result.frame}", plan)

    def accept_chain(self, result: FrameResult) -> ReviewChange:
        return self.judge_chain(result, "accepted")

    def reject_chain(self, result: FrameResult) -> ReviewChange:
        return self.judge_chain(result, "rejected")

    def clear_chain_verdict(self, frame: int, model: ModelRef) -> ReviewChange:
        return self._edit(
            f"clear the chain verdict at {frame}",
            lambda s: ([c for c in s.chains_at(frame) if c.model == model], []),
        )

    # ----------------------------------------------------------------- several edits as one
    def replace_all(self, action: str, build: Callable[[ReviewSet], tuple[list[Row], list[Row]]]) -> ReviewChange:
        """Any set of removals and additions planned from the current labels, as one undoable change (imports)."""
        return self._edit(action, build)


def _tuple(box: Sequence[float] | None) -> Box | None:
    return None if box is None else tuple(float(v) for v in box)  # type: ignore[return-value]
