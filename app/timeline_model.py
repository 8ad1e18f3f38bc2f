"""The timeline's run maths, without Qt: per-track runs of equal values in video frames, the cells
an analysed frame stands for (the engine's one coverage rule), confidence levels and their colours.
``app.widgets.timeline_view`` only draws what this computes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from app import palette
from engine.ontology import load_ontology
from engine.phase_labels import Segment
from engine.timeline import coverage_cells

__all__ = [
    "CONFIDENCE_STEPS",
    "CVS_MEANINGS",
    "ExtraTrack",
    "Runs",
    "agreement_confidence",
    "confidence_color",
    "confidence_runs",
    "coverage_runs",
    "display_name",
    "doubtful_cells",
    "label_runs",
    "legend",
    "mark_doubtful",
]

CONFIDENCE_STEPS = 20  # confidences are merged into runs at this resolution
_CONFIDENCE_STEPS = CONFIDENCE_STEPS


@dataclass(frozen=True)
class Runs:
    """Runs of one track in video frames: [start, end) with a label, and optionally a bar level."""

    starts: np.ndarray
    ends: np.ndarray
    labels: list[str]
    levels: np.ndarray | None = None  # 0..1 bar height (confidence); None: full height

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def empty(cls) -> Runs:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), [])

    @classmethod
    def of_segments(cls, segments: Iterable[Segment]) -> Runs:
        segs = list(segments)
        starts = np.fromiter((s.start for s in segs), np.int64, len(segs))
        ends = np.fromiter((s.end for s in segs), np.int64, len(segs))
        return cls(starts, ends, [s.label for s in segs])

    def at(self, frame: int) -> int | None:
        """Index of the run covering ``frame``."""
        i = int(np.searchsorted(self.starts, frame, side="right")) - 1
        return i if i >= 0 and frame < self.ends[i] else None


def _run_bounds(codes: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge touching cells of equal code: (code, start, end) per run."""
    if codes.size == 0:
        return codes, starts, ends
    breaks = np.flatnonzero((codes[1:] != codes[:-1]) | (ends[:-1] != starts[1:])) + 1
    first = np.concatenate(([0], breaks))
    last = np.concatenate((breaks, [codes.size])) - 1
    return codes[first], starts[first], ends[last]


