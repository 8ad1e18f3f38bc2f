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

import itertools
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from engine.chain import CvsState
from engine.ontology import load_ontology
from engine.review_rows import (
    CHAIN_VERDICTS,
    KINDS,
    Box,
    ChainVerdict,
    CvsRange,
    ItemLabel,
    ModelRef,
    PhaseSegment,
    ReviewChange,
    ReviewError,
    ReviewSet,
    ReviewTruth,
    Row,
    text_sha,
    triplet_label,
)
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
    "triplet_label",
]


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

    def set_phases(self, runs: Iterable[tuple[int, int, str]], source: str | None = None) -> ReviewChange:
        """Several phase runs ``(start, end, phase)`` as one change: an import, or the model's timeline taken as
        the reviewer's starting point. Runs must not overlap; the reviewer's labels outside them stay."""
        stamp = self._stamp() | ({"source": source} if source is not None else {})
        new = sorted((PhaseSegment(a, b, _phase_name(p), **stamp) for a, b, p in runs), key=lambda g: g.start)
        for g in new:
            _range(g.start, g.end)
        if any(b.start < a.end for a, b in itertools.pairwise(new)):
            raise ReviewError("phase runs overlap")

        def plan(s: ReviewSet) -> tuple[list[Row], list[Row]]:
            rows: list[RangeRow] = list(s.segments)
            removed: list[Row] = []
            kept: list[RangeRow] = []
            for g in new:
                gone, rest = paint_ranges(rows, g.start, g.end, None, lambda r: False)
                for row in gone:
                    if row.id is None:
                        kept.remove(row)  # a remainder of an earlier run, cut again
                    else:
                        removed.append(row)
                rows = [r for r in rows if r not in gone] + rest
                kept += rest
            return removed, [*kept, *new]

        span = f"{new[0].start}..{new[-1].end - 1}" if new else "nothing"
        return self._edit(f"set {len(new)} phase segments on {span}", plan)

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
