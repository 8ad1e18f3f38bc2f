"""Two engines on one machine: two concurrent ``analyze`` runs against one alone.

    .venv/bin/python bench/engine_sharing.py [--minutes 1] [--stride 1] [--tokens 32] [--threads N ...]

Builds the tiny model and two synthetic cases, then times ``surgview-engine analyze`` (each run
its own process and its own empty case store) on one case alone, and on both cases at once.
Prints the ratio two-at-once / one-alone for the default threads (``--threads`` not given: the
engine's rule) and for each ``--threads`` given (e.g. the cores, the old default). Two engines
that share the machine well finish within ~2x of one: the work doubles, the machine does not.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.backend_factory import default_threads, machine_cores  # noqa: E402
from engine.tiny_model import build_tiny_model  # noqa: E402
from train.synth.generate import SynthConfig, generate  # noqa: E402


def _analyze(video: Path, model: Path, home: Path, args, threads: int | None) -> subprocess.Popen:
    command = [sys.executable, "-m", "engine.cli", "analyze", str(video), "--model", str(model), "--quiet"]
    command += ["--stride", str(args.stride), "--max-tokens", str(args.tokens)]
    command += ["--threads", str(threads)] if threads else []
    env = {**os.environ, "SURGVIEW_DATA": str(home)}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _timed(runs: list[tuple[Path, Path]], model: Path, args, threads: int | None) -> float:
    t0 = time.perf_counter()
    procs = [_analyze(video, model, home, args, threads) for video, home in runs]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"analyze failed ({proc.returncode}): {err.strip()}")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--stride", type=float, default=1.0)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, action="append", default=[], help="also measure these thread counts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(tmp / "cases", SynthConfig(cases=2, minutes=args.minutes, seed=3, width=320, height=180))
        videos = [tmp / "cases" / "cholec80" / "videos" / f"video0{i}.mp4" for i in (1, 2)]
        model = build_tiny_model(tmp / "tiny", seed=0, init_std=0.1)
        print(f"{machine_cores()} cores; default threads per engine {default_threads()}")
        for threads in [None, *args.threads]:
            name = f"t{threads or 0}"
            one = _timed([(videos[0], tmp / f"{name}-one")], model, args, threads)
            two = _timed([(video, tmp / f"{name}-two-{i}") for i, video in enumerate(videos)], model, args, threads)
            label = f"--threads {threads}" if threads else f"default ({default_threads()} threads)"
            print(f"{label}: one run {one:.1f} s, two at once {two:.1f} s, ratio {two / one:.2f}")


if __name__ == "__main__":
    main()
