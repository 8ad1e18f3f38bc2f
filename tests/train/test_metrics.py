"""Evaluation metrics: hand-computed cases, edge cases, and agreement with ivtmetrics / pycocotools."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import jaccard_score, precision_recall_fscore_support

from engine.chain_parser import parse_chain
from engine.scoring import release_correct
from train.data.sample import FrameRef, Instrument, Sample, Task, TripletLabel, Truth
from train.eval.metrics import (
    COMPONENTS,
    PHASES,
    box_iou,
    box_metrics,
    coco_ap50,
    cvs_metrics,
    mcq_accuracy,
    phase_metrics,
    relaxed_correct,
    triplet_map,
    triplet_set_f1,
    triplet_sets_to_arrays,
)
from train.eval.report import (
    evaluate,
    gold_triplet_ids,
    headline,
    predicted_boxes,
    predicted_cvs,
    predicted_phase,
    predicted_triplets,
    stages_markdown,
    to_markdown,
    write_report,
)

approx = pytest.approx


# ----------------------------------------------------------------------------------------- phase


def test_phase_strict_hand_computed():
    labels = ("P0", "P1", "P2", "P3")  # P3: neither in gold nor predicted → NaN, out of the macro means
    gold = ["P0", "P0", "P1", "P1", "P2"]
    pred = ["P0", "P1", "P1", "P1", "P0"]
    m = phase_metrics(gold, pred, labels=labels)
    assert m.n == 5 and m.accuracy == approx(3 / 5)
    pc = m.per_class
    assert (pc["P0"]["precision"], pc["P0"]["recall"], pc["P0"]["jaccard"]) == approx((1 / 2, 1 / 2, 1 / 3))
    assert (pc["P1"]["precision"], pc["P1"]["recall"], pc["P1"]["jaccard"]) == approx((2 / 3, 1, 2 / 3))
    # P2 is never predicted: precision 0, recall 0, Jaccard 0
    assert (pc["P2"]["precision"], pc["P2"]["recall"], pc["P2"]["jaccard"]) == (0.0, 0.0, 0.0)
    assert math.isnan(pc["P3"]["precision"]) and pc["P3"]["support"] == 0
    assert m.precision == approx((1 / 2 + 2 / 3 + 0) / 3)
    assert m.recall == approx((1 / 2 + 1 + 0) / 3)
    assert m.jaccard == approx((1 / 3 + 2 / 3 + 0) / 3)
    # the same as scikit-learn on the classes present in the gold labels (zero_division=0)
    p, r, _, _ = precision_recall_fscore_support(gold, pred, labels=["P0", "P1", "P2"], zero_division=0)
    j = jaccard_score(gold, pred, labels=["P0", "P1", "P2"], average=None, zero_division=0)
    assert [m.precision, m.recall, m.jaccard] == approx([p.mean(), r.mean(), j.mean()])
    assert m.to_dict()["per_class"]["P3"]["precision"] is None  # NaN → None in JSON


def test_phase_unknown_prediction_is_wrong_and_bad_gold_is_refused():
    m = phase_metrics(["Preparation", "Preparation"], [None, "not a phase"])
    assert m.accuracy == 0.0 and m.per_class["Preparation"]["precision"] == 0.0
    with pytest.raises(ValueError):
        phase_metrics(["Nope"], ["Preparation"])
    with pytest.raises(ValueError):
        phase_metrics(["Preparation"], [])


def test_relaxed_boundary_hand_computed():
    # 10 s at 0.2 fps = a window of 2 frames; gold segments P0 | P1 | P2 of 4 frames each
    gold_ids = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    pred_ids = [0, 0, 2, 1, 0, 0, 3, 2, 1, 2, 2, 3]
    # frame 2: +2 in P0's tail: wrong; 3: +1 in tail: ok; 4, 5: -1 in P1's head: ok; 6: +2 (P1): wrong;
    # 7: +1 in P1's tail: ok; 8: -1 in P2's head: ok; 11: +1 in P2's tail: ok
    ok = relaxed_correct(gold_ids, pred_ids, window=2)
    assert ok.tolist() == [True, True, False, True, True, True, False, True, True, True, True, True]
    gold = [PHASES[i] for i in gold_ids]
    pred = [PHASES[i] for i in pred_ids]
    m = phase_metrics(gold, pred, relaxed=True, fps=0.2)
    assert m.accuracy == approx(4 / 12)
    r = m.relaxed
    assert r["window_frames"] == 2 and r["videos"] == 1
    assert r["accuracy"] == approx(10 / 12)
    pc = r["per_class"]
    assert [pc[PHASES[0]][k] for k in ("precision", "recall", "jaccard")] == approx([1, 3 / 4, 5 / 6])
    assert [pc[PHASES[1]][k] for k in ("precision", "recall", "jaccard")] == approx([1, 3 / 4, 5 / 6])
    assert [pc[PHASES[2]][k] for k in ("precision", "recall", "jaccard")] == approx([3 / 4, 1, 5 / 6])
    assert math.isnan(pc[PHASES[3]]["recall"])  # predicted, never in gold: out of the means
    assert r["precision"] == approx((1 + 1 + 3 / 4) / 3)
    assert r["recall"] == approx((3 / 4 + 3 / 4 + 1) / 3)
    assert r["jaccard"] == approx(5 / 6)


def test_relaxed_special_cases_and_windows():
    # GallbladderDissection (3) may be followed early by CleaningCoagulation (5): +2 in the tail;
    # CleaningCoagulation may start late on GallbladderDissection: -2 in the head.
    assert relaxed_correct([3, 3, 3, 5, 5, 5], [3, 3, 5, 3, 5, 5], window=1).all()
    # not for CalotTriangleDissection (1) → GallbladderDissection (3)
    assert relaxed_correct([1, 1, 1, 3, 3, 3], [1, 1, 3, 1, 3, 3], window=1).tolist() == [1, 1, 0, 0, 1, 1]
    assert relaxed_correct([1, 1, 1, 2, 2, 2], [1, 1, 3, 0, 2, 2], window=1).tolist() == [1, 1, 0, 0, 1, 1]
    # the early-transition window is the segment's end, not its start (the MATLAB script's bug)
    assert relaxed_correct([1, 1, 1, 1, 1, 2], [2, 1, 1, 1, 1, 2], window=2).tolist() == [0, 1, 1, 1, 1, 1]
    # outside the window nothing is relaxed; a segment shorter than the window relaxes all its frames
    assert relaxed_correct([0, 0, 0, 0, 1, 1], [0, 1, 0, 0, 1, 1], window=2).tolist() == [1, 0, 1, 1, 1, 1]
    assert relaxed_correct([0, 1, 2], [1, 2, 1], window=10).tolist() == [True, True, True]


def test_relaxed_is_per_video():
    # video A ends in P1 and video B starts in P1: per video these are two segments, so B's first
    # frame is in the head window of B's P1 segment and its P0 prediction (late transition) counts
    # correct; pooled as one video, that frame is mid-segment and wrong. Window: 10 s at 0.1 fps = 1.
    # As in the Cholec80 script, every gold segment has both windows, the video's first and last too.
    gold = [PHASES[i] for i in (0, 1, 1, 1, 1, 1, 1, 2)]
    pred = [PHASES[i] for i in (0, 1, 1, 1, 0, 1, 1, 2)]
    m = phase_metrics(gold, pred, video_ids=["A"] * 4 + ["B"] * 4, relaxed=True, fps=0.1)
    assert m.relaxed["videos"] == 2 and m.relaxed["window_frames"] == 1
    assert m.relaxed["accuracy"] == 1.0
    pooled = phase_metrics(gold, pred, relaxed=True, fps=0.1)
    assert pooled.relaxed["accuracy"] == approx(7 / 8) and pooled.accuracy == approx(7 / 8)
    # per class, values are averaged over the videos that have the class: P0 only in A
    assert m.relaxed["per_class"][PHASES[0]]["support"] == 1
    assert m.relaxed["per_class"][PHASES[1]]["recall"] == 1.0


# -------------------------------------------------------------------------------------- triplets


def test_triplet_map_hand_computed():
    gold_sets = [{17}, {60}]  # grasper retract gallbladder; hook dissect gallbladder
    pred_sets = [{17, 60}, set()]
    gold, scores = triplet_sets_to_arrays(gold_sets, pred_sets)
    assert gold.shape == scores.shape == (2, 100) and gold.sum() == 2 and scores.sum() == 2
    for use in (False, True) if _has("ivtmetrics") else (False,):
        m = triplet_map(gold, scores, use_ivtmetrics=use)
        # ivt: 17 → AP 1; 60 → gold [0, 1], score [1, 0]: AP 0.5; the other 98 classes NaN
        assert m.AP["ivt"][17] == 1.0 and m.AP["ivt"][60] == 0.5
        assert sum(not math.isnan(x) for x in m.AP["ivt"]) == 2
        assert m.mAP == approx({"i": 0.75, "v": 0.75, "t": 1.0, "iv": 0.75, "it": 0.75, "ivt": 0.75})
        assert [len(m.AP[c]) for c in COMPONENTS] == [6, 10, 15, 26, 59, 100]
    f1 = triplet_set_f1(gold_sets, pred_sets)
    assert (f1["precision"], f1["recall"], f1["f1"]) == approx((0.5, 0.5, 0.5))


def test_triplet_edge_cases():
    assert triplet_set_f1([set(), set()], [set(), set()])["f1"] == 1.0  # nothing to find, nothing claimed
    assert triplet_set_f1([{1}], [set()])["f1"] == 0.0
    assert triplet_set_f1([set()], [{1, -1}])["precision"] == 0.0  # unknown triplet: a false positive
    _, scores = triplet_sets_to_arrays([{3}], [{3, -1, 250}])  # ids without a column are dropped
    assert scores.sum() == 1
    m = triplet_map(np.zeros((3, 100)), np.ones((3, 100)), use_ivtmetrics=False)
    assert all(math.isnan(v) for v in m.mAP.values())
    assert math.isnan(triplet_map(np.zeros((0, 100)), np.zeros((0, 100))).mAP["ivt"])
    with pytest.raises(ValueError):
        triplet_map(np.zeros((2, 100)), np.zeros((3, 100)))


def test_triplet_map_matches_ivtmetrics_on_random_scores():
    ivtmetrics = pytest.importorskip("ivtmetrics")
    rng = np.random.default_rng(7)
    gold = (rng.random((80, 100)) < 0.06).astype(int)
    scores = rng.random((80, 100))
    ours = triplet_map(gold, scores, use_ivtmetrics=False)
    lib = triplet_map(gold, scores, use_ivtmetrics=True)
    assert lib.backend == "ivtmetrics" and ours.backend == "surgview"
    rec = ivtmetrics.Recognition(num_class=100)
    rec.update(gold, scores)
    for comp in COMPONENTS:
        np.testing.assert_allclose(ours.AP[comp], lib.AP[comp], equal_nan=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = np.asarray(rec.compute_AP(comp)["AP"], dtype=float)
        present = ~np.isnan(np.asarray(ours.AP[comp]))
        # on classes with a positive, ivtmetrics' own numbers; elsewhere it says NaN or (new
        # scikit-learn) 0, which triplet_map masks to NaN
        np.testing.assert_allclose(raw[present], np.asarray(ours.AP[comp])[present])
        assert np.all(np.isnan(raw[~present]) | (raw[~present] == 0))
    np.testing.assert_allclose(
        triplet_map(gold, scores, use_ivtmetrics=True, ignore_null=True).AP["ivt"],
        triplet_map(gold, scores, use_ivtmetrics=False, ignore_null=True).AP["ivt"],
        equal_nan=True,
    )


# ------------------------------------------------------------------------------------------- CVS


def test_cvs_hand_computed():
    gold = [[0.67, 0, 1], [0.33, 0.67, 1], [1, 0.33, 0], [0, 0, 0.5]]  # → C1 1010, C2 0100, C3 1101
    pred = [[1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 0, 1]]
    m = cvs_metrics(gold, pred)
    assert approx([0.5, 1.0, 2 / 3 + 1 / 3 * 3 / 4]) == m.AP
    assert m.mAP == approx((0.5 + 1 + 11 / 12) / 3)
    assert m.balanced_accuracy == approx([0.5, 1.0, (2 / 3 + 1) / 2])
    assert m.mean_balanced_accuracy == approx((0.5 + 1 + 5 / 6) / 3)
    assert m.accuracy == approx([0.5, 1.0, 0.75])
    assert m.false_met == [1, 0, 0]  # frame 4's C1: called met, the raters said not met


def test_cvs_met_in_a_phase_whose_gold_never_has_it_is_counted_apart_from_a_few_frames_early():
    # One case: Preparation (never met), then the end of dissection where C1 becomes met on the last frame.
    groups = [("a", "Preparation"), ("a", "Calot"), ("a", "Calot"), ("b", "Calot")]
    gold = [[0, 0, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]]
    pred = [[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0]]
    m = cvs_metrics(gold, pred, phase_groups=groups)
    assert m.false_met == [3, 1, 0]
    # Case a's Calot C1 call one frame early is inside a phase where the gold has C1 met; case b's is not,
    # nor is the Preparation call.
    assert m.met_outside_gold_phases == [2, 1, 0]
    assert cvs_metrics(gold, pred).met_outside_gold_phases is None
    with pytest.raises(ValueError, match="3 phase groups for 4 rows"):
        cvs_metrics(gold, pred, phase_groups=groups[:3])


def test_cvs_criterion_without_positives_is_left_out():
    m = cvs_metrics([[0, 1, 0], [0, 0, 1]], [[0, 1, 0], [1, 0, 1]])
    assert math.isnan(m.AP[0]) and math.isnan(m.balanced_accuracy[0])
    assert m.mAP == 1.0 and m.mean_balanced_accuracy == 1.0
    assert m.to_dict()["AP"][0] is None


# ----------------------------------------------------------------------------------------- boxes

GOLD_BOXES = [[("Grasper", (0, 0, 10, 10)), ("Hook", (20, 20, 30, 30))], [("Grasper", (0, 0, 10, 10))]]
PRED_BOXES = [
    [("Grasper", (0, 0, 10, 5), 0.9), ("Grasper", (50, 50, 60, 60), 0.8)],
    [("Grasper", (0, 0, 10, 10), 0.7)],
]


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 5)) == 0.5
    assert box_iou((0, 0, 10, 10), (5, 5, 15, 15)) == approx(25 / 175)
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching
    assert box_iou((0, 0, 10, 10), (5, 5, 4, 8)) == 0.0  # no area


@pytest.mark.parametrize("backend", ["surgview", "pycocotools"])
def test_box_metrics_hand_computed(backend):
    if backend == "pycocotools":
        pytest.importorskip("pycocotools")
    m = box_metrics(GOLD_BOXES, PRED_BOXES, use_pycocotools=backend == "pycocotools")
    assert m.backend == backend
    assert (m.n_images, m.n_gold, m.n_pred) == (2, 3, 3)
    assert m.mIoU == approx((0.5 + 0 + 1) / 3)  # the Hook was never boxed: IoU 0
    # Grasper: TP (IoU 0.5), FP, TP → recall .5, .5, 1; monotone precision 1, 2/3, 2/3;
    # 101 recall points: 51 at precision 1, 50 at 2/3. Hook: gold without detections → 0.
    assert m.AP50["Grasper"] == approx((51 + 50 * 2 / 3) / 101)
    assert m.AP50["Hook"] == 0.0
    assert m.mAP50 == approx((51 + 50 * 2 / 3) / 101 / 2)


def test_box_edge_cases():
    m = box_metrics([[], []], [[("Grasper", (0, 0, 1, 1))], []], use_pycocotools=False)
    assert m.n_gold == 0 and math.isnan(m.mIoU) and math.isnan(m.mAP50)
    m = box_metrics([[("Grasper", (0, 0, 10, 10))]], [[]], use_pycocotools=False)  # nothing predicted
    assert m.mIoU == 0.0 and m.mAP50 == 0.0
    # no score: 1; a class without gold boxes is left out of the mean
    m = box_metrics([[("Grasper", (0, 0, 10, 10))]], [[("Grasper", (0, 0, 10, 10)), ("Hook", (0, 0, 10, 10))]])
    assert m.mAP50 == approx(1.0) and set(m.AP50) == {"Grasper"}


def _random_boxes(rng, n_images=40, classes=("A", "B", "C")):
    gold, pred = [], []
    for _ in range(n_images):
        g_img, p_img = [], []
        for _ in range(rng.integers(0, 5)):
            x, y = rng.random(2) * 200
            w, h = rng.random(2) * 60 + 10
            c = classes[rng.integers(len(classes))]
            g_img.append((c, (x, y, x + w, y + h)))
            if rng.random() < 0.75:
                j = rng.normal(0, 4, 4).clip(-4.5, 4.5)
                p_img.append((c, (x + j[0], y + j[1], x + w + j[2], y + h + j[3]), float(rng.random())))
        for _ in range(rng.integers(0, 3)):
            x, y = rng.random(2) * 200
            w, h = rng.random(2) * 60 + 10
            p_img.append((classes[rng.integers(len(classes))], (x, y, x + w, y + h), float(rng.random())))
        gold.append(g_img)
        pred.append(p_img)
    return gold, pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_box_ap50_matches_pycocotools_on_random_boxes(seed):
    pytest.importorskip("pycocotools")
    gold, pred = _random_boxes(np.random.default_rng(seed))
    lib = box_metrics(gold, pred, use_pycocotools=True)
    ours = box_metrics(gold, pred, use_pycocotools=False)
    assert approx(ours.AP50, abs=1e-9) == lib.AP50
    assert lib.mAP50 == approx(ours.mAP50, abs=1e-9) and lib.mIoU == ours.mIoU
    assert coco_ap50(gold, pred) == approx(ours.AP50)


# ------------------------------------------------------------------------------------------- MCQ


def test_mcq_accuracy_is_the_release_scorer():
    responses = [
        "<think>x</think><answer>B. Clipping Cutting</answer>",
        "the answer is A",
        "<answer>Preparation</answer>",
    ]
    labels = ["B. Clipping Cutting", "C. Preparation", "Gallbladder Dissection"]
    m = mcq_accuracy(responses, labels)
    # "the answer is A" normalises to "a", which "preparation" contains: right, as the release counts it
    assert (m.n, m.correct) == (3, 2) and m.accuracy == approx(2 / 3)
    assert m.correct == sum(release_correct(r, lb) for r, lb in zip(responses, labels, strict=True))
    assert math.isnan(mcq_accuracy([], []).accuracy)


# ------------------------------------------------------------------------------- chain → predictions

FULL = (
    "<think>\nLevel 1 (Perception): Instruments: Grasper [0, 0, 10, 10] (0.90), Hook [20, 20, 30, 30]. "
    "Anatomy: liver.\nLevel 2 (Relation): Triplets: grasper retract gallbladder; hook eat liver.\n"
    "Level 3 (Context): Phase: Calot Triangle Dissection. CVS: C1 met, C2 not met, C3 not assessable.\n"
    "</think>\n<answer>{answer}</answer>"
)


def _sample(task, truth, case="video01", index=0, answer=None):
    return Sample("synthetic", case, FrameRef(Path("v.mp4"), index), task, truth, answer=answer)


def test_predictions_from_chain():
    chain = parse_chain(FULL.format(answer="Clipping Cutting"))
    assert predicted_phase(chain) == "ClippingCutting"  # the answer wins over Level 3
    assert predicted_phase(parse_chain(FULL.format(answer="see above"))) == "CalotTriangleDissection"
    assert predicted_phase(parse_chain("no chain at all")) is None
    assert predicted_triplets(chain) == {17, -1}  # Level 2; "hook eat liver" is unknown: its own id
    assert predicted_triplets(parse_chain(FULL.format(answer="hook dissect gallbladder"))) == {60}
    assert predicted_cvs(chain) == (1.0, 0.0, 0.0)  # Level 3
    assert predicted_cvs(parse_chain(FULL.format(answer="C1 not met, C2 met, C3 met"))) == (0.0, 1.0, 1.0)
    frame = _sample(Task.FRAME, Truth(instruments=(Instrument("Grasper", (0, 0, 10, 10)),)))
    assert predicted_boxes(chain, frame) == [("Grasper", (0, 0, 10, 10), 0.9), ("Hook", (20, 20, 30, 30), 1.0)]
    loc = _sample(Task.LOCALISATION, frame.truth)
    # localisation: the answer's unlabelled box takes the gold class; else sightings of the gold class
    assert predicted_boxes(parse_chain(FULL.format(answer="[1, 2, 11, 12]")), loc) == [("Grasper", (1, 2, 11, 12), 1.0)]
    assert predicted_boxes(chain, loc) == [("Grasper", (0, 0, 10, 10), 0.9)]
    truth = Truth(triplets=(TripletLabel("grasper", "retract", "gallbladder"), TripletLabel("hook", "x", "y", 60)))
    assert gold_triplet_ids(truth) == {17, 60}


def test_evaluate_builds_the_report_and_tables(tmp_path):
    box_truth = Truth(phase="CalotTriangleDissection", instruments=(Instrument("Grasper", (0, 0, 10, 10)),))
    rows = [
        # phase: 2 frames of one case, one right
        {
            "response": FULL.format(answer="Calot Triangle Dissection"),
            "sample": _sample(Task.PHASE, Truth(phase="CalotTriangleDissection"), index=0),
        },
        (FULL.format(answer="Preparation"), _sample(Task.PHASE, Truth(phase="ClippingCutting"), index=25)),
        # triplet: gold {17}; the answer says {17} (Level 2's unknown triplet is not read)
        (
            FULL.format(answer="grasper retract gallbladder"),
            _sample(Task.TRIPLET, Truth(triplets=(TripletLabel("grasper", "retract", "gallbladder", 17),))),
        ),
        # CVS: C1 met (gold 1), C2 not met (gold 0.67), C3 not assessable (gold 0)
        (FULL.format(answer="C1 met, C2 not met, C3 not assessable"), _sample(Task.CVS, Truth(cvs=(1.0, 0.67, 0.0)))),
        (FULL.format(answer="C1 not met, C2 not met, C3 not met"), _sample(Task.CVS, Truth(cvs=(0.0, 0.33, 0.0)))),
        # localisation: the answer's box is exact
        (FULL.format(answer="[0, 0, 10, 10]"), _sample(Task.LOCALISATION, box_truth)),
        # MCQ: release scorer
        (
            FULL.format(answer="B. Clipping Cutting"),
            _sample(Task.PHASE_MCQ, Truth(phase="ClippingCutting"), answer="B. Clipping Cutting"),
        ),
    ]
    report = evaluate(rows)
    assert report["n"] == 7 and report["parsed"]["complete"] == 7
    tasks = report["tasks"]
    assert tasks["phase"]["n"] == 2 and tasks["phase"]["accuracy"] == 0.5
    assert tasks["phase"]["relaxed"]["videos"] == 1
    assert tasks["triplet"]["mAP_ivt"] == 1.0 and tasks["triplet"]["set_f1"]["precision"] == 1.0
    assert tasks["cvs"]["AP"][0] == 1.0 and tasks["cvs"]["AP"][1] == 0.5 and tasks["cvs"]["AP"][2] is None
    assert tasks["cvs"]["mAP"] == 0.75
    assert tasks["boxes"]["mAP50"] == approx(1.0) and tasks["boxes"]["mIoU"] == 1.0
    assert tasks["mcq"]["accuracy"] == 1.0
    assert approx({"phase": 0.5, "triplet": 1.0, "cvs": 0.75, "boxes": 1.0, "mcq": 1.0}) == report["key_metrics"]
    assert report["arena_score"] == approx((0.5 + 1 + 0.75 + 1 + 1) / 5)
    table = to_markdown(report)
    assert "| phase | 2 | phase accuracy | 50.00 |" in table
    assert "| **arena** | 7 | mean of key metrics | **85.00** |" in table
    assert table.count("\n") == 2 + 5 + 1
    stages = stages_markdown({"base": report, "sft": report})
    assert stages.splitlines()[0].startswith("| stage | phase accuracy | triplet ivt mAP")
    assert "| sft | 50.00 | 100.00 | 75.00 | 100.00 | 100.00 | 85.00 |" in stages
    path = write_report(report, tmp_path / "eval" / "report.json")
    assert json.loads(path.read_text())["arena_score"] == approx(0.85)
    assert path.with_suffix(".md").read_text() == table


def test_evaluate_frame_analysis_feeds_every_family_and_empty_input():
    truth = Truth(
        phase="CalotTriangleDissection",
        instruments=(Instrument("Grasper", (0, 0, 10, 10)),),
        triplets=(TripletLabel("grasper", "retract", "gallbladder"),),
        cvs=(1.0, 0.0, 0.0),
    )
    report = evaluate([(FULL.format(answer="done"), _sample(Task.FRAME, truth))])
    assert set(report["tasks"]) == {"phase", "triplet", "cvs", "boxes"}
    assert report["key_metrics"]["phase"] == 1.0 and report["key_metrics"]["boxes"] == approx(1.0)
    empty = evaluate([])
    assert empty["tasks"] == {} and empty["arena_score"] is None
    assert "**–**" in to_markdown(empty)


def test_the_headline_separates_met_calls_in_a_phase_the_gold_never_has_from_calls_a_frame_early():
    def frame(phase, cvs, index):
        return _sample(Task.FRAME, Truth(phase=phase, cvs=cvs), index=index)

    # FULL calls C1 met on every frame: during Preparation (never met there), one frame before the gold's
    # C1 in dissection, then where the gold has it.
    rows = [
        (FULL.format(answer="done"), frame("Preparation", (0.0, 0.0, 0.0), 0)),
        (FULL.format(answer="done"), frame("CalotTriangleDissection", (0.33, 0.0, 0.0), 25)),
        (FULL.format(answer="done"), frame("CalotTriangleDissection", (1.0, 0.0, 0.0), 50)),
    ]
    head = headline(evaluate(rows))
    assert head["cvs_false_met"] == [2, 0, 0]
    assert head["cvs_met_outside_gold_phases"] == [1, 0, 0]
    no_phase = evaluate([(FULL.format(answer="done"), _sample(Task.CVS, Truth(cvs=(0.0, 0.0, 0.0))))])
    assert headline(no_phase)["cvs_met_outside_gold_phases"] is None  # Endoscapes-style rows: no phase to group by


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
