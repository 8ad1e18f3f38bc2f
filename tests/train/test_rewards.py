"""GRPO rewards on crafted completions: right, wrong, malformed, inconsistent; and on label chains."""

from __future__ import annotations

import random

import pytest

from train.cot.chains import build_chain
from train.cot.datasets import label_columns, task_answer
from train.data.sample import Task
from train.data.synthetic import synthetic_samples
from train.grpo.rewards import (
    REWARDS,
    accuracy_reward,
    completion_text,
    consistency_reward,
    format_reward,
    level1_reward,
    level2_reward,
    reward_functions,
)

RIGHT = """<think>
Level 1 (Perception): Instruments: Grasper, Clipper. Anatomy: cystic duct.
Level 2 (Relation): Triplets: grasper retract gallbladder, clipper clip cystic duct.
Level 3 (Context): Phase: Clipping Cutting. CVS: C1 met, C2 met, C3 met. Safety: Clips go on only after the CVS.
</think>
<answer>Phase: Clipping Cutting. Triplets: grasper retract gallbladder, clipper clip cystic duct. CVS: C1 met, C2 met, C3 met.</answer>"""

COLUMNS = {
    "task": ["frame_analysis"],
    "level": [3],
    "answer": ["Phase: Clipping Cutting."],
    "phase": ["ClippingCutting"],
    "tools": [["Grasper", "Clipper"]],
    "triplets": [["grasper,retract,gallbladder", "clipper,clip,cystic_duct"]],
    "cvs": [[1.0, 0.67, 0.5]],
    "boxes": [[]],
}


def one(fn, text, **overrides):
    columns = {**COLUMNS, **{k: [v] for k, v in overrides.items()}}
    return fn([text], **columns)[0]


def test_a_right_chain_earns_every_reward():
    for fn in (format_reward, accuracy_reward, level1_reward, level2_reward, consistency_reward):
        assert one(fn, RIGHT) == pytest.approx(1.0), fn.__name__


def test_conversational_completions_are_read_like_strings():
    message = [{"role": "assistant", "content": RIGHT}]
    assert completion_text(message) == RIGHT
    assert format_reward([message], level=[3]) == [1.0]


def test_wrong_phase_loses_accuracy_but_keeps_format():
    wrong = RIGHT.replace("Clipping Cutting", "Gallbladder Dissection")
    assert one(format_reward, wrong) == 1.0
    # phase wrong (0), triplets right (1), CVS right (1): mean of the labelled parts
    assert one(accuracy_reward, wrong) == pytest.approx(2 / 3)
    assert one(accuracy_reward, wrong, task="phase") == 0.0
    assert one(accuracy_reward, RIGHT, task="phase") == 1.0


