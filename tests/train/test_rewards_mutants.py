"""GRPO rewards pinned where mutation testing (scripts/mutation.py) found the reward tests blind. Each test
states what training would get wrong: a truncated chain paid, a half-right tool list paid in full, a wrong
box paid, a contradiction not charged, a reward logged under the wrong name."""

from __future__ import annotations

import math
import random

import pytest

from tests.train.test_cot import random_samples
from train.cot.chains import build_chain
from train.cot.datasets import label_columns, task_answer
from train.grpo.rewards import (
    accuracy_reward,
    completion_text,
    consistency_checks,
    consistency_reward,
    format_reward,
    level1_reward,
    level2_reward,
    reward_functions,
)

L1 = "Level 1 (Perception): Instruments: {tools}. Anatomy: cystic duct."
L2 = "Level 2 (Relation): Triplets: {triplets}."
L3 = "Level 3 (Context): Phase: {phase}."


def chain(*levels: str, answer: str = "x", preamble: str = "") -> str:
    return "<think>\n" + preamble + "\n".join(levels) + "\n</think>\n<answer>" + answer + "</answer>"


def one(fn, text: str, **columns) -> float:
    (value,) = fn([text], **{k: [v] for k, v in columns.items()})
    return value


def test_chains_built_from_drawn_labels_earn_full_reward():
    # As test_rewards' synthetic-case test (format and accuracy), on drawn labels of every task (no video to encode).
    checked = 0
    for k, sample in enumerate(random_samples(90, 5)):
        try:
            text = build_chain(sample, random.Random(k))
            answer = task_answer(sample)
        except ValueError:
            continue
        columns = {"task": sample.task.value, "answer": answer, **label_columns(sample)}
        # (not consistency or the level rewards: drawn labels need not agree with each other, e.g. a triplet's
        # instrument missing from the tools)
        for fn in (format_reward, accuracy_reward):
            assert one(fn, text, **columns) == pytest.approx(1.0), (fn.__name__, sample.task, text)
        checked += 1
    assert checked > 40


# ----------------------------------------------------------------------------- what trl hands over
@pytest.mark.parametrize(
    "completion, text",
    [
        ("plain", "plain"),
        ([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}], "ab"),
        (
            [{"role": "assistant", "content": [{"type": "text", "text": "x"}, {"type": "image"}, "z", {"text": "y"}]}],
            "xy",
        ),
        ([{"role": "assistant"}], ""),
        (["raw", 7], "raw7"),
        (None, ""),
        (12, "12"),
    ],
)
def test_the_completion_text_is_what_the_model_wrote(completion, text):
    assert completion_text(completion) == text


# ----------------------------------------------------------------------------- format
def test_format_pays_only_a_complete_chain_of_exactly_its_tasks_levels():
    three = chain(
        L1.format(tools="Hook"), L2.format(triplets="hook dissect cystic duct"), L3.format(phase="Preparation")
    )
    assert one(format_reward, three, level=3) == 1.0
    assert one(format_reward, three, level=2) == 0.0  # a level more than the task asks
    assert one(format_reward, three) == 1.0  # no level column: the levels it has, if any
    declared = chain(L1.format(tools="Hook"), preamble="This is a Level 1 task.\n")
    assert one(format_reward, declared, level=1) == 1.0
    assert one(format_reward, "<think>\n</think>\n<answer>x</answer>") == 0.0  # no level at all
    assert one(format_reward, three[: three.index("</answer>")], level=3) == 0.0  # cut off
    assert format_reward([three, "junk"], level=[3, 3]) == [1.0, 0.0]


# ----------------------------------------------------------------------------- level 1 and 2
def test_level1_is_the_f1_of_the_instruments_named():
    text = chain(L1.format(tools="Grasper"), L3.format(phase="Preparation"))
    assert one(level1_reward, text, tools=["Grasper", "Clipper"]) == pytest.approx(2 / 3)
    assert one(level1_reward, text, tools=["Grasper"]) == 1.0
    assert one(level1_reward, text, tools=["Hook"]) == 0.0
    assert one(level1_reward, text, tools=[]) == 0.0  # named one where none is present
    nothing = chain(L1.format(tools="none"), L3.format(phase="Preparation"))
    assert one(level1_reward, nothing, tools=[]) == 1.0  # "none" is right when none is present
    assert one(level1_reward, nothing, tools=["Hook"]) == 0.0
    assert one(level1_reward, text, tools=None) == 0.0  # no label: no push either way
    assert one(level1_reward, chain(L3.format(phase="Preparation")), tools=["Grasper"]) == 0.0  # no Level 1


