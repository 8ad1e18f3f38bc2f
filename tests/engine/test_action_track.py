from __future__ import annotations

import numpy as np
import pytest

from engine.action_fields import chain_action, parse_action, render_action
from engine.chain_parser import parse_chain
from engine.procedures import get_procedure
from engine.prompts import build_prompt, system_prompt
from engine.timeline import LabelTrackConfig, build_action_track, build_label_track, label_transition_matrix

ACTIONS = get_procedure("rarp").vocabulary("action")


@pytest.mark.parametrize(
    "text, whole, label",
    [
        ("Action: Pulling the needle out of the tissue.", False, "pulling_the_needle_out_of_the_tissue"),
        ("The needle driver is pushing the needle through the tissue.", False, "pushing_the_needle_through_the_tissue"),
        ("Action: other.", False, "other"),
        ("the other instrument waits", False, None),  # "other" in prose is no action
        ("E. pulling the needle out of the tissue", True, "pulling_the_needle_out_of_the_tissue"),
        ("H", True, "returning_dropping_the_needle"),  # a bare MCQ letter, options in vocabulary order
        ("Tying a knot", True, "tying_a_knot"),
    ],
)
def test_actions_are_read_from_labels_prose_and_answers(text, whole, label):
    found = parse_action(text, ACTIONS, whole=whole)
    assert (found.label if found else None) == label


def test_an_unknown_labelled_action_is_kept_and_flagged():
    found = parse_action("Action: juggling the needle.", ACTIONS)
    assert found is not None and found.text == "juggling the needle" and not found.known


def test_a_chain_action_comes_from_the_answer_then_level_2():
    onto = get_procedure("rarp").ontology
    body = "<think>\nThis is a Level 2 task.\nLevel 1 (Perception): Instruments: Large Needle Driver.\n"
    level2 = f"Level 2 (Relation): {render_action('Tying a knot')}\n</think>\n"
    assert chain_action(parse_chain(body + level2 + "<answer>Cutting the suture</answer>", onto), ACTIONS).label == (
        "cutting_the_suture"
    )
    assert chain_action(parse_chain(body + level2 + "<answer>no idea</answer>", onto), ACTIONS).label == "tying_a_knot"


def test_the_action_prompts_follow_the_procedure_and_the_release_wording():
    mcq = build_prompt("action_mcq", procedure="rarp")
    assert mcq.splitlines()[-1] == "H. returning or dropping the needle"
    assert mcq.splitlines()[1] == "A. other"
    assert "Pulling the needle out of the tissue" in build_prompt("action", procedure="rarp")
    assert "prostatectom" in system_prompt("rarp") and "cholecystectom" not in system_prompt("rarp")
    assert "cholecystectom" in system_prompt()


def test_the_transition_matrix_is_stochastic_and_follows_the_prior():
    names = [lab.name for lab in ACTIONS]
    matrix = label_transition_matrix(names, 0.9, get_procedure("rarp").transition_prior("action"))
    assert np.allclose(matrix.sum(axis=1), 1.0)
    pick, position = names.index("picking_up_the_needle"), names.index("positioning_the_needle_tip")
    assert matrix[pick, position] == pytest.approx(0.1 * 0.85)
    assert matrix[pick, names.index("tying_a_knot")] == 0.0
    uniform = label_transition_matrix(["a", "b", "c"], 0.8)
    assert uniform[0, 1] == pytest.approx(0.1) and uniform[0, 0] == pytest.approx(0.8)


def test_a_lone_wrong_answer_is_smoothed_away_and_raw_answers_are_kept():
    answers = ["picking up the needle"] * 10 + ["tying a knot"] + ["positioning the needle tip"] * 10
    track = build_action_track([(6 * i, a) for i, a in enumerate(answers)], fps=60, frame_count=6 * len(answers))
    assert [s.label for s in track.segments] == ["picking_up_the_needle", "positioning_the_needle_tip"]
    assert track.raw[10] == "tying_a_knot" and track.path[10] != "tying_a_knot"
    assert [s.label for s in track.raw_segments()].count("tying_a_knot") == 1
    assert track.segments[0].start == 0 and track.segments[-1].end == 6 * len(answers)
    assert track.label_at(3) == "picking_up_the_needle"


def test_frames_without_an_answer_carry_no_evidence_and_far_gaps_stay_uncovered():
    rows = [(0, "tying a knot"), (60, None), (120, "tying a knot"), (100_000, "cutting the suture")]
    track = build_label_track(rows, ACTIONS, fps=60, config=LabelTrackConfig(max_gap_s=10))
    assert track.path[1] is None
    assert track.label_at(50_000) is None
    assert track.label_at(100_000) == "cutting_the_suture"


def test_a_procedure_without_actions_has_no_action_track():
    with pytest.raises(ValueError, match="no actions"):
        build_action_track([(0, "x")], fps=25, procedure="bypass")


def test_stored_answers_become_the_action_track(tmp_path):
    from engine.action_fields import action_rows
    from engine.store import FrameResult

    def answer(frame: int, action: str) -> FrameResult:
        text = f"<think>\nThis is a Level 2 task.\nLevel 1 (Perception): Instruments: Large Needle Driver.\n" \
               f"Level 2 (Relation): {render_action(action)}\n</think>\n<answer>{action}</answer>"  # fmt: skip
        return FrameResult.from_text(frame, "m", "1.0+rarp", "action", text)

    results = [answer(60 * i, "Tying a knot") for i in range(5)] + [FrameResult.from_text(300, "m", "v", "action", "?")]
    rows = action_rows(results)
    assert rows[:2] == [(0, "tying_a_knot"), (60, "tying_a_knot")] and rows[-1] == (300, None)
    track = build_action_track(rows, fps=60, frame_count=360)
    assert [(s.label, s.start) for s in track.segments] == [("tying_a_knot", 0)]


def test_a_bypass_phase_track_follows_multibypass140s_prior():
    from engine.timeline import build_procedure_track

    # 1 fps answers: preparation, a lone omentum_division, then gastric pouch creation for minutes.
    answers = ["preparation"] * 120 + ["anastomosis_test"] + ["preparation"] * 60 + ["gastric_pouch_creation"] * 300
    track = build_procedure_track([(25 * i, a) for i, a in enumerate(answers)], "bypass", "phase", fps=25)
    assert [s.label for s in track.segments] == ["preparation", "gastric_pouch_creation"]
    with pytest.raises(ValueError, match="no step labels"):
        build_procedure_track([(0, "x")], "rarp", "step", fps=25)
