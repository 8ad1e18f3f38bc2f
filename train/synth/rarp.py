"""``surgview-train synth --procedure rarp``: synthetic robotic suturing cases in SAR-RARP50's own layout.

Each case is written as the dataset ships one (:mod:`train.data.sar_rarp50` reads it unchanged)::

    <out>/<split>/video_NN/video_left.avi          60 fps (libx264 in AVI, no B-frames)
    <out>/<split>/video_NN/action_discrete.txt     "000000000,0" every 6th frame (10 Hz)
    <out>/<split>/video_NN/segmentation/NNNNNNNNN.png   SAR-RARP50 classes per pixel, every 60th frame
    <out>/<split>/video_NN/synth-truth.jsonl       surgview's own: instrument boxes per labelled frame
    <out>/synth.json                                the settings and each case's action spans

``split`` is ``train1`` or ``test`` (the dataset's folder names), so the adapter gives the split.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import cv2

from train.synth.generate import read_summary, remake_refused, remove_path
from train.synth.suturing import SuturingRenderer, build_suturing_script

__all__ = ["RarpConfig", "generate_rarp", "rarp_train_test_cases"]

GENERATOR_VERSION = 1
SAR_RARP50_FPS = 60
ACTION_PERIOD = 6
MASK_PERIOD = 60
Progress = Callable[[int], None]


class RarpSynthError(Exception):
    """A synthetic suturing case could not be written."""


@dataclass(frozen=True)
class RarpConfig:
    cases: int = 2
    minutes: float = 1.0
    seed: int = 0
    width: int = 320
    height: int = 180
    fps: int = SAR_RARP50_FPS
    gop: int = 60
    crf: int = 23
    first_id: int = 1
    split: str = "train1"  # train1 | train2 | test: SAR-RARP50's folders

    def validate(self) -> None:
        if self.cases < 1:
            raise RarpSynthError("--cases must be at least 1")
        if not (0.25 <= self.minutes <= 60):
            raise RarpSynthError("--minutes must be between 0.25 and 60 for a suturing case")
        if self.width < 160 or self.height < 90 or self.width % 2 or self.height % 2:
            raise RarpSynthError("--width/--height must be even and at least 160x90")
        if self.fps != SAR_RARP50_FPS:
            raise RarpSynthError(f"SAR-RARP50 videos are {SAR_RARP50_FPS} fps; --fps must be {SAR_RARP50_FPS}")
        if self.split not in ("train1", "train2", "test"):
            raise RarpSynthError("--split must be train1, train2 or test (SAR-RARP50's folders)")
        if not (self.first_id > 0 and self.first_id + self.cases - 1 <= 99):
            raise RarpSynthError("video ids must lie between 1 and 99 (video_01..video_99)")

    @property
    def frames_per_case(self) -> int:
        return round(self.minutes * 60 * self.fps)


def _atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_case(folder: Path, case: int, config: RarpConfig, progress: Progress | None) -> dict:
    frames = config.frames_per_case
    script = build_suturing_script(case, frames, config.fps, config.seed)
    renderer = SuturingRenderer(script, config.width, config.height)
    rows, truth_rows, masks = [], [], {}
    video = folder / "video_left.avi"
    video.parent.mkdir(parents=True, exist_ok=True)
    tmp = video.with_name(video.name + ".part")
    try:
        with av.open(str(tmp), mode="w", format="avi") as container:
            stream = container.add_stream("libx264", rate=config.fps)
            stream.width, stream.height, stream.pix_fmt = config.width, config.height, "yuv420p"
            stream.options = {"crf": str(config.crf), "preset": "veryfast", "g": str(config.gop), "bf": "0",
                              "keyint_min": str(config.gop), "sc_threshold": "0"}  # fmt: skip
            for index in range(frames):
                rgb, truth = renderer.render(index, with_mask=index % MASK_PERIOD == 0)
                if index % ACTION_PERIOD == 0:
                    rows.append(f"{index:09d},{_ACTION_IDS[truth.action]}")
                    truth_rows.append({"frame": index, "action": truth.action, "boxes": truth.boxes,
                                       "needle": truth.needle_visible, "thread": truth.thread_visible})  # fmt: skip
                if truth.mask is not None:
                    masks[index] = truth.mask
                frame = av.VideoFrame.from_ndarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
                frame.pts = index
                container.mux(stream.encode(frame))
                if progress is not None:
                    progress(1)
            container.mux(stream.encode(None))
        os.replace(tmp, video)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for index, mask in masks.items():
        ok, png = cv2.imencode(".png", mask)
        if not ok:
            raise RarpSynthError(f"cannot encode the mask of frame {index}")
        _atomic(folder / "segmentation" / f"{index:09d}.png", png.tobytes())
    _atomic(folder / "synth-truth.jsonl", ("\n".join(json.dumps(r) for r in truth_rows) + "\n").encode())
    _atomic(folder / "action_discrete.txt", ("\n".join(rows) + "\n").encode())  # last: the case is complete
    return {
        "video": folder.name,
        "id": case,
        "frames": frames,
        "fps": config.fps,
        "stitches": script.stitches,
        "actions": [[s.action, s.start, s.end] for s in script.spans],
    }


def _action_ids() -> dict[str, int]:
    from engine.procedures import get_procedure

    return {label.name: label.id for label in get_procedure("rarp").vocabulary("action")}


_ACTION_IDS = _action_ids()


def generate_rarp(out: Path, config: RarpConfig, progress: Progress | None = None) -> dict:
    """Write ``config.cases`` suturing cases under ``out/<split>/``; return the summary (``synth.json``)."""
    config.validate()
    out = Path(out)
    summary_path = out / "synth.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary = {
        "generator": "surgview synth",
        "procedure": "rarp",
        "version": GENERATOR_VERSION,
        "configs": [*summary.get("configs", []), asdict(config)],
        "cases": summary.get("cases", []),
    }
    try:
        for k in range(config.cases):
            case = config.first_id + k
            folder = out / config.split / f"video_{case:02d}"
            entry = _write_case(folder, case, config, progress)
            summary["cases"].append({**entry, "split": config.split})
        _atomic(summary_path, json.dumps(summary, indent=2).encode())
    except OSError as exc:
        raise RarpSynthError(f"cannot write to {exc.filename or out}: {exc.strerror or exc}") from exc
    except av.error.FFmpegError as exc:
        raise RarpSynthError(f"video encoder failed: {exc}") from exc
    return summary


def rarp_train_test_cases(
    out: Path,
    train_cases: int,
    test_cases: int,
    minutes: float,
    seed: int,
    *,
    width: int = 320,
    height: int = 180,
    remake: bool = True,
) -> Path:
    """Training cases (video_01..) in ``out/train1`` and held-out ones (video_50.., another seed) in
    ``out/test``, one SAR-RARP50 root. A split this generator already wrote with these settings is kept, so a rerun
    resumes; one written with other settings or by another version is made again (``remake=False``: refused, as
    :func:`train.synth.generate.train_test_cases` does)."""
    out = Path(out)
    splits = (("train1", train_cases, seed, 1), ("test", test_cases, seed + 1000, 50))
    configs = [
        RarpConfig(cases=n, minutes=minutes, seed=s, first_id=first, split=split, width=width, height=height)
        for split, n, s, first in splits
    ]
    summary = read_summary(out)
    stale = [c for c in configs if not _split_written_with(out, summary, c)]  # judged before anything is rewritten
    for config in stale:
        if not remake and (out / config.split).exists():
            raise RarpSynthError(remake_refused(out / config.split, config, GENERATOR_VERSION))
    for config in stale:
        _forget_split(out, config.split)
        generate_rarp(out, config)
    return out


def _split_written_with(out: Path, summary: dict, config: RarpConfig) -> bool:
    last = out / config.split / f"video_{config.first_id + config.cases - 1:02d}" / "action_discrete.txt"
    return (
        summary.get("version") == GENERATOR_VERSION
        and asdict(config) in summary.get("configs", [])
        and last.is_file()  # written last: the split is complete
    )


def _forget_split(out: Path, split: str) -> None:
    """Remove a split's cases and its entries in synth.json, so the split is written afresh and the summary names
    only what is on disk."""
    remove_path(out / split)
    summary = read_summary(out)
    if summary:
        summary["configs"] = [c for c in summary.get("configs", []) if c.get("split") != split]
        summary["cases"] = [c for c in summary.get("cases", []) if c.get("split") != split]
        _atomic(out / "synth.json", json.dumps(summary, indent=2).encode())
