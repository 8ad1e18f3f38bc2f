"""Cholec80: ``videoNN-phase.txt`` (every frame at 25 fps), ``videoNN-tool.txt`` (every 25th frame) and
the videos. Layout (the dataset's own)::

    <root>/videos/video01.mp4
    <root>/phase_annotations/video01-phase.txt
    <root>/tool_annotations/video01-tool.txt
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from engine.ontology import load_ontology
from engine.phase_labels import LabelFileError, read_cholec80_phases
from engine.tasks import Task
from train.data.errors import DatasetError
from train.data.media import case_order, find_video, video_info
from train.data.sample import FrameRef, Instrument, Sample, Truth
from train.data.splits import cholec80_split

CHOLEC80_FPS = 25
TOOL_COLUMNS = ("Grasper", "Bipolar", "Hook", "Scissors", "Clipper", "Irrigator", "SpecimenBag")
TOOL_HEADER = "\t".join(("Frame", *TOOL_COLUMNS))


def read_phases(path: str | Path) -> list[str]:
    """Canonical phase per frame of ``videoNN-phase.txt``; DatasetError (file, line) when malformed."""
    try:
        return read_cholec80_phases(Path(path))
    except LabelFileError as exc:
        raise DatasetError.wrap(exc, path) from exc


def read_tools(path: str | Path) -> dict[int, tuple[str, ...]]:
    """Frame → canonical tools present, from ``videoNN-tool.txt`` (``Frame<TAB>Grasper<TAB>…``)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(path, exc.strerror or str(exc)) from exc
    except UnicodeDecodeError:
        raise DatasetError(path, "not a text file") from None
    if not lines:
        raise DatasetError(path, "empty file (expected a 'Frame<TAB>Grasper<TAB>...' header)", 1)
    header = lines[0].rstrip("\r").split("\t")
    vocab = load_ontology().tool
    if header[0].strip() != "Frame" or len(header) != 1 + len(TOOL_COLUMNS):
        raise DatasetError(path, f"expected header {TOOL_HEADER!r}, got {lines[0][:80]!r}", 1)
    tools: list[str] = []
    for name in header[1:]:
        label = vocab.resolve(name)
        if label is None:
            raise DatasetError(path, f"unknown tool column {name!r}", 1)
        tools.append(label.name)
    out: dict[int, tuple[str, ...]] = {}
    last = -1
    for number, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != len(header):
            reason = f"expected {len(header)} tab-separated fields, got {len(parts)}: {line[:60]!r}"
            raise DatasetError(path, reason, number)
        if not parts[0].strip().isdigit():
            raise DatasetError(path, f"frame is not a non-negative integer: {parts[0][:20]!r}", number)
        frame = int(parts[0])
        if frame <= last:
            raise DatasetError(path, f"frame {frame} is not after the previous row's frame {last}", number)
        last = frame
        flags = [p.strip() for p in parts[1:]]
        bad = [f for f in flags if f not in ("0", "1")]
        if bad:
            raise DatasetError(path, f"tool presence must be 0 or 1, got {bad[0][:20]!r}", number)
        out[frame] = tuple(t for t, f in zip(tools, flags, strict=True) if f == "1")
    return out


def case_ids(root: Path) -> list[str]:
    """Cases with a phase file, in the order of their numbers (``video01`` … ``video99``, ``video100``)."""
    folder = Path(root) / "phase_annotations"
    if not folder.is_dir():
        raise DatasetError(folder, "no phase_annotations folder (expected the Cholec80 layout)")
    names = sorted((p.name[: -len("-phase.txt")] for p in folder.glob("*-phase.txt")), key=case_order)
    if not names:
        raise DatasetError(folder, "no videoNN-phase.txt files")
    return names


def cholec80_samples(
    root: str | Path,
    *,
    fps: float = 1.0,
    tasks: Iterable[Task] = (Task.PHASE, Task.TOOLS),
    cases: Iterable[str] | None = None,
    split_variant: str | None = "40/40",
    dataset: str = "cholec80",
    video_dir: str | Path | None = None,
) -> list[Sample]:
    """One sample per (labelled frame, task) at ``fps`` (1 fps = frames where ``frame % 25 == 0``).

    PHASE samples come from the phase file; TOOLS samples from tool rows on the same grid. Every sample's
    truth holds all this dataset knows of its frame (phase, and tools where the tool file has the row).
    A case whose video or label file is missing raises DatasetError (never skipped silently).
    """
    root = Path(root)
    tasks = {Task(t) for t in tasks}
    unknown = tasks - {Task.PHASE, Task.TOOLS}
    if unknown:
        raise ValueError(f"Cholec80 gives phase and tools tasks, not {sorted(unknown)}")
    if fps <= 0 or fps > CHOLEC80_FPS:
        raise ValueError(f"fps must be in (0, {CHOLEC80_FPS}]")
    step = max(1, round(CHOLEC80_FPS / fps))
    videos = [Path(video_dir)] if video_dir else [root / "videos"]
    out: list[Sample] = []
    for case in cases or case_ids(root):
        phase_path = root / "phase_annotations" / f"{case}-phase.txt"
        tool_path = root / "tool_annotations" / f"{case}-tool.txt"
        if not phase_path.exists():
            raise DatasetError(phase_path, "phase file missing")
        phases = read_phases(phase_path)
        tools: dict[int, tuple[str, ...]] = {}
        if Task.TOOLS in tasks or tool_path.exists():
            if not tool_path.exists():
                raise DatasetError(tool_path, "tool file missing")
            tools = read_tools(tool_path)
            beyond = [f for f in tools if f >= len(phases)]
            if beyond:
                raise DatasetError(tool_path, f"tool row for frame {beyond[0]} beyond the {len(phases)} phase rows")
        video = find_video(videos, [case])
        if video is None:
            raise DatasetError(videos[0], f"no video file for {case} (looked for {case}.mp4 and other extensions)")
        width, height, _ = video_info(video)
        split = cholec80_split(case, split_variant) if split_variant else None
        for frame in range(0, len(phases), step):
            present = tools.get(frame)
            truth = Truth(
                phase=phases[frame],
                tools=present,
                instruments=tuple(Instrument(t) for t in present) if present else (),
            )
            ref = FrameRef(video, frame, width, height)
            for task in (Task.PHASE, Task.TOOLS):
                if task not in tasks or (task is Task.TOOLS and present is None):
                    continue
                out.append(Sample(dataset, case, ref, task, truth, split=split, extra={"source_fps": CHOLEC80_FPS}))
    return out
