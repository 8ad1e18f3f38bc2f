"""Train the demo size and the larger variant side by side on one GPU within a deadline, and judge both on the same
480 held-out frames (bench/gpu_check.sh runs this first: a device lease is minutes, so every stage is timed).

    python3 bench/gpu_train.py --deadline 430 --out DIR       # on the GPU machine
    .venv/bin/python bench/gpu_train.py --smoke --runs /tmp/gpu-smoke   # the same path in minutes on a CPU

1. the cases and their frames, once, on every CPU (train/recipes/gpu-demo.yaml's run, up to its CoT sets); the
   larger variant's run (gpu-large.yaml) reads the same data folder;
2. both SFT stages at once (``surgview-train run RECIPE --stop-after chain/sft``), each capped (``max_minutes``) to
   what the deadline leaves once evaluation is set aside;
3. both SFT models answer the held-out frames (scripts/eval_heldout.py), side by side.

Prints one JSON summary (stage seconds, SFT steps and cap, each model's held-out figures) and, with ``--out``, writes
it there as gpu_train.json beside model-demo.tgz (the demo-size model, to check and bundle on a workstation) and
reports.tgz (both runs' reports, answers, manifests and logs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "train" / "recipes"
sys.path.insert(0, str(ROOT))

# Seconds kept back from the SFT cap: loading, the dataset's cast and the model's save around training (startup),
# and both models answering 480 frames at once (evaluation), as measured on the H200 with a margin.
STARTUP_S = 45.0
EVALUATION_S = 80.0


@dataclass
class TrainingRun:
    """One recipe's run folder, its prepared recipe and what was measured on it."""

    name: str
    recipe_file: str
    folder: Path
    recipe: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    log: Path | None = None
    ok: bool = True

    @property
    def model(self) -> Path:
        return self.folder / "chain" / "sft" / "model"


RUNS = (TrainingRun("demo", "gpu-demo.yaml", Path()), TrainingRun("large", "gpu-large.yaml", Path()))


def prepared_recipe(
    run: TrainingRun, runs: Path, *, smoke: bool, max_minutes: float | None, data: dict[str, int] | None = None
) -> Path:
    """The shipped recipe with its run folder under ``runs``, its base model's path made absolute, the SFT cap set,
    ``data`` (train_cases, test_cases, max_test) for a lease too short for the recipe's cases, and (``smoke``) shrunk
    to a few frames and steps; written beside the run folder."""
    from engine.tiny_model import SIZES
    from train.synth.generate import MIN_MINUTES

    raw = yaml.safe_load((RECIPES / run.recipe_file).read_text(encoding="utf-8"))
    raw["out"] = str(run.folder)
    if raw["base_model"] not in SIZES:
        raw["base_model"] = str((RECIPES / raw["base_model"]).resolve())
    if max_minutes is not None:
        raw["sft"]["max_minutes"] = round(max_minutes, 2)
    for key, value in (data or {}).items():
        (raw["data"] if key == "max_test" else raw["data"]["synthetic"])[key] = value
    if smoke:
        raw["data"]["synthetic"] |= {"train_cases": 2, "test_cases": 1, "minutes": MIN_MINUTES}
        raw["data"]["max_test"] = 4
        raw["sft"] |= {"max_steps": 2, "per_device_train_batch_size": 2, "dataloader_num_workers": 2, "save_steps": 50}
        raw["evaluation"] = {"max_new_tokens": 48, "batch_size": 4}
    path = runs / f"{run.name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


