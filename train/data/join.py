"""The whole-frame view: one FRAME sample per frame holding everything the given samples know of it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from engine.tasks import Task
from train.data.sample import Box, Sample, TripletLabel, Truth


def frame_key(sample: Sample) -> tuple[str, int | None]:
    return (str(sample.frame.path.resolve()), sample.frame.index)


def merge_truths(
    truths: Iterable[Truth], vocabularies: Iterable[tuple[str, ...] | None] | None = None
) -> tuple[Truth, list[str]]:
    """Fields from the first truth that states them (so order the sources by authority); anatomy is the
    union. Returns the merged truth and the fields on which a later source disagreed. ``vocabularies``
    (one per truth, or None) names the tools a source can annotate at all (CholecT50 has no specimen bag),
    so tools outside it are not a disagreement."""
    merged = Truth()
    conflicts: list[str] = []
    truths = list(truths)
    vocabularies = list(vocabularies) if vocabularies is not None else [None] * len(truths)
    for truth, vocabulary in zip(truths, vocabularies, strict=True):
        updates = {}
        for name in ("phase", "tools", "triplets", "cvs"):
            mine, theirs = getattr(merged, name), getattr(truth, name)
            if theirs is None:
                continue
            if mine is None:
                updates[name] = theirs
                continue
            if name == "tools" and vocabulary is not None:
                mine = tuple(t for t in mine if t in vocabulary)
            if (set(mine) != set(theirs) if name == "tools" else mine != theirs) and name not in conflicts:
                conflicts.append(name)
        if truth.instruments and (
            not merged.instruments
            or sum(i.box is not None for i in truth.instruments) > sum(i.box is not None for i in merged.instruments)
        ):
            updates["instruments"] = truth.instruments
        if truth.anatomy:
            updates["anatomy"] = tuple(dict.fromkeys((*merged.anatomy, *truth.anatomy)))
        merged = replace(merged, **updates)
    return merged, conflicts


def frame_view(samples: Iterable[Sample], dataset: str | None = None) -> list[Sample]:
    """One ``Task.FRAME`` sample per distinct frame (video path + index, or image), in first-seen order.
    Case, split and dataset come from the first sample of the frame (``dataset`` overrides the last)."""
    groups: dict[tuple, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(frame_key(sample), []).append(sample)
    out = []
    for group in groups.values():
        first = group[0]
        truth, conflicts = merge_truths([s.truth for s in group], [s.extra.get("tool_vocabulary") for s in group])
        extra = {"sources": sorted({s.dataset for s in group}), "cases": sorted({s.case for s in group})}
        for s in group:
            for key in ("second", "vid", "fold"):
                if key in s.extra and key not in extra:
                    extra[key] = s.extra[key]
        if conflicts:
            extra["conflicts"] = conflicts
        out.append(
            Sample(dataset or first.dataset, first.case, first.frame, Task.FRAME, truth, split=first.split, extra=extra)
        )
    return out


def scale_truth(truth: Truth, sx: float, sy: float) -> Truth:
    """The truth with every box scaled (for a resized frame)."""

    def box(b: Box | None) -> Box | None:
        return None if b is None else (b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy)

    instruments = tuple(replace(i, box=box(i.box)) for i in truth.instruments)
    triplets = None
    if truth.triplets is not None:
        triplets = tuple(
            TripletLabel(t.instrument, t.verb, t.target, t.triplet_id, box(t.instrument_box), box(t.target_box))
            for t in truth.triplets
        )
    return replace(truth, instruments=instruments, triplets=triplets)
