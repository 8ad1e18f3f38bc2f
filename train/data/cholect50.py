"""CholecT50: ``labels/VIDxx.json`` at 1 fps with ``videos/VIDxx/NNNNNN.png`` (or, for synthetic cases,
a video file whose frame index is ``second × source_fps``).

Each instance of ``annotations[frame]`` is
``[tripletID, instrumentID, instScore, x, y, w, h, verbID, targetID, tgtScore, x, y, w, h, phaseID]``
with boxes normalised to the frame size and -1 for null.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.ontology import Ontology, UnknownLabelError, load_ontology
from engine.tasks import Task
from train.data.errors import DatasetError, line_of, read_json
from train.data.media import case_order, find_video, image_size, video_info
from train.data.sample import Box, FrameRef, Instrument, Sample, TripletLabel, Truth
from train.data.splits import cholect50_fold, cholect50_split, video_number

INSTANCE_FIELDS = 15
DEFAULT_SOURCE_FPS = 25.0


@dataclass(frozen=True)
class T50Frame:
    """The labels of one CholecT50 frame (its 1 fps index)."""

    second: int
    phase: str | None
    triplets: tuple[TripletLabel, ...]
    line: int  # where the frame's key stands in the JSON


@dataclass(frozen=True)
class T50Video:
    path: Path
    case: str
    frames: tuple[T50Frame, ...]
    source_fps: float | None  # info.source_fps (synthetic cases); None in the real release


class _Locator:
    """Line numbers of frame keys inside ``annotations`` (the JSON parser does not keep them)."""

    def __init__(self, text: str):
        self.text = text
        m = re.search(r'"annotations"\s*:', text)
        self.start = m.end() if m else 0

    def line(self, key: str) -> int:
        m = re.compile(r'"' + re.escape(key) + r'"\s*:').search(self.text, self.start)
        return line_of(self.text, m.start() if m else self.start)


def _number(value, path: Path, line: int, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DatasetError(path, f"{what} is not a number: {value!r}", line)
    return float(value)


def _int_id(value, path: Path, line: int, what: str) -> int:
    number = _number(value, path, line, what)
    if number != int(number):
        raise DatasetError(path, f"{what} is not an integer id: {value!r}", line)
    return int(number)


def _box(values: list, size: tuple[int, int] | None, path: Path, line: int, what: str) -> Box | None:
    x, y, w, h = (_number(v, path, line, what) for v in values)
    if x < 0 or y < 0 or w <= 0 or h <= 0:  # -1 (null) or empty
        return None
    if x > 1.0001 or y > 1.0001 or w > 1.0001 or h > 1.0001:
        raise DatasetError(path, f"{what} box {values} is not normalised to 0..1", line)
    if size is None:
        return (x, y, x + w, y + h)  # still normalised; to_pixels() later
    width, height = size
    return (
        round(min(x, 1.0) * width, 2),
        round(min(y, 1.0) * height, 2),
        round(min(x + w, 1.0) * width, 2),
        round(min(y + h, 1.0) * height, 2),
    )


def _phase_names(categories: dict, onto: Ontology, path: Path, locate: _Locator) -> dict[int, str]:
    names: dict[int, str] = {label.id: label.name for label in onto.phase}
    table = categories.get("phase") if isinstance(categories, dict) else None
    if isinstance(table, dict):
        for key, name in table.items():
            label = onto.phase.resolve(str(name))
            if label is None or not str(key).lstrip("-").isdigit():
                m = re.search(r'"phase"\s*:', locate.text)
                line = line_of(locate.text, m.start() if m else 0)
                raise DatasetError(path, f"unknown phase category {key!r}: {name!r}", line)
            names[int(key)] = label.name
    return names


def read_labels(path: str | Path, frame_size: tuple[int, int] | None = None) -> T50Video:
    """Parse and check one ``VIDxx.json``. Boxes are in pixels of ``frame_size`` (width, height) when
    given, else left normalised (x1, y1, x2, y2 in 0..1)."""
    path = Path(path)
    data, text = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), dict):
        raise DatasetError(path, "expected an object with an 'annotations' object keyed by frame id", 1)
    onto = load_ontology()
    locate = _Locator(text)
    phases = _phase_names(data.get("categories") or {}, onto, path, locate)
    frames: list[T50Frame] = []
    for key, instances in data["annotations"].items():
        line = locate.line(key)
        if not str(key).isdigit():
            raise DatasetError(path, f"frame id {key!r} is not a non-negative integer", line)
        if not isinstance(instances, list):
            raise DatasetError(path, f"frame {key}: expected a list of instances", line)
        triplets: list[TripletLabel] = []
        phase_ids: set[int] = set()
        for n, inst in enumerate(instances):
            what = f"frame {key} instance {n}"
            if not isinstance(inst, list) or len(inst) != INSTANCE_FIELDS:
                count = len(inst) if isinstance(inst, list) else type(inst).__name__
                raise DatasetError(path, f"{what}: expected {INSTANCE_FIELDS} values, got {count}", line)
            for k, value in enumerate(inst):
                _number(value, path, line, f"{what} value {k}")
            tid = _int_id(inst[0], path, line, f"{what} triplet id")
            iid = _int_id(inst[1], path, line, f"{what} instrument id")
            vid = _int_id(inst[7], path, line, f"{what} verb id")
            gid = _int_id(inst[8], path, line, f"{what} target id")
            pid = _int_id(inst[14], path, line, f"{what} phase id")
            if pid >= 0:
                if pid not in phases:
                    raise DatasetError(path, f"{what}: unknown phase id {pid}", line)
                phase_ids.add(pid)
            if tid < 0:
                continue  # a frame without triplets (the row still carries the phase)
            try:
                instrument, verb, target = onto.triplet(tid)
            except UnknownLabelError:
                raise DatasetError(path, f"{what}: unknown triplet id {tid}", line) from None
            if (iid, vid, gid) != (instrument.id, verb.id, target.id):
                raise DatasetError(
                    path,
                    f"{what}: triplet {tid} is {onto.triplet_name(tid)} (ids {instrument.id},{verb.id},{target.id})"
                    f" but the row says instrument/verb/target ids {iid},{vid},{gid}",
                    line,
                )
            triplets.append(
                TripletLabel(
                    instrument.name,
                    verb.name,
                    target.name,
                    tid,
                    _box(inst[3:7], frame_size, path, line, f"{what} instrument"),
                    _box(inst[10:14], frame_size, path, line, f"{what} target"),
                )
            )
        if len(phase_ids) > 1:
            raise DatasetError(path, f"frame {key}: instances disagree on the phase ({sorted(phase_ids)})", line)
        phase = phases[phase_ids.pop()] if phase_ids else None
        frames.append(T50Frame(int(key), phase, tuple(triplets), line))
    frames.sort(key=lambda f: f.second)
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    fps = info.get("source_fps")
    case = path.stem
    return T50Video(path, case, tuple(frames), float(fps) if isinstance(fps, int | float) else None)


def case_ids(root: Path) -> list[str]:
    folder = Path(root) / "labels"
    if not folder.is_dir():
        raise DatasetError(folder, "no labels folder (expected the CholecT50 layout)")
    names = sorted((p.stem for p in folder.glob("*.json")), key=case_order)
    if not names:
        raise DatasetError(folder, "no VIDxx.json files")
    return names


def _instruments(triplets: tuple[TripletLabel, ...], onto: Ontology) -> tuple[Instrument, ...]:
    seen: dict[tuple, Instrument] = {}
    for t in triplets:
        tool = onto.tool_for_instrument(onto.instrument.require(t.instrument)).name
        seen.setdefault((tool, t.instrument_box), Instrument(tool, t.instrument_box))
    return tuple(seen.values())


def cholect50_samples(
    root: str | Path,
    *,
    tasks: Iterable[Task] = (Task.TRIPLET, Task.TOOLS, Task.PHASE),
    cases: Iterable[str] | None = None,
    every: int = 1,
    test_fold: int | None = 1,
    val_fold: int | None = None,
    splits: bool = True,
    dataset: str = "cholect50",
    video_dir: str | Path | None = None,
    source_fps: float | None = None,
) -> list[Sample]:
    """Samples per labelled frame (every ``every``-th second) and task.

    Frames come from ``<root>/videos/VIDxx/NNNNNN.png`` when that folder exists, else from a video
    file ``VIDxx.*`` / ``videoxx.*`` in ``<root>/videos`` or ``video_dir``, at index
    ``second × fps`` (fps: ``source_fps``, else the label file's ``info.source_fps``, else the video's).
    TOOLS samples list CholecT50's six instruments (no specimen bag: ``extra['tool_vocabulary']``).
    """
    root = Path(root)
    tasks = {Task(t) for t in tasks}
    unknown = tasks - {Task.TRIPLET, Task.TOOLS, Task.PHASE}
    if unknown:
        raise ValueError(f"CholecT50 gives triplet, tools and phase tasks, not {sorted(unknown)}")
    onto = load_ontology()
    tool_vocabulary = tuple(onto.tool_for_instrument(label).name for label in onto.instrument)
    out: list[Sample] = []
    for case in cases or case_ids(root):
        label_path = root / "labels" / f"{case}.json"
        if not label_path.exists():
            raise DatasetError(label_path, "label file missing")
        number = video_number(case)
        png_dir = root / "videos" / case
        video: Path | None = None
        if png_dir.is_dir():
            size = None  # per image
        else:
            dirs = [Path(video_dir)] if video_dir else []
            video = find_video([*dirs, root / "videos"], [case, f"video{number:02d}", f"vid{number:02d}"])
            if video is None:
                raise DatasetError(label_path, f"no frames for {case}: neither {png_dir}/ nor a video file {case}.*")
            width, height, vfps = video_info(video)
            size = (width, height)
        labels = read_labels(label_path, size)
        fps = source_fps or labels.source_fps or (vfps if video else None) or DEFAULT_SOURCE_FPS
        split = cholect50_split(case, test_fold, val_fold) if splits else None
        extra_base = {"fold": cholect50_fold(case)} if splits else {}
        for frame in labels.frames:
            if frame.second % every:
                continue
            if video is None:
                png = png_dir / f"{frame.second:06d}.png"
                if not png.exists():
                    raise DatasetError(label_path, f"frame {frame.second}: image {png} missing", frame.line)
                width, height = image_size(png)
                ref = FrameRef(png, None, width, height)
                triplets = tuple(_to_pixels(t, width, height) for t in frame.triplets)
            else:
                ref = FrameRef(video, round(frame.second * fps), *size)
                triplets = frame.triplets
            instruments = _instruments(triplets, onto)
            truth = Truth(
                phase=frame.phase,
                tools=tuple(dict.fromkeys(i.tool for i in instruments)),
                instruments=instruments,
                triplets=triplets,
            )
            extra = {**extra_base, "second": frame.second, "tool_vocabulary": tool_vocabulary}
            for task in (Task.TRIPLET, Task.TOOLS, Task.PHASE):
                if task not in tasks or (task is Task.PHASE and frame.phase is None):
                    continue
                out.append(Sample(dataset, case, ref, task, truth, split=split, extra=dict(extra)))
    return out


def _to_pixels(t: TripletLabel, width: int, height: int) -> TripletLabel:
    def scale(box: Box | None) -> Box | None:
        if box is None:
            return None
        x1, y1, x2, y2 = box
        x2, y2 = min(x2, 1.0), min(y2, 1.0)
        return (round(x1 * width, 2), round(y1 * height, 2), round(x2 * width, 2), round(y2 * height, 2))

    return TripletLabel(t.instrument, t.verb, t.target, t.triplet_id, scale(t.instrument_box), scale(t.target_box))
