"""Reviewer labels in and out of a case, in the public datasets' own formats.

Import reads an annotation file strictly (every error names the file and line) and only then writes,
as one undoable change, so a bad file leaves the store as it was. Export writes what the ``train/``
adapters read unchanged: a Cholec80 folder (``phase_annotations/NAME-phase.txt``, ``Frame<TAB>Phase``,
one row per frame from 0), an Endoscapes-style ``all_metadata.csv`` (``vid,frame,avg_cvs,C1,C2,C3``,
criteria as rater means) and a CholecT50 folder (``labels/VIDnn.json``, 1 fps, boxes normalised),
each with ``videos/`` holding a link to the case's video so the adapters find the frames.

What each format can hold: Cholec80 the phase; Endoscapes the three criteria (a frame is exported when
all three are met or not met: the format has no "not assessable"); CholecT50 triplets with their
instrument and target boxes (and the reviewer's phase of the frame) at whole seconds. A CholecT50
file's phases are not imported (a phase per second would cut the reviewer's segments into pieces).
"""

from __future__ import annotations

import bisect
import csv
import io
import itertools
import json
import math
import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

from engine.chain import CvsState
from engine.ontology import UnknownLabelError, load_ontology
from engine.outputs import OutputError, write_output
from engine.phase_labels import LabelFileError, read_cholec80_phases, segments
from engine.review_labels import (
    CvsRange,
    ItemLabel,
    ReviewChange,
    ReviewLabels,
    ReviewSet,
)

__all__ = [
    "CaseFacts",
    "LabelFormatError",
    "export_cholec80",
    "export_cholect50",
    "export_endoscapes",
    "import_cholec80",
    "import_cholect50",
    "import_endoscapes",
    "video_number",
]

MET_AT = 0.5  # a rater mean at or above this is "met" (two of Endoscapes' three raters)
ENDOSCAPES_HEADER = ("vid", "frame", "avg_cvs", "C1", "C2", "C3")
INSTANCE_FIELDS = 15


class LabelFormatError(ValueError):
    """An annotation file that cannot be read, or labels a format cannot hold; one line naming file and line."""

    def __init__(self, path: Path | str, reason: str, line: int | None = None):
        self.path, self.line = Path(path), line
        super().__init__(f"{path}{f':{line}' if line else ''}: {reason}")


@dataclass(frozen=True)
class CaseFacts:
    """What the formats need of the case's video: its size, rate and length, and where it is."""

    video: Path
    width: int
    height: int
    fps: float
    frames: int


def video_number(name: str) -> int | None:
    """The number a dataset names a case by: ``video07`` / ``VID07`` / ``7`` → 7."""
    m = re.search(r"(\d+)\s*$", name)
    return int(m.group(1)) if m else None


def _source(fmt: str, path: Path) -> str:
    return f"import {fmt} {path.name}"


# ------------------------------------------------------------------------------------- Cholec80
def import_cholec80(labels: ReviewLabels, path: Path, case: CaseFacts) -> ReviewChange:
    """A ``videoNN-phase.txt`` as the reviewer's phase segments of frames 0..N-1 (earlier ones replaced)."""
    path = Path(path)
    try:
        phases = read_cholec80_phases(path)
    except LabelFileError as exc:
        m = re.match(r"(\d+): (.*)", str(exc).removeprefix(f"{path}:"))
        line, reason = (int(m.group(1)), m.group(2)) if m else (1, str(exc).removeprefix(f"{path}: "))
        raise LabelFormatError(path, reason, line) from None
    if not phases:
        raise LabelFormatError(path, "no frame rows after the header", 2)
    if len(phases) > case.frames:
        raise LabelFormatError(path, f"labels {len(phases)} frames, the video holds {case.frames}", case.frames + 2)
    runs = [(s.start, s.end, s.label) for s in segments(phases)]
    return labels.set_phases(runs, source=_source("cholec80", path))


def cholec80_text(review: ReviewSet) -> str:
    """The reviewer's phases as a Cholec80 phase file; they must cover every frame from 0 without a gap."""
    rows = ["Frame\tPhase"]
    expected = 0
    for seg in review.segments:
        if seg.start != expected:
            raise LabelFormatError(
                "phase labels", f"no reviewer phase on frames {expected}..{seg.start - 1}: Cholec80 needs every frame"
            )
        rows += [f"{frame}\t{seg.phase}" for frame in range(seg.start, seg.end)]
        expected = seg.end
    if expected == 0:
        raise LabelFormatError("phase labels", "the case has no reviewer phase labels")
    return "\n".join(rows) + "\n"