def test_malformed_and_cut_off_chains_get_no_format_reward():
    assert one(format_reward, RIGHT + "\nand one more thing") == 0.0  # text after </answer>
    assert one(format_reward, RIGHT[: len(RIGHT) // 2]) == 0.0  # cut off
    assert one(format_reward, "Clipping Cutting") == 0.0
    skipped_level = RIGHT.replace(
        "Level 2 (Relation): Triplets: grasper retract gallbladder, clipper clip cystic duct.\n", ""
    )
    assert one(format_reward, skipped_level) == 0.0
    assert one(consistency_reward, "no chain at all") == 0.0


def test_a_lower_level_task_must_stop_at_its_level():
    level2 = """<think>
This is a Level 2 task.
Level 1 (Perception): Instruments: Grasper.
Level 2 (Relation): Triplets: grasper retract gallbladder.
</think>
<answer>grasper retract gallbladder</answer>"""
    assert one(format_reward, level2, level=2) == 1.0
    assert one(format_reward, RIGHT, level=2) == 0.0


def test_level_rewards_give_partial_credit():
    missing_clipper = RIGHT.replace("Instruments: Grasper, Clipper.", "Instruments: Grasper.")
    assert one(level1_reward, missing_clipper) == pytest.approx(2 / 3)  # F1 of {Grasper} vs {Grasper, Clipper}
    one_triplet = RIGHT.replace(
        "Triplets: grasper retract gallbladder, clipper clip cystic duct.\nLevel 3",
        "Triplets: grasper retract gallbladder.\nLevel 3",
    )
    assert one(level2_reward, one_triplet) == pytest.approx(2 / 3)
    assert one(level1_reward, RIGHT, tools=None) == 0.0  # unknown labels: nothing to reward


def test_inconsistent_chains_lose_consistency():
    answer_disagrees = RIGHT.replace("<answer>Phase: Clipping Cutting.", "<answer>Phase: Preparation.")
    assert one(consistency_reward, answer_disagrees) < 1.0
    unseen_instrument = RIGHT.replace("Instruments: Grasper, Clipper.", "Instruments: Grasper.")
    assert one(consistency_reward, unseen_instrument) < 1.0  # the clipper acts but was not seen
    clipping_elsewhere = RIGHT.replace("Phase: Clipping Cutting. CVS", "Phase: Calot Triangle Dissection. CVS")
    assert one(consistency_reward, clipping_elsewhere) < 1.0
    cvs_disagrees = RIGHT.replace(
        "<answer>Phase: Clipping Cutting. Triplets: grasper retract gallbladder, clipper clip cystic duct. CVS: C1 met, C2 met, C3 met.",
        "<answer>Phase: Clipping Cutting. Triplets: grasper retract gallbladder, clipper clip cystic duct. CVS: C1 met, C2 not met, C3 met.",
    )
    assert one(consistency_reward, cvs_disagrees) < 1.0


def test_cvs_and_box_answers_are_scored_per_part():
    cvs = "<think>\nLevel 1 (Perception): Instruments: Hook.\nLevel 2 (Relation): Triplets: hook dissect cystic plate.\nLevel 3 (Context): CVS: C1 met, C2 not met, C3 not met.\n</think>\n<answer>C1 met, C2 not met, C3 not met</answer>"
    assert one(accuracy_reward, cvs, task="cvs", cvs=[1.0, 1.0, 0.0]) == pytest.approx(2 / 3)
    box = "<think>\nThis is a Level 1 task.\nLevel 1 (Perception): Instruments: Grasper [0, 0, 10, 10].\n</think>\n<answer>[0, 0, 10, 10]</answer>"
    assert one(accuracy_reward, box, task="localisation", answer="[0, 0, 10, 20]", level=1) == pytest.approx(0.5)


def test_registry_names_are_what_trl_logs():
    functions = reward_functions(list(REWARDS))
    assert [f.__name__ for f in functions] == list(REWARDS)
    assert functions[0]([RIGHT], **COLUMNS) == [1.0]
    with pytest.raises(KeyError, match="unknown reward"):
        reward_functions(["length"])


def test_chains_built_from_labels_earn_full_reward(synth_case):
    """The CoT builder's chains are the targets: the rewards must not fight them."""
    folder, _ = synth_case
    tasks = (Task.PHASE, Task.TOOLS, Task.TRIPLET, Task.CVS, Task.FRAME, Task.LOCALISATION)
    samples = [s for s in synthetic_samples(folder, tasks=tasks)][::7]
    assert {s.task for s in samples} >= {Task.PHASE, Task.TRIPLET, Task.FRAME}
    checked = 0
    for k, sample in enumerate(samples):
        try:
            chain = build_chain(sample, random.Random(k))
            answer = task_answer(sample)
        except ValueError:
            continue  # labels that cannot ground this task (the builder skips them too)
        columns = {
            key: [value]
            for key, value in {"task": sample.task.value, "answer": answer, **label_columns(sample)}.items()
        }
        for fn in (format_reward, accuracy_reward, consistency_reward):
            assert fn([chain], **columns) == [pytest.approx(1.0)], (fn.__name__, sample.task, chain)
        if sample.level >= 1 and sample.truth.tools is not None:
            assert level1_reward([chain], **columns) == [pytest.approx(1.0)], chain
        if sample.level >= 2 and sample.truth.triplets is not None:
            assert level2_reward([chain], **columns) == [pytest.approx(1.0)], chain
        checked += 1
    assert checked > 10
