"""Write synthetic cases to disk: H.264 videos plus Cholec80, CholecT50 and Endoscapes labels.

Layout of the output folder (the real datasets' own layouts, so the same adapters read both)::

    cholec80/videos/video01.mp4
    cholec80/phase_annotations/video01-phase.txt
    cholec80/tool_annotations/video01-tool.txt
    CholecT50/labels/VID01.json
    endoscapes/all_metadata.csv
    synth/video01-truth.jsonl      (anatomy in view, pixel boxes: synthetic only)
    synth.json                     (generator settings and per-case summary)

Every file is written to a temporary name and renamed when complete, so an interrupted run
never leaves a truncated file under a final name.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import queue
import shutil
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import av
import cv2

from train.synth.labels import (
    TruthLog,
    cholec80_phase_txt,
    cholec80_tool_txt,
    cholect50_json,
    endoscapes_csv,
    endoscapes_rows,
    truth_jsonl,
)
from train.synth.render import CaseRenderer
from train.synth.script import MIN_PHASE_SECONDS, build_script

# Written into synth.json. 2 (2026-12-03): the pictures agree with the truth (duct and artery under fat until listed,
# Calot fat in view until C2, the cystic plate shown across C3's raters); the demo command remakes a case of another
# version, whose pictures the bundled model was not trained on.
GENERATOR_VERSION = 2
# Cholec80 names its 80 videos video01..video80; more synthetic training cases than 99 go on with three digits
# (video100), which every reader here finds by number (train.data.media.case_order).
MAX_VIDEO_ID = 999
MIN_MINUTES = round(sum(MIN_PHASE_SECONDS) * 1.2 / 60, 1)


class SynthError(Exception):
    """A synthetic case could not be written (bad settings or an unwritable destination)."""


@dataclass(frozen=True)
class SynthConfig:
    cases: int = 2
    minutes: float = 3.0
    seed: int = 0
    width: int = 640
    height: int = 360
    fps: int = 25
    gop: int = 50  # keyframe interval in frames
    crf: int = 23
    preset: str = "veryfast"
    first_id: int = 1

    def validate(self) -> None:
        if self.cases < 1:
            raise SynthError("--cases must be at least 1")
        if not (MIN_MINUTES <= self.minutes <= 240):
            raise SynthError(f"--minutes must be between {MIN_MINUTES} and 240 (seven phases need time)")
        if self.width < 160 or self.height < 90 or self.width % 2 or self.height % 2:
            raise SynthError("--width/--height must be even and at least 160x90")
        if not (5 <= self.fps <= 60):
            raise SynthError("--fps must be between 5 and 60")
        if self.gop < 1:
            raise SynthError("--gop must be at least 1")
        if not (self.first_id > 0 and self.first_id + self.cases - 1 <= MAX_VIDEO_ID):
            raise SynthError(f"video ids must lie between 1 and {MAX_VIDEO_ID} (video01..video{MAX_VIDEO_ID})")

    @property
    def frames_per_case(self) -> int:
        return round(self.minutes * 60 * self.fps)


Progress = Callable[[int], None]


def cpu_workers() -> int:
    """Cases (or videos) worth handling side by side here: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def encode_case(
    path: Path,
    renderer: CaseRenderer,
    n_frames: int,
    config: SynthConfig,
    log: TruthLog,
    progress: Progress | None = None,
) -> None:
    """Render and encode every frame of one case (libx264, yuv420p, fixed GOP)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    try:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=config.fps)
            stream.width, stream.height = config.width, config.height
            stream.pix_fmt = "yuv420p"
            # one encoder thread, on any machine: x264's bytes depend on its thread count, whose default follows the
            # CPUs, so a default-threaded case differs between machines (a 1-CPU and a 2-CPU process write other bytes);
            # cases are written one process per CPU, so a single-threaded encoder loses nothing in a training run
            stream.codec_context.thread_count = 1
            stream.options = {
                "crf": str(config.crf),
                "preset": config.preset,
                "g": str(config.gop),
                "keyint_min": str(config.gop),
                "sc_threshold": "0",
            }
            for index in range(n_frames):
                rgb, truth = renderer.render(index)
                log.add(truth)
                yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420)
                frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
                frame.pts = index
                container.mux(stream.encode(frame))
                if progress is not None:
                    progress(1)
            container.mux(stream.encode(None))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_case(out: Path, config: SynthConfig, k: int, progress: Progress | None = None) -> tuple[dict, list]:
    """Render, encode and label case ``k`` of ``config``: its summary entry and its Endoscapes rows. A case depends
    only on its id, the seed and the settings, so cases can be written in any order or in other processes."""
    vid = config.first_id + k
    name = f"video{vid:02d}"
    n = config.frames_per_case
    script = build_script(vid, n, config.fps, config.seed)
    renderer = CaseRenderer(script, config.width, config.height)
    log = TruthLog(vid, config.fps, config.width, config.height)
    video, phases, tools, triplets, truth = (out / rel for rel in _case_files(name, vid))
    encode_case(video, renderer, n, config, log, progress)
    _atomic_text(phases, cholec80_phase_txt(log.phases))
    _atomic_text(tools, cholec80_tool_txt(log))
    _atomic_text(triplets, json.dumps(cholect50_json(log)))
    _atomic_text(truth, truth_jsonl(log))
    case = {
        "video": name,
        "id": vid,
        "frames": n,
        "fps": config.fps,
        "width": config.width,
        "height": config.height,
        "phases": [[p, s, e] for p, s, e in script.phase_bounds],
        "cvs_first_met": _first_all_met(log),
        "c3_missed_before_clipping": script.c3_missed,
    }
    return case, endoscapes_rows(log)


def _case_files(name: str, vid: int) -> tuple[str, ...]:
    """Every file of one case, relative to its folder: video, phase and tool files, CholecT50 labels, truth log (what
    :func:`_write_case` writes and :class:`_Reusable` copies)."""
    return (
        f"cholec80/videos/{name}.mp4",
        f"cholec80/phase_annotations/{name}-phase.txt",
        f"cholec80/tool_annotations/{name}-tool.txt",
        f"CholecT50/labels/VID{vid:02d}.json",
        f"synth/{name}-truth.jsonl",
    )


class _Reusable:
    """Cases of an earlier folder that ``config`` would write again byte for byte: a case depends only on its id, the
    seed and the settings, so a folder made with the same settings and fewer (or other) cases gives those it holds
    instead of rendering them again (a run taken from 80 cases to 160 renders 80)."""

    def __init__(self, folder: Path | None, config: SynthConfig):
        self.folder = folder
        self.cases: dict[int, dict] = {}
        self.rows: dict[int, list[dict]] = {}
        summary = read_summary(folder) if folder is not None else {}
        settings = lambda c: {k: v for k, v in c.items() if k not in ("cases", "first_id")}  # noqa: E731
        old = summary.get("config")
        if summary.get("version") != GENERATOR_VERSION or not isinstance(old, dict):
            return
        if settings(old) != settings(asdict(config)):
            return
        try:
            with open(folder / "endoscapes" / "all_metadata.csv", encoding="utf-8", newline="") as fh:
                for row in csv.DictReader(fh):
                    self.rows.setdefault(int(row["vid"]), []).append(row)
        except (OSError, ValueError, KeyError):
            return
        for case in summary.get("cases") or []:
            vid = case.get("id") if isinstance(case, dict) else None
            if isinstance(vid, int) and all((folder / f).is_file() for f in _case_files(case["video"], vid)):
                self.cases[vid] = case

    def take(self, out: Path, vid: int) -> tuple[dict, list] | None:
        """Copy case ``vid`` into ``out`` and return what writing it returns; None when it must be rendered."""
        case = self.cases.get(vid)
        if case is None or self.folder is None:
            return None
        for rel in _case_files(case["video"], vid):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.folder / rel, out / rel)
        return case, self.rows.get(vid, [])


def _written_cases(
    out: Path, config: SynthConfig, workers: int, progress: Progress | None, reuse: Path | None = None
) -> list[tuple[dict, list]]:
    """Every case of ``config``, in id order, written by ``workers`` processes side by side (one or more); cases
    ``reuse`` (an earlier folder) holds with the same settings are copied from it, not rendered.

    Cases are always rendered in fresh processes, never in the caller's: CI saw a case written inside a long-lived
    process (the test session, after many other tests) come out as other video bytes than the same case written in
    a fresh one, so a case's bytes must not depend on what its caller did before. Each case's frames are reported
    to ``progress`` as they are encoded."""
    reusable = _Reusable(reuse, config)
    kept = {k: taken for k in range(config.cases) if (taken := reusable.take(out, config.first_id + k)) is not None}
    if kept and progress is not None:
        progress(len(kept) * config.frames_per_case)
    todo = [k for k in range(config.cases) if k not in kept]
    if not todo:
        return [kept[k] for k in range(config.cases)]
    workers = max(1, min(workers, len(todo)))
    # spawn, not fork: the caller may hold threads (a training run's torch), which a forked child inherits locked
    context = multiprocessing.get_context("spawn")
    frames = context.Queue()
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_case_worker, initargs=(frames, workers > 1)
    ) as pool:
        futures = {k: pool.submit(_write_case_reporting, out, config, k) for k in todo}
        try:
            pending = set(futures.values())
            while pending:
                _, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                _drain(frames, progress)
            rendered = {k: future.result() for k, future in futures.items()}
        except BaseException:
            for future in futures.values():
                future.cancel()
            raise
    _drain(frames, progress)
    return [kept[k] if k in kept else rendered[k] for k in range(config.cases)]


_frames_written: Any = None  # in a case worker: the queue its encoded frames are counted on


def _case_worker(frames: Any, side_by_side: bool) -> None:
    """A case worker counts its frames on the caller's queue. Side by side with others it renders on one thread: one
    process per CPU, each with OpenCV's pool of one thread per CPU, spins far more threads than there are CPUs; a
    lone worker keeps OpenCV's pool (one thread made it 40% slower on two CPUs)."""
    global _frames_written
    if side_by_side:
        cv2.setNumThreads(1)
    _frames_written = frames