def _cells(frames: np.ndarray, max_gap: int, frame_count: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The frames each analysed frame stands for: the engine's one coverage rule, so the strips line up."""
    return coverage_cells(frames, max_gap, frame_count)


def doubtful_cells(
    frames: np.ndarray,
    all_met: Sequence[bool],
    established: Iterable[tuple[int, int]],
    max_gap: int,
    frame_count: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``[starts, ends)`` of the frames stood for (the coverage rule) by analysed frames whose answer
    says all three CVS criteria met outside every established episode (``(first, last)`` analysed
    frames): where the CVS rows draw "met" as doubtful."""
    frames = np.asarray(frames, dtype=np.int64)
    met = np.asarray(all_met, dtype=bool)
    if frames.size == 0 or not met.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    inside = np.zeros(frames.size, dtype=bool)
    for first, last in established:
        inside |= (frames >= first) & (frames <= last)
    starts, ends = _cells(frames, max_gap, frame_count)
    pick = met & ~inside
    return starts[pick], ends[pick]


def mark_doubtful(runs: Runs, starts: np.ndarray, ends: np.ndarray, met: str = "met") -> Runs:
    """``runs`` with the parts of its ``met`` runs inside the cells ``[starts, ends)`` relabelled
    "doubtful" (other labels untouched), runs still sorted and not overlapping."""
    if not len(runs) or not len(starts) or met not in runs.labels:
        return runs
    cells = sorted(zip(np.asarray(starts).tolist(), np.asarray(ends).tolist(), strict=True))
    out: list[tuple[int, int, str]] = []
    for a, b, label in zip(runs.starts.tolist(), runs.ends.tolist(), runs.labels, strict=True):
        if label != met:
            out.append((a, b, label))
            continue
        at = a
        for c0, c1 in cells:
            lo, hi = max(c0, at), min(c1, b)
            if lo >= hi:
                continue
            if lo > at:
                out.append((at, lo, label))
            out.append((lo, hi, "doubtful"))
            at = hi
        if at < b:
            out.append((at, b, label))
    merged: list[tuple[int, int, str]] = []
    for a, b, label in out:
        if merged and merged[-1][2] == label and merged[-1][1] == a:
            merged[-1] = (merged[-1][0], b, label)
        else:
            merged.append((a, b, label))
    return Runs(
        np.array([r[0] for r in merged], np.int64), np.array([r[1] for r in merged], np.int64), [r[2] for r in merged]
    )


def label_runs(labels: Sequence[str | None]) -> Runs:
    """Runs of equal consecutive per-frame labels (None: nothing drawn)."""
    names = sorted({label for label in labels if label is not None})
    if not names:
        return Runs.empty()
    index = {name: i for i, name in enumerate(names)}
    index[None] = -1  # type: ignore[index]
    codes = np.fromiter((index[label] for label in labels), np.int64, len(labels))
    frames = np.arange(codes.size, dtype=np.int64)
    c, s, e = _run_bounds(codes, frames, frames + 1)
    keep = c >= 0
    return Runs(s[keep], e[keep], [names[i] for i in c[keep].tolist()])


def confidence_runs(frames: np.ndarray, values: np.ndarray, max_gap: int, frame_count: int | None) -> Runs:
    if frames.size == 0:
        return Runs.empty()
    steps = np.rint(np.clip(values, 0.0, 1.0) * _CONFIDENCE_STEPS).astype(np.int64)
    c, s, e = _run_bounds(steps, *_cells(frames, max_gap, frame_count))
    levels = c / _CONFIDENCE_STEPS
    return Runs(s, e, [f"{v:g}" for v in levels.tolist()], levels)


def coverage_runs(frames: np.ndarray, max_gap: int, frame_count: int | None) -> Runs:
    if frames.size == 0:
        return Runs.empty()
    c, s, e = _run_bounds(np.zeros(frames.size, np.int64), *_cells(frames, max_gap, frame_count))
    return Runs(s, e, ["analysed"] * len(c))


def confidence_color(level: float) -> str:
    """Red (0) → amber (0.5) → green (1)."""
    lo, mid, hi = (np.array(palette.CONFIDENCE_RAMP[k]) for k in range(3))
    rgb = lo + (mid - lo) * level * 2 if level <= 0.5 else mid + (hi - mid) * (level - 0.5) * 2
    return "#{:02x}{:02x}{:02x}".format(*np.rint(rgb).astype(int).tolist())


# ------------------------------------------------------------------------------------------ extra tracks
LegendRow = tuple[str, str, str]  # (colour, name, meaning)


@dataclass(frozen=True)
class ExtraTrack:
    """A track another part of the viewer adds to the timeline (the reviewer's rows): drawn right after
    the track ``after``, its runs coloured by ``colours``; ``band``: a colour drawn along the top of every
    run (whose word it is, told apart from the model's rows of the same colours); ``legend``: the rows of
    its legend group, named ``legend_group``."""

    key: str
    title: str
    after: str
    runs: Runs
    colours: Mapping[str, str]
    height: float = 0.7
    band: str | None = None
    legend_group: str = ""
    legend: tuple[LegendRow, ...] = ()


# ------------------------------------------------------------------------------ names and legend
CVS_MEANINGS: dict[str, str] = {
    "met": "the model says the criterion is met",
    "not met": "the model says the criterion is not met",
    "not assessable": "the model could not judge it (view, smoke, blood)",
    "doubtful": "all three met, but not on a stable run: doubtful",
}
_STATUS_WEIGHT = {"complete": 1.0, "partial": 0.5, "malformed": 0.0}


def display_name(label: str | None) -> str:
    """A phase's or tool's name as people read it ("Calot Triangle Dissection"), else the label."""
    if not label:
        return "—"
    ontology = load_ontology()
    for vocabulary in ("phase", "tool"):
        found = ontology.vocabulary(vocabulary).resolve(label)
        if found is not None and found.name == label:
            return found.display
    return label


def legend(tools: Sequence[str] = ()) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """Every colour the timeline draws: ``(group, [(colour, name, meaning), ...])``."""
    phases = [(c, display_name(n), "surgical phase") for n, c in palette.PHASE_COLORS.items()]
    cvs = [(palette.CVS_COLORS[k], k, CVS_MEANINGS[k]) for k in ("met", "not met", "not assessable")]
    cvs.append((palette.CVS_DOUBTFUL, "doubtful", CVS_MEANINGS["doubtful"]))
    tool_rows = [(palette.TOOL_COLORS.get(t, palette.UNKNOWN), display_name(t), "instrument in view") for t in tools]
    conf = [
        (confidence_color(1.0), "agrees", "phase agrees with both analysed neighbours; chain complete"),
        (confidence_color(0.5), "mixed", "one neighbour disagrees, or the chain is partial"),
        (confidence_color(0.0), "disagrees", "phase differs from both neighbours; chain malformed"),
    ]
    other = [
        (palette.COVERAGE, "analysed", "the model answered a frame here"),
        (palette.BOOKMARK, "bookmark", "a reviewer's bookmark"),
        (palette.UNKNOWN, "unknown", "a name outside the ontology"),
    ]
    groups = [("Phase", phases), ("CVS", cvs), ("Instruments", tool_rows), ("Confidence", conf), ("Other", other)]
    return [(g, rows) for g, rows in groups if rows]


def agreement_confidence(
    frames: Sequence[int], phases: Sequence[str | None], statuses: Mapping[int, str]
) -> tuple[np.ndarray, list[str]]:
    """Per analysed frame: how far its answer can be trusted, 0..1, and why in words.

    Half of it is agreement of the frame's phase with its analysed neighbours' (the frames just
    before and after that have a phase), half its chain status (complete 1, partial 0.5,
    malformed 0). A frame without a phase or neighbours counts on its status alone."""
    n = len(frames)
    values = np.zeros(n, np.float64)
    details: list[str] = []
    stated = [i for i in range(n) if phases[i] is not None]
    position = {i: k for k, i in enumerate(stated)}
    for i in range(n):
        status = statuses.get(int(frames[i]), "partial")
        weight = _STATUS_WEIGHT.get(status, 0.0)
        k = position.get(i)
        near = [] if k is None else [stated[j] for j in (k - 1, k + 1) if 0 <= j < len(stated)]
        if near:
            agree = sum(phases[j] == phases[i] for j in near)
            values[i] = 0.5 * agree / len(near) + 0.5 * weight
            words = f"phase agrees with {agree} of {len(near)} analysed neighbours"
        else:
            values[i] = weight
            words = "no phase to compare" if k is None else "no analysed neighbours"
        details.append(f"{words} · chain {status}")
    return values, details
