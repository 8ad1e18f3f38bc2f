"""Video access speed, measured side by side with ffmpeg decoding the same file.

    .venv/bin/python bench/video_bench.py [--file VIDEO] [--rounds 3] [--samples 40] [--seed 0]

Without --file it writes a 1-minute 1280x720 H.264 case with a 250-frame GOP (the synthetic
generator, about 30 s on 2 cores). Prints:

- sequential decode: frames/s of ``VideoReader.frames()`` (RGB arrays out) against
  ``ffmpeg -f null`` (decode only) and ``ffmpeg -pix_fmt rgb24 -f null`` (decode + RGB), and the
  ratios (budget: >= 0.8x of ffmpeg's own decode). Rounds are interleaved; the best round of
  each counts (the machine is shared, the best round is the least disturbed). CPU time per
  frame (all threads) is printed too: it does not depend on what else the machine runs.
- step latency: land on a random frame, then time ``frame(i + 1)`` and ``frame(i - 1)``
  (budget: <= 20 ms), plus the worst case of a step back across a keyframe.
- random seek latency of ``frame(i)`` at random i (budget: one GOP's decode).
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.video import VideoReader  # noqa: E402


def make_case(folder: Path) -> Path:
    from train.synth.generate import SynthConfig, generate

    config = SynthConfig(cases=1, minutes=1.0, seed=11, width=1280, height=720, fps=25, gop=250)
    generate(folder, config)
    return folder / "cholec80" / "videos" / "video01.mp4"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ffmpeg_run(ffmpeg: str, path: Path, frames: int, rgb: bool) -> tuple[float, float]:
    """(frames/s, CPU ms per frame) of one ffmpeg decode of the whole file."""
    cmd = [ffmpeg, "-v", "error", "-nostdin", "-i", str(path)]
    cmd += ["-pix_fmt", "rgb24"] if rgb else []
    cmd += ["-f", "null", "-"]
    cpu0, t0 = children_cpu(), time.perf_counter()
    subprocess.run(cmd, check=True)
    return frames / (time.perf_counter() - t0), (children_cpu() - cpu0) / frames * 1000


def ours_run(path: Path) -> tuple[float, float]:
    """(frames/s, CPU ms per frame) of one pass of VideoReader.frames() (RGB arrays out)."""
    with VideoReader(path) as reader:
        cpu0, t0 = time.process_time(), time.perf_counter()
        n = sum(1 for _ in reader.frames())
        return n / (time.perf_counter() - t0), (time.process_time() - cpu0) / n * 1000


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - t0) * 1000


def summary(ms: list[float]) -> str:
    p95 = statistics.quantiles(ms, n=20, method="inclusive")[-1] if len(ms) > 1 else ms[0]
    return f"median {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms   max {max(ms):7.1f} ms   (n={len(ms)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, help="a video to measure (default: a generated 720p GOP-250 case)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the sequential decode")
    parser.add_argument("--samples", type=int, default=40, help="random positions for the step and seek figures")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        sys.exit("ffmpeg not found: install it (./dev.sh installs it) for the side-by-side figures")

    with tempfile.TemporaryDirectory() as tmp:
        if args.file is None:
            t0 = time.perf_counter()
            path = make_case(Path(tmp))
            print(f"generated {path.name} in {time.perf_counter() - t0:.1f} s")
        else:
            path = args.file

        t0 = time.perf_counter()
        with VideoReader(path) as reader:
            open_s = time.perf_counter() - t0
            n, fps, keyframes = reader.frame_count, reader.fps, reader.keyframes
            gaps = [b - a for a, b in zip(keyframes, [*keyframes[1:], n], strict=True)]
            print(
                f"file: {path.name}, {reader.width}x{reader.height}, {reader.codec}, {n} frames @ {float(fps):g} fps, "
                f"{len(keyframes)} keyframes (longest GOP {max(gaps)}); open + index: {open_s * 1000:.0f} ms"
            )

        # Sequential decode, warmed up once (page cache, libraries), then interleaved rounds.
        ffmpeg_run(ffmpeg, path, n, rgb=False)
        ours_run(path)
        rounds: dict[str, list[tuple[float, float]]] = {"ours": [], "ffmpeg": [], "ffmpeg_rgb": []}
        for _ in range(args.rounds):
            rounds["ffmpeg"].append(ffmpeg_run(ffmpeg, path, n, rgb=False))
            rounds["ffmpeg_rgb"].append(ffmpeg_run(ffmpeg, path, n, rgb=True))
            rounds["ours"].append(ours_run(path))
        best = {k: max(fps for fps, _ in v) for k, v in rounds.items()}
        cpu = {k: min(ms for _, ms in v) for k, v in rounds.items()}
        print("\nsequential decode: frames/s (best round; all rounds in brackets), CPU ms per frame (all threads)")
        for name, label in (
            ("ours", "VideoReader.frames() -> RGB arrays"),
            ("ffmpeg", "ffmpeg -f null (decode only)"),
            ("ffmpeg_rgb", "ffmpeg -pix_fmt rgb24 -f null"),
        ):
            all_fps = ", ".join(f"{fps:.0f}" for fps, _ in rounds[name])
            print(f"  {label:36s} {best[name]:6.0f} fps  [{all_fps}]   CPU {cpu[name]:5.2f} ms/frame")
        print(f"  ratio ours / ffmpeg decode-only:     {best['ours'] / best['ffmpeg']:5.2f}x   (budget >= 0.8x)")
        print(f"  ratio ours / ffmpeg decode + rgb24:  {best['ours'] / best['ffmpeg_rgb']:5.2f}x")
        print(
            f"  CPU ratio ffmpeg decode-only / ours: {cpu['ffmpeg'] / cpu['ours']:5.2f}x   (independent of other load)"
        )

        rng = random.Random(args.seed)
        positions = [rng.randrange(1, n - 1) for _ in range(args.samples)]
        forward: list[float] = []
        backward: list[float] = []
        seek: list[float] = []
        with VideoReader(path) as reader:
            reader.frame(n // 2)  # warm up
            for i in positions:
                hits = reader.stats.cache_hits
                ms = timed(reader.frame, i)  # lands on i (decodes from its keyframe)
                if reader.stats.cache_hits > hits:
                    continue  # an earlier sample left this frame in the cache: no landing, no seek
                seek.append(ms)
                forward.append(timed(reader.frame, i + 1))  # decodes on, no seek
                timed(reader.frame, i)  # back on the landing frame
                backward.append(timed(reader.frame, i - 1))  # from the cache (unless i is a keyframe)
            across: list[float] = []
            for k in [k for k in keyframes if k > 0][: args.samples]:
                reader.frame(k)
                across.append(timed(reader.frame, k - 1))  # the frame before is in another GOP
            stats = reader.stats
        print("\nstep latency after landing on a random frame (budget <= 20 ms)")
        print(f"  frame(i + 1)  {summary(forward)}")
        print(f"  frame(i - 1)  {summary(backward)}")
        print(f"  frame(k - 1), k a keyframe: a whole GOP to decode   {summary(across)}")
        print("\nrandom seek, frame(i) at random i, not in the cache (bounded by one GOP's decode)")
        print(f"  frame(i)      {summary(seek)}")
        print(f"\nreader stats: {stats}")


if __name__ == "__main__":
    main()
