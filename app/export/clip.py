"""Annotated clips: a range of the case as H.264 MP4 with the overlays and the streaming reasoning
burned in, with the source's timing.

Frames keep their source presentation timestamps (and durations): a variable-frame-rate recording
plays as it was recorded, not re-timed at its average rate; hold and reveal times, and the panel's
timecodes, go by those timestamps too. Pixels are the upright ones ``VideoReader`` gives (a
rotated phone recording is turned), and the clip carries no rotation of its own.

Each output frame is the decoded source frame (burned-in text areas blanked when asked) with the
overlays of the latest analysed frame painted over it, beside a panel where that frame's chain
is revealed progressively over the following frames, as it streamed in the viewer. Between two
analysed frames the latest one's overlays, boxes included, are held (so they never blink), marked
as held with their age as the viewer marks them while playing; boxes are held at most
``box_hold_strides`` analysis strides after their frame, the phase, CVS and triplet captions until
the next analysed frame (at most ``TimelineConfig.max_gap_s``).

De-identification: the MP4 is written fresh by PyAV; no stream or container metadata of the
source is read or copied (no creation time, device, location), the file carries no path, and it
holds picture only: a sound track of the source (voices and names spoken in the room) is never
copied.
The file is written under a temporary name beside the target and renamed when complete, so a
cancelled or failed export leaves nothing at the output path.
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage, QPainter

from app import palette
from app.export.files import atomic_path
from app.export.pictures import blank_areas, ensure_gui_app
from app.state import LayerState
from app.widgets.overlay_painter import paint_overlays
from engine.chain import Chain
from engine.frame_record import merge_results
from engine.profiles import ModelProfile, ProfileError, Question, get_profile, profile_for_version
from engine.report_data import LEVEL_NAMES, ReportError, choose_analysis, visible_text
from engine.store import BlankArea, CaseStore, FrameResult, StoreError, case_store_path
from engine.timecode import format_time
from engine.timeline import TimelineConfig
from engine.video import FrameTimes, VideoError, VideoReader

__all__ = ["ClipCancelled", "ClipOptions", "ClipStats", "clip_for_video", "export_clip"]

Progress = Callable[[int, int], None]


class ClipCancelled(Exception):
    """The export was cancelled; nothing was left at the output path."""


@dataclass(frozen=True)
class ClipOptions:
    start: int  # first frame
    stop: int  # last frame (inclusive)
    panel: bool = True  # the reasoning panel beside the picture
    panel_width: int | None = None  # default: 0.6 × the video's height
    reveal_s: float = 2.0  # a chain is revealed over this long (or until the next analysed frame)
    box_hold_strides: float = 1.5  # boxes are held until the next analysed frame, at most this many strides
    blank: bool = True  # paint the case's blank areas black
    crf: int = 20
    preset: str = "veryfast"
    threads: int = 0  # encoder threads (0: as many as the machine has)

    def __post_init__(self) -> None:
        if self.start < 0 or self.stop < self.start:
            raise ValueError(f"a clip needs 0 <= from <= to, got {self.start}..{self.stop}")


@dataclass
class ClipStats:
    frames: int = 0
    seconds: float = 0.0  # wall time of the export
    fps: float = 0.0
    width: int = 0
    height: int = 0
    stages: dict[str, float] = field(default_factory=dict)  # decode, compose, encode seconds


@dataclass(frozen=True)
class _Analysed:
    frame: int
    chain: Chain  # the merged record's: every question's fields, boxes in video pixels
    status: str
    paragraphs: tuple[tuple[str, str], ...]  # (heading, text made visible)

    @classmethod
    def of(cls, profile: ModelProfile, answers: dict[str, FrameResult], width: int, height: int) -> _Analysed:
        """One analysed frame from its answers (by task): several questions' chains follow each other,
        each heading naming its question."""
        record = merge_results(profile, answers, width, height)
        titles = {q.task: q.title for q in profile.questions} if len(profile.questions) > 1 else {}
        paragraphs: list[tuple[str, str]] = []
        for task, result in record.results.items():
            paragraphs += _paragraphs(result, f"{titles[task]} · " if task in titles else "")
        return cls(record.frame, record.to_chain(), record.status, tuple(paragraphs))

    @property
    def total_chars(self) -> int:
        return sum(len(text) for _, text in self.paragraphs)


def _paragraphs(result: FrameResult, prefix: str) -> list[tuple[str, str]]:
    chain = result.parsed()
    paragraphs = [
        (f"{prefix}Level {lv.number} · {LEVEL_NAMES.get(lv.number, '?')}", visible_text(" ".join(lv.text.split())))
        for lv in chain.levels
    ]
    if chain.answer is not None:
        paragraphs.append((f"{prefix}Answer", visible_text(" ".join(chain.answer.text.split()))))
    if not paragraphs:
        text = visible_text(" ".join(result.raw_text.split()))
        paragraphs.append((f"{prefix}Raw output (no level recognised)", text))
    return paragraphs


def profile_of(results: Sequence[FrameResult]) -> ModelProfile:
    """The profile that asked ``results`` (the store keeps its version): the stored task decides
    the surgview profile's one question; a task this surgview has no prompt for stays one question."""
    first = results[0]
    name = profile_for_version(first.prompt_version)
    try:
        profile = get_profile(name, first.task if name == "surgview" else None)
    except ProfileError:
        profile = None
    if profile is None or first.task not in profile.tasks:
        profile = ModelProfile(name, "", first.prompt_version, "", (Question(first.task, first.task, ""),))
    return profile


