"""The Surg-R1 ablation over several seeds, with confidence intervals: one pipeline run per seed, then one table.

    .venv/bin/python scripts/ablation.py --seeds 0 1 2 3 4            # train/recipes/ablation.yaml, runs/ablation/
    .venv/bin/python scripts/ablation.py --seeds 0 1 2 3 4 --table    # only the table, from the runs there

Every seed starts from the same warm-up model (``train/recipes/warmup-phase.yaml``: the phase answered
directly, which teaches the model to read the frames and nothing of the chain) and runs the same recipe; ``seed``
changes the order the data is seen in and what GRPO and self-iteration sample, not the warm-up's weights. The
synthetic cases, and so the held-out set, are the same for every seed: generated once and shared.
Each run is resumable, like ``surgview-train run``. The table gives, per variant and stage, the mean over seeds
with a 95% Student-t interval, and the chain's paired difference from the direct answer with its interval: a
difference whose interval holds 0 cannot be told from run-to-run noise.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VARIANTS = ("chain", "direct")
# (label, how to read it from an evaluation report); None when the report has no such task.
METRICS = {
    "CVS mAP": lambda r: _get(r, "tasks", "cvs", "mAP"),
    "CVS accuracy": lambda r: _mean(_get(r, "tasks", "cvs", "accuracy")),
    "triplet ivt mAP": lambda r: _get(r, "tasks", "triplet", "mAP_ivt"),
    "arena": lambda r: r.get("arena_score"),
    "well-formed": lambda r: r.get("format_ok"),
}


def _get(report: dict, *keys: str):
    for key in keys:
        if not isinstance(report, dict) or key not in report:
            return None
        report = report[key]
    return report


def _mean(values) -> float | None:
    values = [v for v in values or [] if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else None


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int

    def text(self, scale: float = 100.0) -> str:
        if self.n < 2:
            return f"{scale * self.mean:.1f}"
        return f"{scale * self.mean:.1f} [{scale * self.low:.1f}, {scale * self.high:.1f}]"


def t_interval(
    values: Sequence[float], level: float = 0.95, bounds: tuple[float, float] | None = None
) -> Interval | None:
    """Mean and two-sided Student-t interval over independent runs (no interval from one run); ``bounds``
    clips the interval to a score's range (a share cannot pass 0 or 1; a difference of two is not clipped)."""
    values = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return Interval(mean, mean, mean, 1)
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Interval(mean, low, high, len(values))


def seed_reports(out: Path, seeds: Sequence[int]) -> dict[int, dict[str, dict]]:
    """seed → "variant/stage" → its held-out evaluation report, for the runs that got that far."""
    found: dict[int, dict[str, dict]] = {}
    for seed in seeds:
        folder = out / f"seed{seed}" / "eval"
        reports = {}
        for path in sorted(folder.glob("*/report.json")):
            variant, _, stage = path.parent.name.partition("-")
            if variant in VARIANTS:  # not the validation reports the iteration's learning rate was chosen on
                reports[f"{variant}/{stage}"] = json.loads(path.read_text(encoding="utf-8"))
        if reports:
            found[seed] = reports
    return found


def rates_note(out: Path, seeds: Sequence[int]) -> str:
    """Which self-iteration learning rate each seed's validation case chose, per variant and round."""
    from train.pipeline import variant_label

    lines = []
    for variant in VARIANTS:
        for round_file in sorted(
            {p.parent.name for s in seeds for p in (out / f"seed{s}" / variant).glob("iter*/learning-rate.json")}
        ):
            chosen = []
            for seed in seeds:
                path = out / f"seed{seed}" / variant / round_file / "learning-rate.json"
                if path.exists():
                    chosen.append(f"seed {seed}: {json.loads(path.read_text(encoding='utf-8'))['chosen']:g}")
            lines.append(f"- {variant_label(variant)}, {round_file}: " + ", ".join(chosen))
    if not lines:
        return ""
    head = "Self-iteration learning rate, chosen per seed on the validation case (arena score; never the held-out set):"
    return "\n".join([head, *lines]) + "\n"


def _stage_order(key: str) -> tuple:
    variant, stage = key.split("/")
    return (variant != "direct", 0 if stage == "sft" else 1 if stage == "grpo" else 2, stage)