class Clock:
    """Seconds since the start, and what is left of the deadline."""

    def __init__(self, deadline: float) -> None:
        self.start, self.deadline = time.monotonic(), deadline

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.deadline - self.elapsed()

    def say(self, text: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {text}", flush=True)


def _start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    handle = log.open("ab")
    try:
        return subprocess.Popen(args, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=env)
    finally:
        handle.close()


def _finish(process: subprocess.Popen, timeout: float, progress: Callable[[], str] | None = None) -> int:
    """The process's exit code; one still running after ``timeout`` seconds is killed (-9). ``progress`` is said
    every 20 s meanwhile (a lease that runs out shows how far the stage got)."""
    end = time.monotonic() + max(1.0, timeout)
    while True:
        try:
            return process.wait(timeout=max(0.1, min(20.0, end - time.monotonic())))
        except subprocess.TimeoutExpired:
            if time.monotonic() >= end:
                process.kill()
                process.wait()
                return -9
            if progress is not None:
                print(f"    {progress()}", flush=True)


def _data_progress(folder: Path) -> str:
    """Cases written and frames cached so far under a run's data folder (partial folders included)."""
    data = folder / "data"
    videos = sum(1 for _ in data.glob("cases-*/cholec80/videos/*.mp4"))
    frames = sum(1 for _ in data.glob("frames/*/*.jpg"))
    return f"cases written: {videos}, frames cached: {frames}"


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _pipeline(recipe: Path, stop_after: str) -> list[str]:
    return [sys.executable, "-m", "train.cli", "run", str(recipe), "--stop-after", stop_after]


def _manifest_details(model: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((model / "surgview.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    lineage = manifest.get("lineage") or []
    first = lineage[0].get("details", {}) if lineage else {}
    last = lineage[-1].get("details", {}) if lineage else {}
    return {"parameters": first.get("parameters"), **{k: last.get(k) for k in ("steps", "stopped_by_time_cap",
            "planned_steps", "fitted_steps", "final_loss", "rows")}}  # fmt: skip


def _headline(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deadline", type=float, default=430.0, help="seconds for everything (default 430)")
    parser.add_argument("--runs", type=Path, default=Path("/tmp/surgview-gpu-runs"), help="run folders")
    parser.add_argument("--out", type=Path, help="folder for gpu_train.json, model-demo.tgz and reports.tgz")
    parser.add_argument("--smoke", action="store_true", help="two cases, two steps: the path, not the figures")
    parser.add_argument("--only", choices=[r.name for r in RUNS], help="train this run alone")
    parser.add_argument("--train-cases", type=int, help="fewer training cases than the recipes' 64 (a short lease)")
    parser.add_argument("--test-cases", type=int, help="held-out cases (the recipes': 8)")
    parser.add_argument("--max-test", type=int, help="held-out frames (the recipes': 480)")
    args = parser.parse_args(argv)
    data = {k: v for k, v in (("train_cases", args.train_cases), ("test_cases", args.test_cases),
            ("max_test", args.max_test)) if v is not None}  # fmt: skip
    clock = Clock(args.deadline)
    runs = args.runs.resolve()
    runs.mkdir(parents=True, exist_ok=True)
    chosen = [TrainingRun(r.name, r.recipe_file, runs / r.name) for r in RUNS if args.only in (None, r.name)]
    first = chosen[0]
    summary: dict[str, Any] = {"deadline_s": args.deadline, "smoke": args.smoke, "data": data, "runs": {}}
    try:
        import torch

        summary["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        summary["torch"] = torch.__version__
    except Exception as exc:  # reported, not fatal: the runs say more
        summary["device"] = f"unknown ({exc})"
    clock.say(f"device: {summary['device']}; deadline {args.deadline:.0f} s")

    # 1. cases, frames and the first run's CoT sets, once
    first.recipe = prepared_recipe(first, runs, smoke=args.smoke, max_minutes=None, data=data)
    first.log = runs / f"{first.name}.log"
    started = clock.elapsed()
    data_limit = clock.left() - EVALUATION_S - STARTUP_S - 60
    code = _finish(_start(_pipeline(first.recipe, "cot"), first.log), data_limit, lambda: _data_progress(first.folder))
    summary["data_s"] = round(clock.elapsed() - started, 1)
    if code != 0:
        clock.say(f"cases and frames failed (exit {code}):\n{_tail(first.log)}")
        summary["error"] = f"data stage exit {code}"
        for run in chosen:
            run.ok = False  # nothing was trained
        return _report(summary, chosen, args.out, clock)
    clock.say(f"cases, frames and CoT sets: {summary['data_s']:.0f} s")
    for run in chosen[1:]:
        run.folder.mkdir(parents=True, exist_ok=True)
        if not (run.folder / "data").exists():
            (run.folder / "data").symlink_to(first.folder / "data", target_is_directory=True)

    # 2. both SFT stages at once, capped to what the deadline leaves
    cap = None if args.smoke else max(0.5, (clock.left() - EVALUATION_S - STARTUP_S) / 60)
    clock.say(f"SFT of {', '.join(r.name for r in chosen)}" + (f", each capped at {cap:.2f} min" if cap else ""))
    env = {**os.environ, "OMP_NUM_THREADS": "4"}  # two trainers and their loaders share the CPUs
    processes = {}
    for run in chosen:
        run.recipe = prepared_recipe(run, runs, smoke=args.smoke, max_minutes=cap, data=data)
        run.log = runs / f"{run.name}.log"
        processes[run.name] = (_start(_pipeline(run.recipe, "chain/sft"), run.log, env), clock.elapsed())
    for run in chosen:
        process, began = processes[run.name]
        code = _finish(process, clock.left() - EVALUATION_S + 30)
        run.seconds["sft"] = round(clock.elapsed() - began, 1)
        run.ok = code == 0 and (run.model / "surgview.json").exists()
        clock.say(f"{run.name}: SFT {'done' if run.ok else f'failed (exit {code})'} after {run.seconds['sft']:.0f} s")
        if not run.ok:
            print(_tail(run.log), flush=True)

    # 3. both models answer the held-out frames, side by side
    evaluations = {}
    for run in chosen:
        if run.ok:
            command = [sys.executable, "scripts/eval_heldout.py", str(run.model), str(run.recipe), "--run",
                       str(run.folder), "--out", str(run.folder / "eval-heldout")]  # fmt: skip
            process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            evaluations[run.name] = (process, clock.elapsed())
    for run in chosen:
        if run.name not in evaluations:
            continue
        process, began = evaluations[run.name]
        try:
            stdout, _ = process.communicate(timeout=max(5.0, clock.left()))
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, _ = process.communicate()
        run.seconds["evaluation"] = round(clock.elapsed() - began, 1)
        (run.folder / "eval.log").write_text(stdout or "", encoding="utf-8")
        summary["runs"].setdefault(run.name, {})["heldout"] = _headline(stdout or "")
        clock.say(f"{run.name}: held-out figures {summary['runs'][run.name]['heldout']}")
    return _report(summary, chosen, args.out, clock)


def _report(summary: dict[str, Any], runs: list[TrainingRun], out: Path | None, clock: Clock) -> int:
    for run in runs:
        entry = summary["runs"].setdefault(run.name, {})
        entry |= {"recipe": run.recipe_file, "ok": run.ok, "seconds": run.seconds, **_manifest_details(run.model)}
    summary["total_s"] = round(clock.elapsed(), 1)
    text = json.dumps(summary, indent=2, default=str)
    print(text, flush=True)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_train.json").write_text(text + "\n", encoding="utf-8")
        demo = [run for run in runs if run.name == "demo"]
        if demo and (demo[0].model / "surgview.json").exists():
            with tarfile.open(out / "model-demo.tgz", "w:gz") as tar:
                tar.add(demo[0].model, arcname="model")
        with tarfile.open(out / "reports.tgz", "w:gz") as tar:
            for run in runs:
                for rel in ("eval-heldout/report.json", "eval-heldout/report.md", "eval-heldout/responses.jsonl",
                            "chain/sft/model/surgview.json", "stages.json", "eval.log"):  # fmt: skip
                    if (run.folder / rel).is_file():
                        tar.add(run.folder / rel, arcname=f"{run.name}/{rel}")
                for extra in (run.log, run.recipe):
                    if extra is not None and extra.is_file():
                        tar.add(extra, arcname=f"{run.name}/{extra.name}")
    ok = all(run.ok for run in runs) and "error" not in summary
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