def test_level2_is_the_f1_of_the_triplets_named():
    text = chain(L1.format(tools="Grasper, Hook"), L2.format(triplets="hook dissect cystic duct"))
    gold = ["hook,dissect,cystic_duct", "grasper,retract,gallbladder"]
    assert one(level2_reward, text, triplets=gold) == pytest.approx(2 / 3)
    assert one(level2_reward, text, triplets=gold[:1]) == 1.0
    assert one(level2_reward, text, triplets=["hook,dissect"]) == 0.0  # a label row that is no triplet is skipped
    assert one(level2_reward, text, triplets=["hook,dissect,nothing"]) == 0.0  # an unknown target too
    assert one(level2_reward, text, triplets=None) == 0.0
    assert one(level2_reward, chain(L1.format(tools="Hook")), triplets=gold) == 0.0  # no Level 2


# ----------------------------------------------------------------------------- accuracy
def test_phase_accuracy_is_exact_and_falls_back_to_the_release_scorer():
    text = chain(L3.format(phase="Preparation"), answer="B. Calot Triangle Dissection")
    assert one(accuracy_reward, text, task="phase", phase="CalotTriangleDissection") == 1.0
    assert one(accuracy_reward, text, task="phase_mcq", phase="Preparation") == 0.0
    # without a phase label the reference answer decides, as the release scorer does
    assert one(accuracy_reward, text, task="phase_mcq", answer="B. Calot Triangle Dissection") == 1.0
    assert one(accuracy_reward, text, task="phase_mcq", answer="C. Clipping Cutting") == 0.0
    assert one(accuracy_reward, text, task="phase_mcq") == 0.0
    vague = chain(L3.format(phase="Preparation"), answer="B")
    assert one(accuracy_reward, vague, task="phase_mcq", phase="CalotTriangleDissection", answer="B") == 1.0
    assert one(accuracy_reward, text[: text.index("<answer>")], task="phase", phase="Preparation") == 0.0


def test_tool_accuracy_is_the_f1_of_the_tools_answered():
    def score(answer: str, tools) -> float:
        return one(accuracy_reward, chain(L1.format(tools="Hook"), answer=answer), task="tools", tools=tools)

    assert score("Grasper, Hook", ["Grasper", "Hook"]) == 1.0
    assert score("Grasper", ["Grasper", "Hook"]) == pytest.approx(2 / 3)
    assert score("None", []) == 1.0
    assert score("None", ["Hook"]) == 0.0
    assert score("Hook, none of the others", ["Hook"]) == 1.0
    assert score("Hook", []) == 0.0
    assert score("Hook", None) == 0.0


def test_triplet_accuracy_is_the_f1_of_the_triplets_answered():
    text = chain(L2.format(triplets="hook dissect cystic duct"), answer="hook dissect cystic duct")
    assert one(accuracy_reward, text, task="triplet", triplets=["hook,dissect,cystic_duct"]) == 1.0
    two = ["hook,dissect,cystic_duct", "grasper,retract,gallbladder"]
    assert one(accuracy_reward, text, task="triplet", triplets=two) == pytest.approx(2 / 3)
    assert one(accuracy_reward, text, task="triplet", triplets=None) == 0.0