def ablation_table(reports: dict[int, dict[str, dict]]) -> tuple[str, list[dict]]:
    """Markdown table and JSON rows: every variant/stage and metric as mean [95% CI] over seeds, then the chain's
    paired difference from the direct answer at the same stage."""
    from train.pipeline import stage_label, variant_label

    keys = sorted({k for per_seed in reports.values() for k in per_seed}, key=_stage_order)
    names = [m for m in METRICS if any(METRICS[m](r) is not None for s in reports.values() for r in s.values())]
    rows: list[dict] = []
    lines = ["| variant | stage | seeds | " + " | ".join(names) + " |", "| --- | --- | ---: |" + " ---: |" * len(names)]
    for key in keys:
        variant, stage = key.split("/")
        cells, row = [], {"variant": variant, "stage": stage}
        seeds = [s for s in reports if key in reports[s]]
        for name in names:
            interval = t_interval([METRICS[name](reports[s][key]) for s in seeds], bounds=(0.0, 1.0))
            row[name] = None if interval is None else interval.__dict__
            cells.append("–" if interval is None else interval.text())
        row["seeds"] = seeds
        rows.append(row)
        lines.append(f"| {variant_label(variant)} | {stage_label(stage)} | {len(seeds)} | " + " | ".join(cells) + " |")
    diffs = []
    for key in keys:
        variant, stage = key.split("/")
        other = f"direct/{stage}"
        if variant != "chain" or other not in keys:
            continue
        seeds = [s for s in reports if key in reports[s] and other in reports[s]]
        cells, row = [], {"variant": "chain - direct", "stage": stage, "seeds": seeds}
        for name in names:
            pairs = [(METRICS[name](reports[s][key]), METRICS[name](reports[s][other])) for s in seeds]
            interval = t_interval([a - b for a, b in pairs if a is not None and b is not None])
            row[name] = None if interval is None else interval.__dict__
            cells.append("–" if interval is None else interval.text())
        rows.append(row)
        diffs.append(f"| chain − direct (paired) | {stage_label(stage)} | {len(seeds)} | " + " | ".join(cells) + " |")
    n = {r.get("n") for per_seed in reports.values() for r in per_seed.values()}
    note = (
        f"\nMean over seeds [95% Student-t interval, clipped to 0-100 for scores], in points; held-out samples per "
        f"evaluation: "
        f"{', '.join(str(v) for v in sorted(x for x in n if x is not None))}.\n"
    )
    return "\n".join(lines + diffs) + "\n" + note, rows


def warm_base(warmup_path: Path, out: Path) -> Path:
    """The neutral warm-up every seed starts from (phase answered directly: the frames, not the chain's form)."""
    from train.pipeline import load_pipeline_recipe, run_pipeline

    recipe = load_pipeline_recipe(warmup_path)
    recipe.out = str(out / "warmup")
    return Path(run_pipeline(recipe, say=lambda line: print(f"[warm-up] {line}", flush=True))["model"])


def run_seed(recipe_path: Path, out: Path, seed: int, first: int, base: Path | None = None) -> None:
    """One pipeline run of ``recipe_path`` with ``seed`` into ``out/seed<seed>``, sharing the first seed's cases."""
    from train.pipeline import load_pipeline_recipe, run_pipeline

    recipe = load_pipeline_recipe(recipe_path)
    recipe.seed = seed
    if base is not None:
        recipe.base_model = str(base)
    recipe.out = str(out / f"seed{seed}")
    folder = Path(recipe.out)
    shared = out / f"seed{first}" / "data"
    if seed != first and shared.is_dir() and not (folder / "data").exists():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "data").symlink_to(shared.resolve(), target_is_directory=True)
    run_pipeline(recipe, say=lambda line: print(f"[seed {seed}] {line}", flush=True))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=ROOT / "train" / "recipes" / "ablation.yaml")
    parser.add_argument("--warmup", type=Path, default=ROOT / "train" / "recipes" / "warmup-phase.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--table", action="store_true", help="only write the table from the runs in --out")
    args = parser.parse_args(argv)
    if not args.table:
        base = warm_base(args.warmup, args.out)
        for seed in args.seeds:
            run_seed(args.recipe, args.out, seed, args.seeds[0], base)
    reports = seed_reports(args.out, args.seeds)
    if not reports:
        print(f"no evaluated runs under {args.out}", file=sys.stderr)
        return 1
    table, rows = ablation_table(reports)
    note = rates_note(args.out, args.seeds)
    table += f"\n{note}" if note else ""
    (args.out / "table.md").write_text(table, encoding="utf-8")
    (args.out / "table.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
