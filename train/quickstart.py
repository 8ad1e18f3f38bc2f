"""One command from nothing to a fine-tuned, evaluated model, on synthetic cases only:

    surgview-train sft-synthetic --out DIR [--train-cases 4 --test-cases 2 --minutes 2 --steps 800]

1. generates training and held-out synthetic cases (different seeds and video ids);
2. reads them through the dataset adapters (the same code that reads Cholec80/CholecT50/Endoscapes);
3. extracts the needed frames once into a cache;
4. writes the SFT set with the CoT builder (three-level chains grounded in the labels);
5. fine-tunes the tiny Qwen2.5-VL-architecture model with trl's SFTTrainer on CPU;
6. generates answers for the held-out frames and writes the evaluation report (JSON + Markdown).

Every stage skips work whose output already exists, so an interrupted run picks up where it stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engine.tasks import Task
from engine.tiny_model import build_tiny_model
from train.cot.datasets import write_sft_set
from train.data.frames import extract_frames, with_cached_frames
from train.data.sample import Sample
from train.data.synthetic import synthetic_samples
from train.eval.report import to_markdown
from train.eval.run import evaluate_model
from train.sft import SFTRecipe, run_sft
from train.synth.generate import cpu_workers, train_test_cases

Progress = Callable[[str], None]


@dataclass(frozen=True)
class QuickstartConfig:
    train_cases: int = 4
    test_cases: int = 2
    minutes: float = 2.0
    steps: int = 800
    batch_size: int = 8
    learning_rate: float = 2e-3
    task: Task = Task.PHASE
    frame_size: tuple[int, int] = (224, 126)  # cached frames (the tiny model sees 112 px anyway)
    max_new_tokens: int = 160
    seed: int = 0
    canonical: bool = False  # True: one fixed phrasing per level (see CanonicalChoices)
    model_size: str = "tiny"  # engine.tiny_model.SIZES: "tiny" (0.66 M) or "small" (3.6 M parameters)


def _samples(folder: Path, cache: Path, config: QuickstartConfig) -> list[Sample]:
    samples = [s for s in synthetic_samples(folder, tasks=(config.task,)) if s.task == config.task]
    mapping = extract_frames(samples, cache, size=config.frame_size)
    return with_cached_frames(samples, mapping)


def run_quickstart(out: Path, config: QuickstartConfig, say: Progress = print) -> dict:
    """Run every stage; return the held-out evaluation report (also written under ``out``)."""
    out = Path(out)
    say("1/6 synthetic cases")
    train_root, test_root = train_test_cases(
        out,
        config.train_cases,
        config.test_cases,
        config.minutes,
        config.seed,
        remake=not (out / "sft.jsonl").exists(),  # remade only before a training set was built on them
        workers=cpu_workers(),
    )
    say("2/6 adapters and 3/6 frame cache")
    train = _samples(train_root, out / "frames", config)
    test = _samples(test_root, out / "frames", config)
    say(f"    {len(train)} training and {len(test)} held-out {config.task.value} samples")
    say("4/6 chain-of-thought SFT set")
    sft_set = out / "sft.jsonl"
    if not sft_set.exists():
        write_sft_set(train, lambda s: s.frame.path, sft_set, seed=config.seed, canonical=config.canonical)
    say("5/6 SFT of the tiny model")
    model_dir = out / "sft" / "model"
    if not (model_dir / "surgview.json").exists():
        base = out / "base-model"
        if not (base / "surgview.json").exists():
            build_tiny_model(base, seed=config.seed, size=config.model_size)
        recipe = SFTRecipe(
            model=str(base),
            data=str(sft_set),
            output_dir=str(out / "sft"),
            seed=config.seed,
            name="tiny-sft-synthetic",
            max_steps=config.steps,
            per_device_train_batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=min(50, config.steps // 10),
            save_steps=200,
            logging_steps=50,
        )
        model_dir = run_sft(recipe)
    say("6/6 evaluation on held-out cases")
    report = evaluate_model(model_dir, test, out / "eval", max_new_tokens=config.max_new_tokens)
    say(to_markdown(report))
    majority = report["phase_majority_baseline"]
    say(
        f"format right (complete chains): {report['format_ok']:.1%}; phase majority baseline {majority:.1%}, "
        f"chance {1 / 7:.1%}"
    )
    return report
