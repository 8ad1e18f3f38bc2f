"""The one record every dataset adapter produces and every later stage (CoT builder, SFT, GRPO,
evaluation) consumes: where the frame is, which task it poses, and the ground truth.

``Task`` and ``TASK_LEVEL`` live in :mod:`engine.tasks` (one vocabulary for engine, viewer and training)
and are re-exported here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.tasks import TASK_LEVEL, Task

__all__ = ["TASK_LEVEL", "Box", "FrameRef", "Instrument", "Sample", "Task", "TripletLabel", "Truth"]


Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels of the frame


@dataclass(frozen=True)
class FrameRef:
    """Where a frame comes from: an image file, or frame ``index`` of a video (extracted on demand)."""

    path: Path
    index: int | None = None  # None: ``path`` is an image; else a frame number of the video at ``path``
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Instrument:
    tool: str  # canonical tool name of the sample's procedure (Cholec80's Grasper, ..., SpecimenBag by default)
    box: Box | None = None


@dataclass(frozen=True)
class TripletLabel:
    instrument: str  # canonical CholecT50 names
    verb: str
    target: str
    triplet_id: int | None = None
    instrument_box: Box | None = None
    target_box: Box | None = None


@dataclass(frozen=True)
class Truth:
    """What the labels say about one frame; None/empty means the dataset does not say."""

    phase: str | None = None  # canonical Cholec80 phase name
    tools: tuple[str, ...] | None = None  # canonical tool names present (None: not annotated)
    instruments: tuple[Instrument, ...] = ()  # with boxes where annotated
    anatomy: tuple[str, ...] = ()  # canonical anatomy names in view (synthetic cases; Endoscapes classes)
    triplets: tuple[TripletLabel, ...] | None = None
    cvs: tuple[float, float, float] | None = None  # rater means of C1..C3 (Endoscapes), 0..1
    action: str | None = None  # canonical action of the procedure (SAR-RARP50 suturing actions)
    step: str | None = None  # canonical step of the procedure (MultiBypass140 steps)


@dataclass(frozen=True)
class Sample:
    dataset: str  # cholec80 | cholect50 | endoscapes | m2cai16 | surgr1 | synthetic | sar_rarp50 | ...
    case: str  # video / case id as the dataset names it, e.g. "video01", "VID01"
    frame: FrameRef
    task: Task
    truth: Truth
    question: str | None = None  # the task's question when the dataset gives one (Surg-R1 JSONL)
    answer: str | None = None  # the reference answer text when the dataset gives one
    split: str | None = None  # train | val | test, from the dataset's official split
    extra: dict = field(default_factory=dict, compare=False, hash=False)
    procedure: str = "cholecystectomy"  # engine.procedures: whose vocabularies the truth's names are in

    @property
    def level(self) -> int:
        return TASK_LEVEL[self.task]
