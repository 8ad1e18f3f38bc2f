"""The action task family and other procedures' samples: chains, rows, rewards and metrics."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engine.action_fields import chain_action, chain_step
from engine.chain import ChainStatus
from engine.chain_parser import parse_chain
from engine.procedures import get_procedure
from engine.profiles import get_profile
from train.cot.chains import CotError, build_chain, task_answer
from train.cot.procedure_sets import procedure_grpo_row, procedure_sft_row
from train.data.sample import FrameRef, Sample, Task, Truth
from train.eval.metrics import action_metrics, edit_score, segment_f1
from train.eval.report import evaluate
from train.grpo.rewards import REWARDS, row_procedure

RARP = get_procedure("rarp")
BYPASS = get_procedure("bypass")
ACTIONS = [lab.name for lab in RARP.vocabulary("action")]


def rarp_sample(action: str | None, task: Task = Task.ACTION, case: str = "video_01", index: int = 0) -> Sample:
    truth = Truth(action=action, anatomy=("suturing_needle", "thread", "tissue"))
    return Sample("sar_rarp50", case, FrameRef(Path(f"{case}/{index:09d}.png"), None, 320, 180), task, truth,
                  procedure="rarp")  # fmt: skip


@pytest.mark.parametrize("task", [Task.ACTION, Task.ACTION_MCQ])
def test_action_chains_parse_back_to_the_label_in_every_phrasing(task):
    for action in ACTIONS:
        sample = rarp_sample(action, task)
        for seed in range(12):
            text = build_chain(sample, random.Random(seed))
            chain = parse_chain(text, RARP.ontology)
            assert chain.status is ChainStatus.COMPLETE and chain.task_level == 2, text
            assert [lv.number for lv in chain.levels] == [1, 2]
            assert chain_action(chain, RARP.vocabulary("action")).label == action, text
            assert parse_chain(text, RARP.ontology).unknown_mentions == []
            assert "CVS" not in text and "cholecystectomy" not in text.lower()


def test_action_answers_follow_the_task_form():
    assert task_answer(rarp_sample("pulling_the_needle_out_of_the_tissue")) == "Pulling the needle out of the tissue"
    assert task_answer(rarp_sample("returning_dropping_the_needle", Task.ACTION_MCQ)) == (
        "H. returning or dropping the needle"
    )
    with pytest.raises(CotError):
        task_answer(rarp_sample(None))


def test_rows_ask_as_the_engine_asks_in_the_procedure():
    sample = rarp_sample("tying_a_knot")
    profile = get_profile("surgview", procedure="rarp")
    row = procedure_sft_row(sample, Path("f.png"), "chain")
    assert row["messages"][0]["content"] == profile.system
    assert row["messages"][1]["content"] == profile.prompt("action", 320, 180)
    grpo = procedure_grpo_row(sample, Path("f.png"))
    assert (grpo["procedure"], grpo["action"], grpo["answer"], grpo["level"]) == (
        "rarp", "tying_a_knot", "Tying a knot", 2,
    )  # fmt: skip
    assert grpo["phase"] is None and grpo["triplets"] is None and grpo["cvs"] is None


def _columns(rows):
    return {key: [r[key] for r in rows] for key in rows[0] if key not in ("prompt", "images")}


def test_chains_built_from_action_labels_earn_every_reward():
    samples = [rarp_sample(a, t, index=i) for i, a in enumerate(ACTIONS) for t in (Task.ACTION, Task.ACTION_MCQ)]
    rows = [procedure_grpo_row(s, Path("f.png")) for s in samples]
    completions = [build_chain(s, random.Random(i)) for i, s in enumerate(samples)]
    for name in ("format", "accuracy", "level2", "consistency"):
        assert REWARDS[name](completions, **_columns(rows)) == [1.0] * len(samples), name


def test_a_wrong_or_self_contradicting_action_loses_reward():
    sample = rarp_sample("pushing_the_needle_through_the_tissue")
    columns = _columns([procedure_grpo_row(sample, Path("f.png"))])
    right = build_chain(sample, random.Random(0))
    answer_wrong = right.replace("<answer>Pushing the needle through the tissue", "<answer>Tying a knot")
    assert REWARDS["accuracy"]([answer_wrong], **columns) == [0.0]
    assert REWARDS["level2"]([answer_wrong], **columns) == [1.0]  # Level 2 still names the right action
    assert REWARDS["consistency"]([answer_wrong], **columns) == [0.0]  # the answer contradicts Level 2
    assert REWARDS["format"]([answer_wrong], **columns) == [1.0]


def test_rows_without_a_procedure_column_are_read_by_task_or_dataset():
    assert row_procedure({"task": "action"}) == "rarp"
    assert row_procedure({"task": "phase", "dataset": "multibypass140"}) == "bypass"
    assert row_procedure({"task": "phase", "dataset": "cholec80"}) == "cholecystectomy"
    assert row_procedure({"procedure": "RARP", "task": "tools"}) == "rarp"


def test_bypass_step_chains_and_answers():
    sample = Sample("multibypass140", "BBP01", FrameRef(Path("f.jpg"), None, 320, 180), Task.STEP,
                    Truth(phase="gastric_pouch_creation", step="s8_vertical_stapling"), procedure="bypass")  # fmt: skip
    text = build_chain(sample, random.Random(0))
    chain = parse_chain(text, BYPASS.ontology)
    assert chain.status is ChainStatus.COMPLETE and chain.context.phase.label == "gastric_pouch_creation"
    assert chain_step(chain, BYPASS.vocabulary("step")).label == "s8_vertical_stapling"
    columns = _columns([procedure_grpo_row(sample, Path("f.jpg"))])
    assert REWARDS["accuracy"]([text], **columns) == [1.0]


# ------------------------------------------------------------------------------------- metrics
# Hand-computed: gold A A A B B C, predicted A B A B B B.
#   frames: 4 of 6 right; A: P 2/2, R 2/3, J 2/3; B: P 2/4, R 2/2, J 2/4; C: P 0, R 0, J 0.
#   segments: gold A[0,3) B[3,5) C[5,6); predicted A[0,1) B[1,2) A[2,3) B[3,6).
#   edit: A B C vs A B A B = 2 edits over 4 -> 0.5.
#   F1@10 and F1@25: A[0,1) hits gold A (IoU 1/3), B[1,2) overlaps no B, A[2,3) finds gold A used,
#   B[3,6) hits gold B (IoU 2/3): TP 2, FP 2, FN 1 -> P 1/2, R 2/3, F1 4/7. F1@50: TP 1, FP 3, FN 2 -> 2/7.
GOLD, PRED = list("AAABBC"), list("ABABBB")


def test_action_metrics_equal_the_hand_computed_values():
    m = action_metrics(GOLD, PRED, labels=["A", "B", "C"])
    assert (m.n, m.videos) == (6, 1)
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.precision == pytest.approx((1 + 0.5 + 0) / 3)
    assert m.recall == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert m.jaccard == pytest.approx((2 / 3 + 0.5 + 0) / 3)
    assert m.edit == pytest.approx(0.5)
    assert m.f1 == pytest.approx({"F1@10": 4 / 7, "F1@25": 4 / 7, "F1@50": 2 / 7})


def test_segment_scores_per_video_are_averaged_over_videos():
    perfect = action_metrics(GOLD + list("CCA"), PRED + list("CCA"), ["A", "B", "C"], ["v1"] * 6 + ["v2"] * 3)
    assert perfect.edit == pytest.approx((0.5 + 1.0) / 2)
    assert perfect.f1["F1@50"] == pytest.approx((2 / 7 + 1.0) / 2)
    # Pooled over videos, the two runs of C (end of v1, start of v2) would have been one segment.
    assert perfect.videos == 2


def test_edge_cases_of_the_segment_scores():
    assert edit_score([], []) == 1.0
    assert edit_score([0, 0, 1], [1, 1, 1]) == pytest.approx(0.5)
    assert segment_f1([0, 0, 1], [2, 2, 2], 0.1) == 0.0  # nothing matches: precision and recall 0
    assert segment_f1([0, 0, 0, 0], [0, 0, 0, 0], 0.5) == 1.0
    m = action_metrics(["A", "A"], [None, "A"], ["A"])  # a frame without an answer is wrong, of no class
    assert m.accuracy == 0.5 and m.f1["F1@50"] == pytest.approx(2 * (1 / 2) * 1 / (1 / 2 + 1))


def test_the_report_scores_actions_per_case_in_frame_order():
    rows = []
    for i, (g, p) in enumerate(zip(GOLD, PRED, strict=True)):
        names = {"A": "picking_up_the_needle", "B": "positioning_the_needle_tip", "C": "tying_a_knot"}
        sample = rarp_sample(names[g], index=6 * (5 - i))  # given in reverse: the report sorts by frame
        sample = Sample(sample.dataset, sample.case, FrameRef(sample.frame.path, 6 * i, 320, 180), sample.task,
                        sample.truth, procedure="rarp")  # fmt: skip
        reply = build_chain(rarp_sample(names[p]), random.Random(i))
        rows.append({"response": reply, "sample": sample})
    report = evaluate(reversed(rows))
    action = report["tasks"]["action"]
    assert action["accuracy"] == pytest.approx(4 / 6) and action["edit"] == pytest.approx(0.5)
    assert action["f1"]["F1@50"] == pytest.approx(2 / 7)
    assert report["key_metrics"]["action"] == pytest.approx(4 / 6)
    assert "phase" not in report["tasks"] and "cvs" not in report["tasks"]


@pytest.mark.parametrize("task", [Task.PHASE, Task.PHASE_MCQ])
def test_bypass_phase_chains_earn_full_reward_in_multibypass140s_vocabulary(task):
    phases = [lab.name for lab in BYPASS.vocabulary("phase")]
    samples = [Sample("multibypass140", "BBP01", FrameRef(Path("f.jpg"), None, 320, 180), task, Truth(phase=p),
                      procedure="bypass") for p in phases]  # fmt: skip
    rows = [procedure_grpo_row(s, Path("f.jpg")) for s in samples]
    completions = [build_chain(s, random.Random(i)) for i, s in enumerate(samples)]
    assert REWARDS["accuracy"](completions, **_columns(rows)) == [1.0] * len(samples)
    assert REWARDS["format"](completions, **_columns(rows)) == [1.0] * len(samples)
    head, _ = completions[0].split("<answer>")
    wrong = head + ("<answer>Disassembling</answer>" if task is Task.PHASE else "<answer>K. Disassembling</answer>")
    assert REWARDS["accuracy"]([wrong], **_columns(rows[:1])) == [0.0]  # gold: preparation
    assert rows[1]["prompt"][1]["content"].startswith("Given the laparoscopic Roux-en-Y gastric bypass image <image>")
