"""Frame cache: decode each frame the samples need once, in frame order per video, into image files."""

from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from engine.video import VideoError, VideoReader
from train.data.errors import DatasetError
from train.data.join import scale_truth
from train.data.media import image_size
from train.data.sample import FrameRef, Sample


def _folder(case: str, video: Path) -> str:
    """Cache folder of one source file, named by its path *and* its size and modification time: a video written
    again under the same name (remade cases, a replaced recording) gets a new folder, never the old file's frames."""
    try:
        stat = video.stat()
        version = f"{stat.st_size}:{stat.st_mtime_ns}"
    except OSError:  # missing: the decoder reports it with the file's name
        version = ""
    digest = hashlib.sha1(f"{video.resolve()}|{version}".encode()).hexdigest()[:8]
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", case) or "case"
    return f"{safe}-{digest}"


def _resize(rgb: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or (rgb.shape[1], rgb.shape[0]) == tuple(size):
        return rgb
    return cv2.resize(rgb, tuple(size), interpolation=cv2.INTER_AREA)


def _write(path: Path, rgb: np.ndarray, quality: int) -> None:
    ext = path.suffix.lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    ok, data = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise DatasetError(path, "cannot encode the frame")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_bytes(data.tobytes())
    os.replace(tmp, path)


def _decode_missing(
    video: Path, frames: dict[int, tuple[Path, list[FrameRef]]], size: tuple[int, int] | None, quality: int
) -> None:
    """Decode and write one video's frames that are not in the cache yet, in increasing index."""
    todo = sorted(i for i, (target, _) in frames.items() if not target.exists())
    if not todo:
        return
    # one video can be named by several datasets' cases (a synthetic case is written as Cholec80's
    # "video01" and CholecT50's "VID01"): its frames then go to more than one folder
    for folder in {frames[i][0].parent for i in todo}:
        folder.mkdir(parents=True, exist_ok=True)
    try:
        with VideoReader(video) as reader:
            for i in todo:
                if i >= len(reader):
                    raise DatasetError(video, f"frame {i} is beyond the video's {len(reader)} frames")
                _write(frames[i][0], _resize(reader.frame(i), size), quality)
    except VideoError as exc:
        raise DatasetError(video, str(exc)) from exc


def extract_frames(
    samples: Iterable[Sample],
    cache_dir: str | Path,
    size: tuple[int, int] | None = None,
    fmt: str = "jpg",
    quality: int = 95,
    workers: int = 1,
) -> dict[FrameRef, Path]:
    """Image file of every frame the samples refer to: ``<cache>/<case>-<hash>/<index:06d>.<fmt>``.

    Video frames are decoded once, per video in increasing index (the reader continues forward rather
    than seeking when that is cheaper); files already present are not decoded again; every file is
    written under a temporary name and renamed. Image frames map to themselves, or — with ``size``
    (width, height) — to a resized copy. ``workers`` threads decode that many videos at once (the same files).
    Returns FrameRef → file.
    """
    if fmt not in ("jpg", "png"):
        raise ValueError("fmt must be 'jpg' or 'png'")
    cache = Path(cache_dir)
    tag = "" if size is None else f"-{size[0]}x{size[1]}"
    per_video: dict[Path, dict[int, tuple[Path, list[FrameRef]]]] = defaultdict(dict)
    out: dict[FrameRef, Path] = {}
    for sample in samples:
        ref = sample.frame
        if ref in out:
            continue
        if ref.index is None:
            if size is None:
                out[ref] = ref.path
                continue
            target = cache / (_folder(sample.case, ref.path) + tag) / f"{ref.path.stem}.{fmt}"
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                bgr = cv2.imread(str(ref.path), cv2.IMREAD_COLOR)
                if bgr is None:
                    raise DatasetError(ref.path, "cannot read image")
                _write(target, _resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), size), quality)
            out[ref] = target
            continue
        target = cache / (_folder(sample.case, ref.path) + tag) / f"{ref.index:06d}.{fmt}"
        entry = per_video[ref.path].setdefault(ref.index, (target, []))
        entry[1].append(ref)
    jobs = list(per_video.items())
    if workers > 1 and len(jobs) > 1:
        # the decoder and the JPEG encoder run outside the GIL: threads decode several videos at once
        with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            list(pool.map(lambda job: _decode_missing(*job, size, quality), jobs))
    else:
        for video, frames in jobs:
            _decode_missing(video, frames, size, quality)
    for _video, frames in jobs:
        for target, refs in frames.values():
            for ref in refs:
                out[ref] = target
    return out


def with_cached_frames(samples: Iterable[Sample], mapping: dict[FrameRef, Path]) -> list[Sample]:
    """The samples with each frame replaced by its cached image file; boxes follow a resize."""
    out = []
    for sample in samples:
        path = mapping[sample.frame]
        if path == sample.frame.path and sample.frame.index is None:
            out.append(sample)
            continue
        width, height = image_size(path)
        ref = FrameRef(path, None, width, height)
        truth = sample.truth
        if sample.frame.width and sample.frame.height and (width, height) != (sample.frame.width, sample.frame.height):
            truth = scale_truth(truth, width / sample.frame.width, height / sample.frame.height)
        extra = {**sample.extra, "source_frame": (str(sample.frame.path), sample.frame.index)}
        out.append(replace(sample, frame=ref, truth=truth, extra=extra))
    return out