def test_cvs_accuracy_is_the_share_of_labelled_criteria_answered_right():
    text = chain(L3.format(phase="Calot Triangle Dissection"), answer="C1 met, C2 not met, C3 met")
    assert one(accuracy_reward, text, task="cvs", cvs=[1.0, 0.0, 0.5]) == 1.0  # 0.5: the raters' mean is met
    assert one(accuracy_reward, text, task="cvs", cvs=[1.0, 0.0, 0.49]) == pytest.approx(2 / 3)
    assert one(accuracy_reward, text, task="cvs", cvs=[1.0, None, math.nan]) == 1.0  # unlabelled: not counted
    assert one(accuracy_reward, text, task="cvs", cvs=[0.0, 1.0, None]) == 0.0
    assert one(accuracy_reward, text, task="cvs", cvs=[None, None, None]) == 0.0
    assert one(accuracy_reward, text, task="cvs", cvs=None) == 0.0


def test_box_accuracy_matches_each_reference_box_to_a_distinct_answer_box():
    def score(answer: str, reference: str) -> float:
        text = chain(L1.format(tools="Grasper"), answer=answer)
        return one(accuracy_reward, text, task="localisation", answer=reference)

    assert score("[0, 0, 10, 10]", "[0, 0, 10, 10]") == 1.0
    assert score("[0, 0, 10, 10]", "[0, 0, 10, 20]") == pytest.approx(0.5)
    # one answer box cannot stand for two reference boxes: mean over the references
    assert score("[0, 0, 10, 10]", "[0, 0, 10, 10], [20, 20, 30, 30]") == pytest.approx(0.5)
    assert score("[20, 20, 30, 30], [0, 0, 10, 10]", "[0, 0, 10, 10], [20, 20, 30, 30]") == 1.0
    # the best pairs are taken first: the 0.5-overlap box does not steal the exact one's reference
    assert score("[0, 0, 10, 20], [0, 0, 10, 10]", "[0, 0, 10, 10]") == 1.0
    assert score("none", "none") == 1.0  # nothing to find, nothing found
    assert score("[0, 0, 10, 10]", "none") == 0.0


def test_frame_analysis_accuracy_is_the_mean_of_its_labelled_parts():
    answer = "Phase: Clipping Cutting. Triplets: clipper clip cystic duct. CVS: C1 met, C2 met, C3 met."
    text = chain(L3.format(phase="Clipping Cutting"), answer=answer)
    full = {"task": "frame_analysis", "phase": "ClippingCutting", "triplets": ["clipper,clip,cystic_duct"]}
    assert one(accuracy_reward, text, **full, cvs=[1.0, 1.0, 1.0]) == 1.0
    assert one(accuracy_reward, text, **full, cvs=[0.0, 0.0, 0.0]) == pytest.approx(2 / 3)
    assert one(accuracy_reward, text, **{**full, "phase": "Preparation"}) == pytest.approx(0.5)
    assert one(accuracy_reward, text, task="frame_analysis", cvs=[1.0, 0.0, None]) == pytest.approx(0.5)
    assert one(accuracy_reward, text, task="frame_analysis") == 0.0  # nothing labelled
    assert one(accuracy_reward, text, task="segmentation", phase="ClippingCutting") == 0.0  # unknown task
    assert one(accuracy_reward, text, phase="ClippingCutting") == 0.0  # no task column


# ----------------------------------------------------------------------------- consistency
def test_each_contradiction_costs_its_share():
    l1 = L1.format(tools="Grasper, Clipper")
    l2 = L2.format(triplets="grasper retract gallbladder, clipper clip cystic duct")
    l3 = "Level 3 (Context): Phase: Clipping Cutting. CVS: C1 met, C2 met, C3 met."
    right = "Phase: Clipping Cutting. Triplets: clipper clip cystic duct. CVS: C1 met, C2 met, C3 met."
    assert consistency_checks(parse(chain(l1, l2, l3, answer=right))) == [True] * 8
    # phase, CVS, triplets of the answer against the levels
    wrong_phase = right.replace("Phase: Clipping Cutting", "Phase: Preparation")
    assert consistency_checks(parse(chain(l1, l2, l3, answer=wrong_phase)))[0] is False
    wrong_cvs = right.replace("C3 met", "C3 not met")
    assert consistency_checks(parse(chain(l1, l2, l3, answer=wrong_cvs)))[:2] == [True, False]
    other_triplet = right.replace("clipper clip cystic duct", "hook dissect cystic duct")
    assert consistency_checks(parse(chain(l1, l2, l3, answer=other_triplet)))[:3] == [True, True, False]
    # an acting instrument not seen at Level 1, and an invalid combination
    unseen = chain(L1.format(tools="Grasper"), l2, l3, answer=right)
    assert consistency_checks(parse(unseen)) == [True, True, True, True, True, False, True, True]
    invalid = chain(l1, L2.format(triplets="grasper clip liver"), l3, answer="Phase: Clipping Cutting.")
    assert consistency_checks(parse(invalid)) == [True, True, False, True]
    # clipping outside ClippingCutting
    elsewhere = chain(l1, l2, l3.replace("Clipping Cutting", "Preparation"), answer="Phase: Preparation.")
    assert consistency_checks(parse(elsewhere)) == [True, True, True, True, True, False]
    assert one(consistency_reward, elsewhere) == pytest.approx(5 / 6)


