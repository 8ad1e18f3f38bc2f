"""Reviewed cases as training data: the reviewer's labels are the truth, the accepted chains are verified text.

A source is a case store (``*.sqlite``), a case video (its store under the data folder), or a folder that
``surgview labels export`` wrote (Cholec80, CholecT50 or Endoscapes layout, read by those adapters). From a
store, every frame the reviewer labelled gives samples (at most ``fps`` per second for labels spanning
ranges) whose :class:`~train.data.sample.Truth` is the reviewer's — phase, CVS (a stored rater mean, else
met = 1.0 / not met = 0.0; a frame with a criterion "not assessable" gives no CVS sample), instruments with
their boxes, triplets — and each chain the reviewer accepted, still the stored text they judged, is a
human-verified chain for self-iteration (:mod:`train.iterate`). Exported folders hold no chains.

What went in is counted per case (:class:`ReviewedCase`) for the model's lineage: the case is named by its
content fingerprint (as reports name it), never by a file name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.chain import CvsState
from engine.ontology import load_ontology
from engine.profiles import ProfileError, get_profile, profile_for_version
from engine.review_labels import ChainVerdict, ItemLabel, ReviewLabels, ReviewSet
from engine.store import CaseStore, StoreError, case_store_path
from engine.tasks import Task
from engine.video import VIDEO_SUFFIXES
from train.data.errors import DatasetError
from train.data.media import video_info
from train.data.sample import FrameRef, Instrument, Sample, TripletLabel, Truth

__all__ = ["DATASET", "AcceptedChain", "ReviewedCase", "ReviewedData", "reviewed_data"]

DATASET = "reviewed"
TASKS = (Task.PHASE, Task.TOOLS, Task.TRIPLET, Task.CVS, Task.FRAME)


@dataclass(frozen=True)
class AcceptedChain:
    """A stored answer the reviewer accepted: the frame (``sample``, task FRAME, for the frame cache), the
    question as the profile asked it and the model's text."""

    sample: Sample
    task: str
    profile: str
    text: str

    def prompt(self, width: int, height: int) -> tuple[str, str]:
        """(system, user text) as the profile asks this question of a ``width`` x ``height`` frame."""
        profile = get_profile(self.profile, self.task if self.profile == "surgview" else None)
        return profile.system, profile.prompt(self.task, width, height)


@dataclass(frozen=True)
class ReviewedCase:
    case: str  # content fingerprint (16 hex) of a store's video, or the export's case id
    source: str  # "store" or "export"
    frames_reviewed: int
    samples: int
    accepted_chains: int

    def to_json(self) -> dict:
        return {
            "case": self.case,
            "source": self.source,
            "frames_reviewed": self.frames_reviewed,
            "samples": self.samples,
            "accepted_chains": self.accepted_chains,
        }


@dataclass
class ReviewedData:
    samples: list[Sample] = field(default_factory=list)
    chains: list[AcceptedChain] = field(default_factory=list)
    cases: list[ReviewedCase] = field(default_factory=list)


def reviewed_data(
    sources: Iterable[str | Path], tasks: Iterable[Task] = TASKS, *, fps: float = 1.0, split: str = "train"
) -> ReviewedData:
    """Samples (truth: the reviewer's), accepted chains and per-case counts from every source."""
    tasks = tuple(Task(t) for t in tasks)
    out = ReviewedData()
    for source in sources:
        path = Path(source)
        if path.is_dir():
            samples, case = _exported(path, tasks, split)
            out.samples += samples
            out.cases.append(case)
            continue
        store_path = path if path.suffix == ".sqlite" else _store_of(path)
        samples, chains, case = _from_store(store_path, tasks, fps, split)
        out.samples += samples
        out.chains += chains
        out.cases.append(case)
    return out


def _store_of(video: Path) -> Path:
    if video.suffix.lower() not in VIDEO_SUFFIXES or not video.is_file():
        raise DatasetError(video, "a reviewed case is a case store (.sqlite), a case video or an exported folder")
    try:
        store = case_store_path(video)
    except StoreError as exc:
        raise DatasetError(video, str(exc)) from None
    if not store.is_file():
        raise DatasetError(video, "no case store for this video (nothing reviewed)")
    return store


# ------------------------------------------------------------------------------------- case stores
def _from_store(
    path: Path, tasks: Sequence[Task], fps: float, split: str
) -> tuple[list[Sample], list[AcceptedChain], ReviewedCase]:
    try:
        with CaseStore.open(path, readonly=True) as store:
            info = store.case_info()
            review = ReviewLabels(store).snapshot()
            accepted = [c for c in review.chains if c.verdict == "accepted"]
            results = {c.id: store.get_result(c.frame, c.model.model_id, c.model.prompt_version, c.model.task)
                       for c in accepted}  # fmt: skip
    except StoreError as exc:
        raise DatasetError(path, str(exc)) from None
    if info is None or not info.video_path:
        raise DatasetError(path, "the store does not name its video")
    video = Path(info.video_path)
    if not video.is_file():
        raise DatasetError(path, f"its video {video} is missing")
    width, height, video_fps = video_info(video)
    case = info.fingerprint[:16]
    step = max(1, round((info.fps or video_fps) / fps))
    ref = {}

    def frame_ref(frame: int) -> FrameRef:
        return ref.setdefault(frame, FrameRef(video, frame, width, height))

    samples = []
    for frame in _frames(review, step):
        truth = _truth(review, frame)
        for task in tasks:
            if _grounded(task, truth):
                extra = {"fingerprint": info.fingerprint, "reviewed": True}
                samples.append(Sample(DATASET, case, frame_ref(frame), task, truth, split=split, extra=extra))
    chains = [
        _accepted(verdict, text, frame_ref(verdict.frame), case, split)
        for verdict in accepted
        if (result := results[verdict.id]) is not None and verdict.matches(result) and (text := result.raw_text)
    ]
    chains = [c for c in chains if c is not None]
    labelled = {s.frame.index for s in samples} | {c.sample.frame.index for c in chains}
    return samples, chains, ReviewedCase(case, "store", len(labelled), len(samples), len(chains))  # type: ignore[arg-type]


