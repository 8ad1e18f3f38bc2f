"""Where a model's boxes miss: per class, how often a gold tool is named and how often its box reaches IoU 0.5; the
IoU histogram; how far box centres sit from the gold's; on held-out or on training frames; and, from the run's SFT
set, how much of the training loss the box coordinates carry.

    .venv/bin/python scripts/box_diagnostics.py MODEL RECIPE.yaml [--run RUN_DIR] [--split test|train]
        [--frames N] [--loss-rows N]

Held-out frames are read as ``scripts/eval_heldout.py`` reads them (the cases are never made again). ``--split
train`` takes N distinct frames of the run's training cases (shuffled with seed 0): a model that places boxes on its
own training frames much better than on held-out ones is short of data, one that misses both is short of capacity
or resolution. ``--loss-rows N`` scores the first N rows of the run's ``cot/sft.jsonl`` as SFT does (the assistant's
tokens) and prints the share of the loss on digits inside ``[...]``.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

IOU_BINS = (0.0, 0.01, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.01)


def box_report(gold: list[list[tuple[str, tuple]]], pred: list[list[tuple]]) -> list[str]:
    """Lines saying, per class and overall, how the predicted boxes of each frame sit on its gold boxes (as the
    evaluation reads them: class, box and an optional score, unused here). Each gold box is matched to the
    best-overlapping unused predicted box of its class on the same frame."""
    from train.eval.metrics import box_iou

    golds, named, hits = Counter(), Counter(), Counter()
    ious, dx, dy = [], [], []
    for frame_gold, frame_pred in zip(gold, pred, strict=True):
        used: set[int] = set()
        for tool, box in frame_gold:
            golds[tool] += 1
            same = [(j, p[1]) for j, p in enumerate(frame_pred) if p[0] == tool and j not in used]
            if not same:
                continue
            j, p = max(same, key=lambda jp: box_iou(jp[1], box))
            used.add(j)
            iou = box_iou(p, box)
            named[tool] += 1
            hits[tool] += iou >= 0.5
            ious.append(iou)
            dx.append(abs((p[0] + p[2]) - (box[0] + box[2])) / 2)
            dy.append(abs((p[1] + p[3]) - (box[1] + box[3])) / 2)
    lines = [f"{sum(golds.values())} gold boxes on {len(gold)} frames"]
    for tool in sorted(golds):
        lines.append(
            f"  {tool:10s} gold {golds[tool]:4d}  named {named[tool] / golds[tool]:5.1%}  "
            f"IoU >= 0.5 of named {hits[tool] / max(named[tool], 1):5.1%}"
        )
    if ious:
        counts = np.histogram(ious, bins=IOU_BINS)[0].tolist()
        lines.append(f"IoU >= 0.5 of all named: {np.mean(np.array(ious) >= 0.5):.1%}; histogram {counts}")
        lines.append(f"  (bins {list(IOU_BINS[:-1])} and up)")
        q = [25, 50, 75, 90]
        lines.append(f"centre |dx| px, quartiles and 90th: {np.percentile(dx, q).round(1).tolist()}")
        lines.append(f"centre |dy| px, quartiles and 90th: {np.percentile(dy, q).round(1).tolist()}")
    return lines


def coordinate_loss_share(model_dir: Path, sft_rows: Path, rows: int) -> str:
    """The share of the SFT loss (assistant tokens, as the trainer scores them) on the digits of ``[...]`` boxes."""
    import torch
    from trl import SFTTrainer

    from train.sft import SFTRecipe, checked_model, load_sft_rows, load_trainable
    from train.stage_inputs import image_dataset

    info = checked_model(model_dir, RuntimeError)
    model, processor = load_trainable(info, 0)
    recipe = SFTRecipe(
        model=str(model_dir),
        data=str(sft_rows),
        output_dir=str(Path(tempfile.gettempdir()) / "box-diagnostics"),
        max_steps=1,
        per_device_train_batch_size=8,
    )
    data = image_dataset(load_sft_rows(sft_rows)[:rows])
    trainer = SFTTrainer(model=model, args=recipe.trainer_args(), train_dataset=data, processing_class=processor)
    tokenizer = processor.tokenizer
    box_loss = other_loss = 0.0
    box_tokens = other_tokens = 0
    model.eval()
    with torch.no_grad():
        for batch in trainer.get_train_dataloader():
            labels = batch.pop("labels")[:, 1:]
            logits = model(**batch).logits[:, :-1]
            loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
            for b in range(labels.shape[0]):
                inside = False
                for t in torch.nonzero(labels[b] >= 0).flatten().tolist():
                    piece = tokenizer.decode([int(labels[b, t])])
                    inside = inside or "[" in piece
                    if inside and any(ch.isdigit() for ch in piece):
                        box_loss, box_tokens = box_loss + float(loss[b, t]), box_tokens + 1
                    else:
                        other_loss, other_tokens = other_loss + float(loss[b, t]), other_tokens + 1
                    inside = inside and "]" not in piece
    total = box_loss + other_loss
    return (
        f"box-coordinate digits: {box_tokens} of {box_tokens + other_tokens} assistant tokens "
        f"({box_tokens / max(box_tokens + other_tokens, 1):.1%}), {box_loss / max(total, 1e-9):.1%} of the loss; "
        f"mean loss per digit {box_loss / max(box_tokens, 1):.3f}, "
        f"per other token {other_loss / max(other_tokens, 1):.4f}"
    )


def main(argv: list[str] | None = None) -> int:
    from engine.chain_parser import parse_chain
    from train.eval.report import gold_boxes, predicted_boxes
    from train.eval.run import answer_samples, box_scale, model_box_units
    from train.pipeline import load_pipeline_recipe, recipe_samples

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--run", type=Path, help="the run folder holding the cases (default: the recipe's out)")
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--frames", type=int, default=240, help="training frames to answer (--split train)")
    parser.add_argument("--loss-rows", type=int, default=0, help="SFT rows to score for the loss share (0: none)")
    args = parser.parse_args(argv)
    recipe = load_pipeline_recipe(args.recipe)
    run = args.run or Path(recipe.out)
    samples = recipe_samples(recipe, run, remake_cases=False)
    if args.split == "test":
        chosen = samples.test
    else:
        pool = list(samples.train)
        random.Random(0).shuffle(pool)
        seen, chosen = set(), []
        for sample in pool:  # oversampled frames appear more than once in the training list
            key = (str(sample.case), str(sample.frame))
            if key not in seen:
                seen.add(key)
                chosen.append(sample)
            if len(chosen) == args.frames:
                break
    framed = [s for s in chosen if gold_boxes(s.truth)]
    options = recipe.evaluation
    answers = answer_samples(args.model, framed, options.max_new_tokens, options.batch_size)
    units = model_box_units(args.model)
    pred = [
        predicted_boxes(parse_chain(text), s, scale=box_scale(units, s))
        for s, (text, _) in zip(framed, answers, strict=True)
    ]
    print(f"{args.model} on {args.split} frames of {run}")
    print("\n".join(box_report([gold_boxes(s.truth) for s in framed], pred)))
    if args.loss_rows:
        print(coordinate_loss_share(args.model, run / "cot" / "sft.jsonl", args.loss_rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
