"""Scores from the model's own token probabilities: AP ranks a sure, right prediction above a doubtful,
wrong one, where equal scores of 1 would make AP precision × recall."""

from __future__ import annotations

from pathlib import Path

from pytest import approx

from engine.chain_parser import parse_chain
from train.data.sample import FrameRef, Instrument, Sample, Task, TripletLabel, Truth
from train.eval.confidence import mention_scores
from train.eval.report import evaluate

CHAIN = (
    "<think>\n"
    "Level 1 (Perception): Instruments: Grasper [262, 146, 334, 176], Hook [366, 192, 439, 225]. Anatomy: liver.\n"
    "Level 2 (Relation): Triplets: grasper retract gallbladder; hook no action no target.\n"
    "Level 3 (Context): Phase: Calot Triangle Dissection. CVS: C1 met, C2 met, C3 not met. Safety: x.\n"
    "</think>\n"
    "<answer>Phase: Calot Triangle Dissection. Triplets: grasper retract gallbladder; {extra}. "
    "CVS: C1 met, C2 met, C3 not met.</answer>"
)


def pieces(text: str, doubtful: dict[str, float]) -> list[tuple[str, float]]:
    """One token per character, 0.99 each, except the first occurrence of each doubtful word."""
    probs = [0.99] * len(text)
    for word, p in doubtful.items():
        at = text.index(word)
        probs[at : at + len(word)] = [p] * len(word)
    return list(zip(text, probs, strict=True))


def test_a_mention_scores_the_probability_of_the_tokens_the_model_wrote_for_it():
    text = CHAIN.format(extra="hook dissect cystic duct")
    scores = mention_scores(text, pieces(text, {"Hook": 0.5}), parse_chain(text))
    # "Grasper [262, 146, 334, 176]" (28 characters), "Hook [366, 192, 439, 225]": each name with its box
    assert scores.sightings == approx((0.99**28, 0.5**4 * 0.99**21))
    # Level 2 scores its triplets (the answer repeating them adds nothing); one only in the answer is scored there
    assert scores.triplets == approx({17: 0.99**27, 96: 0.99**24, 58: 0.99**24})


def test_a_sure_name_with_a_doubtful_box_scores_below_a_sure_box():
    # The model was sure a hook is there but not where: the digits it wrote for the box were guesses.
    text = CHAIN.format(extra="hook dissect cystic duct")
    scores = mention_scores(text, pieces(text, {"366, 192": 0.4}), parse_chain(text))
    grasper, hook = scores.sightings
    assert hook == approx(0.99**17 * 0.4**8)  # 25 characters, 8 of them doubtful
    assert hook < 0.1 < grasper


def test_a_sighting_without_a_box_scores_its_name():
    text = CHAIN.format(extra="hook dissect cystic duct").replace(" [262, 146, 334, 176]", "")
    scores = mention_scores(text, pieces(text, {"Grasper": 0.5}), parse_chain(text))
    assert scores.sightings[0] == approx(0.5**7)


def test_tokens_that_do_not_spell_the_text_give_no_scores():
    text = CHAIN.format(extra="hook dissect cystic duct")
    scores = mention_scores(text, [("something else", 0.5)], parse_chain(text))
    assert scores.sightings == () and scores.triplets == {}


def _frame(truth: Truth, index: int) -> Sample:
    return Sample("synthetic", "video01", FrameRef(Path("v.mp4"), index), Task.FRAME, truth)


def test_ap_ranks_a_doubtful_wrong_box_and_triplet_below_sure_right_ones():
    # Frame 0: grasper right, hook box wrong; frame 1: hook right. Gold has a hook in both frames.
    right = Truth(
        phase="CalotTriangleDissection",
        instruments=(Instrument("Grasper", (262, 146, 334, 176)), Instrument("Hook", (10, 10, 60, 40))),
        triplets=(TripletLabel("grasper", "retract", "gallbladder"), TripletLabel("hook", "dissect", "cystic duct")),
    )
    other = Truth(
        phase="CalotTriangleDissection",
        instruments=(Instrument("Hook", (366, 192, 439, 225)),),
        triplets=(TripletLabel("hook", "no action", "no target"),),
    )
    first = CHAIN.format(extra="hook dissect cystic duct")
    rows = [(first, _frame(right, 0)), (CHAIN.format(extra="hook no action no target"), _frame(other, 1))]
    equal = evaluate(rows)
    # doubtful: frame 0's wrong hook box, and frame 1's grasper triplet (no grasper there)
    ranked = evaluate(
        [
            {"response": first, "sample": rows[0][1], "token_probs": pieces(first, {"Hook": 0.3})},
            {
                "response": rows[1][0],
                "sample": rows[1][1],
                "token_probs": pieces(rows[1][0], {"grasper retract gallbladder": 0.3}),
            },
        ]
    )
    # the hook class: 2 gold, 2 predicted, 1 right. Tied, the wrong one comes first (precision 0.5 up to recall
    # 0.5); ranked, the right one does (precision 1): COCO's 101-point AP doubles.
    assert equal["tasks"]["boxes"]["AP50"]["Hook"] == approx(0.5 * 51 / 101)
    assert ranked["tasks"]["boxes"]["AP50"]["Hook"] == approx(51 / 101)
    assert equal["tasks"]["triplet"]["AP"]["ivt"][17] == approx(0.5)  # right in frame 0, wrong in frame 1
    assert ranked["tasks"]["triplet"]["AP"]["ivt"][17] == approx(1.0)
    assert ranked["tasks"]["triplet"]["mAP_ivt"] > equal["tasks"]["triplet"]["mAP_ivt"]
    assert ranked["tasks"]["phase"] == equal["tasks"]["phase"]  # what the text says is read as before
