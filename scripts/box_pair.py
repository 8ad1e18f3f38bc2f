"""Box mAP@50 of two models on the same held-out frames, with a paired bootstrap over frames: is B's gain noise?

    .venv/bin/python scripts/box_pair.py MODEL_A MODEL_B RECIPE.yaml [--run RUN_DIR] [--rounds 300]

Each model answers the run's held-out frames (as ``scripts/eval_heldout.py`` reads them; the cases are never made
again); boxes are ranked by the probability of the tokens of their name and box, as the evaluation ranks them.
Prints each model's mAP@50 and per-class AP, their 95% intervals and B − A with its paired interval: an interval
holding 0 cannot be told from which frames happened to be held out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    from engine.chain_parser import parse_chain
    from train.eval.confidence import mention_scores
    from train.eval.metrics import coco_ap50
    from train.eval.report import gold_boxes, predicted_boxes
    from train.eval.run import answer_samples, box_scale, model_box_units
    from train.pipeline import load_pipeline_recipe, recipe_samples

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_a", type=Path)
    parser.add_argument("model_b", type=Path)
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--run", type=Path, help="the run folder holding the cases (default: the recipe's out)")
    parser.add_argument("--rounds", type=int, default=300, help="bootstrap resamples")
    args = parser.parse_args(argv)
    recipe = load_pipeline_recipe(args.recipe)
    test = recipe_samples(recipe, args.run or Path(recipe.out), remake_cases=False).test
    framed = [s for s in test if gold_boxes(s.truth)]

    def boxes(model: Path) -> list:
        out = []
        options = recipe.evaluation
        units = model_box_units(model)  # a model trained on 0-1000 boxes is asked for them and mapped back
        for sample, (text, pieces) in zip(
            framed, answer_samples(model, framed, options.max_new_tokens, options.batch_size), strict=True
        ):
            chain = parse_chain(text)
            scores = mention_scores(text, pieces, chain).sightings
            out.append(predicted_boxes(chain, sample, scores, box_scale(units, sample)))
        return out

    gold = [gold_boxes(s.truth) for s in framed]
    preds = {"A": boxes(args.model_a), "B": boxes(args.model_b)}

    def mean_ap(pred: list, index) -> float:
        return float(np.mean(list(coco_ap50([gold[i] for i in index], [pred[i] for i in index]).values())))

    everything = np.arange(len(gold))
    print(f"{len(gold)} held-out frames with boxes")
    for name, pred in preds.items():
        per_class = {k: round(v, 3) for k, v in coco_ap50(gold, pred).items()}
        print(f"{name} mAP@50 {mean_ap(pred, everything):.3f} {per_class}")
    rng = np.random.default_rng(0)
    a, b = [], []
    for _ in range(args.rounds):
        index = rng.integers(0, len(gold), len(gold))
        a.append(mean_ap(preds["A"], index))
        b.append(mean_ap(preds["B"], index))
    diff = np.array(b) - np.array(a)
    gain = mean_ap(preds["B"], everything) - mean_ap(preds["A"], everything)
    (a_low, a_high), (b_low, b_high) = np.percentile(a, [2.5, 97.5]), np.percentile(b, [2.5, 97.5])
    d_low, d_high = np.percentile(diff, [2.5, 97.5])
    print(
        f"A 95% [{a_low:.3f}, {a_high:.3f}]  B 95% [{b_low:.3f}, {b_high:.3f}]  "
        f"B - A {gain:+.3f} [{d_low:.3f}, {d_high:.3f}]"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
