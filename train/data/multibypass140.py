"""MultiBypass140: phases and steps of laparoscopic Roux-en-Y gastric bypass (two centres, 140 videos).

Layout, as github.com/CAMMA-public/MultiBypass140 (commit d3ace46) ships the labels and its README
lays out the videos and 1 fps frames::

    <root>/labels/bern/labels_by70/BBP01.mp4.json            (strasbourg: SBP01 ...)
    <root>/labels/bern/labels_by70_splits/labels/{train,val,test}/1fps_100_<k>.pickle | 1fps_<k>.pickle
    <root>/labels/bern/labels_by70_splits/frames/BBP01/BBP01_00000001.jpg   (util/extract_frames.py, 1 fps)
    <root>/datasets/MultiBypass140/BernBypass70/videos/BBP01.mp4           (StrasBypass70 for strasbourg)

A label file is ``{"phases": [...], "steps": [...]}``, each item ``{"start", "end", "label_name",
"label_id"}``. Phase ids 0-11 are the phases; 12 ``out_of_body`` and 13 ``severe_index`` are events
overlaid on them (``tables/phase.csv``) and are not phases; step ids 0-45 (``tables/step.csv``).
``start``/``end`` are read as milliseconds: the repository does not say so, but the 140 files span
37-178 minutes in these units, which fits the operation (an inference, not documented).

Frames are sampled at 1 fps as the official splits are: second ``s`` is frame ``<VID>_<s+1:08d>.jpg``
(ffmpeg's ``fps=1`` numbering from 1; the split pickles pair ``Frame_id`` ``BBP02_00000001`` with
``Original_frame_id`` 0) and carries the labels in force at ``s * 1000 + 999`` ms: this reproduces
the official pickles' ``Phase_gt``/``Step_gt`` on all 89,767 frames of bern fold 1's test pickle (at
``s * 1000`` 692 frames near boundaries differ). A second covered by no phase gives no sample;
``out_of_body`` seconds are kept, as the official splits keep them, and flagged in ``extra``. When
the extracted frames end before the labels do (the labels of BBP04 run 81 s past its frames), the
labels' tail is dropped with a warning.
"""

from __future__ import annotations

import itertools
import json
import logging
import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from engine.procedures import get_procedure
from engine.tasks import Task
from train.data.errors import DatasetError, line_of, read_json
from train.data.media import find_video, video_info
from train.data.sample import FrameRef, Sample, Truth
from train.data.splits import multibypass140_split

__all__ = [
    "CENTRES",
    "Interval",
    "VideoLabels",
    "label_files",
    "multibypass140_samples",
    "official_split_lists",
    "read_labels",
]

CENTRES = {"bern": ("BBP", "BernBypass70"), "strasbourg": ("SBP", "StrasBypass70")}
LABEL_OFFSET_MS = 999  # second s carries the labels at s * 1000 + 999 ms (as the official split pickles do)
log = logging.getLogger(__name__)
OUT_OF_BODY, SEVERE_INDEX = 12, 13
_EVENTS = {OUT_OF_BODY: "out_of_body", SEVERE_INDEX: "severe_index"}


@dataclass(frozen=True)
class Interval:
    start_ms: int
    end_ms: int
    label: str  # canonical phase or step name, or an event name (out_of_body, severe_index)


@dataclass(frozen=True)
class VideoLabels:
    video: str  # BBP01
    phases: tuple[Interval, ...]
    steps: tuple[Interval, ...]
    events: tuple[Interval, ...]  # out_of_body and severe_index overlays

    def at(self, ms: int) -> tuple[str | None, str | None, bool]:
        """(phase, step, out of body) at ``ms`` milliseconds."""
        phase = next((i.label for i in self.phases if i.start_ms <= ms < i.end_ms), None)
        step = next((i.label for i in self.steps if i.start_ms <= ms < i.end_ms), None)
        out = any(i.start_ms <= ms < i.end_ms for i in self.events if i.label == "out_of_body")
        return phase, step, out


