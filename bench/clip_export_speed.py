"""Annotated clip export speed, side by side with ffmpeg's plain libx264 encode of the same frames.

    .venv/bin/python bench/clip_export_speed.py [--file VIDEO] [--seconds 120] [--rounds 2]

Without --file it writes a 2-minute 1280x720 synthetic case (about a minute on 2 cores) and
stores ground-truth chains for it (one per second), so every second of the clip has a chain to
reveal and boxes to draw. Then, per round (interleaved; the best round of each counts, as the
machine is shared):

- ours: ``export_clip`` — decode, blank areas, overlays, the reasoning panel, RGB→YUV, libx264
  (preset veryfast, CRF 20) into an MP4 of (width + panel) × height;
- ffmpeg: ``ffmpeg -i VIDEO -vf pad=...`` with the same encoder settings and output size:
  decode and encode the same frames with nothing drawn.

Prints both times, the ratio (ours / ffmpeg), our realtime factor (clip seconds / export
seconds; the budget is >= 1 on 2 cores) and where our time goes (decode, compose, encode).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from app.export.clip import ClipOptions, export_clip  # noqa: E402
from engine.store import BlankArea, CaseStore, case_store_path  # noqa: E402
from engine.video import VideoReader  # noqa: E402


def make_case(folder: Path, minutes: float) -> Path:
    from train.synth.generate import SynthConfig, generate
    from train.synth.truth_store import store_truth_chains

    generate(folder, SynthConfig(cases=1, minutes=minutes, seed=5, width=1280, height=720, fps=25, gop=250))
    video, _ = store_truth_chains(folder)
    return video


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, help="a case (its stored analysis is used if any)")
    parser.add_argument("--seconds", type=float, default=120.0, help="clip length")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--crf", type=int, default=20)
    args = parser.parse_args()
    ffmpeg = shutil.which("ffmpeg")
    with tempfile.TemporaryDirectory(prefix="surgview-clipbench-") as tmp:
        tmp_path = Path(tmp)
        os.environ.setdefault("SURGVIEW_DATA", str(tmp_path / "data"))
        if args.file is None:
            t0 = time.perf_counter()
            video = make_case(tmp_path / "case", minutes=max(args.seconds / 60, 0.1) + 0.05)
            print(f"synthetic 720p case written in {time.perf_counter() - t0:.0f} s")
        else:
            video = args.file
        with VideoReader(video) as reader:
            fps, width, height, count = float(reader.fps), reader.width, reader.height, reader.frame_count
        frames = min(count, round(args.seconds * fps))
        results, areas = [], [BlankArea(0, 0, width // 5, height // 14)]
        store_path = case_store_path(video)
        if store_path.is_file():
            with CaseStore.open(store_path) as store:
                analyses = store.analyses()
                if analyses:
                    a = analyses[0]
                    results = store.results(a.model_id, a.prompt_version, a.task, stop=frames)
        options = ClipOptions(0, frames - 1, preset=args.preset, crf=args.crf)
        panel = round(0.6 * height)
        out_w = width + panel + (width + panel) % 2
        print(
            f"clip: {frames} frames ({frames / fps:.0f} s) of {width}x{height} at {fps:g} fps -> {out_w}x{height}, "
            f"{len(results)} analysed frames, libx264 {args.preset} crf {args.crf}, {os.cpu_count()} cores"
        )
        ours, theirs, stages = [], [], None
        for r in range(args.rounds):
            t0 = time.perf_counter()
            stats = export_clip(video, tmp_path / "ours.mp4", results, options, areas=areas)
            ours.append(time.perf_counter() - t0)
            if stages is None or ours[-1] == min(ours):
                stages = stats.stages
            if ffmpeg:
                cmd = [ffmpeg, "-v", "error", "-nostdin", "-y", "-i", str(video), "-frames:v", str(frames)]
                cmd += ["-vf", f"pad={out_w}:{height}:0:0", "-an", "-c:v", "libx264", "-preset", args.preset]
                cmd += ["-crf", str(args.crf), "-pix_fmt", "yuv420p", str(tmp_path / "ffmpeg.mp4")]
                t0 = time.perf_counter()
                subprocess.run(cmd, check=True)
                theirs.append(time.perf_counter() - t0)
            print(f"  round {r + 1}: ours {ours[-1]:.1f} s" + (f", ffmpeg {theirs[-1]:.1f} s" if theirs else ""))
        best = min(ours)
        print(f"ours:   {best:.1f} s = {frames / best:.1f} fps, realtime factor {frames / fps / best:.2f}x")
        if theirs:
            ref = min(theirs)
            print(f"ffmpeg: {ref:.1f} s = {frames / ref:.1f} fps (plain decode + pad + libx264, nothing drawn)")
            print(f"ratio ours / ffmpeg: {best / ref:.2f}")
        else:
            print("ffmpeg not found: install it (./dev.sh installs it) for the side-by-side figure")
        if stages:
            print("our time by stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()))


if __name__ == "__main__":
    main()
