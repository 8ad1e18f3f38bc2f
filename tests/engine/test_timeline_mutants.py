"""Timelines pinned where mutation testing (scripts/mutation.py) found the tests blind: the HMM against a
brute-force reading of its own definition, short phase segments handed to the right neighbour, a backend's
phase probabilities, the raw strip, edges of the tracks, and the errors a caller reads."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from engine.chain import CvsState
from engine.timeline import (
    TimelineConfig,
    TimelineRow,
    build_timelines,
    first_all_met,
    phase_transition_matrix,
)

PREP, CALOT, CLIP, GBDIS = "Preparation", "CalotTriangleDissection", "ClippingCutting", "GallbladderDissection"
PHASES = [PREP, CALOT, CLIP, GBDIS, "GallbladderPackaging", "CleaningCoagulation", "GallbladderRetraction"]
MET, NOT = CvsState.MET, CvsState.NOT_MET
# Follows the answers closely: a phase may change every second, the answers are rarely wrong.
FOLLOW = TimelineConfig(phase_self_transition=0.05, phase_confusion=0.01)


def rows_of(labels: list[str | None], step: int = 1) -> list[TimelineRow]:
    return [TimelineRow(i * step, label) for i, label in enumerate(labels)]


def segments(timelines) -> list[tuple[str, int, int]]:
    return [(s.label, s.start, s.end) for s in timelines.phase]


# ----------------------------------------------------------------------------- the HMM, by brute force
def brute_force_path(frames: list[int], labels: list[str], fps: float, config: TimelineConfig) -> list[str]:
    """The most likely phase path by trying every path: uniform start, emissions (1 - c)·answer + c/k, the
    one-frame transition matrix raised to each gap (the module's docstring, read independently)."""
    k = len(PHASES)
    stay = config.phase_self_transition ** (1.0 / fps)
    one_frame = phase_transition_matrix(stay, config.transitions)
    emit = [
        np.log((1 - config.phase_confusion) * (np.arange(k) == PHASES.index(label)) + config.phase_confusion / k)
        for label in labels
    ]
    best, best_path = -np.inf, None
    with np.errstate(divide="ignore"):
        steps = [np.log(np.linalg.matrix_power(one_frame, b - a)) for a, b in itertools.pairwise(frames)]
        for path in itertools.product(range(k), repeat=len(labels)):
            score = -np.log(k) + emit[0][path[0]]
            for t in range(1, len(path)):
                score += steps[t - 1][path[t - 1], path[t]] + emit[t][path[t]]
            if score > best:
                best, best_path = score, path
    return [PHASES[s] for s in best_path]


@pytest.mark.parametrize("seed", range(6))
def test_the_decoded_phases_are_the_most_likely_path_of_the_model(seed):
    rng = np.random.default_rng(seed)
    frames = sorted(rng.choice(np.arange(0, 400), size=4, replace=False).tolist())
    labels = [PHASES[i] for i in sorted(rng.integers(0, 4, size=4).tolist())]
    labels[rng.integers(0, 4)] = PHASES[int(rng.integers(0, 7))]  # one answer out of order
    config = TimelineConfig(phase_self_transition=0.9, phase_confusion=0.3)
    rows = [TimelineRow(f, label) for f, label in zip(frames, labels, strict=True)]
    timelines = build_timelines(rows, fps=5.0, config=config)
    assert timelines.phase_path == brute_force_path(frames, labels, 5.0, config)


def test_a_single_analysed_frame_gives_its_phase():
    timelines = build_timelines([TimelineRow(100, CLIP)], fps=25.0, frame_count=500)
    assert timelines.phase_path == [CLIP] and timelines.phase_at(100) == CLIP


def test_smoothing_prints_no_numpy_warning():
    # transitions the prior forbids are log(0): computed silently, not as a RuntimeWarning in the CLI's output
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_timelines(rows_of([PREP] * 5 + [CALOT] * 5, step=25), fps=25.0)


# ----------------------------------------------------------------------------- short segments
def test_a_short_segment_goes_to_the_longer_neighbour_on_either_side():
    labels = [PREP] * 15 + [CALOT] * 2 + [CLIP] * 10
    assert segments(build_timelines(rows_of(labels), fps=1.0, config=FOLLOW)) == [
        (PREP, 0, 15),
        (CALOT, 15, 17),
        (CLIP, 17, 27),
    ]
    absorbing = TimelineConfig(phase_self_transition=0.05, phase_confusion=0.01, min_segment_s=3)
    assert segments(build_timelines(rows_of(labels), fps=1.0, config=absorbing)) == [(PREP, 0, 17), (CLIP, 17, 27)]
    mirrored = [PREP] * 10 + [CALOT] * 2 + [CLIP] * 15
    assert segments(build_timelines(rows_of(mirrored), fps=1.0, config=absorbing)) == [(PREP, 0, 10), (CLIP, 10, 27)]


def test_a_short_segment_next_to_the_last_one_still_has_two_neighbours():
    labels = [PREP] * 4 + [CALOT] * 10 + [CLIP] * 2 + [GBDIS] * 5
    absorbing = TimelineConfig(phase_self_transition=0.05, phase_confusion=0.01, min_segment_s=3)
    assert segments(build_timelines(rows_of(labels), fps=1.0, config=absorbing)) == [
        (PREP, 0, 4),
        (CALOT, 4, 16),
        (GBDIS, 16, 21),
    ]


def test_a_short_segment_between_two_of_one_phase_joins_them_into_one():
    labels = [CALOT] * 8 + [CLIP] * 2 + [CALOT] * 6
    absorbing = TimelineConfig(phase_self_transition=0.05, phase_confusion=0.01, min_segment_s=3)
    assert segments(build_timelines(rows_of(labels), fps=1.0, config=absorbing)) == [(CALOT, 0, 16)]


def test_a_minimum_under_a_second_still_applies():
    labels = [PREP] * 15 + [CALOT] * 2 + [CLIP] * 10
    half_second = TimelineConfig(phase_self_transition=0.05, phase_confusion=0.01, min_segment_s=0.5)
    # at 6 fps the Calot run (2 frames) is shorter than 0.5 s (3 frames)
    assert [s.label for s in build_timelines(rows_of(labels), fps=6.0, config=half_second).phase] == [PREP, CLIP]
    one_frame = TimelineConfig(phase_self_transition=0.05, phase_confusion=0.01, min_segment_s=0.01)
    single = [PREP] * 15 + [CALOT] + [CLIP] * 10
    kept = build_timelines(rows_of(single), fps=1.0, config=one_frame)
    assert segments(kept) == [(PREP, 0, 15), (CALOT, 15, 16), (CLIP, 16, 26)]  # a minimum of one frame keeps all


# ----------------------------------------------------------------------------- the backend's probabilities
def _probs(phase: str) -> tuple[float, ...]:
    return tuple(1.0 if p == phase else 0.0 for p in PHASES)


def test_phase_probabilities_are_used_when_they_are_a_distribution():
    rows = [TimelineRow(i, PREP, phase_probs=_probs(CALOT)) for i in range(5)]
    assert build_timelines(rows, fps=1.0, config=FOLLOW).phase_path == [CALOT] * 5
    halves = tuple(0.5 if p in (CALOT, CLIP) else 0.0 for p in PHASES)
    rows = [TimelineRow(i, PREP, phase_probs=halves) for i in range(3)]
    assert set(build_timelines(rows, fps=1.0, config=FOLLOW).phase_path) <= {CALOT, CLIP}


@pytest.mark.parametrize(
    "probs",
    [
        tuple(-0.5 if p == PREP else (1.5 if p == CALOT else 0.0) for p in PHASES),  # negative
        tuple(float("nan") if p == PREP else 0.0 for p in PHASES),
        (0.0,) * 7,
        (1.0, 0.0),  # not one per phase
    ],
)
def test_malformed_phase_probabilities_fall_back_to_the_answer(probs):
    rows = [TimelineRow(i, CLIP, phase_probs=probs) for i in range(3)]
    assert build_timelines(rows, fps=1.0, config=FOLLOW).phase_path == [CLIP] * 3


# ----------------------------------------------------------------------------- raw strip, edges, errors
def test_the_raw_strip_shows_every_answered_phase_including_preparation():
    timelines = build_timelines(rows_of([PREP, PREP, None, CALOT], step=25), fps=25.0)
    assert [s.label for s in timelines.raw_phase_segments()] == [PREP, CALOT]


def test_nothing_is_said_past_the_end_of_the_last_segment():
    timelines = build_timelines(rows_of([CALOT] * 4, step=25), fps=25.0, frame_count=100)
    (only,) = timelines.phase
    assert timelines.phase_at(only.end - 1) == CALOT and timelines.phase_at(only.end) is None


def test_an_unknown_or_missing_cvs_word_is_not_said():
    rows = [TimelineRow(0, CALOT, ("unclear", MET, None)), TimelineRow(25, CALOT, (MET, NOT))]  # type: ignore[arg-type]
    timelines = build_timelines(rows, fps=25.0)
    assert [t.raw for t in timelines.cvs] == [[None, MET], [MET, NOT], [None, None]]


def test_first_all_met_says_what_it_needs():
    timelines = build_timelines(rows_of([CALOT] * 3, step=25), fps=25.0)
    with pytest.raises(ValueError, match=r"^first_all_met needs the three CVS criteria$"):
        first_all_met(timelines.cvs[:2])
    with pytest.raises(ValueError, match=r"^raw=True needs the Timelines \(for the analysed frames\)$"):
        first_all_met(timelines.cvs, raw=True)


def test_transitions_into_preparation_and_of_weight_zero_are_accepted():
    matrix = phase_transition_matrix(0.9, [(CALOT, PREP, 0.5), (PREP, CALOT, 0.0)])
    assert matrix[1, 0] == pytest.approx(0.05) and matrix[0, 1] == 0.0 and matrix[0, 0] == 1.0
    with pytest.raises(ValueError, match=r"^the transition weights out of a phase must sum to at most 1$"):
        phase_transition_matrix(0.9, [(CALOT, PREP, 0.6), (CALOT, CLIP, 0.6)])


# ----------------------------------------------------------------------------- CVS smoothing, by brute force
def brute_force_cvs(frames: list[int], states: list[CvsState], fps: float, config: TimelineConfig) -> list[CvsState]:
    order = [MET, NOT, CvsState.NOT_ASSESSABLE]
    k = len(order)
    stay = config.cvs_self_transition ** (1.0 / fps)
    one_frame = np.full((k, k), (1.0 - stay) / (k - 1))
    np.fill_diagonal(one_frame, stay)
    emit = [
        np.log((1 - config.cvs_confusion) * (np.arange(k) == order.index(s)) + config.cvs_confusion / k) for s in states
    ]
    steps = [np.log(np.linalg.matrix_power(one_frame, b - a)) for a, b in itertools.pairwise(frames)]
    best, best_path = -np.inf, None
    for path in itertools.product(range(k), repeat=len(states)):
        score = emit[0][path[0]] + sum(
            steps[t - 1][path[t - 1], path[t]] + emit[t][path[t]] for t in range(1, len(path))
        )
        if score > best:
            best, best_path = score, path
    return [order[s] for s in best_path]


@pytest.mark.parametrize("seed", [183, 197, 239, 249, 292])  # answers whose best path depends on the dwell time
def test_the_smoothed_cvs_is_the_most_likely_path_of_its_model(seed):
    rng = np.random.default_rng(seed)
    frames = sorted(rng.choice(np.arange(0, 120), size=5, replace=False).tolist())
    said = [[MET, NOT, CvsState.NOT_ASSESSABLE][i] for i in rng.integers(0, 3, size=5)]
    config = TimelineConfig(cvs_self_transition=0.6, cvs_confusion=0.3)
    rows = [TimelineRow(f, CALOT, (s, None, None)) for f, s in zip(frames, said, strict=True)]
    c1 = build_timelines(rows, fps=2.0, config=config).cvs[0]
    at = [next(seg.label for seg in c1.segments if seg.start <= f < seg.end) for f in frames]
    assert at == [s.value for s in brute_force_cvs(frames, said, 2.0, config)]


def test_cvs_tracks_are_named_even_when_nothing_was_said():
    timelines = build_timelines(rows_of([CALOT] * 2, step=25), fps=25.0)
    assert [t.criterion for t in timelines.cvs] == ["C1", "C2", "C3"] and all(t.segments == [] for t in timelines.cvs)


# ----------------------------------------------------------------------------- the frames given
def test_tracks_end_at_the_end_of_the_video():
    timelines = build_timelines(rows_of([CALOT] * 4, step=25), fps=25.0, frame_count=90)
    assert timelines.phase[-1].end == 90  # the last answer covers one stride, cut at the video's end


def test_a_frame_answered_twice_keeps_the_last_answer_and_frames_past_the_end_are_dropped():
    rows = [TimelineRow(0, PREP), TimelineRow(0, CALOT), TimelineRow(25, CALOT), TimelineRow(100, CLIP)]
    timelines = build_timelines(rows, fps=25.0, frame_count=90)
    assert timelines.frames.tolist() == [0, 25] and [r.phase for r in timelines.rows] == [CALOT, CALOT]


@pytest.mark.parametrize("fps", [0, -25.0, float("inf"), float("nan")])
def test_a_frame_rate_that_is_no_rate_is_refused(fps):
    with pytest.raises(ValueError, match=r"fps must be positive, got "):
        build_timelines(rows_of([CALOT]), fps=fps)


def test_cells_meet_half_way_in_whole_frames():
    from engine.timeline import coverage_cells

    starts, ends = coverage_cells(np.array([0, 24, 49]), max_gap=30, frame_count=60, step=25)
    assert starts.tolist() == [0, 12, 37] and ends.tolist() == [12, 37, 60]
    assert starts.dtype == np.int64 and ends.dtype == np.int64


def test_viterbi_of_a_single_observation_is_its_best_state():
    from engine.timeline import viterbi

    assert viterbi(np.log(np.array([0.2, 0.5, 0.3])), np.zeros((0, 3, 3))).tolist() == [1]


def test_a_gap_limit_under_a_second_is_allowed_and_none_is_refused():
    assert TimelineConfig(max_gap_s=0.5).max_gap_s == 0.5
    with pytest.raises(ValueError, match=r"^max_gap_s must be positive$"):
        TimelineConfig(max_gap_s=0)


# ----------------------------------------------------------------------------- label tracks (actions, steps)
def _actions():
    from engine.procedures import get_procedure

    return get_procedure("rarp").vocabulary("action")


def test_a_label_track_is_the_most_likely_path_of_its_model():
    from engine.timeline import LabelTrackConfig, build_label_track, label_transition_matrix

    vocab = _actions()
    names = [label.name for label in vocab]
    config = LabelTrackConfig(self_transition=0.5, confusion=0.3)
    for seed in range(4):
        rng = np.random.default_rng(seed)
        frames = sorted(rng.choice(np.arange(0, 60), size=4, replace=False).tolist())
        labels = [names[i] for i in rng.integers(0, 3, size=4)]
        track = build_label_track(zip(frames, labels, strict=True), vocab, fps=2.0, config=config)
        k, stay = len(names), 0.5 ** (1 / 2.0)
        one_frame = label_transition_matrix(names, stay)
        emit = [np.log((1 - 0.3) * (np.arange(k) == names.index(label)) + 0.3 / k) for label in labels]
        steps = [np.log(np.linalg.matrix_power(one_frame, b - a)) for a, b in itertools.pairwise(frames)]
        best = max(
            itertools.product(range(k), repeat=4),
            key=lambda p: emit[0][p[0]] + sum(steps[t - 1][p[t - 1], p[t]] + emit[t][p[t]] for t in range(1, 4)),
        )
        assert track.path == [names[s] for s in best], seed


def test_a_label_track_keeps_its_frames_steps_and_silences():
    from engine.timeline import build_label_track

    vocab = _actions()
    rows = [(0, "Tying a knot"), (25, None), (50, "Tying a knot"), (75, "juggling"), (100, "Tying a knot"), (500, "x")]
    track = build_label_track(rows, vocab, fps=25.0, frame_count=200)
    assert track.frames.tolist() == [0, 25, 50, 75, 100]  # frame 500 is past the end
    assert track.path == ["tying_a_knot", None, "tying_a_knot", None, "tying_a_knot"]
    assert (track.step, track.fps, track.role) == (25, 25.0, "action") and isinstance(track.fps, float)
    assert track.label_at(124) == "tying_a_knot" and track.label_at(125) is None  # one stride past the last
    assert [(s.label, s.start, s.end) for s in track.raw_segments()] == [("tying_a_knot", 0, 125)]


@pytest.mark.parametrize("fps", [0, -1.0, float("inf"), float("nan")])
def test_a_label_track_refuses_a_frame_rate_that_is_none(fps):
    from engine.timeline import build_label_track

    with pytest.raises(ValueError, match="fps must be positive, got "):
        build_label_track([(0, "Tying a knot")], _actions(), fps=fps)


def test_short_label_segments_go_to_a_neighbour_when_asked():
    from engine.timeline import LabelTrackConfig, build_label_track

    vocab = _actions()
    labels = ["tying_a_knot"] * 8 + ["cutting_the_suture"] * 1 + ["tying_a_knot"] * 6
    follow = LabelTrackConfig(self_transition=0.05, confusion=0.01)
    kept = build_label_track(enumerate(labels), vocab, fps=1.0, config=follow)
    assert [s.label for s in kept.segments] == ["tying_a_knot", "cutting_the_suture", "tying_a_knot"]
    absorbing = LabelTrackConfig(self_transition=0.05, confusion=0.01, min_segment_s=2)
    merged = build_label_track(enumerate(labels), vocab, fps=1.0, config=absorbing)
    assert [(s.label, s.start, s.end) for s in merged.segments] == [("tying_a_knot", 0, 15)]
    at_6_fps = build_label_track(enumerate(labels), vocab, fps=6.0, config=absorbing)  # 2 s = 12 frames
    assert [s.label for s in at_6_fps.segments] == ["tying_a_knot"]


def test_label_transitions_and_settings_are_checked():
    from engine.timeline import LabelTrackConfig, label_transition_matrix

    names = ["a", "b", "c"]
    assert np.allclose(label_transition_matrix(names, 0.9).sum(axis=1), 1.0)
    for bad in [("a", "zz", 0.1), ("zz", "a", 0.1), ("a", "a", 0.1), ("a", "b", -0.1)]:
        with pytest.raises(ValueError, match=r"^bad transition "):
            label_transition_matrix(names, 0.9, [bad])
    with pytest.raises(ValueError, match=r"^the transition weights out of a state must sum to at most 1$"):
        label_transition_matrix(names, 0.9, [("a", "b", 0.7), ("a", "c", 0.7)])
    for settings in ({"self_transition": 1.5}, {"confusion": 1.0}):
        with pytest.raises(ValueError, match="must be between 0 and 1"):
            LabelTrackConfig(**settings)
    for settings in ({"max_gap_s": 0}, {"min_segment_s": -1}):
        with pytest.raises(ValueError, match=r"^max_gap_s must be positive and min_segment_s not negative$"):
            LabelTrackConfig(**settings)


# ----------------------------------------------------------------------------- instrument presence
def _tool_rows(present: list[bool], tool: str = "Hook") -> list[TimelineRow]:
    return [TimelineRow(i, CALOT, tools=(tool, "Laser") if on else ("Laser",)) for i, on in enumerate(present)]


def test_an_absence_as_long_as_the_gap_limit_is_closed_and_a_longer_one_is_not():
    config = TimelineConfig(tool_min_gap_s=3.0)
    closed = build_timelines(_tool_rows([True] * 5 + [False] * 3 + [True] * 5), fps=1.0, config=config)
    assert [(s.start, s.end) for s in closed.tools["Hook"]] == [(0, 13)]
    kept = build_timelines(_tool_rows([True] * 5 + [False] * 4 + [True] * 5), fps=1.0, config=config)
    assert [(s.start, s.end) for s in kept.tools["Hook"]] == [(0, 5), (9, 14)]
    assert "Laser" not in closed.tools  # an unknown tool name is left out, not fatal


def test_a_presence_run_as_long_as_the_minimum_is_kept():
    config = TimelineConfig(tool_min_gap_s=0.0, tool_min_run_s=3.0)
    timelines = build_timelines(_tool_rows([True] * 3 + [False] * 5 + [True] * 2 + [False] * 5), fps=1.0, config=config)
    assert [(s.start, s.end) for s in timelines.tools["Hook"]] == [(0, 3)]


def test_a_robotic_case_gets_its_own_instrument_tracks():
    from engine.procedures import get_procedure

    tools = get_procedure("rarp").ontology.tool
    rows = [TimelineRow(i, None, tools=("Large Needle Driver",)) for i in range(5)]
    timelines = build_timelines(rows, fps=1.0, tools=tools)
    assert set(timelines.tools) == set(tools.names) and timelines.tools["Large_Needle_Driver"]
