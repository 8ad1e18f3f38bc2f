"""EndoVis 2017 Robotic Instrument Segmentation: per-instrument masks → one box per instrument.

Layout, as the challenge ships the training data and public loaders read it (TernausNet's
``prepare_data.py``, the README trees of several repositories)::

    <root>/instrument_dataset_1/left_frames/frame000.png     1920x1080 stereo left frames (225 per sequence)
    <root>/instrument_dataset_1/right_frames/frame000.png
    <root>/instrument_dataset_1/ground_truth/Left_Prograsp_Forceps_labels/frame000.png
    <root>/instrument_dataset_1/ground_truth/Maryland_Bipolar_Forceps_labels/frame000.png
    <root>/instrument_dataset_1/ground_truth/Other_labels/frame000.png

Each ``ground_truth/<Name>_labels`` folder is one instrument's mask per frame (non-zero = the
instrument; training masks code its parts as 10 shaft, 20 wrist, 30 claspers). Its type is read from
the folder name as TernausNet does, by the type name it contains (``Maryland_Bipolar_Forceps`` is a
Bipolar Forceps; ``Large_Needle_Driver_Left`` a Large Needle Driver). A folder naming no known type is
a DatasetError, never skipped. A frame's box per instrument is the extent of its non-zero pixels.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from engine.procedures import get_procedure
from engine.tasks import Task
from train.data.errors import DatasetError
from train.data.sample import Box, FrameRef, Instrument, Sample, Truth

__all__ = ["FRAME_NAME", "endovis17_samples", "instrument_type", "mask_box", "sequences"]

FRAME_NAME = re.compile(r"^frame(\d{3,})\.png$")
_SEQUENCE = re.compile(r"^instrument_dataset_(\d+)$")
# Type names as folder names spell them (longest first, so "Bipolar_Forceps" is found inside
# "Maryland_Bipolar_Forceps"), each to the canonical EndoVis17 tool of engine.procedures.
_TYPES = (
    ("Monopolar_Curved_Scissors", "Monopolar_Curved_Scissors"),
    ("Large_Needle_Driver", "Large_Needle_Driver"),
    ("Grasping_Retractor", "Grasping_Retractor"),
    ("Prograsp_Forceps", "Prograsp_Forceps"),
    ("Bipolar_Forceps", "Bipolar_Forceps"),
    ("Vessel_Sealer", "Vessel_Sealer"),
    ("Other", "Other"),
)


def instrument_type(folder_name: str) -> str | None:
    """The canonical tool a ``ground_truth`` folder's name names, or None."""
    for spelled, tool in _TYPES:
        if spelled.lower() in folder_name.lower():
            return tool
    return None


def mask_box(path: Path, size: tuple[int, int]) -> Box | None:
    """The box of a mask's non-zero pixels (None: the instrument is not in this frame)."""
    import cv2
    import numpy as np

    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise DatasetError(path, "cannot read the mask")
    if (mask.shape[1], mask.shape[0]) != size:
        raise DatasetError(path, f"mask is {mask.shape[1]}x{mask.shape[0]}, the frame {size[0]}x{size[1]}")
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def sequences(root: str | Path) -> list[Path]:
    """The ``instrument_dataset_N`` folders under ``root`` (or ``root`` itself), by number."""
    root = Path(root)
    if _SEQUENCE.match(root.name):
        return [root]
    found = [p for p in root.iterdir() if p.is_dir() and _SEQUENCE.match(p.name)] if root.is_dir() else []
    if not found:
        raise DatasetError(root, "no instrument_dataset_N folders (expected the EndoVis 2017 layout)")
    return sorted(found, key=lambda p: int(_SEQUENCE.match(p.name).group(1)))  # type: ignore[union-attr]


def endovis17_samples(
    root: str | Path,
    *,
    tasks: Iterable[Task] = (Task.TOOLS, Task.LOCALISATION),
    every: int = 1,
    split: str | None = "train",
    dataset: str = "endovis17",
) -> list[Sample]:
    """One TOOLS sample per labelled frame (the instruments with a non-empty mask, with boxes) and one
    LOCALISATION sample per instrument type in view, every ``every``-th frame of each sequence."""
    import cv2

    tasks = {Task(t) for t in tasks}
    unknown = tasks - {Task.TOOLS, Task.LOCALISATION}
    if unknown:
        raise ValueError(f"EndoVis17 gives tools and localisation tasks, not {sorted(t.value for t in unknown)}")
    tools = get_procedure("robotic").vocabulary("tool")
    out: list[Sample] = []
    for sequence in sequences(root):
        frames_dir, truth_dir = sequence / "left_frames", sequence / "ground_truth"
        if not frames_dir.is_dir() or not truth_dir.is_dir():
            raise DatasetError(sequence, "expected left_frames/ and ground_truth/ folders")
        folders = sorted(p for p in truth_dir.iterdir() if p.is_dir())
        kinds = {}
        for folder in folders:
            kind = instrument_type(folder.name)
            if kind is None:
                raise DatasetError(folder, f"folder name {folder.name!r} names no EndoVis 2017 instrument type")
            kinds[folder] = tools.require(kind).name
        frames = sorted(p for p in frames_dir.iterdir() if FRAME_NAME.match(p.name))
        if not frames:
            raise DatasetError(frames_dir, "no frameNNN.png files")
        for frame in frames[::every]:
            image = cv2.imread(str(frame), cv2.IMREAD_UNCHANGED)
            if image is None:
                raise DatasetError(frame, "cannot read the frame")
            size = (int(image.shape[1]), int(image.shape[0]))
            instruments = []
            for folder, kind in kinds.items():
                mask = folder / frame.name
                if not mask.is_file():
                    raise DatasetError(mask, "mask missing for this frame")
                box = mask_box(mask, size)
                if box is not None:
                    instruments.append(Instrument(kind, box))
            present = tuple(dict.fromkeys(i.tool for i in instruments))
            truth = Truth(tools=present, instruments=tuple(instruments))
            ref = FrameRef(frame, None, *size)
            case = sequence.name
            if Task.TOOLS in tasks:
                out.append(Sample(dataset, case, ref, Task.TOOLS, truth, split=split, procedure="robotic"))
            if Task.LOCALISATION in tasks:
                for tool in present:
                    extra = {"instrument": tool}
                    sample = Sample(
                        dataset, case, ref, Task.LOCALISATION, truth, split=split, extra=extra, procedure="robotic"
                    )
                    out.append(sample)
    return out
