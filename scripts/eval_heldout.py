"""Evaluate any model folder on a pipeline run's own held-out samples: the frames that run's table was judged on,
so models trained by different recipes compare on the same frames.

    .venv/bin/python scripts/eval_heldout.py MODEL_DIR RECIPE.yaml --run RUN_DIR --out OUT_DIR

Prints the manifest headline (phase accuracy, CVS accuracy and false "met" calls, triplet ivt mAP, box mAP@50,
complete chains); OUT_DIR gets report.json, report.md and responses.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    from train.eval.report import headline
    from train.eval.run import evaluate_model
    from train.pipeline import load_pipeline_recipe, recipe_samples

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--run", type=Path, help="the run folder holding the cases (default: the recipe's out)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    recipe = load_pipeline_recipe(args.recipe)
    # another run's cases are read as they are: remaking them would delete that run's cases
    test = recipe_samples(recipe, args.run or Path(recipe.out), remake_cases=False).test
    options = recipe.evaluation
    report = evaluate_model(args.model, test, args.out, options.max_new_tokens, options.batch_size)
    print(json.dumps(headline(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