def export_cholec80(review: ReviewSet, case: CaseFacts, out: Path, name: str) -> list[Path]:
    """``out/phase_annotations/NAME-phase.txt`` and ``out/videos/NAME.ext`` (a link to the video)."""
    out = Path(out)
    target = out / "phase_annotations" / f"{name}-phase.txt"
    _write(target, cholec80_text(review))
    return [target, _link_video(case.video, out / "videos", name)]


def _read_text(path: Path) -> str:
    """A label file's text; an unreadable or non-UTF-8 file is one ``LabelFormatError`` naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LabelFormatError(path, exc.strerror or str(exc)) from None
    except UnicodeDecodeError:
        raise LabelFormatError(path, "not a UTF-8 text file") from None


# ------------------------------------------------------------------------------------- Endoscapes
def _endoscapes_rows(path: Path, vid: int | None) -> list[tuple[int, int, tuple[float, float, float]]]:
    """(line, frame, (C1, C2, C3)) of the rows of ``vid`` (None: the file must hold one vid)."""
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in ("vid", "frame", "C1", "C2", "C3") if c not in header]
        if missing:
            raise LabelFormatError(path, f"header lacks column(s) {', '.join(missing)}", 1)
        col = {c: header.index(c) for c in ("vid", "frame", "C1", "C2", "C3")}
        rows: list[tuple[int, int, int, tuple[float, float, float]]] = []
        for values in reader:
            line = reader.line_num
            if not any(v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise LabelFormatError(path, f"expected {len(header)} comma-separated fields, got {len(values)}", line)
            row_vid = _whole(values[col["vid"]], path, line, "vid")
            frame = _whole(values[col["frame"]], path, line, "frame")
            criteria = [values[col[c]].strip() for c in ("C1", "C2", "C3")]
            if all(c == "" or c.lower() == "nan" for c in criteria):
                continue  # not annotated
            rows.append(
                (line, row_vid, frame, tuple(_mean(c, path, line, f"C{k + 1}") for k, c in enumerate(criteria)))
            )
    except csv.Error as exc:
        raise LabelFormatError(path, f"CSV error: {exc}", reader.line_num) from None
    vids = sorted({r[1] for r in rows})
    if vid is None:
        if len(vids) > 1:
            raise LabelFormatError(path, f"holds videos {vids[:8]}: say which with --vid")
        vid = vids[0] if vids else None
    return [(line, frame, cvs) for line, v, frame, cvs in rows if v == vid]  # type: ignore[misc]


def _whole(text: str, path: Path, line: int, what: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise LabelFormatError(path, f"{what} is not a number: {text[:20]!r}", line) from None
    if not value.is_integer() or value < 0:
        raise LabelFormatError(path, f"{what} is not a non-negative integer: {text[:20]!r}", line)
    return int(value)


def _mean(text: str, path: Path, line: int, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise LabelFormatError(path, f"{what} is not a number: {text[:20]!r}", line) from None
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise LabelFormatError(path, f"{what} must be a rater mean in 0..1, got {text[:20]!r}", line)
    return value


def import_endoscapes(labels: ReviewLabels, path: Path, case: CaseFacts, vid: int | None = None) -> ReviewChange:
    """The rows of ``vid`` as the reviewer's C1..C3 at their frames (met at a rater mean >= 0.5; the mean is
    kept). ``vid`` None: the file's only video."""
    path = Path(path)
    rows = _endoscapes_rows(path, vid)
    if not rows:
        raise LabelFormatError(path, f"no annotated rows{'' if vid is None else f' for vid {vid}'}")
    for line, frame, _ in rows:
        if frame >= case.frames:
            raise LabelFormatError(path, f"frame {frame} is beyond the video's {case.frames} frames", line)
    stamp = {"reviewer": labels.reviewer, "created": _now(), "source": _source("endoscapes", path)}
    new = [
        CvsRange(k + 1, frame, frame + 1, CvsState.MET if v >= MET_AT else CvsState.NOT_MET, v, **stamp)
        for _, frame, cvs in rows
        for k, v in enumerate(cvs)
    ]
    frames = sorted({frame for _, frame, _ in rows})

    def plan(s: ReviewSet):
        removed, kept = [], []
        for criterion in (1, 2, 3):
            gone, rest = _carve(s.cvs[criterion - 1], frames)
            removed += gone
            kept += rest
        return removed, [*kept, *new]

    return labels.replace_all(f"import {path.name}", plan)


def _carve(rows, frames: list[int]) -> tuple[list, list]:
    """Rows overlapping any of the sorted ``frames``, and their parts that lie outside them."""
    removed, kept = [], []
    for row in rows:
        lo, hi = bisect.bisect_left(frames, row.start), bisect.bisect_left(frames, row.end)
        if lo == hi:
            continue
        removed.append(row)
        start = row.start
        for frame in frames[lo:hi]:
            if frame > start:
                kept.append(replace(row, start=start, end=frame, id=None))
            start = frame + 1
        if start < row.end:
            kept.append(replace(row, start=start, end=row.end, id=None))
    return removed, kept


