"""Timelines: per-frame phase, CVS and instrument answers turned into coherent tracks.

A model answers each analysed frame on its own, so its phase flickers. Phases are smoothed by
an HMM over the seven Cholec80 phases whose transition prior follows the clinical order, decoded
by Viterbi in log space; CVS criteria by a small sticky HMM each; instrument presence by closing
short gaps. Frames may be sparse and irregular (a sweep at a stride plus the frames a reviewer
looked at first): the hidden state evolves per video frame, so the prior between two analysed
frames is the one-frame transition matrix raised to the gap. Each analysed frame stands for the
frames up to half-way to its neighbours; analysed frames farther apart than ``max_gap_s`` leave
the frames between them uncovered rather than guessed. The raw per-frame answers stay available
beside the smoothed tracks.

Phase transition prior (``CHOLEC80_TRANSITIONS``): per video frame a phase is left with
probability ``1 - stay`` (``phase_self_transition`` per second of video); the table gives how
that probability goes to each successor. A row's weights may sum to less than 1: the rest
stays. Backward moves exist in real Cholec80 cases but are rare, hence their small weights::

    from \\ to              Prep Calot Clip GbDis Pack Clean Retr
    Preparation             .    1.00  .    .     .    .     .
    CalotTriangleDissection .    .     1.00 .     .    .     .
    ClippingCutting         .    0.05  .    0.95  .    .     .      back: dissection resumes after a clip
    GallbladderDissection   .    .     0.05 .     0.80 0.15  .      back: one more clip
    GallbladderPackaging    .    .     .    .     .    0.60  0.40
    CleaningCoagulation     .    .     .    .     0.20 .     0.80   cleaning before packaging
    GallbladderRetraction   .    .     .    .     .    0.20  .      back: cleaning after extraction
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache, lru_cache
from typing import Any

import numpy as np

from engine.chain import CvsState
from engine.ontology import load_ontology
from engine.phase_labels import Segment

__all__ = [
    "CHOLEC80_TRANSITIONS",
    "TRACK_CONFIGS",
    "CvsTrack",
    "LabelTrack",
    "LabelTrackConfig",
    "TimelineConfig",
    "TimelineRow",
    "Timelines",
    "build_action_track",
    "build_case_timelines",
    "build_label_track",
    "build_procedure_track",
    "build_timelines",
    "coverage_cells",
    "covered_frames",
    "first_all_met",
    "label_at",
    "label_transition_matrix",
    "phase_transition_matrix",
    "sweep_step",
    "viterbi",
]

CLIPPING = "ClippingCutting"  # the phase whose start is the first clip (the CVS statement's deadline)

CHOLEC80_TRANSITIONS: tuple[tuple[str, str, float], ...] = (
    ("Preparation", "CalotTriangleDissection", 1.0),
    ("CalotTriangleDissection", "ClippingCutting", 1.0),
    ("ClippingCutting", "GallbladderDissection", 0.95),
    ("ClippingCutting", "CalotTriangleDissection", 0.05),
    ("GallbladderDissection", "GallbladderPackaging", 0.80),
    ("GallbladderDissection", "CleaningCoagulation", 0.15),
    ("GallbladderDissection", "ClippingCutting", 0.05),
    ("GallbladderPackaging", "CleaningCoagulation", 0.60),
    ("GallbladderPackaging", "GallbladderRetraction", 0.40),
    ("CleaningCoagulation", "GallbladderRetraction", 0.80),
    ("CleaningCoagulation", "GallbladderPackaging", 0.20),
    ("GallbladderRetraction", "CleaningCoagulation", 0.20),
)

CVS_STATES: tuple[CvsState, ...] = (CvsState.MET, CvsState.NOT_MET, CvsState.NOT_ASSESSABLE)
CVS_CRITERIA: tuple[str, ...] = ("C1", "C2", "C3")
_CVS_CODE: dict[CvsState | None, int] = {state: i for i, state in enumerate(CVS_STATES)}
_CVS_STATE: dict[object, CvsState] = {s.value: s for s in CVS_STATES}  # StrEnum: "met" and MET are one key


@dataclass(frozen=True)
class TimelineConfig:
    """Smoothing strengths. Times are in seconds of video, so results do not depend on the stride."""

    phase_self_transition: float = 0.995  # P(same phase one second later): higher = fewer, longer segments
    phase_confusion: float = 0.25  # how often a frame's answer is wrong (its evidence is mixed with uniform)
    transitions: tuple[tuple[str, str, float], ...] = CHOLEC80_TRANSITIONS
    min_segment_s: float = 0.0  # phase segments shorter than this are absorbed by a neighbour (0: off)
    cvs_self_transition: float = 0.98  # P(same state of a criterion one second later)
    cvs_confusion: float = 0.2
    tool_min_gap_s: float = 3.0  # absences up to this long inside a presence run are closed
    tool_min_run_s: float = 0.0  # presence runs shorter than this are dropped (0: keep all)
    max_gap_s: float = 30.0  # analysed frames farther apart leave the frames between them uncovered

    def __post_init__(self) -> None:
        for name in ("phase_self_transition", "cvs_self_transition", "phase_confusion", "cvs_confusion"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be between 0 and 1 (exclusive)")
        for name in ("min_segment_s", "tool_min_gap_s", "tool_min_run_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.max_gap_s <= 0:
            raise ValueError("max_gap_s must be positive")


@dataclass(frozen=True, slots=True)
class TimelineRow:
    """What timelines need from one analysed frame (the case store reads these in bulk).

    ``None`` means the answer did not say (no Level 3, unparsed output, a Level 1 task): such a
    frame carries no evidence for that track, which is not the same as a tool being absent.
    """

    frame: int
    phase: str | None = None  # canonical Cholec80 phase name
    cvs: tuple[CvsState | None, CvsState | None, CvsState | None] = (None, None, None)
    tools: tuple[str, ...] | None = None  # canonical Cholec80 tool names seen; () = none seen
    phase_probs: tuple[float, ...] | None = None  # per phase in Cholec80 order, when a backend gives them
    action: str | None = None  # canonical action of the case's procedure (a suturing case), when stated
    step: str | None = None  # canonical surgical step (a gastric bypass), when stated


@dataclass(frozen=True)
class CvsTrack:
    """One CVS criterion over time: smoothed runs (label = the state's text) and the raw answers."""

    criterion: str
    segments: list[Segment]
    raw: list[CvsState | None]  # per analysed frame (Timelines.frames)


@dataclass(frozen=True, eq=False)
class Timelines:
    """Every track of a case, smoothed, with the raw per-frame answers kept beside them."""

    frames: np.ndarray  # analysed frames, ascending, unique
    rows: list[TimelineRow]  # the raw answers, one per analysed frame
    phase: list[Segment]  # smoothed phase segments (label: canonical phase name)
    phase_path: list[str | None]  # decoded phase per analysed frame (None: the frame had no phase)
    cvs: tuple[CvsTrack, CvsTrack, CvsTrack]
    tools: dict[str, list[Segment]]  # per tool of the procedure (Cholec80's by default), runs of presence
    step: int  # typical gap between analysed frames (the stride)
    fps: float
    frame_count: int | None = None
    config: TimelineConfig = field(default_factory=TimelineConfig)

    @property
    def raw_phase(self) -> list[str | None]:
        return [row.phase for row in self.rows]

    def raw_phase_segments(self) -> list[Segment]:
        """Runs of the model's own phase answers, unsmoothed (for a 'raw' strip and for comparison)."""
        names = _phase_names()
        codes = np.array([_phase_code(r.phase) for r in self.rows], dtype=np.int64)
        keep = codes >= 0
        return _runs(self.frames[keep], codes[keep], names, self._span())

    def phase_at(self, frame: int) -> str | None:
        """The smoothed phase at a video frame, or None where nothing covers it."""
        return _label_at(self.phase, frame)

    def first_all_met(self, *, raw: bool = False) -> int | None:
        return first_all_met(self, raw=raw)

    def first_clip_frame(self) -> int | None:
        """Where the smoothed phase track first enters clipping (the first clip, for CVS), or None."""
        return next((s.start for s in self.phase if s.label == CLIPPING), None)

    def _span(self) -> _Span:
        return _Span(self.step, self.frame_count, _max_gap_frames(self.config, self.fps))


@dataclass(frozen=True)
class _Span:
    step: int
    frame_count: int | None
    max_gap: int


# ------------------------------------------------------------------------------------- building
def build_timelines(
    rows: Iterable[TimelineRow],
    fps: float,
    frame_count: int | None = None,
    config: TimelineConfig | None = None,
    tools: Any = None,
) -> Timelines:
    """Smooth per-frame answers into phase segments, CVS tracks and instrument presence runs.
    ``tools``: the procedure's tool vocabulary (default Cholec80's): a robotic case has other instruments."""
    config = config or TimelineConfig()
    if not fps or fps <= 0 or not math.isfinite(fps):
        raise ValueError(f"fps must be positive, got {fps!r}")
    ordered = list(rows)
    frames = np.fromiter((r.frame for r in ordered), dtype=np.int64, count=len(ordered))
    limit = frame_count if frame_count is not None else np.iinfo(np.int64).max
    if frames.size and not ((np.diff(frames) > 0).all() and frames[0] >= 0 and frames[-1] < limit):
        by_frame = {int(row.frame): row for row in ordered if 0 <= row.frame < limit}  # the last answer wins
        ordered = [by_frame[f] for f in sorted(by_frame)]
        frames = np.fromiter(sorted(by_frame), dtype=np.int64, count=len(ordered))
    max_gap = _max_gap_frames(config, fps)
    step = _typical_step(frames, max_gap)
    span = _Span(step, frame_count, max_gap)

    phase, path = _phase_track(ordered, frames, fps, config, span)
    cvs_codes = _cvs_codes(ordered)
    cvs = tuple(_cvs_track(cvs_codes[:, c], frames, c, fps, config, span) for c in range(3))
    tool_tracks = _tool_tracks(ordered, frames, fps, config, span, load_ontology().tool if tools is None else tools)
    return Timelines(frames, ordered, phase, path, cvs, tool_tracks, step, float(fps), frame_count, config)  # type: ignore[arg-type]


def sweep_step(stride_s: float, fps: float) -> int:
    """Frames between a sweep's analysed frames (``engine.scheduler.sweep_frames``' grid: 0, step, 2 step...)."""
    return max(1, round(stride_s * fps))


def build_case_timelines(
    rows: Iterable[TimelineRow],
    fps: float,
    frame_count: int | None,
    step: int,
    config: TimelineConfig | None = None,
    tools: Any = None,
) -> Timelines:
    """A case's timelines as the viewer, the report and the CLI all show them: the smoothed tracks (phase,
    CVS, tools) come from the sweep's frames only (those on the ``step`` grid), so frames asked for on demand
    (the frame on screen, off the stride) never move a phase boundary, nor the first clip that the CVS
    statement is judged against; the raw rows, the raw phase strip and coverage keep every answer. Without a
    sweep frame (only frames asked for), every answer is smoothed."""
    rows = list(rows)
    full = build_timelines(rows, fps, frame_count, config, tools)
    sweep = [r for r in full.rows if r.frame % step == 0]
    if not sweep or len(sweep) == len(full.rows):
        return full
    smooth = build_timelines(sweep, fps, frame_count, config, tools)
    path = dict(zip(smooth.frames.tolist(), smooth.phase_path, strict=True))
    cvs = tuple(replace(full.cvs[i], segments=smooth.cvs[i].segments) for i in range(3))
    return replace(
        full,
        phase=smooth.phase,
        phase_path=[path.get(f) for f in full.frames.tolist()],
        cvs=cvs,  # type: ignore[arg-type]
        tools=smooth.tools,
        step=smooth.step,
    )


def first_all_met(tracks: Timelines | Sequence[CvsTrack], *, raw: bool = False) -> int | None:
    """The frame where all three CVS criteria were first met (smoothed tracks, or raw answers).

    Smoothed: the earliest frame covered by a 'met' run of every criterion. Raw: the earliest
    analysed frame whose own answer says all three are met.
    """
    if isinstance(tracks, Timelines):
        frames, cvs = tracks.frames, tracks.cvs
    else:
        frames, cvs = None, tuple(tracks)
    if len(cvs) != 3:
        raise ValueError("first_all_met needs the three CVS criteria")
    if raw:
        if frames is None:
            raise ValueError("raw=True needs the Timelines (for the analysed frames)")
        for i, states in enumerate(zip(*(t.raw for t in cvs), strict=True)):
            if all(s is CvsState.MET for s in states):
                return int(frames[i])
        return None
    met = [[s for s in t.segments if s.label == CvsState.MET.value] for t in cvs]
    if not all(met):
        return None
    for start in sorted({s.start for runs in met for s in runs}):
        if all(any(s.start <= start < s.end for s in runs) for runs in met):
            return start
    return None


def phase_transition_matrix(
    self_transition_per_frame: float, transitions: Sequence[tuple[str, str, float]] = CHOLEC80_TRANSITIONS
) -> np.ndarray:
    """One-frame transition matrix over the Cholec80 phases (rows: from, columns: to)."""
    k = len(_phase_names())
    weights = np.zeros((k, k))
    for src, dst, weight in transitions:
        a, b = _phase_code(src), _phase_code(dst)
        if a < 0 or b < 0 or a == b or not weight >= 0:
            raise ValueError(f"bad phase transition {src!r} -> {dst!r} ({weight})")
        weights[a, b] += weight
    totals = weights.sum(axis=1)
    if (totals > 1.0 + 1e-9).any():
        raise ValueError("the transition weights out of a phase must sum to at most 1")
    matrix = weights * (1.0 - self_transition_per_frame)
    matrix[np.diag_indices_from(matrix)] = 1.0 - matrix.sum(axis=1)
    return matrix


def _phase_track(
    rows: list[TimelineRow], frames: np.ndarray, fps: float, config: TimelineConfig, span: _Span
) -> tuple[list[Segment], list[str | None]]:
    names = _phase_names()
    k = len(names)
    codes = np.array([_phase_code(row.phase) if row.phase_probs is None else -2 for row in rows], dtype=np.int64)
    vectors = {i: _prob_vector(rows[i].phase_probs, k) for i in np.flatnonzero(codes == -2).tolist()}
    for i, vector in vectors.items():  # a malformed vector falls back to the label
        if vector is None:
            codes[i] = _phase_code(rows[i].phase)
    at = np.flatnonzero(codes != -1)
    observed = at.tolist()
    probs = np.zeros((at.size, k))
    labelled = codes[at] >= 0
    probs[np.flatnonzero(labelled), codes[at][labelled]] = 1.0
    for j, i in enumerate(observed):
        if codes[i] == -2:
            probs[j] = vectors[i]
    path: list[str | None] = [None] * len(rows)
    if not observed:
        return [], path
    stay = config.phase_self_transition ** (1.0 / fps)
    states = _decode(frames[at], probs, phase_transition_matrix(stay, config.transitions), config.phase_confusion)
    for i, s in zip(observed, states.tolist(), strict=True):
        path[i] = names[s]
    segs = _runs(frames[at], states, names, span)
    if config.min_segment_s > 0:
        segs = _absorb_short(segs, max(1, round(config.min_segment_s * fps)))
    return segs, path


def _cvs_codes(rows: list[TimelineRow]) -> np.ndarray:
    """(n, 3) state codes of C1..C3 per row (-1: not said)."""
    ids, triples = _intern(row.cvs for row in rows)
    table = np.full((len(triples) + 1, 3), -1, dtype=np.int64)
    for k, triple in enumerate(triples):
        for c, value in enumerate(tuple(triple)[:3]):
            table[k, c] = _CVS_CODE.get(_CVS_STATE.get(value), -1)
    return table[ids] if ids.size else table[:0]


def _cvs_track(
    codes: np.ndarray, frames: np.ndarray, criterion: int, fps: float, config: TimelineConfig, span: _Span
) -> CvsTrack:
    states: list[CvsState | None] = [*CVS_STATES, None]
    raw = [states[c] for c in codes.tolist()]  # code -1 picks None
    at = np.flatnonzero(codes >= 0)
    name = CVS_CRITERIA[criterion]
    if at.size == 0:
        return CvsTrack(name, [], raw)
    k = len(CVS_STATES)
    stay = config.cvs_self_transition ** (1.0 / fps)
    trans = np.full((k, k), (1.0 - stay) / (k - 1))
    np.fill_diagonal(trans, stay)
    probs = np.zeros((at.size, k))
    probs[np.arange(at.size), codes[at]] = 1.0
    states = _decode(frames[at], probs, trans, config.cvs_confusion)
    return CvsTrack(name, _runs(frames[at], states, [s.value for s in CVS_STATES], span), raw)


def _tool_tracks(
    rows: list[TimelineRow], frames: np.ndarray, fps: float, config: TimelineConfig, span: _Span, tools: Any
) -> dict[str, list[Segment]]:
    names = tools.names
    index = {name: i for i, name in enumerate(names)}
    ids, sets = _intern(row.tools for row in rows)
    table = np.zeros((len(sets), len(names)), dtype=np.int64)  # presence per distinct tool set
    for k, tool_set in enumerate(sets):
        for tool in tool_set or ():
            j = index.get(tool)
            if j is None:
                label = tools.resolve(tool)
                j = index.get(label.name) if label is not None else None
            if j is not None:
                table[k, j] = 1
    known = np.array([tool_set is not None for tool_set in sets], dtype=bool)[ids] if rows else np.zeros(0, bool)
    present = table[ids] if rows else np.zeros((0, len(names)), dtype=np.int64)
    at = np.flatnonzero(known)
    min_gap = round(config.tool_min_gap_s * fps)
    min_run = max(1, round(config.tool_min_run_s * fps))
    out: dict[str, list[Segment]] = {name: [] for name in names}
    if at.size == 0:
        return out
    cells = _cells(frames[at], span)
    for j, name in enumerate(names):
        codes, starts, ends = _run_bounds(present[at, j], *cells)
        starts, ends = starts[codes == 1], ends[codes == 1]
        if starts.size == 0:
            continue
        # Close absences of at most min_gap frames between presence runs.
        joined = starts[1:] - ends[:-1] <= min_gap
        starts, ends = starts[np.concatenate(([True], ~joined))], ends[np.concatenate((~joined, [True]))]
        keep = ends - starts >= min_run
        out[name] = [Segment(name, a, b) for a, b in zip(starts[keep].tolist(), ends[keep].tolist(), strict=True)]
    return out


# ------------------------------------------------------------------------------------- decoding
def _decode(frames: np.ndarray, probs: np.ndarray, trans_per_frame: np.ndarray, confusion: float) -> np.ndarray:
    """Most likely state per observation: uniform start, ``trans_per_frame`` raised to each gap."""
    k = probs.shape[1]
    with np.errstate(divide="ignore"):
        log_emit = np.log((1.0 - confusion) * probs + confusion / k)
        if len(frames) == 1:
            return np.array([int(np.argmax(log_emit[0]))])
        gaps, inverse = np.unique(np.diff(frames), return_inverse=True)
        log_trans = np.log(_matrix_powers(trans_per_frame, gaps))
    steps = log_trans[inverse] + log_emit[1:, None, :]
    return viterbi(log_emit[0] - math.log(k), steps)


def _matrix_powers(matrix: np.ndarray, exponents: np.ndarray) -> np.ndarray:
    """``matrix ** e`` for every exponent at once (binary powering, batched over exponents)."""
    k = matrix.shape[0]
    result = np.broadcast_to(np.eye(k), (len(exponents), k, k)).copy()
    remaining = np.asarray(exponents, dtype=np.int64).copy()
    power = matrix.copy()
    while True:
        odd = (remaining & 1).astype(bool)
        if odd.any():
            result[odd] = result[odd] @ power
        remaining >>= 1
        if not remaining.any():
            return result
        power = power @ power


def viterbi(first: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Best state path in log space. ``first``: (K,) log score of the first observation's states;
    ``steps``: (T, K, K) log transition from the previous state (row) to the next (column) plus
    the next observation's log emission. Returns T + 1 state indices.

    Long sequences are cut into blocks solved all at once for every start state (max-plus
    products vectorised across blocks), then chained: about √T Python steps instead of T.
    """
    t_steps, k = steps.shape[0], first.shape[0]
    if t_steps == 0:
        return np.array([int(np.argmax(first))])
    if t_steps < 128:
        return _viterbi_sequential(first, steps)
    block = max(8, int(math.sqrt(t_steps / 6)))
    n_blocks = -(-t_steps // block)
    padded = np.full((n_blocks * block, k, k), -np.inf)
    padded[:t_steps] = steps
    padded[t_steps:, np.arange(k), np.arange(k)] = 0.0  # padding steps keep the state
    # Blocks on the last (contiguous) axis: m[l, i, j, b] is step l of block b.
    m = np.ascontiguousarray(padded.reshape(n_blocks, block, k, k).transpose(1, 2, 3, 0))
    # best[l, s, j, b]: best score from state s at the start of block b to state j after its step l.
    best = np.empty((block, k, k, n_blocks))
    best[0] = m[0]
    scratch = np.empty((k, k, n_blocks))
    for step in range(1, block):
        prev, mat, out = best[step - 1], m[step], best[step]
        np.add(prev[:, 0, None, :], mat[None, 0, :, :], out=out)
        for i in range(1, k):
            np.add(prev[:, i, None, :], mat[None, i, :, :], out=scratch)
            np.maximum(out, scratch, out=out)
    # Chain the blocks: a Viterbi over the state at each block boundary.
    ends = np.ascontiguousarray(best[-1].transpose(2, 0, 1))
    back = np.empty((n_blocks, k), dtype=np.int64)
    cols = np.arange(k)
    delta = first
    for b in range(n_blocks):
        scores = delta[:, None] + ends[b]
        back[b] = scores.argmax(axis=0)
        delta = scores[back[b], cols]
    starts = np.empty(n_blocks, dtype=np.int64)
    path = np.empty((block, n_blocks), dtype=np.int64)
    state = int(np.argmax(delta))
    for b in range(n_blocks - 1, -1, -1):
        path[-1, b] = state
        state = int(back[b, state])
        starts[b] = state
    # Inside every block at once: walk back from its final state.
    blocks = np.arange(n_blocks)
    for step in range(block - 1, 0, -1):
        scores = best[step - 1][starts, :, blocks] + m[step][:, path[step], blocks].T
        path[step - 1] = scores.argmax(axis=1)
    return np.concatenate(([starts[0]], path.T.reshape(-1)[:t_steps]))


def _viterbi_sequential(first: np.ndarray, steps: np.ndarray) -> np.ndarray:
    k = first.shape[0]
    cols = np.arange(k)
    back = np.empty((steps.shape[0], k), dtype=np.int64)
    delta = first
    for t in range(steps.shape[0]):
        scores = delta[:, None] + steps[t]
        back[t] = scores.argmax(axis=0)
        delta = scores[back[t], cols]
    path = np.empty(steps.shape[0] + 1, dtype=np.int64)
    path[-1] = int(np.argmax(delta))
    for t in range(steps.shape[0] - 1, -1, -1):
        path[t] = back[t, path[t + 1]]
    return path


# ------------------------------------------------------------------------------------- segments
def _runs(frames: np.ndarray, codes: np.ndarray, names: Sequence[str], span: _Span) -> list[Segment]:
    """Runs of equal codes over the frames' cells, as segments in video frames."""
    if frames.size == 0:
        return []
    c, s, e = _run_bounds(codes, *_cells(frames, span))
    return [Segment(names[i], a, b) for i, a, b in zip(c.tolist(), s.tolist(), e.tolist(), strict=True)]


def _run_bounds(codes: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, ...]:
    """Code, first frame and end of every run of equal codes over touching cells."""
    breaks = np.flatnonzero((codes[1:] != codes[:-1]) | (ends[:-1] != starts[1:])) + 1
    first = np.concatenate(([0], breaks))
    last = np.concatenate((breaks, [codes.size])) - 1
    return codes[first], starts[first], ends[last]


def _cells(frames: np.ndarray, span: _Span) -> tuple[np.ndarray, np.ndarray]:
    return coverage_cells(frames, span.max_gap, span.frame_count, span.step)


def coverage_cells(
    frames: np.ndarray, max_gap: int, frame_count: int | None = None, step: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """**The coverage rule** (timelines, the viewer's strips and the report share it): the frames
    each analysed frame stands for, ``[starts[i], ends[i])``: half-way to its neighbours when they
    are at most ``max_gap`` apart, else one stride (``step``; by default the typical gap between
    near frames), the last cell ending at ``frame_count`` at the latest (never empty).
    ``frames``: sorted analysed frame indices, at least one."""
    frames = np.asarray(frames, dtype=np.int64)
    if step is None:
        step = _typical_step(frames, max_gap)
    n = frames.size
    starts = frames.copy()
    ends = frames + step
    if frame_count is not None:
        ends[-1] = max(frames[-1] + 1, min(ends[-1], frame_count))
    if n > 1:
        near = np.diff(frames) <= max_gap
        middle = (frames[:-1] + frames[1:] + 1) // 2
        starts[1:] = np.where(near, middle, frames[1:])
        ends[:-1] = np.where(near, middle, np.minimum(frames[:-1] + step, frames[1:]))
    return starts, ends


def covered_frames(frames: np.ndarray, max_gap: int, frame_count: int, step: int | None = None) -> int:
    """How many frames the analysis speaks for, by :func:`coverage_cells`."""
    if len(frames) == 0:
        return 0
    starts, ends = coverage_cells(frames, max_gap, frame_count, step)
    return int(min(frame_count, int((ends - starts).sum())))


def _absorb_short(segs: list[Segment], min_len: int) -> list[Segment]:
    """Give segments shorter than ``min_len`` to the longer touching neighbour, shortest first."""
    segs = list(segs)
    while True:
        short = [i for i, s in enumerate(segs) if s.length < min_len and _neighbours(segs, i)]
        if not short:
            return segs
        i = min(short, key=lambda j: segs[j].length)
        j = max(_neighbours(segs, i), key=lambda n: segs[n].length)
        a, b = sorted((i, j))
        merged = Segment(segs[j].label, segs[a].start, segs[b].end)
        segs[a : b + 1] = [merged]
        # Neighbours that now carry the same label become one segment.
        for n in (a - 1, a):
            if 0 <= n < len(segs) - 1 and segs[n].label == segs[n + 1].label and segs[n].end == segs[n + 1].start:
                segs[n : n + 2] = [Segment(segs[n].label, segs[n].start, segs[n + 1].end)]


def _neighbours(segs: list[Segment], i: int) -> list[int]:
    out = []
    if i > 0 and segs[i - 1].end == segs[i].start:
        out.append(i - 1)
    if i + 1 < len(segs) and segs[i].end == segs[i + 1].start:
        out.append(i + 1)
    return out


def label_at(segments: list[Segment], frame: int) -> str | None:
    """The label of the segment covering video frame ``frame`` (sorted, non-overlapping segments), or None."""
    return _label_at(segments, frame)


def _label_at(segs: list[Segment], frame: int) -> str | None:
    i = bisect.bisect_right([s.start for s in segs], frame) - 1
    return segs[i].label if i >= 0 and frame < segs[i].end else None


# ------------------------------------------------------------------------------------- helpers
def _intern(values: Iterable[Hashable]) -> tuple[np.ndarray, list[Any]]:
    """Small ids for values that repeat (rows share a few tool sets and CVS triples): per-row
    work becomes one dict lookup, the rest is done once per distinct value."""
    seen: dict[Hashable, int] = {}
    ids = [seen.setdefault(v, len(seen)) for v in values]
    return np.array(ids, dtype=np.int64), list(seen)


def _typical_step(frames: np.ndarray, max_gap: int) -> int:
    gaps = np.diff(frames)
    gaps = gaps[gaps <= max_gap]
    return int(np.median(gaps)) if gaps.size else 1


def _max_gap_frames(config: TimelineConfig, fps: float) -> int:
    return max(1, round(config.max_gap_s * fps))


def _prob_vector(probs: Sequence[float] | None, k: int) -> np.ndarray | None:
    if probs is None or len(probs) != k:
        return None
    vector = np.asarray(probs, dtype=np.float64)
    if not np.isfinite(vector).all() or (vector < 0).any() or vector.sum() <= 0:
        return None
    return vector / vector.sum()


@cache
def _phase_names() -> tuple[str, ...]:
    return tuple(label.name for label in sorted(load_ontology().phase.labels, key=lambda label: label.id))


@lru_cache(maxsize=1024)
def _phase_code(name: str | None) -> int:
    """Cholec80 index of a phase named in any spelling the ontology knows; -1 if none."""
    label = load_ontology().phase.resolve(name) if isinstance(name, str) else None
    return _phase_names().index(label.name) if label is not None else -1


# ------------------------------------------------------------------------------------- label tracks
@dataclass(frozen=True)
class LabelTrackConfig:
    """Smoothing of one label per analysed frame (an action, a bypass phase or step). Suturing
    actions last seconds, not the minutes of a phase: the default keeps a state ~3 s on average."""

    self_transition: float = 0.7  # P(same label one second later)
    confusion: float = 0.25  # how often a frame's answer is wrong
    max_gap_s: float = 30.0  # analysed frames farther apart leave the frames between them uncovered
    min_segment_s: float = 0.0  # segments shorter than this are absorbed by a neighbour (0: off)

    def __post_init__(self) -> None:
        for name in ("self_transition", "confusion"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be between 0 and 1 (exclusive)")
        if self.max_gap_s <= 0 or self.min_segment_s < 0:
            raise ValueError("max_gap_s must be positive and min_segment_s not negative")


@dataclass(frozen=True, eq=False)
class LabelTrack:
    """One smoothed label track (e.g. the suturing action) with the raw answers kept beside it."""

    role: str  # the vocabulary: "action", "phase", "step"
    frames: np.ndarray  # analysed frames, ascending, unique
    raw: list[str | None]  # canonical label per analysed frame as answered (None: not said / unknown)
    path: list[str | None]  # decoded label per analysed frame (None where the frame said nothing)
    segments: list[Segment]  # smoothed runs (label: canonical name)
    step: int
    fps: float
    frame_count: int | None = None

    def label_at(self, frame: int) -> str | None:
        """The smoothed label at a video frame, or None where nothing covers it."""
        return _label_at(self.segments, frame)

    def raw_segments(self) -> list[Segment]:
        """Runs of the model's own answers, unsmoothed (frames without an answer leave gaps)."""
        names = sorted({r for r in self.raw if r is not None})
        codes = np.array([names.index(r) if r is not None else -1 for r in self.raw], dtype=np.int64)
        keep = codes >= 0
        return _runs(self.frames[keep], codes[keep], names, _Span(self.step, self.frame_count, self.max_gap))

    max_gap: int = 1  # frames: analysed frames farther apart leave the frames between them uncovered


def label_transition_matrix(
    names: Sequence[str], stay_per_frame: float, transitions: Sequence[tuple[str, str, float]] = ()
) -> np.ndarray:
    """One-frame transition matrix over ``names``: leave with ``1 - stay``, shared by the prior's
    weights (a row's unassigned share stays), or evenly among the others when the prior says nothing."""
    k = len(names)
    index = {name: i for i, name in enumerate(names)}
    weights = np.zeros((k, k))
    for src, dst, weight in transitions:
        a, b = index.get(src, -1), index.get(dst, -1)
        if a < 0 or b < 0 or a == b or not weight >= 0:
            raise ValueError(f"bad transition {src!r} -> {dst!r} ({weight})")
        weights[a, b] += weight
    if (weights.sum(axis=1) > 1.0 + 1e-9).any():
        raise ValueError("the transition weights out of a state must sum to at most 1")
    if not transitions and k > 1:
        weights = (1.0 - np.eye(k)) / (k - 1)
    matrix = weights * (1.0 - stay_per_frame)
    matrix[np.diag_indices_from(matrix)] = 1.0 - matrix.sum(axis=1)
    return matrix


def build_label_track(
    rows: Iterable[tuple[int, str | None]],
    vocabulary: Any,
    fps: float,
    frame_count: int | None = None,
    transitions: Sequence[tuple[str, str, float]] = (),
    config: LabelTrackConfig | None = None,
) -> LabelTrack:
    """Smooth ``(frame, label)`` answers (any spelling of ``vocabulary``; None: the frame said nothing)
    into segments: an HMM over the vocabulary's labels with ``transitions`` as the clinical-order
    prior, Viterbi over sparse frames (the one-frame matrix raised to each gap), as phases are."""
    config = config or LabelTrackConfig()
    if not fps or fps <= 0 or not math.isfinite(fps):
        raise ValueError(f"fps must be positive, got {fps!r}")
    names = [label.name for label in vocabulary]
    limit = frame_count if frame_count is not None else np.iinfo(np.int64).max
    by_frame: dict[int, str | None] = {}
    for frame, label in rows:
        if 0 <= int(frame) < limit:
            found = vocabulary.resolve(label) if isinstance(label, str) else None
            by_frame[int(frame)] = found.name if found is not None else None  # the last answer wins
    frames = np.array(sorted(by_frame), dtype=np.int64)
    raw = [by_frame[int(f)] for f in frames]
    max_gap = max(1, round(config.max_gap_s * fps))
    step = _typical_step(frames, max_gap) if frames.size else 1
    span = _Span(step, frame_count, max_gap)
    codes = np.array([names.index(r) if r is not None else -1 for r in raw], dtype=np.int64)
    at = np.flatnonzero(codes >= 0)
    path: list[str | None] = [None] * len(raw)
    segments: list[Segment] = []
    if at.size and names:
        probs = np.zeros((at.size, len(names)))
        probs[np.arange(at.size), codes[at]] = 1.0
        stay = config.self_transition ** (1.0 / fps)
        states = _decode(frames[at], probs, label_transition_matrix(names, stay, transitions), config.confusion)
        for i, s in zip(at.tolist(), states.tolist(), strict=True):
            path[i] = names[s]
        segments = _runs(frames[at], states, names, span)
        if config.min_segment_s > 0:
            segments = _absorb_short(segments, max(1, round(config.min_segment_s * fps)))
    role = getattr(vocabulary, "name", "label")
    return LabelTrack(role, frames, raw, path, segments, step, float(fps), frame_count, max_gap)


# How long a state lasts, per kind of track: suturing actions last seconds, steps a few minutes, phases longer.
TRACK_CONFIGS: dict[str, LabelTrackConfig] = {
    "action": LabelTrackConfig(self_transition=0.7),
    "step": LabelTrackConfig(self_transition=0.98),
    "phase": LabelTrackConfig(self_transition=0.995),
}


def build_procedure_track(
    rows: Iterable[tuple[int, str | None]],
    procedure: str,
    role: str,
    fps: float,
    frame_count: int | None = None,
    config: LabelTrackConfig | None = None,
) -> LabelTrack:
    """A smoothed track of ``procedure``'s ``role`` vocabulary (``action``, ``step``, another
    procedure's ``phase``) with its clinical-order prior and the role's default dwell time."""
    from engine.procedures import get_procedure

    proc = get_procedure(procedure)
    if not proc.has(role):
        raise ValueError(f"procedure {proc.name!r} has no {role} labels")
    config = config or TRACK_CONFIGS.get(role, LabelTrackConfig())
    return build_label_track(rows, proc.vocabulary(role), fps, frame_count, proc.transition_prior(role), config)


def build_action_track(
    rows: Iterable[tuple[int, str | None]],
    fps: float,
    frame_count: int | None = None,
    procedure: str = "rarp",
    config: LabelTrackConfig | None = None,
) -> LabelTrack:
    """The action timeline of a case of ``procedure``: its ``action`` vocabulary and clinical-order prior."""
    from engine.procedures import get_procedure

    if not get_procedure(procedure).has("action"):
        raise ValueError(f"procedure {get_procedure(procedure).name!r} has no actions")
    return build_procedure_track(rows, procedure, "action", fps, frame_count, config)
