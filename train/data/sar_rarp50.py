"""SAR-RARP50 (EndoVis 2022): suturing actions of robot-assisted radical prostatectomy.

Layout, as the dataset ships and its toolkit (github.com/surgical-vision/SAR_RARP50-evaluation)
reads it::

    <root>/train1/video_01/video_left.avi        60 fps ("all the sarrarp50 videos are recorded at 60 fps")
    <root>/train1/video_01/action_discrete.txt   one row per 6th video frame (10 Hz): "000000000,0"
    <root>/train1/video_01/segmentation/000000000.png   instrument masks at 1 Hz (every 60th frame)
    <root>/train1/video_01/rgb/000000006.png     10 Hz frames, when extracted by the toolkit's ``unpack``
    <root>/train2/video_NN/...  <root>/test/video_NN/...

``action_discrete.txt`` rows are ``frame_id,action_id``: the video frame (zero-padded to nine digits
in the files public loaders show; any non-negative integer is accepted) and one of the eight action
ids 0-7 (:mod:`engine.procedures`, ``rarp``). The toolkit expects ``(frames - 1) // 6 + 1`` rows, i.e.
frames 0, 6, 12, ...: rows here must be increasing multiples of 6. Segmentation masks hold class ids
as pixel values (toolkit: 1 tool clasper, 2 tool wrist, 3 tool shaft, 4 suturing needle, 5 thread,
6 suction tool, 7 needle holder, 8 clamps, 9 catheter); where a 1 Hz mask exists, the needle, thread,
clamps and catheter it shows become the frame's visible objects (Level 1). The split is the folder:
``train1``/``train2`` train, ``test`` test (``splits.yaml``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from engine.procedures import get_procedure
from engine.tasks import Task
from train.data.errors import DatasetError
from train.data.media import video_info
from train.data.sample import FrameRef, Sample, Truth
from train.data.splits import sar_rarp50_split

__all__ = [
    "ACTION_FILE",
    "SAMPLING_PERIOD",
    "SAR_RARP50_FPS",
    "SEGMENTATION_OBJECTS",
    "read_actions",
    "sar_rarp50_samples",
    "video_folders",
]

SAR_RARP50_FPS = 60
SAMPLING_PERIOD = 6  # video frames between action rows (10 Hz)
MASK_PERIOD = 60  # video frames between segmentation masks (1 Hz)
ACTION_FILE = "action_discrete.txt"
VIDEO_FILE = "video_left.avi"
SEGMENTATION_OBJECTS = {4: "suturing_needle", 5: "thread", 8: "clamps", 9: "catheter"}  # mask id -> rarp anatomy
_VIDEO_DIR = re.compile(r"^video_(\d+)$")
_ROW = re.compile(r"^\s*(\d+)\s*,\s*(\d+)\s*$")


def read_actions(path: str | Path) -> list[tuple[int, int]]:
    """(frame, action id) rows of ``action_discrete.txt``; every malformed row is a DatasetError (line)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(path, exc.strerror or str(exc)) from exc
    except UnicodeDecodeError:
        raise DatasetError(path, "not a text file") from None
    n_actions = len(get_procedure("rarp").vocabulary("action"))
    rows: list[tuple[int, int]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        m = _ROW.match(line)
        if m is None:
            raise DatasetError(path, f"expected 'frame_id,action_id', got {line[:60]!r}", number)
        frame, action = int(m.group(1)), int(m.group(2))
        if action >= n_actions:
            raise DatasetError(path, f"action id {action} is not one of 0-{n_actions - 1}", number)
        if frame % SAMPLING_PERIOD:
            raise DatasetError(path, f"frame {frame} is not a multiple of {SAMPLING_PERIOD} (10 Hz of 60 fps)", number)
        if rows and frame <= rows[-1][0]:
            raise DatasetError(path, f"frame {frame} is not after the previous row's frame {rows[-1][0]}", number)
        rows.append((frame, action))
    if not rows:
        raise DatasetError(path, "no action rows")
    return rows


def video_folders(root: str | Path) -> list[Path]:
    """Every ``video_NN`` folder, by number: ``root`` itself, its children, or its split folders' children."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, "no such folder")
    if _VIDEO_DIR.match(root.name):
        return [root]
    found = [p for p in sorted(root.iterdir()) if p.is_dir() and _VIDEO_DIR.match(p.name)]
    if not found:
        for split in sorted(p for p in root.iterdir() if p.is_dir()):
            found += [p for p in sorted(split.iterdir()) if p.is_dir() and _VIDEO_DIR.match(p.name)]
    if not found:
        raise DatasetError(root, "no video_NN folders (expected the SAR-RARP50 layout: <root>/train1/video_01/...)")
    return sorted(found, key=lambda p: (int(_VIDEO_DIR.match(p.name).group(1)), str(p)))  # type: ignore[union-attr]


def _objects(mask_path: Path) -> tuple[str, ...]:
    import cv2
    import numpy as np

    mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise DatasetError(mask_path, "cannot read the segmentation mask")
    values = set(np.unique(mask if mask.ndim == 2 else mask[..., 0]).tolist())
    unknown = sorted(v for v in values if v > 9)
    if unknown:
        raise DatasetError(mask_path, f"pixel value {unknown[0]} is no SAR-RARP50 class (0-9)")
    return tuple(name for value, name in SEGMENTATION_OBJECTS.items() if value in values)


def sar_rarp50_samples(
    root: str | Path,
    *,
    tasks: Iterable[Task] = (Task.ACTION,),
    every: int = 1,
    dataset: str = "sar_rarp50",
) -> list[Sample]:
    """One sample per (action row, task), every ``every``-th row (1: 10 Hz; 10: 1 Hz).

    The frame is the toolkit's extracted ``rgb/<frame>.png`` when present, else frame ``frame_id`` of
    ``video_left.avi``. A video folder without its action file or its video/frames is a DatasetError.
    """
    tasks = {Task(t) for t in tasks}
    unknown = tasks - {Task.ACTION, Task.ACTION_MCQ}
    if unknown:
        raise ValueError(f"SAR-RARP50 gives the action tasks, not {sorted(t.value for t in unknown)}")
    if every < 1:
        raise ValueError("every must be at least 1")
    vocab = get_procedure("rarp").vocabulary("action")
    out: list[Sample] = []
    for folder in video_folders(root):
        action_path = folder / ACTION_FILE
        if not action_path.is_file():
            raise DatasetError(action_path, "action file missing")
        rows = read_actions(action_path)
        video = folder / VIDEO_FILE
        rgb = folder / "rgb"
        size = None
        if video.is_file():
            width, height, fps = video_info(video)
            size = (width, height)
            if fps and abs(fps - SAR_RARP50_FPS) > 0.5:
                raise DatasetError(video, f"{fps:.2f} fps; SAR-RARP50 videos are {SAR_RARP50_FPS} fps")
        elif not rgb.is_dir():
            raise DatasetError(folder, f"neither {VIDEO_FILE} nor an rgb/ frame folder")
        split = sar_rarp50_split(folder)
        for frame, action in rows[::every]:
            image = rgb / f"{frame:09d}.png"
            if image.is_file():
                ref = FrameRef(image, None, *(size or (None, None)))
            elif video.is_file():
                ref = FrameRef(video, frame, *size)  # type: ignore[misc]
            else:
                raise DatasetError(image, "frame missing (and no video_left.avi to read it from)")
            mask = folder / "segmentation" / f"{frame:09d}.png"
            objects = _objects(mask) if frame % MASK_PERIOD == 0 and mask.is_file() else ()
            truth = Truth(action=vocab.by_id(action).name, anatomy=objects)
            extra = {"source_fps": SAR_RARP50_FPS, "action_id": action}
            for task in sorted(tasks, key=lambda t: t.value):
                out.append(Sample(dataset, folder.name, ref, task, truth, split=split, extra=extra, procedure="rarp"))
    return out
