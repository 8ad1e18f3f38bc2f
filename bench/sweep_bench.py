"""Sweep throughput of the analysis scheduler with and without batching, side by side.

    .venv/bin/python bench/sweep_bench.py [--minutes 1] [--stride 1] [--batch 4] [--tokens 32]

Builds the tiny model and a synthetic case, then sweeps the case three ways on the same file:
the backend called directly frame by frame (the floor: decode + generate, no scheduler, no
store), the scheduler unbatched, and the scheduler with batches. Prints frames/s and ratios.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.backends.base import GenerationRequest  # noqa: E402
from engine.backends.transformers_backend import TransformersBackend  # noqa: E402
from engine.prompts import frame_prompt  # noqa: E402
from engine.scheduler import AnalysisScheduler, SchedulerConfig, sweep_frames  # noqa: E402
from engine.store import CaseStore  # noqa: E402
from engine.tiny_model import build_tiny_model  # noqa: E402
from engine.video import VideoReader  # noqa: E402
from train.synth.generate import SynthConfig, generate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--stride", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate(tmp / "case", SynthConfig(cases=1, minutes=args.minutes, seed=3))
        video = tmp / "case" / "cholec80" / "videos" / "video01.mp4"
        backend = TransformersBackend(build_tiny_model(tmp / "tiny", seed=0, init_std=0.1), threads=args.threads)
        with VideoReader(video) as reader:
            prompt = frame_prompt("frame_analysis", reader.width, reader.height)
            frames = sweep_frames(reader.frame_count, float(reader.fps), args.stride)
            t0 = time.perf_counter()
            for f in frames:
                backend.generate(GenerationRequest(prompt.text, reader.frame(f), prompt.system, args.tokens))
            direct = time.perf_counter() - t0

        def sweep(batch: int, name: str) -> float:
            with CaseStore.open(tmp / f"{name}.sqlite") as store:
                config = SchedulerConfig(stride_s=args.stride, batch_size=batch, max_new_tokens=args.tokens)
                scheduler = AnalysisScheduler(video, backend, store, prompt, config)
                t0 = time.perf_counter()
                scheduler.start()
                scheduler.wait_idle()
                elapsed = time.perf_counter() - t0
                scheduler.stop()
                assert scheduler.progress == (len(frames), len(frames)), scheduler.error
            return elapsed

        unbatched = sweep(1, "unbatched")
        batched = sweep(args.batch, "batched")
        backend.close()
    n = len(frames)
    print(
        f"sweep of {n} frames ({args.minutes:g} min case, stride {args.stride:g} s, {args.tokens} new tokens, "
        f"tiny model, {args.threads} torch thread(s))"
    )
    print(f"backend called directly, frame by frame: {direct:6.2f} s  {n / direct:6.1f} frames/s")
    print(
        f"scheduler, unbatched:                    {unbatched:6.2f} s  {n / unbatched:6.1f} frames/s  "
        f"({unbatched / direct:.2f}x the direct time)"
    )
    print(
        f"scheduler, batches of {args.batch}:                {batched:6.2f} s  {n / batched:6.1f} frames/s  "
        f"({unbatched / batched:.2f}x faster than unbatched)"
    )


if __name__ == "__main__":
    main()
