"""Regenerate docs/synthetic-phases.png: one frame from the middle of each phase of a synthetic case.

    .venv/bin/python scripts/make_readme_figures.py [--seed 7] [--out docs/synthetic-phases.png]

Frames are decoded from the generated H.264 file (what a user gets), labelled with the phase and
the instruments of the ground truth, and tiled 2 x 4.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from engine.phase_labels import read_cholec80_phases, segments
from train.synth.generate import SynthConfig, generate

ROOT = Path(__file__).resolve().parents[1]


def caption(img: np.ndarray, lines: list[str]) -> np.ndarray:
    picture = Image.fromarray(img)
    draw = ImageDraw.Draw(picture)
    y = 8
    for i, text in enumerate(lines):
        font = ImageFont.load_default(size=20 if i == 0 else 15)
        draw.text((12, y), text, font=font, fill=(255, 255, 255), stroke_width=2, stroke_fill=(0, 0, 0))
        y += 26 if i == 0 else 20
    return np.asarray(picture)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "synthetic-phases.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate(out, SynthConfig(cases=1, minutes=3, seed=args.seed))
        phases = read_cholec80_phases(out / "cholec80" / "phase_annotations" / "video01-phase.txt")
        truth = {}
        for line in (out / "synth" / "video01-truth.jsonl").read_text().splitlines():
            record = json.loads(line)
            truth[record["frame"]] = record
        wanted = {}
        for seg in segments(phases):
            mid = (seg.start + seg.end) // 2
            wanted[mid - mid % 25] = seg.label  # a labelled (1 fps) frame near the middle
        tiles = []
        with av.open(str(out / "cholec80" / "videos" / "video01.mp4")) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index in wanted:
                    rgb = frame.to_ndarray(format="rgb24")
                    t = truth[index]
                    cvs = "  ".join(f"C{k + 1} {'met' if v >= 0.5 else 'not met'}" for k, v in enumerate(t["cvs"]))
                    tools = ", ".join(t["tools"]) or "no instrument"
                    tiles.append(caption(rgb, [wanted[index], f"instruments: {tools}", f"CVS: {cvs}"]))
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (8 - len(tiles))
    grid = np.vstack([np.hstack(tiles[i : i + 2]) for i in range(0, 8, 2)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    print(args.out)


if __name__ == "__main__":
    main()
