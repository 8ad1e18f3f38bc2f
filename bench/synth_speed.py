"""Synthetic case generation speed, measured side by side with ffmpeg encoding the same frames.

    .venv/bin/python bench/synth_speed.py [--minutes 1] [--width 640 --height 360]

Prints: seconds per case-minute for `surgview-train synth` (render + encode + labels), the time
ffmpeg's own libx264 (same preset, CRF and GOP) needs to encode the identical frames from raw
RGB, and the ratio of the two. The issue's budget: well under 60 s per case-minute.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from train.synth.generate import SynthConfig, generate  # noqa: E402
from train.synth.render import CaseRenderer  # noqa: E402
from train.synth.script import build_script  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    args = parser.parse_args()
    config = SynthConfig(cases=1, minutes=args.minutes, seed=5, width=args.width, height=args.height)
    n = config.frames_per_case

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate(Path(tmp) / "ours", config)
        ours = time.perf_counter() - t0

        renderer = CaseRenderer(build_script(1, n, config.fps, config.seed), config.width, config.height)
        t0 = time.perf_counter()
        frames = [renderer.render(i)[0] for i in range(n)]
        render_only = time.perf_counter() - t0
        raw = np.stack(frames).tobytes()
        del frames

        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            print("ffmpeg not found: install it (./dev.sh installs it) for the side-by-side figure")
            return
        cmd = [
            ffmpeg,
            "-v",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{config.width}x{config.height}",
            "-r",
            str(config.fps),
            "-i",
            "-",
            "-c:v",
            "libx264",
            "-preset",
            config.preset,
            "-crf",
            str(config.crf),
            "-g",
            str(config.gop),
            "-keyint_min",
            str(config.gop),
            "-sc_threshold",
            "0",
            "-pix_fmt",
            "yuv420p",
            str(Path(tmp) / "ffmpeg.mp4"),
        ]
        t0 = time.perf_counter()
        subprocess.run(cmd, input=raw, check=True)
        encode_only = time.perf_counter() - t0

    per_minute = ours / args.minutes
    print(f"case: {args.minutes:g} min, {config.width}x{config.height} @ {config.fps} fps = {n} frames")
    print(
        f"surgview synth (render + encode + labels): {ours:6.2f} s  = {per_minute:5.1f} s per case-minute "
        f"({n / ours:5.0f} fps)"
    )
    print(f"  of which rendering alone:               {render_only:6.2f} s  ({n / render_only:5.0f} fps)")
    print(f"ffmpeg libx264 encoding the same frames:   {encode_only:6.2f} s  ({n / encode_only:5.0f} fps)")
    print(f"ratio synth / ffmpeg-encode-only:          {ours / encode_only:6.2f}x")
    print(f"budget: 60 s per case-minute -> {60 / per_minute:.1f}x headroom")


if __name__ == "__main__":
    main()