def _items(path: Path, text: str, data: Any, key: str) -> list[tuple[dict, int]]:
    """The items of ``data[key]`` with the line each starts on (files are often one line)."""
    if not isinstance(data.get(key), list):
        raise DatasetError(path, f"expected a {key!r} list", 1)
    at = text.find(f'"{key}"')
    start = text.find("[", at) + 1
    decoder = json.JSONDecoder()
    out = []
    for item in data[key]:
        while text[start] in " \t\r\n,":
            start += 1
        _, end = decoder.raw_decode(text, start)
        out.append((item, line_of(text, start)))
        start = end
    return out


def read_labels(path: str | Path) -> VideoLabels:
    """A ``<VID>.mp4.json`` label file, strictly: every bad item is a DatasetError naming its line."""
    path = Path(path)
    data, text = read_json(path)
    if not isinstance(data, dict):
        raise DatasetError(path, "expected an object with 'phases' and 'steps'", 1)
    bypass = get_procedure("bypass")
    out: dict[str, list[Interval]] = {"phases": [], "steps": [], "events": []}
    for key, role in (("phases", "phase"), ("steps", "step")):
        vocab = bypass.vocabulary(role)
        for n, (item, line) in enumerate(_items(path, text, data, key)):
            where = f"{key}[{n}]"
            if not isinstance(item, dict) or not {"start", "end", "label_name", "label_id"} <= set(item):
                raise DatasetError(path, f"{where}: expected start, end, label_name and label_id", line)
            start, end, name, label_id = item["start"], item["end"], item["label_name"], item["label_id"]
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end, label_id)):
                raise DatasetError(path, f"{where}: start, end and label_id must be integers", line)
            if start < 0 or end <= start:
                raise DatasetError(path, f"{where}: interval [{start}, {end}) is empty or negative", line)
            if role == "phase" and label_id in _EVENTS:
                if name != _EVENTS[label_id]:
                    raise DatasetError(
                        path, f"{where}: event id {label_id} is {_EVENTS[label_id]!r}, not {name!r}", line
                    )
                out["events"].append(Interval(start, end, name))
                continue
            try:
                label = vocab.by_id(label_id)
            except KeyError:
                raise DatasetError(path, f"{where}: unknown {role} id {label_id}", line) from None
            if name != label.name:
                raise DatasetError(path, f"{where}: {role} id {label_id} is {label.name!r}, not {name!r}", line)
            out[key].append(Interval(start, end, label.name))
    for key in ("phases", "steps"):
        ordered = sorted(out[key], key=lambda i: i.start_ms)
        for a, b in itertools.pairwise(ordered):
            if b.start_ms < a.end_ms:
                raise DatasetError(path, f"{key} overlap: {a.label} to {a.end_ms} and {b.label} from {b.start_ms}")
        out[key] = ordered
    video = path.name.split(".", 1)[0]
    return VideoLabels(video, tuple(out["phases"]), tuple(out["steps"]), tuple(out["events"]))


def label_files(root: str | Path) -> list[tuple[str, Path]]:
    """(centre, label file) of every video, in centre then name order."""
    root = Path(root)
    found = []
    for centre in CENTRES:
        folder = root / "labels" / centre / "labels_by70"
        if folder.is_dir():
            found += [(centre, p) for p in sorted(folder.glob("*.mp4.json"))]
    if not found:
        raise DatasetError(
            root, "no labels/<bern|strasbourg>/labels_by70/*.mp4.json (expected the MultiBypass140 layout)"
        )
    return found


