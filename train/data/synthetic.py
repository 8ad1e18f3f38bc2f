"""Synthetic cases (``train.synth``): the same Cholec80, CholecT50 and Endoscapes adapters pointed at the
generator's folder, plus the whole-frame view joined with ``synth/videoNN-truth.jsonl`` (anatomy in view,
pixel boxes of every instrument) by frame index."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from engine.ontology import load_ontology
from engine.tasks import Task
from train.data.cholec80 import cholec80_samples
from train.data.cholect50 import cholect50_samples
from train.data.endoscapes import endoscapes_samples
from train.data.errors import DatasetError
from train.data.join import frame_view, merge_truths
from train.data.sample import Instrument, Sample, Truth

DATASET = "synthetic"


def _box(values) -> tuple[float, float, float, float] | None:
    return tuple(float(v) for v in values) if values else None


def read_truth_jsonl(path: str | Path) -> dict[int, Truth]:
    """Frame index → the truth the generator logged (anatomy, tools, instruments with pixel boxes, CVS)."""
    path = Path(path)
    onto = load_ontology()
    out: dict[int, Truth] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(path, exc.strerror or str(exc)) from exc
    for line, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
            frame = row["frame"]
            anatomy = tuple(onto.anatomy.require(a).name for a in row.get("anatomy", []))
            tools = tuple(onto.tool.require(t).name for t in row.get("tools", []))
            instruments = tuple(
                Instrument(onto.tool.require(i["tool"]).name, _box(i.get("box"))) for i in row.get("instances", [])
            )
            cvs = tuple(float(c) for c in row["cvs"]) if row.get("cvs") is not None else None
        except json.JSONDecodeError as exc:
            raise DatasetError(path, f"invalid JSON: {exc.msg}", line) from None
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(path, f"malformed record: {exc!r}", line) from None
        if not isinstance(frame, int) or frame < 0:
            raise DatasetError(path, f"frame is not a non-negative integer: {frame!r}", line)
        boxed = {i.tool for i in instruments}
        instruments += tuple(Instrument(t) for t in tools if t not in boxed)  # e.g. the bag: no instance
        out[frame] = Truth(tools=tools, instruments=instruments, anatomy=anatomy, cvs=cvs)
    return out


def synthetic_samples(
    root: str | Path,
    *,
    tasks: Iterable[Task] = (Task.PHASE, Task.TOOLS, Task.TRIPLET, Task.CVS, Task.FRAME),
) -> list[Sample]:
    """All samples of a generated folder: Cholec80 PHASE/TOOLS, CholecT50 TRIPLET, Endoscapes CVS, and one
    FRAME sample per second whose truth joins all of them (no official split: ``split`` is None)."""
    root = Path(root)
    tasks = {Task(t) for t in tasks}
    videos = root / "cholec80" / "videos"
    c80 = cholec80_samples(root / "cholec80", dataset=DATASET, split_variant=None)
    t50 = cholect50_samples(root / "CholecT50", dataset=DATASET, video_dir=videos, splits=False, tasks=(Task.TRIPLET,))
    endo = endoscapes_samples(root / "endoscapes", video_dir=videos, splits=False, dataset=DATASET)
    out = [s for s in (*c80, *t50, *endo) if s.task in tasks]
    if Task.FRAME in tasks:
        logged: dict[tuple[str, int], Truth] = {}
        for path in sorted((root / "synth").glob("*-truth.jsonl")):
            case = path.name[: -len("-truth.jsonl")]
            for frame, truth in read_truth_jsonl(path).items():
                logged[(case, frame)] = truth
        for sample in frame_view([*c80, *t50, *endo], dataset=DATASET):
            extra_truth = logged.get((sample.case, sample.frame.index))
            if extra_truth is not None:
                # the generator's log is exact and complete: its boxes and anatomy come first
                truth, conflicts = merge_truths([extra_truth, sample.truth])
                truth = replace(truth, phase=sample.truth.phase, triplets=sample.truth.triplets)
                sample = replace(sample, truth=truth, extra={**sample.extra, "truth_log": True})
                if conflicts:
                    sample.extra["conflicts"] = sorted(set(sample.extra.get("conflicts", [])) | set(conflicts))
            out.append(sample)
    return out