def test_consistency_is_zero_for_a_broken_chain_and_one_when_nothing_applies():
    level1_task = chain(L1.format(tools="Hook"), preamble="This is a Level 1 task.\n")
    assert consistency_reward(["no structure at all", level1_task, chain(L1.format(tools="Hook"))]) == [0.0, 1.0, 0.0]
    assert consistency_checks(parse("<think>\nLevel 1 (Perception): Hook.\n</think>")) == [False]  # no answer


def parse(text: str):
    from engine.chain_parser import parse_chain

    return parse_chain(text)


# ----------------------------------------------------------------------------- the registry
def test_rewards_are_logged_under_their_names_and_pass_every_column_through():
    functions = reward_functions(["consistency", "format", "level1"])
    assert [f.__name__ for f in functions] == ["consistency", "format", "level1"]
    assert functions[1].__doc__ == format_reward.__doc__
    text = chain(L1.format(tools="Hook"), preamble="This is a Level 1 task.\n")
    assert functions[1]([text, text], level=[1, 2]) == [1.0, 0.0]
    assert functions[2]([text], tools=[["Hook"]]) == [1.0]
    with pytest.raises(KeyError, match=r"unknown reward.*length, size; known: format, accuracy"):
        reward_functions(["format", "length", "size"])


# ----------------------------------------------------------------------------- labels that are not clean
def test_unknown_names_in_the_labels_are_left_out_not_fatal():
    text = chain(L1.format(tools="Grasper"), L2.format(triplets="grasper retract gallbladder"))
    assert one(level1_reward, text, tools=["Grasper", "Laser"]) == 1.0  # "Laser" is no Cholec80 tool
    gold = ["grasper,retract,gallbladder", "laser,dissect,liver", "grasper,zap,liver"]
    assert one(level2_reward, text, triplets=gold) == 1.0  # rows naming an unknown part are skipped


def test_one_answer_box_is_never_counted_for_two_reference_boxes():
    text = chain(L1.format(tools="Grasper"), answer="[0, 0, 10, 10]")
    # the second reference overlaps the same answer box by half: it stays unmatched
    assert one(accuracy_reward, text, task="localisation", answer="[0, 0, 10, 10], [0, 0, 10, 20]") == 0.5


def test_a_batch_row_without_labels_does_not_end_the_batch():
    text = chain(L1.format(tools="Hook"), L2.format(triplets="hook dissect cystic duct"))
    assert level1_reward([text, text, text], tools=[None, ["Hook"], ["Grasper"]]) == [0.0, 1.0, 0.0]
    gold = ["hook,dissect,cystic_duct"]
    assert level2_reward([text, text], triplets=[None, gold]) == [0.0, 1.0]


def test_level2_needs_a_level_two_not_just_any_level():
    only_level2 = "<think>\nLevel 2 (Relation): Triplets: hook dissect cystic duct.\n</think>\n<answer>x</answer>"
    assert one(level2_reward, only_level2, triplets=["hook,dissect,cystic_duct"]) == 1.0


def test_rewards_read_a_robotic_case_in_its_own_vocabulary():
    text = chain(
        "Level 1 (Perception): Instruments: Large Needle Driver. Anatomy: none.",
        preamble="This is a Level 1 task.\n",
        answer="Large Needle Driver",
    )
    assert one(level1_reward, text, tools=["Large_Needle_Driver"], procedure="rarp") == 1.0
    assert level1_reward([text, text], tools=[["Large_Needle_Driver"]] * 2, procedure=["rarp", "rarp"]) == [1.0, 1.0]


