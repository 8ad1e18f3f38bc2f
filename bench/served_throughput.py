"""Throughput of ``surgview-engine analyze`` against a continuous-batching server, by concurrency, side by side.

    .venv/bin/python bench/served_throughput.py [--frames 160] [--first-token-s 0.2] [--per-token-s 0.01]

Serving is only worth its GPU if the client keeps the server's batch full. The server here is
``bench/openai_standin.py`` run as its own process (it must not share the client's GIL): a
simulated vLLM with ``max_num_seqs`` slots, a prefill time and a token clock, answering ~100-token
chains. A synthetic clip (320x240, 25 fps) is analysed frame by frame (``--stride 0.04``) with a
fresh data folder each run, at concurrency 1, 8 and 32 against one server with 32 slots, at 16
against one with 16, and at 32 against two servers with 16 slots each. Each run gets fresh servers,
so their statistics are its own.

Capacity at concurrency N is ``min(N, slots) / latency``, latency = prefill + tokens x per-token time:
the most frames/s the server could finish. Frames/s is taken over the server's busy span (first
request in to last answer out) so that the CLI's start-up (imports, opening the case) is left out;
the command's whole wall time is shown beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENGINE = Path(sys.executable).with_name("surgview-engine")
GOAL = 0.8  # achieved / capacity


@dataclass
class Run:
    name: str
    concurrency: int
    seqs: list[int]  # max_num_seqs of each server


def make_clip(path: Path, frames: int, width: int = 320, height: int = 240, fps: int = 25) -> None:
    """A moving gradient with a bright disc: cheap to make, not free to encode, decode and JPEG-compress."""
    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            img = np.zeros((height, width, 3), np.uint8)
            img[..., 0] = (xx + 3 * i) % 256
            img[..., 1] = (yy + 2 * i) % 256
            cx, cy = (40 + 2 * i) % width, height // 2
            img[(xx - cx) ** 2 + (yy - cy) ** 2 < 900] = (240, 200, 180)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())


class StandinProcess:
    """``python -m bench.openai_standin`` on a free port; its statistics come back when it is stopped."""

    def __init__(self, seqs: int, first_token_s: float, per_token_s: float):
        args = ["--port", "0", "--max-num-seqs", str(seqs), "--first-token-s", str(first_token_s)]
        args += ["--per-token-s", str(per_token_s)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.openai_standin", *args], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        if not select.select([self.proc.stdout], [], [], 30)[0]:
            self.proc.kill()
            raise RuntimeError("the stand-in server did not start in 30 s")
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            self.proc.kill()
            raise RuntimeError(f"the stand-in server said {line!r} instead of 'ready URL'")
        self.url = line.split()[1]

    def stop(self) -> dict:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=30)
        return json.loads(out.strip().splitlines()[-1])


def run_analyze(run: Run, clip: Path, args: argparse.Namespace) -> dict:
    servers = [StandinProcess(n, args.first_token_s, args.per_token_s) for n in run.seqs]
    try:
        urls = [a for s in servers for a in ("--url", s.url)]
        command = [str(ENGINE), "analyze", str(clip), "--backend", "openai", *urls, "--model", "standin"]
        command += ["--stride", "0.04", "--concurrency", str(run.concurrency), "--profile", "surgview", "--quiet"]
        with tempfile.TemporaryDirectory() as data:  # a fresh case store: nothing analysed before is reused
            env = {**os.environ, "SURGVIEW_DATA": data}
            t0 = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
            wall = time.perf_counter() - t0
    finally:
        stats = [s.stop() for s in servers]
    if done.returncode != 0:
        raise RuntimeError(f"{run.name}: surgview-engine analyze failed ({done.returncode}):\n{done.stderr[-2000:]}")
    completed = sum(s["completed"] for s in stats)
    tokens = sum(s["tokens"] for s in stats) / max(1, completed)
    latency = args.first_token_s + tokens * args.per_token_s
    spans = [(s["first_arrived"], s["last_finished"]) for s in stats if s["last_finished"] is not None]
    busy = max(end for _, end in spans) - min(start for start, _ in spans) if spans else 0.0
    return {
        "run": run,
        "wall": wall,
        "busy": busy,
        "frames": completed,
        "fps": completed / busy if busy else 0.0,
        "capacity": min(run.concurrency, sum(run.seqs)) / latency,
        "tokens": tokens,
        "in_flight": [s["max_in_flight"] for s in stats],
        "split": [s["completed"] for s in stats],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=160)
    parser.add_argument("--first-token-s", type=float, default=0.2)
    parser.add_argument("--per-token-s", type=float, default=0.01)
    args = parser.parse_args()
    runs = [
        Run("N=1, one server (32 slots)", 1, [32]),
        Run("N=8, one server (32 slots)", 8, [32]),
        Run("N=16, one server (16 slots)", 16, [16]),
        Run("N=32, one server (32 slots)", 32, [32]),
        Run("N=32, two servers (16 slots each)", 32, [16, 16]),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        make_clip(clip, args.frames)
        results = [run_analyze(run, clip, args) for run in runs]
    base = results[0]["fps"]
    tokens = results[0]["tokens"]
    print(
        f"{args.frames} frames (320x240, 25 fps, stride 0.04 s), answers of {tokens:.0f} tokens, prefill "
        f"{args.first_token_s:g} s, {args.per_token_s * 1000:g} ms/token (latency "
        f"{args.first_token_s + tokens * args.per_token_s:.2f} s); frames/s over the servers' busy span\n"
    )
    notes: list[str] = []
    print("| run | wall s | busy s | frames/s | capacity frames/s | achieved ÷ capacity | max in flight | speed-up |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        if 0 in r["split"]:
            notes.append(f"{r['run'].name}: a server got no requests (is `--url` repeatable in this engine?)")
        ratio = r["fps"] / r["capacity"]
        mark = "" if ratio >= GOAL else " (< 0.8)"
        in_flight = " + ".join(str(n) for n in r["in_flight"])
        split = "" if len(r["split"]) == 1 else f" ({' / '.join(str(n) for n in r['split'])} frames)"
        print(
            f"| {r['run'].name}{split} | {r['wall']:.1f} | {r['busy']:.1f} | {r['fps']:.2f} | {r['capacity']:.2f} | "
            f"{ratio:.2f}{mark} | {in_flight} | {r['fps'] / base:.1f}x |"
        )
    for note in notes:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