def _by_frame(results: Sequence[FrameResult], profile: ModelProfile) -> dict[int, dict[str, FrameResult]]:
    by_frame: dict[int, dict[str, FrameResult]] = {}
    for r in results:
        if r.task in profile.tasks:
            by_frame.setdefault(r.frame, {})[r.task] = r
    return by_frame


_EPS = 1e-6  # seconds: timestamps are exact ticks, the thresholds are floats


class _Panel:
    """The reasoning panel: header per frame, body cached per (analysed frame, characters shown)."""

    def __init__(self, width: int, height: int, fps: float, times: FrameTimes):
        self.width, self.height, self.fps, self.times = width, height, fps, times
        self.font = QFont()
        self.font.setPixelSize(max(11, min(20, height // 40)))
        self.bold = QFont(self.font)
        self.bold.setBold(True)
        self.fm = QFontMetrics(self.font)
        self.pad = max(8, width // 30)
        self.header_h = 3 * (self.fm.height() + 2) + self.pad
        self._key: tuple[int, int] | None = None
        self._body = np.zeros((0, 0, 3), np.uint8)

    def render(self, out: np.ndarray, index: int, current: _Analysed | None, shown: int) -> None:
        """Paint the panel for output frame ``index`` into ``out`` (H×P×3 RGB, C-contiguous)."""
        key = (current.frame if current else -1, shown)
        if key != self._key:
            self._body = self._render_body(current, shown)
            self._key = key
        out[self.header_h :] = self._body
        header = np.empty((self.header_h, self.width, 3), np.uint8)
        image = QImage(header.data, self.width, self.header_h, self.width * 3, QImage.Format.Format_RGB888)
        image.fill(QColor(palette.SURFACE))
        p = QPainter(image)
        p.setFont(self.bold)
        p.setPen(QColor(palette.TEXT))
        line = self.fm.height() + 2
        x, w = self.pad, self.width - 2 * self.pad
        title = f"{format_time(self.times.time_of(index), self.fps)} · frame {index}"
        p.drawText(
            QRectF(x, self.pad, w, line), QFontMetrics(self.bold).elidedText(title, Qt.TextElideMode.ElideRight, w)
        )
        p.setFont(self.font)
        p.setPen(QColor(palette.TEXT_DIM))
        if current is None:
            text = "no analysed frame nearby"
        else:
            delta = self.times.time_of(index) - self.times.time_of(current.frame)
            text = f"reasoning of frame {current.frame} ({delta:+.1f} s) · {current.status}"
        p.drawText(QRectF(x, self.pad + line, w, line), self.fm.elidedText(text, Qt.TextElideMode.ElideRight, w))
        p.fillRect(QRectF(x, self.header_h - 3, w, 1), QColor(palette.TEXT_DIM))
        p.end()
        out[: self.header_h] = header

    def _render_body(self, current: _Analysed | None, shown: int) -> np.ndarray:
        h = self.height - self.header_h
        body = np.empty((h, self.width, 3), np.uint8)
        image = QImage(body.data, self.width, h, self.width * 3, QImage.Format.Format_RGB888)
        image.fill(QColor(palette.SURFACE))
        if current is None:
            return body
        p = QPainter(image)
        p.setRenderHint(QPainter.RenderHint.TextAntialiasing)
        x, w = self.pad, self.width - 2 * self.pad
        flags = int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop | Qt.TextFlag.TextWordWrap)
        blocks: list[tuple[QFont, str, str]] = []
        left = shown
        for heading, text in current.paragraphs:
            if left <= 0:
                break
            part = text[:left]
            left -= len(text)
            blocks.append((self.bold, heading, palette.ACCENT))
            blocks.append((self.font, part + ("▍" if left < 0 else ""), palette.TEXT))
        heights = []
        for font, text, _ in blocks:
            p.setFont(font)
            heights.append(p.boundingRect(QRectF(0, 0, w, 1e6), flags, text).height() + 2)
        total = sum(heights) + 4 * (len(blocks) // 2)
        y = self.pad / 2 - max(0.0, total - (h - self.pad))  # the newest text stays in view
        for (font, text, colour), bh in zip(blocks, heights, strict=True):
            if y + bh > 0:
                p.setFont(font)
                p.setPen(QColor(colour))
                p.drawText(QRectF(x, y, w, bh), flags, text)
            y += bh + (4 if font is self.font else 0)
        p.end()
        return body


def _even(n: int) -> int:
    return n + (n & 1)


def _timing(times: FrameTimes, start: int, stop: int) -> tuple[Fraction, list[int], list[int]]:
    """Time base, pts and durations of the output frames: the source's, from the clip's first frame.

    A source without usable time (no timestamps, no rate) is written at 25 frames/s.
    """
    if times.end <= 0:
        n = stop - start + 1
        return Fraction(1, 25), list(range(n)), [1] * n
    ticks = [int(t) for t in times.ticks[start : stop + 1]]
    ends = [*ticks[1:], int(times.ticks[stop + 1]) if stop + 1 < len(times) else times.end]
    return times.time_base, [t - ticks[0] for t in ticks], [e - t for t, e in zip(ticks, ends, strict=True)]


def export_clip(
    video: Path,
    out: Path,
    results: Sequence[FrameResult],
    options: ClipOptions,
    *,
    areas: Sequence[BlankArea] = (),
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    max_gap_s: float = TimelineConfig().max_gap_s,
    profile: ModelProfile | None = None,
) -> ClipStats:
    """Write frames ``options.start..options.stop`` of ``video`` to ``out`` (MP4, H.264, yuv420p).

    ``results``: the stored answers to show, of every question of the ``profile`` that asked them
    (default: the one their prompt version names); each frame's answers are merged into one record.
    """
    ensure_gui_app()
    out = Path(out)
    started = time.perf_counter()
    stats = ClipStats()
    try:
        reader = VideoReader(video)
    except VideoError as exc:
        raise ReportError(str(exc)) from None
    with reader:
        stop = min(options.stop, reader.frame_count - 1)
        if options.start > stop:
            raise ReportError(f"the clip starts after the video's last frame ({reader.frame_count - 1})")
        fps = float(reader.fps)
        times = reader.times
        width, height = reader.width, reader.height
        panel_w = (options.panel_width or round(0.6 * height)) if options.panel else 0
        out_w, out_h = _even(width + panel_w), _even(height)
        panel_w = out_w - width if options.panel else 0
        profile = profile or (profile_of(results) if results else None)
        by_frame = _by_frame(results, profile) if profile is not None else {}
        shown = [f for f in sorted(by_frame) if 0 <= f < reader.frame_count]  # a stale store may know more
        analysed = [_Analysed.of(profile, by_frame[f], width, height) for f in shown]
        frames = [a.frame for a in analysed]
        gaps = [times.time_of(b) - times.time_of(a) for a, b in itertools.pairwise(frames)]
        stride_s = float(np.median(gaps)) if gaps else max_gap_s  # the analysis' own stride, in seconds
        box_hold_s = options.box_hold_strides * stride_s
        panel = _Panel(panel_w, out_h, fps, times) if panel_w else None
        time_base, out_pts, out_durations = _timing(times, options.start, stop)
        canvas = np.zeros((out_h, out_w, 3), np.uint8)
        image = QImage(canvas.data, out_w, out_h, out_w * 3, QImage.Format.Format_RGB888)
        layers_all, layers_nobox = LayerState(), LayerState(boxes=False)
        target = QRectF(0, 0, width, height)
        total = stop - options.start + 1
        t_decode = t_compose = t_encode = 0.0
        try:
            with atomic_path(out) as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
                stream = container.add_stream("libx264", rate=Fraction(reader.fps or 25).limit_denominator(100000))
                stream.codec_context.time_base = time_base  # the source's clock, not 1/rate
                stream.width, stream.height = out_w, out_h
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(options.crf), "preset": options.preset}
                stream.codec_context.thread_count = options.threads
                tick = time.perf_counter()
                for n, (index, rgb) in enumerate(reader.frames(options.start, stop + 1)):
                    if cancel is not None and cancel.is_set():
                        raise ClipCancelled(f"export of {out.name} cancelled")
                    now = time.perf_counter()
                    t_decode += now - tick
                    tick = now
                    if options.blank and areas:
                        blank_areas(rgb, areas)
                    canvas[:height, :width] = rgb
                    now = times.time_of(index)
                    k = bisect.bisect_right(frames, index) - 1
                    since = now - times.time_of(frames[k]) if k >= 0 else math.inf
                    current = analysed[k] if since <= max_gap_s + _EPS else None
                    if panel is not None:
                        chars = 0
                        if current is not None:
                            span = options.reveal_s  # revealed by the end of this frame, as it streamed
                            if k + 1 < len(frames):
                                span = min(span, times.time_of(frames[k + 1]) - times.time_of(current.frame))
                            shown_until = since + out_durations[n] * float(time_base)
                            late = current.frame < options.start or span <= 0
                            fraction = 1.0 if late else shown_until / span
                            chars = math.ceil(min(1.0, fraction) * current.total_chars)
                        panel.render(canvas[:, width:], index, current, chars)
                    p = QPainter(image)
                    p.setRenderHint(QPainter.RenderHint.Antialiasing)
                    chain = current.chain if current is not None else None
                    boxes = current is not None and (index == current.frame or since <= box_hold_s + _EPS)
                    layers = layers_all if boxes else layers_nobox
                    held = None
                    if current is not None and index != current.frame:  # an earlier frame's overlays, as in the viewer
                        held = f"from {format_time(times.time_of(current.frame), fps)[:8]} · {since:.1f} s ago"
                    paint_overlays(
                        p,
                        target,
                        width,
                        height,
                        chain,
                        layers,
                        index=index,
                        fps=fps,
                        seconds=times.time_of(index),
                        held=held,
                    )
                    p.end()
                    yuv = cv2.cvtColor(canvas, cv2.COLOR_RGB2YUV_I420)
                    now = time.perf_counter()
                    t_compose += now - tick
                    tick = now
                    frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
                    frame.pts, frame.duration, frame.time_base = out_pts[n], out_durations[n], time_base
                    container.mux(stream.encode(frame))
                    now = time.perf_counter()
                    t_encode += now - tick
                    tick = now
                    stats.frames = n + 1
                    if progress is not None:
                        progress(n + 1, total)
                tick = time.perf_counter()
                container.mux(stream.encode(None))
                t_encode += time.perf_counter() - tick
        except (av.FFmpegError, OSError) as exc:
            raise ReportError(f"cannot write {out.name}: {exc}") from None
        except VideoError as exc:
            raise ReportError(f"cannot read the case's frames: {exc}") from None
    stats.seconds = time.perf_counter() - started
    stats.fps, stats.width, stats.height = fps, out_w, out_h
    stats.stages = {"decode": t_decode, "compose": t_compose, "encode": t_encode}
    return stats


def clip_for_video(
    video: Path,
    out: Path,
    options: ClipOptions,
    *,
    model_id: str | None = None,
    task: str | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> ClipStats:
    """Export a clip of ``video`` with its stored analysis (none stored: the picture alone)."""
    results: list[FrameResult] = []
    profile: ModelProfile | None = None
    areas: list[BlankArea] = []
    store_path = case_store_path(video)
    if store_path.is_file():
        try:
            with CaseStore.open(store_path) as store:
                areas = store.blank_areas()
                if store.analyses():
                    a = choose_analysis(store, model_id, task)
                    profile = a.profile
                    info = store.case_info()
                    fps = (info.fps if info and info.fps else None) or 25.0
                    first = max(0, options.start - round(TimelineConfig().max_gap_s * fps))
                    for t in a.tasks:
                        results += store.results(a.model_id, a.prompt_version, t, start=first, stop=options.stop + 1)
        except StoreError as exc:
            raise ReportError(str(exc)) from None
    return export_clip(video, out, results, options, areas=areas, progress=progress, cancel=cancel, profile=profile)