def endoscapes_text(review: ReviewSet, vid: int) -> str:
    """One row per frame where all three criteria are met or not met (a stored rater mean written back)."""
    bounds = sorted({b for rs in review.cvs for r in rs for b in (r.start, r.end)})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(ENDOSCAPES_HEADER)
    written = 0
    for lo, hi in itertools.pairwise(bounds):  # every range is constant between two bounds
        ranges = [review.cvs_range_at(c, lo) for c in (1, 2, 3)]
        if any(r is None or r.state is CvsState.NOT_ASSESSABLE for r in ranges):
            continue
        values = [r.value if r.value is not None else float(r.state is CvsState.MET) for r in ranges]  # type: ignore[union-attr]
        for frame in range(lo, hi):
            writer.writerow([vid, frame, round(sum(values) / 3, 3), *values])
            written += 1
    if not written:
        raise LabelFormatError("CVS labels", "no frame has all three criteria labelled met or not met")
    return out.getvalue()


def export_endoscapes(review: ReviewSet, case: CaseFacts, out: Path, vid: int) -> list[Path]:
    """``out/all_metadata.csv`` and ``out/videos/videoNN.ext`` (the adapter finds frames by index in it)."""
    out = Path(out)
    target = out / "all_metadata.csv"
    _write(target, endoscapes_text(review, vid))
    return [target, _link_video(case.video, out / "videos", f"video{vid:02d}")]


# ------------------------------------------------------------------------------------- CholecT50
@dataclass(frozen=True)
class _T50Frame:
    second: int
    line: int
    triplets: list[tuple[str, tuple | None, tuple | None]]  # (label, instrument box px, target box px)


def _number(value, path: Path, line: int, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LabelFormatError(path, f"{what} is not a number: {value!r}", line)
    return float(value)


def _t50_box(values: list, case: CaseFacts, path: Path, line: int, what: str) -> tuple | None:
    x, y, w, h = (_number(v, path, line, what) for v in values)
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        return None
    if max(x, y, w, h) > 1.0001:
        raise LabelFormatError(path, f"{what} box {values} is not normalised to 0..1", line)
    return (
        round(x * case.width, 2),
        round(y * case.height, 2),
        round(min(x + w, 1.0) * case.width, 2),
        round(min(y + h, 1.0) * case.height, 2),
    )


def _t50_frames(path: Path, case: CaseFacts) -> tuple[list[_T50Frame], float | None]:
    text = _read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabelFormatError(path, f"invalid JSON (column {exc.colno}): {exc.msg}", exc.lineno) from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), dict):
        raise LabelFormatError(path, "expected an object with an 'annotations' object keyed by frame id", 1)
    onto = load_ontology()
    start = m.end() if (m := re.search(r'"annotations"\s*:', text)) else 0
    frames = []
    for key, instances in data["annotations"].items():
        m = re.compile(r'"' + re.escape(str(key)) + r'"\s*:').search(text, start)
        line = text.count("\n", 0, m.start() if m else start) + 1
        if not str(key).isdigit():
            raise LabelFormatError(path, f"frame id {key!r} is not a non-negative integer", line)
        if not isinstance(instances, list):
            raise LabelFormatError(path, f"frame {key}: expected a list of instances", line)
        triplets = []
        for n, inst in enumerate(instances):
            what = f"frame {key} instance {n}"
            if not isinstance(inst, list) or len(inst) != INSTANCE_FIELDS:
                raise LabelFormatError(path, f"{what}: expected {INSTANCE_FIELDS} values", line)
            ids = [_number(inst[k], path, line, f"{what} value {k}") for k in range(INSTANCE_FIELDS)]
            if ids[0] < 0:
                continue
            try:
                instrument, verb, target = onto.triplet(int(ids[0]))
            except UnknownLabelError:
                raise LabelFormatError(path, f"{what}: unknown triplet id {int(ids[0])}", line) from None
            if (int(ids[1]), int(ids[7]), int(ids[8])) != (instrument.id, verb.id, target.id):
                raise LabelFormatError(path, f"{what}: triplet {int(ids[0])} disagrees with its ids", line)
            label = f"{instrument.name},{verb.name},{target.name}"
            boxes = (_t50_box(inst[3:7], case, path, line, what), _t50_box(inst[10:14], case, path, line, what))
            triplets.append((label, *boxes))
        frames.append(_T50Frame(int(key), line, triplets))
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    fps = info.get("source_fps")
    return sorted(frames, key=lambda f: f.second), float(fps) if isinstance(fps, int | float) else None