class _PlainData(pickle.Unpickler):
    """Reads pickles of plain containers only: any class or function reference is refused, so a
    split file can never run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused {module}.{name}: split files hold plain data only")


@cache
def official_split_lists(root: Path, centre: str, fold: int) -> dict[str, frozenset[str]]:
    """The official ``train``/``val``/``test`` video ids of ``centre``'s fold from the dataset's split
    pickles under ``root`` (those that exist); {} when none is there."""
    base = Path(root) / "labels" / centre / "labels_by70_splits" / "labels"
    names = {
        "train": f"train/1fps_100_{fold}.pickle",
        "val": f"val/1fps_{fold}.pickle",
        "test": f"test/1fps_{fold}.pickle",
    }
    out: dict[str, frozenset[str]] = {}
    for split, name in names.items():
        path = base / name
        if not path.is_file():
            continue
        try:
            with path.open("rb") as fh:
                data = _PlainData(fh).load()
        except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
            raise DatasetError(path, f"not a readable split file: {exc}") from None
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise DatasetError(path, "expected a dict keyed by video id")
        out[split] = frozenset(data)
    return out


def _last_frame(frames: Path, video: str) -> int | None:
    """The highest 1-based frame number extracted for ``video`` (None: no frames)."""
    numbers = [
        int(p.stem.rsplit("_", 1)[1]) for p in frames.glob(f"{video}_*.jpg") if p.stem.rsplit("_", 1)[1].isdigit()
    ]
    return max(numbers) if numbers else None


def _frame_folder(root: Path, centre: str, video: str) -> Path:
    return root / "labels" / centre / "labels_by70_splits" / "frames" / video


def multibypass140_samples(
    root: str | Path,
    *,
    tasks: Iterable[Task] = (Task.PHASE, Task.STEP),
    every_s: int = 1,
    fold: int = 0,
    videos: Iterable[str] | None = None,
    dataset: str = "multibypass140",
) -> list[Sample]:
    """One sample per (labelled second, task), every ``every_s`` seconds; splits of official ``fold``.

    The frame is the extracted 1 fps image when present, else the video at the second's frame. A
    video whose labels exist but whose frames and video are both missing is a DatasetError.
    """
    root = Path(root)
    tasks = {Task(t) for t in tasks}
    unknown = tasks - {Task.PHASE, Task.PHASE_MCQ, Task.STEP}
    if unknown:
        raise ValueError(f"MultiBypass140 gives phase and step tasks, not {sorted(t.value for t in unknown)}")
    wanted = set(videos) if videos is not None else None
    out: list[Sample] = []
    for centre, path in label_files(root):
        labels = read_labels(path)
        if wanted is not None and labels.video not in wanted:
            continue
        frames = _frame_folder(root, centre, labels.video)
        video = find_video([root / "datasets" / "MultiBypass140" / CENTRES[centre][1] / "videos"], [labels.video])
        fps = width = height = None
        if video is not None:
            width, height, fps = video_info(video)
        elif not frames.is_dir():
            raise DatasetError(path, f"no frames ({frames}) and no video for {labels.video}")
        split = multibypass140_split(labels.video, fold, root)
        last_ms = max(i.end_ms for i in labels.phases) if labels.phases else 0
        extracted = _last_frame(frames, labels.video) if video is None else None
        for second in range(0, last_ms // 1000 + 1, every_s):
            phase, step, out_of_body = labels.at(second * 1000 + LABEL_OFFSET_MS)
            if phase is None:
                continue
            image = frames / f"{labels.video}_{second + 1:08d}.jpg"
            if image.is_file():
                ref = FrameRef(image, None, width, height)
            elif video is not None:
                ref = FrameRef(video, round(second * (fps or 25.0)), width, height)
            elif extracted is not None and second + 1 > extracted:
                log.warning(
                    "%s: labels run past the last extracted frame (second %d); the rest is dropped", path, second
                )
                break
            else:
                raise DatasetError(image, f"frame of second {second} missing (and no video to read it from)")
            truth = Truth(phase=phase, step=step)
            for task in sorted(tasks, key=lambda t: t.value):
                if task is Task.STEP and step is None:
                    continue
                extra = {"second": second, "centre": centre, "out_of_body": out_of_body}
                out.append(
                    Sample(dataset, labels.video, ref, task, truth, split=split, extra=extra, procedure="bypass")
                )
    return out