def _frames(review: ReviewSet, step: int) -> list[int]:
    """Frames to sample: ranges on the ``step`` grid (a range shorter than a step by its first frame), and
    every frame with item labels."""
    frames: set[int] = set()
    for row in (*review.segments, *(r for rs in review.cvs for r in rs)):
        first = -(-row.start // step) * step
        grid = range(first, row.end, step)
        frames.update(grid if len(grid) else (row.start,))
    frames.update(i.frame for i in review.items)
    return sorted(frames)


def _truth(review: ReviewSet, frame: int) -> Truth:
    onto = load_ontology()
    seen = review.truth_at(frame)
    cvs = None
    ranges = [review.cvs_range_at(c, frame) for c in (1, 2, 3)]
    if all(r is not None and r.state is not CvsState.NOT_ASSESSABLE for r in ranges):
        cvs = tuple(r.value if r.value is not None else float(r.state is CvsState.MET) for r in ranges)  # type: ignore[union-attr]
    triplets = None if seen.triplets is None else tuple(_triplet(i) for i in seen.triplets)
    instruments: tuple[Instrument, ...] = ()
    tools = None
    if seen.instruments is not None:
        instruments = tuple(Instrument(i.label, i.box) for i in seen.instruments)
        tools = tuple(dict.fromkeys(i.tool for i in instruments))
    elif triplets is not None:  # tools and boxes from the triplets' instruments, as the CholecT50 adapter does
        instruments = tuple(
            dict.fromkeys(
                Instrument(onto.tool_for_instrument(onto.instrument.require(t.instrument)).name, t.instrument_box)
                for t in triplets
            )
        )
        tools = tuple(dict.fromkeys(i.tool for i in instruments))
    return Truth(phase=seen.phase, tools=tools, instruments=instruments, triplets=triplets, cvs=cvs)  # type: ignore[arg-type]


def _triplet(item: ItemLabel) -> TripletLabel:
    instrument, verb, target = item.label.split(",")
    tid = load_ontology().triplet_id(instrument, verb, target)
    return TripletLabel(instrument, verb, target, tid, item.box, item.target_box)


def _grounded(task: Task, truth: Truth) -> bool:
    """The truth answers the task (a whole-frame sample needs the phase; the rest say what they know)."""
    return {
        Task.PHASE: truth.phase is not None,
        Task.TOOLS: truth.tools is not None,
        Task.TRIPLET: truth.triplets is not None,
        Task.CVS: truth.cvs is not None,
        Task.FRAME: truth.phase is not None,
    }.get(task, False)


def _accepted(verdict: ChainVerdict, text: str, ref: FrameRef, case: str, split: str) -> AcceptedChain | None:
    name = profile_for_version(verdict.model.prompt_version)
    try:
        get_profile(name, verdict.model.task if name == "surgview" else None).question(verdict.model.task)
    except (ProfileError, ValueError):
        return None  # a question this surgview cannot ask again: its prompt is unknown
    sample = Sample(DATASET, case, ref, Task.FRAME, Truth(), split=split, extra={"human_verified": True})
    return AcceptedChain(sample, verdict.model.task, name, text)


# ------------------------------------------------------------------------------------- exported folders
def _exported(folder: Path, tasks: Sequence[Task], split: str) -> tuple[list[Sample], ReviewedCase]:
    """A folder written by ``surgview labels export`` (any of its three layouts), read by the adapters."""
    from train.data.cholec80 import cholec80_samples
    from train.data.cholect50 import cholect50_samples
    from train.data.endoscapes import endoscapes_samples

    samples: list[Sample] = []
    if (folder / "phase_annotations").is_dir():
        wanted = [t for t in tasks if t is Task.PHASE]
        samples += cholec80_samples(folder, tasks=wanted, split_variant=None) if wanted else []
    if (folder / "labels").is_dir():
        wanted = [t for t in tasks if t in (Task.TRIPLET, Task.TOOLS, Task.PHASE)]
        samples += cholect50_samples(folder, tasks=wanted, splits=False) if wanted else []
    if (folder / "all_metadata.csv").is_file() and Task.CVS in tasks:
        samples += endoscapes_samples(folder, video_dir=folder / "videos", splits=False)
    if not any((folder / name).exists() for name in ("phase_annotations", "labels", "all_metadata.csv")):
        raise DatasetError(folder, "not a labels export (no phase_annotations/, labels/ or all_metadata.csv)")
    samples = [Sample(DATASET, s.case, s.frame, s.task, s.truth, split=split, extra=s.extra) for s in samples]
    cases = sorted({s.case for s in samples})
    frames = len({(s.frame.path, s.frame.index) for s in samples})
    return samples, ReviewedCase(",".join(cases) or folder.name, "export", frames, len(samples), 0)