def _write_case_reporting(out: Path, config: SynthConfig, k: int) -> tuple[dict, list]:
    """:func:`_write_case` in a case worker, its frames counted 25 at a time (and the rest at the end)."""
    count = 0

    def tick(n: int) -> None:
        nonlocal count
        count += n
        if count >= 25:
            _frames_written.put(count)
            count = 0

    try:
        return _write_case(out, config, k, tick)
    finally:
        if count:
            _frames_written.put(count)


def _drain(frames: Any, progress: Progress | None) -> None:
    """Pass the frames the workers have counted so far on to ``progress``."""
    while True:
        try:
            n = frames.get_nowait()
        except queue.Empty:
            return
        if progress is not None:
            progress(n)


def generate(
    out: Path, config: SynthConfig, progress: Progress | None = None, *, workers: int = 1, reuse: Path | None = None
) -> dict:
    """Write ``config.cases`` cases under ``out``; return the summary also saved as synth.json. ``workers``
    processes write cases side by side (the summary and every label file are the same for any number). ``reuse``:
    an earlier case folder whose cases of the same settings are copied rather than rendered again (the folder
    written is the same, byte for byte)."""
    config.validate()
    out = Path(out)
    summary = {"generator": "surgview synth", "version": GENERATOR_VERSION, "config": asdict(config), "cases": []}
    endoscapes: list[dict] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for case, rows in _written_cases(out, config, workers, progress, reuse):
            summary["cases"].append(case)
            endoscapes += rows
        _atomic_text(out / "endoscapes" / "all_metadata.csv", endoscapes_csv(endoscapes))
        _atomic_text(out / "synth.json", json.dumps(summary, indent=2))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SynthError(f"cannot write to {exc.filename or out}: {reason}") from exc
    except av.error.FFmpegError as exc:
        raise SynthError(f"video encoder failed: {exc}") from exc
    return summary