def import_cholect50(labels: ReviewLabels, path: Path, case: CaseFacts) -> ReviewChange:
    """Each labelled second's triplets (with boxes, in the video's pixels) as the reviewer's triplets of frame
    ``second × fps`` (the file's ``info.source_fps``, else the video's); a second without triplets says none."""
    path = Path(path)
    frames, source_fps = _t50_frames(path, case)
    fps = source_fps or case.fps
    stamp = {"reviewer": labels.reviewer, "created": _now(), "source": _source("cholect50", path)}
    rows: list[ItemLabel] = []
    touched = set()
    for f in frames:
        frame = round(f.second * fps)
        if frame >= case.frames:
            raise LabelFormatError(path, f"second {f.second} (frame {frame}) is beyond the video", f.line)
        touched.add(frame)
        rows += [ItemLabel(frame, "triplet", "added", lb, box=ib, target_box=tb, **stamp) for lb, ib, tb in f.triplets]
        if not f.triplets:
            rows.append(ItemLabel(frame, "triplet", "none", "", **stamp))

    def plan(s: ReviewSet):
        return [i for i in s.items if i.kind == "triplet" and i.frame in touched], rows

    return labels.replace_all(f"import {path.name}", plan)


def _t50_box_out(box, case: CaseFacts) -> list[float]:
    if box is None:
        return [-1.0, -1.0, -1.0, -1.0]
    x1, y1, x2, y2 = box
    w, h = case.width, case.height
    return [round(x1 / w, 4), round(y1 / h, 4), round((x2 - x1) / w, 4), round((y2 - y1) / h, 4)]


def cholect50_json(review: ReviewSet, case: CaseFacts, vid: int) -> tuple[dict, int]:
    """The reviewer's triplets at whole seconds as a CholecT50 label file; also how many reviewed frames lie
    between seconds (the 1 fps format cannot hold them)."""
    onto = load_ontology()
    annotations: dict[str, list[list[float]]] = {}
    between = 0
    for frame in review.item_frames("triplet"):
        second = round(frame / case.fps)
        if round(second * case.fps) != frame:
            between += 1
            continue
        phase = review.phase_at(frame)
        phase_id = onto.phase.require(phase).id if phase else -1
        rows = []
        for item in review.kept_items(frame, "triplet") or ():
            tid = onto.triplet_id(*item.label.split(","))
            i, v, t = (label.id for label in onto.triplet(tid))
            score = 1.0 if item.target_box is not None else -1.0
            rows.append(
                [tid, i, 1.0, *_t50_box_out(item.box, case), v, t, score, *_t50_box_out(item.target_box, case),
                 phase_id]
            )  # fmt: skip
        annotations[str(second)] = rows or [[-1, -1, -1.0, *[-1.0] * 4, -1, -1, -1.0, *[-1.0] * 4, phase_id]]
    if not annotations:
        raise LabelFormatError("triplet labels", "no reviewed triplets at whole seconds of the video")
    categories = {
        "instrument": {str(lb.id): lb.name for lb in onto.instrument},
        "verb": {str(lb.id): lb.name for lb in onto.verb},
        "target": {str(lb.id): lb.name for lb in onto.target},
        "triplet": {str(t.id): onto.triplet_name(t.id) for t in onto.triplets},
        "phase": {str(lb.id): lb.name for lb in onto.phase},
    }
    data = {
        "video": vid,
        "fps": 1,
        "num_frames": len(annotations),
        "categories": categories,
        "annotations": annotations,
        "info": {"description": "surgview reviewer labels (CholecT50 format)", "source_fps": case.fps},
    }
    return data, between


def export_cholect50(review: ReviewSet, case: CaseFacts, out: Path, vid: int) -> tuple[list[Path], int]:
    """``out/labels/VIDnn.json`` and ``out/videos/VIDnn.ext``; also the count of frames left out."""
    out = Path(out)
    data, between = cholect50_json(review, case, vid)
    target = out / "labels" / f"VID{vid:02d}.json"
    _write(target, json.dumps(data) + "\n")
    return [target, _link_video(case.video, out / "videos", f"VID{vid:02d}")], between


# ------------------------------------------------------------------------------------- helpers
def _now() -> float:
    return time.time()


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_output(str(path), text)
    except OutputError as exc:
        raise LabelFormatError(path, str(exc)) from None


def _link_video(video: Path, folder: Path, name: str) -> Path:
    """``folder/NAME.ext`` pointing at the video (replaced when it points elsewhere); a copy is never made."""
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / f"{name}{Path(video).suffix}"
    target = Path(video).resolve()
    if link.is_symlink() or link.exists():
        if link.resolve() == target:
            return link
        link.unlink()
    os.symlink(target, link)
    return link
