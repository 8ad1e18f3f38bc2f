"""Issue 20: opening a long case with the kept packet index, the keyframe thumbnail strip, and
seeks that skip unreferenced pictures.

    .venv/bin/python -m bench.video_index_bench [--minutes 20] [--gop 250] [--seeks 40]

Makes (once, in a temporary folder) a long 320x180 H.264 file with ffmpeg's lavfi testsrc (25 fps,
fixed GOP, B-frames), with ``SURGVIEW_DATA`` pointed at a temporary folder, then prints:
open time cold (every packet demuxed) vs warm (index from the cache); thumbnail strip build vs
decoding every frame, and a kept strip's load time; median random-access time to an exact frame
with and without ``skip_frame=NONREF`` before the target.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import av


def make_video(path: Path, minutes: float, gop: int) -> None:
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=320x180:rate=25", "-t", str(minutes * 60)]
    cmd += ["-c:v", "libx264", "-preset", "veryfast", "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0"]
    cmd += ["-bf", "3", "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(cmd, check=True)


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--gop", type=int, default=250)
    ap.add_argument("--seeks", type=int, default=40)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="surgview-index-bench-"))
    os.environ["SURGVIEW_DATA"] = str(work / "data")
    from engine.thumbnails import build_thumbnails, load_thumbnails
    from engine.video import VideoReader, VideoReaderConfig

    try:
        video = work / "long.mp4"
        t0 = time.perf_counter()
        make_video(video, args.minutes, args.gop)
        print(f"made {args.minutes:g} min 320x180 GOP {args.gop} in {time.perf_counter() - t0:.1f} s")

        cold_cfg = VideoReaderConfig(index_cache=False)
        cold = best_of(3, lambda: VideoReader(video, cold_cfg).close())
        VideoReader(video).close()  # writes the cache
        with VideoReader(video) as r:
            assert r.index_from_cache
            n, keyframes = r.frame_count, len(r.keyframes)
        warm = best_of(5, lambda: VideoReader(video).close())
        print(f"open: {n} frames, {keyframes} keyframes")
        print(f"  cold (demux every packet) {cold * 1e3:8.1f} ms")
        print(f"  warm (kept index)         {warm * 1e3:8.1f} ms   cold/warm = {cold / warm:.1f}x")

        stats: dict[str, int] = {}
        t0 = time.perf_counter()
        strip = build_thumbnails(video, stats=stats)
        build = time.perf_counter() - t0
        load = best_of(3, lambda: load_thumbnails(video))
        t0 = time.perf_counter()
        with av.open(str(video)) as c:
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            decoded_all = sum(1 for _ in c.decode(s))
        full = time.perf_counter() - t0
        size = strip.images.nbytes
        w, h = strip.size
        print(f"thumbnails: {len(strip)} of {w}x{h} ({size / 2**20:.1f} MiB), {stats['decoded']} decoded")
        print(f"  build (keyframes only)    {build * 1e3:8.1f} ms")
        ratio = full / build
        print(f"  decode every frame        {full * 1e3:8.1f} ms   ({decoded_all} frames)   full/build = {ratio:.1f}x")
        print(f"  load the kept strip       {load * 1e3:8.1f} ms")
        t0 = time.perf_counter()
        for i in range(100_000):
            strip.nearest(i % n)
        print(f"  nearest()                 {(time.perf_counter() - t0) * 10:8.3f} us per call")

        rng = random.Random(3)
        targets = [rng.randrange(n) for _ in range(args.seeks)]
        results = {}
        for label, margin in (("default decode", None), ("NONREF before", 32), ("NONREF, margin 0", 0)):
            cfg = VideoReaderConfig(cache_frames=2, skip_nonref_before=margin)
            with VideoReader(video, cfg) as r:
                r.frame(0)
                times = []
                for i in targets:
                    t0 = time.perf_counter()
                    r.frame(i)
                    times.append(time.perf_counter() - t0)
                results[label] = (statistics.median(times), r.stats.decoded)
        base = results["default decode"][0]
        print(f"random access to an exact frame ({args.seeks} seeks, median):")
        for label, (med, decoded) in results.items():
            print(f"  {label:<24} {med * 1e3:8.1f} ms   {decoded:6d} decoded   gain {base / med:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