def read_summary(out: Path) -> dict:
    """A case folder's synth.json (this generator's or the RARP one's); empty when missing or unreadable."""
    try:
        summary = json.loads((Path(out) / "synth.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def made_by_this_generator(out: Path) -> bool:
    """Whether ``out`` holds cases this generator wrote: its synth.json names ``GENERATOR_VERSION``. Cases of another
    version (or an unreadable summary) show pictures that may disagree with the truth as it is written now."""
    return read_summary(out).get("version") == GENERATOR_VERSION


def train_test_cases(
    out: Path,
    train_cases: int,
    test_cases: int,
    minutes: float,
    seed: int,
    *,
    width: int = 640,
    height: int = 360,
    remake: bool = True,
    workers: int = 1,
) -> tuple[Path, Path]:
    """Training cases (videos 1..) in ``out/cases-train`` and held-out ones (videos 50.., another
    seed) in ``out/cases-test``. A folder already written with these settings by this generator is kept, so a rerun
    resumes; one written with other settings or by an older renderer is made again, so a run never trains or
    evaluates on pictures that disagree with its truth or its recipe. ``remake=False`` (a run with stages already
    built on the folder's cases, an evaluation of another run's cases) raises SynthError instead: remaking them
    would leave those stages on the old pictures, or delete another run's cases. ``workers``: cases written side by
    side (see :func:`generate`)."""
    out = Path(out)
    train_root, test_root = out / "cases-train", out / "cases-test"
    for root, cases, case_seed, first_id in (
        (train_root, train_cases, seed, 1),
        (test_root, test_cases, seed + 1000, 50),
    ):
        config = SynthConfig(
            cases=cases, minutes=minutes, seed=case_seed, first_id=first_id, width=width, height=height
        )
        if _written_with(root, config):
            continue
        if not remake and root.exists():
            raise SynthError(remake_refused(root, config, GENERATOR_VERSION))
        _generate_in_place_of(root, config, workers)
    return train_root, test_root


def _written_with(out: Path, config: SynthConfig) -> bool:
    """Whether ``out`` holds this generator's cases made with exactly ``config``."""
    summary = read_summary(out)
    return summary.get("version") == GENERATOR_VERSION and summary.get("config") == asdict(config)


def remake_refused(folder: Path, config: Any, version: int) -> str:
    """Why cases made otherwise than ``config`` (a cholecystectomy or RARP config) are not made again."""
    return (
        f"{folder} holds cases made by another generator version or with other settings than the recipe's "
        f"({config.cases} cases of {config.minutes:g} min, seed {config.seed}, {config.width}x{config.height}, "
        f"generator version {version}); what was built on them would no longer match: use a new run folder"
    )


def remove_path(path: Path) -> None:
    """Remove a folder of ours, or whatever file or link stands in its place (never a link's target)."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _generate_in_place_of(root: Path, config: SynthConfig, workers: int = 1) -> None:
    """Write the cases beside ``root`` and swap them in only when complete: an interrupted run leaves the old
    folder (or none), never a mix of old and new cases under one summary."""
    fresh = root.with_name(root.name + ".partial")
    stale = root.with_name(root.name + ".stale")
    for leftover in (fresh, stale):
        remove_path(leftover)
    generate(fresh, config, workers=workers, reuse=root if root.is_dir() else None)
    if root.exists() or root.is_symlink():
        root.rename(stale)
    fresh.rename(root)
    remove_path(stale)


def _first_all_met(log: TruthLog) -> int | None:
    for t in log.sampled:
        if all(v >= 0.5 for v in t.cvs):
            return t.index
    return None
