"""Endoscapes2023: ``all_metadata.csv`` (``vid, frame, avg_cvs, C1, C2, C3, …``: CVS criteria as rater
means) with the frames as ``<root>/{train,val,test}/{vid}_{frame}.jpg``, or — synthetic cases — a video
``videoNN.*`` in ``video_dir`` whose frame index is the ``frame`` column.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from pathlib import Path

from engine.tasks import Task
from train.data.errors import DatasetError
from train.data.media import find_video, image_size, video_info
from train.data.sample import FrameRef, Sample, Truth
from train.data.splits import endoscapes_split

REQUIRED_COLUMNS = ("vid", "frame", "C1", "C2", "C3")
SPLIT_FOLDERS = ("train", "val", "test")


def read_metadata(path: str | Path) -> list[tuple[int, int, int, tuple[float, float, float] | None, dict]]:
    """Rows of ``all_metadata.csv`` as (line, vid, frame, (C1, C2, C3) or None when unannotated, row)."""
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8", newline="")
    except OSError as exc:
        raise DatasetError(path, exc.strerror or str(exc)) from exc
    rows = []
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise DatasetError(path, "empty file (expected a header with vid, frame, C1, C2, C3)", 1)
            header = [h.strip() for h in header]
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise DatasetError(path, f"header lacks column(s) {', '.join(missing)} (has {', '.join(header)})", 1)
            col = {name: header.index(name) for name in REQUIRED_COLUMNS}
            for values in reader:
                line = reader.line_num
                if not any(v.strip() for v in values):
                    continue
                if len(values) != len(header):
                    raise DatasetError(path, f"expected {len(header)} comma-separated fields, got {len(values)}", line)
                vid = _integer(values[col["vid"]], path, line, "vid")
                frame = _integer(values[col["frame"]], path, line, "frame")
                criteria = [values[col[c]].strip() for c in ("C1", "C2", "C3")]
                if all(c == "" or c.lower() == "nan" for c in criteria):
                    cvs = None
                else:
                    names = ("C1", "C2", "C3")
                    cvs = tuple(_criterion(c, path, line, n) for c, n in zip(criteria, names, strict=True))
                rows.append((line, vid, frame, cvs, dict(zip(header, values, strict=True))))
        except csv.Error as exc:
            raise DatasetError(path, f"CSV error: {exc}", reader.line_num) from None
        except UnicodeDecodeError:
            raise DatasetError(path, "not a UTF-8 text file") from None
    return rows


def _integer(text: str, path: Path, line: int, what: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(path, f"{what} is not a number: {text[:20]!r}", line) from None
    if not value.is_integer() or value < 0:
        raise DatasetError(path, f"{what} is not a non-negative integer: {text[:20]!r}", line)
    return int(value)


def _criterion(text: str, path: Path, line: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(path, f"{what} is not a number: {text[:20]!r}", line) from None
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise DatasetError(path, f"{what} must be a rater mean in 0..1, got {text[:20]!r}", line)
    return value


def endoscapes_samples(
    root: str | Path,
    *,
    metadata: str | Path | None = None,
    video_dir: str | Path | None = None,
    vids: Iterable[int] | None = None,
    keyframes_only: bool = False,
    splits: bool = True,
    dataset: str = "endoscapes",
    missing: str = "error",
) -> list[Sample]:
    """One CVS sample per annotated row of ``all_metadata.csv``.

    ``keyframes_only`` keeps rows with ``is_ds_keyframe`` true. Rows with empty/NaN criteria are not
    annotated and give no sample. A row whose frame cannot be found raises DatasetError naming the CSV
    line, unless ``missing="skip"`` is asked for explicitly.
    """
    if missing not in ("error", "skip"):
        raise ValueError("missing must be 'error' or 'skip'")
    root = Path(root)
    path = Path(metadata) if metadata else root / "all_metadata.csv"
    wanted = set(vids) if vids is not None else None
    videos: dict[int, tuple[Path, tuple[int, int, float]] | None] = {}
    out: list[Sample] = []
    for line, vid, frame, cvs, row in read_metadata(path):
        if cvs is None or (wanted is not None and vid not in wanted):
            continue
        if keyframes_only and str(row.get("is_ds_keyframe", "")).strip().lower() not in ("1", "true", "1.0"):
            continue
        split = endoscapes_split(vid, root) if splits else None
        ref = None
        for folder in ([split] if split else []) + [s for s in SPLIT_FOLDERS if s != split] + [""]:
            image = root / folder / f"{vid}_{frame}.jpg"
            if image.exists():
                ref = FrameRef(image, None, *image_size(image))
                if splits and folder:
                    split = folder
                break
        if ref is None and video_dir is not None:
            if vid not in videos:
                video = find_video([Path(video_dir)], [f"video{vid:02d}", str(vid), f"vid{vid:02d}"])
                videos[vid] = (video, video_info(video)) if video else None
            if videos[vid] is not None:
                video, (width, height, _) = videos[vid]
                ref = FrameRef(video, frame, width, height)
        if ref is None:
            if missing == "skip":
                continue
            raise DatasetError(path, f"no frame for vid {vid} frame {frame} (no {vid}_{frame}.jpg, no video)", line)
        case = ref.path.stem if ref.index is not None else str(vid)
        extra = {"vid": vid, "frame": frame, "line": line}
        if "avg_cvs" in row and row["avg_cvs"].strip():
            extra["avg_cvs"] = row["avg_cvs"].strip()
        out.append(Sample(dataset, case, ref, Task.CVS, Truth(cvs=cvs), split=split, extra=extra))
    return out