def test_a_level_three_beyond_a_declared_level_one_task_is_checked_without_level_two():
    text = chain(
        L1.format(tools="Hook"),
        L3.format(phase="Preparation"),
        preamble="This is a Level 1 task.\n",
        answer="Phase: Preparation.",
    )
    assert parse(text).relations is None and parse(text).context is not None
    assert consistency_checks(parse(text)) == [True]  # the answer's phase is Level 3's


def test_an_empty_batch_gets_no_rewards():
    for fn in (format_reward, accuracy_reward, level1_reward, level2_reward, consistency_reward):
        assert fn([]) == [], fn.__name__


# ----------------------------------------------------------------------------- other procedures' rows
PUSHING = "pushing_the_needle_through_the_tissue"
ACTION_CHAIN = (
    "<think>\nThis is a Level 2 task.\n"
    "Level 1 (Perception): Visible anatomy includes the suturing needle, the thread and the tissue.\n"
    "Level 2 (Relation): Action: {level2}.\n</think>\n<answer>{answer}</answer>"
)


def _action(
    level2: str = "Pushing the needle through the tissue", answer: str = "Pushing the needle through the tissue"
):
    return ACTION_CHAIN.format(level2=level2, answer=answer)


def test_the_gold_action_is_its_column_else_the_answer_column_read_whole():
    text = _action()
    assert one(accuracy_reward, text, task="action", procedure="rarp", action=PUSHING) == 1.0  # column only
    assert (
        one(accuracy_reward, text, task="action", procedure="rarp", answer="Pushing the needle through the tissue")
        == 1.0
    )
    # an MCQ letter in the answer column names the option (options in vocabulary order)
    letter = _action(answer="Returning or dropping the needle", level2="Returning or dropping the needle")
    assert one(accuracy_reward, letter, task="action_mcq", procedure="rarp", answer="H") == 1.0
    assert one(accuracy_reward, text, task="action", procedure="rarp", answer="H") == 0.0
    assert one(accuracy_reward, text, task="action", procedure="rarp") == 0.0  # no gold at all: no push
    # without a procedure column the dataset says which vocabulary to read (the task "tools" implies none)
    tools = chain(L1.format(tools="Large Needle Driver"), answer="Large Needle Driver")
    gold = ["Large_Needle_Driver", "Prograsp_Forceps"]
    assert one(accuracy_reward, tools, task="tools", dataset="sar_rarp50", tools=gold) == pytest.approx(2 / 3)


def test_level2_of_an_action_chain_pays_only_the_right_action():
    assert one(level2_reward, _action(), task="action", procedure="rarp", action=PUSHING) == 1.0
    wrong = _action(level2="Tying a knot")
    assert one(level2_reward, wrong, task="action", procedure="rarp", action=PUSHING) == 0.0


def test_an_answer_letter_contradicting_level2_costs_consistency():
    contradiction = _action(answer="A")  # "A" is "other"
    assert one(consistency_reward, contradiction, task="action_mcq", procedure="rarp") == 0.0
    assert one(consistency_reward, _action(), task="action", procedure="rarp") == 1.0


def test_robotic_tools_are_scored_in_their_own_vocabulary():
    text = chain(
        "Level 1 (Perception): Instruments: Large Needle Driver. Anatomy: none.",
        preamble="This is a Level 1 task.\n",
        answer="Large Needle Driver",
    )
    tools = ["Large_Needle_Driver", "Prograsp_Forceps"]
    assert one(level1_reward, text, tools=tools, procedure="rarp") == pytest.approx(2 / 3)


def test_a_step_answer_that_names_no_step_scores_zero():
    text = chain(L3.format(phase="Preparation"), answer="no idea")
    assert one(accuracy_reward, text, task="step", procedure="bypass") == 0.0
    assert one(accuracy_reward, text, task="step", procedure="bypass", step="s8_vertical_stapling") == 0.0
