"""Playback off the UI thread: seeks, steps, timed play and background prefetch of one video.

``PlaybackController`` lives on the UI thread; a worker ``QThread`` owns the ``VideoReader``s
(not thread-safe: only the worker touches them). The UI posts *orders* (open, seek, step,
play, pause) into a small inbox; orders coalesce there, so when several seeks queue up while a
frame decodes only the newest is decoded. The worker sends frames back through a one-slot
mailbox: if the UI has not taken the last frame yet the new one replaces it, so the worker
never floods the event loop with frames nobody can paint. Every public signal is emitted on the
UI thread, whatever the receiver.

Timed play keeps the source timing: the frame due is the one on screen at ``time of the start
frame + elapsed × speed`` by a monotonic clock and the frames' presentation timestamps (a
variable-frame-rate file plays as recorded, not at its average rate); the worker decodes forward
to it and, when it cannot keep up, skips the late frames (it drops display frames, never time).

Stepping back across a keyframe costs a whole GOP's decode. To hide it, a second reader (the
*spare*) decodes the GOP before the playhead's keyframe in idle time, one frame at a time with
the inbox checked in between, so prefetch never delays a user's order by more than one frame's
decode. A request for a frame the spare holds is served from its cache and the two readers swap
roles: the spare's decoder is then positioned right for the steps that follow.

After a jump, idle time first *refills* the frames after the playhead (``refill_ahead``, 25 by
default): the reader whose decoder stopped just before them runs on into its cache (decoded, not
converted), so the next steps forward are cache hits, as steps back already are. Refill and
prefetch yield to orders the same way (one frame between two looks at the inbox).

Play semantics: ``play`` at the last frame starts over from 0; play stops at the last frame with
``ended`` (forward) or at frame 0 (backwards, no ``ended``); ``step`` and ``pause`` stop play; a
``seek`` during play goes on playing from there; ``play(0)`` pauses.
"""

from __future__ import annotations

import atexit
import ctypes
import math
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, Signal, SignalInstance, Slot
from PySide6.QtGui import QImage

from engine.terminal import one_line
from engine.video import FrameTimes, VideoError, VideoReader, VideoReaderConfig

__all__ = [
    "MAX_SPEED",
    "MIN_SPEED",
    "PlaybackConfig",
    "PlaybackController",
    "PlaybackStats",
    "ReaderFactory",
    "rgb_to_qimage",
    "safe_emit",
]

MIN_SPEED = 0.25
MAX_SPEED = 4.0

ReaderFactory = Callable[[Path, VideoReaderConfig], VideoReader]
"""Builds a reader; tests pass one that wraps ``VideoReader`` (e.g. to make decoding slow)."""


@dataclass(frozen=True)
class PlaybackConfig:
    # Each of the two readers keeps this many decoded frames: enough for a 250-frame GOP at 720p
    # (the spare holds the GOP before the playhead, the primary the one under it). Every frame from
    # the keyframe is decoded (no skipping of non-reference pictures), so stepping back after a seek
    # is a cache hit, as the slots assume.
    reader: VideoReaderConfig = field(
        default_factory=lambda: VideoReaderConfig(cache_bytes=384 * 2**20, cache_frames=300, skip_nonref_before=None)
    )
    prefetch: bool = True  # decode the GOP before the playhead in idle time
    # After a jump, decode this many frames after the playhead in idle time (capped at a third of a
    # reader's cache), so the next steps forward are cache hits; 0: off.
    refill_ahead: int = 25
    # The worker thread runs this much nicer than the UI thread (Linux: per thread, inherited by the
    # decoder threads FFmpeg starts from it): on busy cores the UI thread paints first. 0: as the UI.
    worker_nice: int = 5


@dataclass(frozen=True)
class PlaybackStats:
    """Counters for tests and benchmarks (``reset_stats`` zeroes them)."""

    displayed: int = 0  # frames handed to the UI (frameReady emitted)
    dropped: int = 0  # frames due during play never shown: skipped late, or replaced before the UI took them
    decoded: int = 0  # frames the worker read and converted for display (orders and play)
    coalesced: int = 0  # frames replaced in the mailbox before the UI took them (play or not)
    prefetched: int = 0  # frames decoded in the background by the spare reader
    refilled: int = 0  # frames after the playhead decoded in the background by the primary reader


def rgb_to_qimage(rgb: np.ndarray) -> QImage:
    """An RGB888 QImage that owns its pixels, from an H×W×3 uint8 array (any strides)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 array, got {rgb.shape} {rgb.dtype}")
    rgb = np.ascontiguousarray(rgb)
    h, w = rgb.shape[:2]
    # Rows are 3*w bytes, not 4-byte aligned for odd widths: say so, then copy into Qt's own buffer.
    return QImage(rgb.data, w, h, rgb.strides[0], QImage.Format.Format_RGB888).copy()


# -- PySide6 workaround -------------------------------------------------------------------------
# PySide6 6.12.0 returns the result of ``SignalInstance.emit`` (a bool) without taking a reference,
# so on CPython < 3.12 (mortal True/False) every Python-side ``emit`` drops one reference to True;
# after a few thousand emits (minutes of playback) the interpreter aborts in ``bool_dealloc``.
# ``safe_emit`` gives the reference back when a probe shows the leak, and is a plain emit otherwise.

_incref = ctypes.pythonapi.Py_IncRef
_incref.argtypes = [ctypes.py_object]
_incref.restype = None


def _emit_leaks_a_reference() -> bool:
    class _Probe(QObject):
        ping = Signal()

    probe = _Probe()
    before = sys.getrefcount(True)
    result = probe.ping.emit()
    leaks = result is True and sys.getrefcount(True) == before  # a new reference would show as +1
    if leaks:
        _incref(result)  # the probe's own emit
    return leaks


_EMIT_LEAKS = _emit_leaks_a_reference()


def safe_emit(signal: SignalInstance, *args: Any) -> None:
    """``signal.emit(*args)`` without PySide6 6.12's reference leak on ``True`` (see above)."""
    result = signal.emit(*args)
    if _EMIT_LEAKS and (result is True or result is False):
        _incref(result)


def lower_thread_priority(step: int) -> bool:
    """Make the calling OS thread ``step`` nicer (Linux, where niceness is per thread and the threads
    it starts inherit it); False where that is not possible. Background decoding then yields the
    cores to the UI thread when they are busy, instead of sharing them equally."""
    if step <= 0 or not sys.platform.startswith("linux"):
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + step))
    except OSError:
        return False
    return True


# -- orders: UI thread → worker -----------------------------------------------------------------


@dataclass
class _Orders:
    stop: bool = False
    open: tuple[Path, int] | None = None  # path and the generation it starts
    seek: int | None = None  # absolute target (latest wins)
    steps: list[int] = field(default_factory=list)  # after the seek (or the position), each clamped
    speed: float | None = None  # None: no change; 0: pause; else play at this speed

    def any(self) -> bool:
        return self.stop or self.open is not None or self.seek is not None or bool(self.steps) or self.speed is not None


class _Inbox:
    """Orders waiting for the worker. Posting merges into what is pending: the newest seek wins."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._orders = _Orders()
        self._nudged = False

    def post(self, **changes: Any) -> None:
        with self._cond:
            o = self._orders
            if "open" in changes:  # a new file: what was pending belongs to the old one
                self._orders = o = _Orders(stop=o.stop)
            if "seek" in changes:
                o.steps = []
            for name, value in changes.items():
                if name == "step":
                    o.steps.append(value)
                else:
                    setattr(o, name, value)
            self._cond.notify()

    def nudge(self) -> None:
        """Wake the worker without an order (a background job has something for it)."""
        with self._cond:
            self._nudged = True
            self._cond.notify()

    def take(self) -> _Orders:
        with self._cond:
            orders, self._orders, self._nudged = self._orders, _Orders(stop=self._orders.stop), False
            return orders

    def pending(self) -> bool:
        with self._cond:
            return self._orders.any()

    def wait(self, timeout: float | None) -> None:
        with self._cond:
            if not (self._orders.any() or self._nudged):
                self._cond.wait(timeout)


# -- the worker's frame source: two readers, cache spans, prefetch -------------------------------


@dataclass
class _Span:
    """The frames a reader is believed to hold in its cache (contiguous, the last ones decoded)."""

    lo: int
    hi: int

    def covers(self, lo: int, hi: int) -> bool:
        return self.lo <= lo and hi <= self.hi


class _Slot:
    def __init__(self, reader: VideoReader) -> None:
        self.reader = reader
        self.span: _Span | None = None

    def holds(self, j: int) -> bool:
        """Whether the reader's cache is believed to hold frame ``j`` (reads ``span`` once: the worker replaces
        it whole, so the UI thread may ask too)."""
        s = self.span
        return s is not None and s.lo <= j <= s.hi

    def note(self, j: int, capacity: int) -> None:
        """Track what reading frame ``j`` left in the cache (an estimate that errs on the small side)."""
        if self.holds(j):
            return  # a cache hit changes nothing
        s = self.span
        k = self.reader.keyframe_at_or_before(j)
        lo = s.lo if s is not None and s.hi < j and k <= s.hi + 1 else k  # decoded on from the span
        self.span = _Span(max(lo, j - capacity + 1), j)


class _FrameSource:
    """Frames of one file for the worker: a primary reader, and a spare that prefetches behind it."""

    def __init__(self, path: Path, factory: ReaderFactory, config: PlaybackConfig, wake: Callable[[], None]):
        self.path = path
        self._factory = factory
        self._config = config
        self._wake = wake
        self.primary = _Slot(factory(path, config.reader))
        r = self.primary.reader
        frame_bytes = max(1, r.width * r.height * 3 // 2 * 6 // 5)  # yuv420p plus the decoder's padding, generously
        self.capacity = max(1, min(config.reader.cache_frames, config.reader.cache_bytes // frame_bytes) - 4)
        self.spare: _Slot | None = None
        self._opener: threading.Thread | None = None
        self._spare_box: list[VideoReader | BaseException] = []
        self._box_lock = threading.Lock()
        self._closed = False
        self._job: tuple[int, int, int] | None = None  # (from keyframe, to frame, next frame to decode)
        self.prefetch_cost = 0.005  # seconds per prefetched frame, a running average

    @property
    def reader(self) -> VideoReader:
        return self.primary.reader

    def holds(self, j: int) -> bool:
        """Whether a reader's cache is believed to hold frame ``j`` (the estimate errs on the small side).

        Called from the UI thread: it reads attributes the worker replaces whole, never mutates."""
        return any(s is not None and s.holds(j) for s in (self.primary, self.spare))

    def get(self, j: int) -> np.ndarray:
        """Frame ``j`` as RGB, from the spare's cache when it holds it and the primary does not."""
        spare = self.spare
        if spare is not None and spare.holds(j) and not self.primary.holds(j):
            rgb = spare.reader.frame(j)
            self.primary, self.spare, self._job = spare, self.primary, None
            return rgb
        rgb = self.primary.reader.frame(j)
        self.primary.note(j, self.capacity)
        return rgb

    def prefetch_step(self, pos: int) -> bool:
        """Decode one frame of the GOP before ``pos``'s keyframe; False when there is nothing to do."""
        want = self._prefetch_target(pos)
        if want is None:
            return False
        start, lo, hi = want
        for slot in (self.primary, self.spare):
            if slot is not None and slot.span is not None and slot.span.covers(lo, hi):
                return False
        if self.spare is None and not self._spare_ready():
            return False
        assert self.spare is not None
        if self._job is None or self._job[:2] != (start, hi):
            self._job = (start, hi, start)
        j = self._job[2]
        t0 = time.perf_counter()
        self.spare.reader.warm(j)
        self.spare.note(j, self.capacity)
        self.prefetch_cost = 0.8 * self.prefetch_cost + 0.2 * (time.perf_counter() - t0)
        self._job = (start, hi, j + 1) if j < hi else None
        return True

    def refill_step(self, pos: int, ahead: int) -> bool:
        """Decode the first frame of the ``ahead`` after ``pos`` that neither reader holds, by the
        reader whose decoder stops just before it (running on, never seeking); False when there is
        none to decode (all held, or a gap no decoder runs into: the next order fills it)."""
        last = self.primary.reader.frame_count - 1
        hi = min(pos + min(ahead, self.capacity // 3), last)
        slots = [s for s in (self.primary, self.spare) if s is not None and s.span is not None]
        need = pos + 1
        while need <= hi and (held := [s.span.hi for s in slots if s.span.lo <= need <= s.span.hi]):
            need = max(held) + 1
        if need > hi:
            return False
        for slot in slots:
            if slot.span.hi + 1 == need:
                slot.reader.warm(need)
                slot.note(need, self.capacity)
                return True
        return False

    def _prefetch_target(self, pos: int) -> tuple[int, int, int] | None:
        """(keyframe to decode from, first frame to keep, last frame) of the GOP before ``pos``'s."""
        r = self.primary.reader
        k = r.keyframe_at_or_before(pos)
        if k <= 0:
            return None
        start = r.keyframe_at_or_before(k - 1)
        return start, max(start, k - self.capacity), k - 1

    def _spare_ready(self) -> bool:
        """Open the spare in a helper thread (indexing a long file takes a while); True once open."""
        if self._opener is None:
            self._opener = threading.Thread(target=self._open_spare, name="surgview-spare-open", daemon=True)
            self._opener.start()
            return False
        with self._box_lock:
            if not self._spare_box:
                return False
            got = self._spare_box[0]
        if isinstance(got, BaseException):
            return False  # prefetch is best effort: the primary reports real failures
        self.spare = _Slot(got)
        return True

    def _open_spare(self) -> None:
        try:
            quiet = replace(self._config.reader, progress=None)  # the spare's indexing is not shown
            reader: VideoReader | BaseException = self._factory(self.path, quiet)
        except Exception as exc:
            reader = exc
        with self._box_lock:
            closed = self._closed
            if not closed:
                self._spare_box.append(reader)
        if closed and isinstance(reader, VideoReader):
            reader.close()  # the file was closed (or replaced) while this one was indexing
        elif not closed:
            self._wake()

    def close(self, join: bool = False) -> None:
        with self._box_lock:
            self._closed = True
            got = self._spare_box[0] if self._spare_box else None
        if join and self._opener is not None:
            self._opener.join()
        for reader in {self.primary.reader, self.spare.reader if self.spare else None, got}:
            if isinstance(reader, VideoReader):
                reader.close()


# -- the worker ---------------------------------------------------------------------------------


class _Worker:
    """The loop on the worker thread: take orders, show frames, keep time, prefetch when idle."""

    def __init__(
        self,
        inbox: _Inbox,
        emit: Callable[[tuple], None],
        publish: Callable[[int, int, QImage, bool], None],
        counters: _Counters,
        factory: ReaderFactory,
        config: PlaybackConfig,
    ):
        self._inbox = inbox
        self._emit = emit
        self._publish = publish
        self._counters = counters
        self._factory = factory
        self._config = config
        self._source: _FrameSource | None = None
        self._gen = 0
        self._pos = 0
        self._playing = False
        self._speed = 1.0
        self._anchor = (0.0, 0)  # (clock, frame) that play time counts from

    def holds(self, j: int) -> bool:
        source = self._source
        return source is not None and source.holds(j)

    def run(self) -> None:
        lower_thread_priority(self._config.worker_nice)
        try:
            while self._turn():
                pass
        finally:
            if self._source is not None:
                self._source.close(join=True)
                self._source = None

    def _turn(self) -> bool:
        """One turn of the loop: orders, then a frame or a prefetch step, then wait. False: stop."""
        orders = self._inbox.take()
        if orders.stop:
            return False
        timeout: float | None = None
        try:
            if orders.open is not None:
                self._open(*orders.open)
            if self._source is not None:
                self._apply(orders)
                if self._playing:
                    timeout = self._tick()
                elif not self._inbox.pending() and (self._refill() or (self._config.prefetch and self._prefetch())):
                    timeout = 0
        except Exception as exc:  # a bug, not the file: report it, pause, and keep serving orders
            self._set_playing(False)
            self._emit(("failed", self._gen, one_line(f"playback error: {type(exc).__name__}: {exc}")))
            timeout = None
        if timeout != 0:
            self._inbox.wait(timeout)
        return True

    def _open(self, path: Path, gen: int) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None
        self._gen, self._pos, self._playing = gen, 0, False
        config = replace(self._config, reader=replace(self._config.reader, progress=self._indexing(gen)))
        try:
            self._source = _FrameSource(path, self._factory, config, self._inbox.nudge)
        except VideoError as exc:
            self._emit(("failed", gen, one_line(str(exc), empty="unknown error")))
            return
        except Exception as exc:
            self._emit(("failed", gen, one_line(f"{path}: cannot open this video ({exc})")))
            return
        r = self._source.reader
        info = {
            "path": str(path),
            "fps": float(r.fps),
            "frame_count": r.frame_count,
            "width": r.width,
            "height": r.height,
            "codec": r.codec,
            "duration_s": r.duration_s,
            "keyframes": len(r.keyframes),
            "times": r.times,  # when each frame shows (FrameTimes): timecodes of variable-rate files
        }
        self._emit(("opened", gen, info))
        self._show(0)

    def _indexing(self, gen: int) -> Callable[[float], None]:
        """The primary reader's indexing progress, as ``indexing`` events (the spare's is not shown)."""

        def report(share: float) -> None:
            self._emit(("indexing", gen, share))

        return report

    def _apply(self, o: _Orders) -> None:
        assert self._source is not None
        last = self._source.reader.frame_count - 1
        target = None if o.seek is None else min(max(o.seek, 0), last)
        for delta in o.steps:  # clamped one by one: at the end, right then left is one frame back
            target = min(max((self._pos if target is None else target) + delta, 0), last)
        if o.speed == 0:
            self._set_playing(False)
        if target is not None and not self._show(target):
            return
        if o.speed:
            speed = math.copysign(min(max(abs(o.speed), MIN_SPEED), MAX_SPEED), o.speed)
            if not self._playing and speed > 0 and self._pos >= last and not self._show(0):
                return  # play at the end starts over, as players do
            if speed < 0 and self._pos <= 0:
                self._set_playing(False)
                return
            self._speed = speed
            self._set_playing(True)
        if self._playing and (target is not None or o.speed):
            self._anchor = (time.monotonic(), self._pos)

    def _set_playing(self, playing: bool) -> None:
        if playing != self._playing:
            self._playing = playing
            self._emit(("playing", self._gen, playing))

    def _tick(self) -> float | None:
        """Show the frame due now; the seconds until the next one is due (0: call again at once)."""
        assert self._source is not None
        times = self._source.reader.times
        last = len(times) - 1
        speed = abs(self._speed)
        if times.end <= 0:  # no time to play by (no timestamps and no rate)
            self._set_playing(False)
            return None
        t0, f0 = self._anchor
        sign = 1 if self._speed > 0 else -1
        now = times.time_of(f0) + sign * (time.monotonic() - t0) * speed  # in the video's time
        due, next_at = _due(times, now, sign)
        if due != self._pos:
            skipped = abs(due - self._pos) - 1
            if not self._show(due, playing=True):
                return None
            if skipped > 0:
                self._counters.add(dropped=skipped)
        if (sign > 0 and due >= last) or (sign < 0 and due <= 0):
            self._set_playing(False)
            if sign > 0:
                self._emit(("ended", self._gen))
            return None
        wait = t0 + abs(next_at - times.time_of(f0)) / speed - time.monotonic()
        # Playing backwards walks into the GOP before: prefetch it in the gaps between frames.
        if sign < 0 and self._config.prefetch and wait > 2 * self._source.prefetch_cost and self._prefetch():
            return 0
        return max(wait, 0.0)

    def _show(self, j: int, playing: bool = False) -> bool:
        assert self._source is not None
        try:
            rgb = self._source.get(j)
        except VideoError as exc:
            self._set_playing(False)
            self._emit(("failed", self._gen, one_line(str(exc), empty="unknown error")))
            return False
        self._pos = j
        self._counters.add(decoded=1)
        self._publish(self._gen, j, rgb_to_qimage(rgb), playing)
        return True

    def _refill(self) -> bool:
        """One frame of the refill after the playhead (idle time, paused): the next steps are hits."""
        assert self._source is not None
        if self._config.refill_ahead <= 0:
            return False
        try:
            worked = self._source.refill_step(self._pos, self._config.refill_ahead)
        except Exception:
            return False  # best effort, as prefetch
        if worked:
            self._counters.add(refilled=1)
        return worked

    def _prefetch(self) -> bool:
        assert self._source is not None
        try:
            worked = self._source.prefetch_step(self._pos)
        except Exception:
            return False  # best effort: the next real read reports the file's trouble
        if worked:
            self._counters.add(prefetched=1)
        return worked


def _due(times: FrameTimes, now: float, sign: int) -> tuple[int, float]:
    """The frame to show at video time ``now`` and the time the next one is due.

    Forwards, the frame on screen then; backwards, the first frame not yet passed (time runs down
    from a frame's start), so a frame shows for its own duration either way.
    """
    last = len(times) - 1
    if sign > 0:
        due = times.index_at(now)
        return due, times.time_of(due + 1) if due < last else times.duration_s
    due = times.index_at(now)
    if times.time_of(due) < now - 1e-6 and due < last:
        due += 1  # between frames: the later one still shows
    return due, times.time_of(due - 1) if due > 0 else 0.0


class _Counters:
    """PlaybackStats, updated from both threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = PlaybackStats()

    def add(self, **amounts: int) -> None:
        with self._lock:
            v = self._values
            self._values = PlaybackStats(**{k: getattr(v, k) + amounts.get(k, 0) for k in v.__dataclass_fields__})

    def snapshot(self) -> PlaybackStats:
        with self._lock:
            return self._values

    def reset(self) -> None:
        with self._lock:
            self._values = PlaybackStats()


class _Thread(QThread):
    def __init__(self, worker: _Worker):
        super().__init__()
        self._worker = worker
        self.setObjectName("surgview-playback")

    @property
    def worker(self) -> _Worker:
        return self._worker

    def run(self) -> None:
        self._worker.run()


# -- the controller (UI thread) -----------------------------------------------------------------


class PlaybackController(QObject):
    """Decodes one video on a worker thread and hands the UI the frames to show.

    Orders (``open``, ``seek``, ``step``, ``play``, ``pause``, ``close``) return at once. Signals
    arrive on the UI thread. ``frameReady``'s index is always the frame actually decoded.
    """

    opened = Signal(dict)  # path, fps, frame_count, width, height, codec, duration_s, keyframes, times
    frameReady = Signal(int, QImage)
    playingChanged = Signal(bool)
    failed = Signal(str)  # one line, naming the file
    ended = Signal()  # play reached the last frame
    indexing = Signal(float)  # share of the file indexed while it opens (a long file not opened before)

    _event = Signal(object)  # worker → UI: (kind, generation, *args)
    _mail = Signal()  # worker → UI: a frame is waiting in the mailbox

    def __init__(
        self,
        parent: QObject | None = None,
        *,
        config: PlaybackConfig | None = None,
        reader_factory: ReaderFactory | None = None,
    ):
        super().__init__(parent)
        self._config = config or PlaybackConfig()
        self._factory: ReaderFactory = reader_factory or VideoReader
        self._counters = _Counters()
        self._inbox = _Inbox()
        self._thread: _Thread | None = None
        self._gen = 0
        self._mail_lock = threading.Lock()
        self._mailbox: tuple[int, int, QImage, bool] | None = None
        self._playing = False
        self._position = -1
        self._info: dict | None = None
        self._event.connect(self._on_event, Qt.ConnectionType.QueuedConnection)
        self._mail.connect(self._on_mail, Qt.ConnectionType.QueuedConnection)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.close)
        _LIVE.add(self)  # closed at exit too: Qt aborts if a running QThread is destroyed

    # -- orders ---------------------------------------------------------------------------------

    def open(self, path: str | Path) -> None:
        """Open a video (closing the current one); ``opened`` then frame 0, or ``failed``."""
        self._gen += 1
        self._info, self._position = None, -1
        self._set_playing(False)
        with self._mail_lock:
            self._mailbox = None
        if self._thread is None:
            self._inbox = _Inbox()
            worker = _Worker(self._inbox, self._post_event, self._put_mail, self._counters, self._factory, self._config)
            self._thread = _Thread(worker)
            self._thread.start()
        self._inbox.post(open=(Path(path), self._gen))

    def holds(self, frame: int) -> bool:
        """Whether a seek to ``frame`` will be served from the decoder's cache at once (so it needs no
        preview); False when unsure."""
        thread = self._thread
        return thread is not None and self._info is not None and thread.worker.holds(int(frame))

    def seek(self, frame: int) -> None:
        """Show ``frame`` (clamped to the video). Seeks posted while one decodes: only the last is decoded."""
        self._inbox.post(seek=int(frame))

    def step(self, delta: int) -> None:
        """Pause and move ``delta`` frames from the last frame asked for (steps accumulate)."""
        self._inbox.post(step=int(delta), speed=0.0)

    def play(self, speed: float = 1.0) -> None:
        """Play at ``speed`` × the source rate (|speed| clamped to 0.25–4; negative plays backwards; 0 pauses)."""
        speed = float(speed)
        if not math.isfinite(speed):
            raise ValueError(f"speed must be a finite number, not {speed}")
        self._inbox.post(speed=speed)

    def pause(self) -> None:
        self._inbox.post(speed=0.0)

    def close(self) -> None:
        """Stop the worker and join its thread; safe to call twice."""
        thread, self._thread = self._thread, None
        self._gen += 1
        if thread is not None:
            self._inbox.post(stop=True)
            thread.wait()
        with self._mail_lock:
            self._mailbox = None
        self._info, self._position = None, -1
        self._set_playing(False)

    # -- state ------------------------------------------------------------------------------------

    @property
    def playing(self) -> bool:
        return self._playing

    @property
    def position(self) -> int:
        """The index of the last frame handed to the UI (-1 before the first)."""
        return self._position

    @property
    def info(self) -> dict | None:
        """What ``opened`` said about the open video; None while nothing is open."""
        return self._info

    def time_of(self, index: int) -> float | None:
        """Seconds from the first frame to frame ``index`` of the open video, by its timestamp
        (None while nothing is open): what the time label shows, also for variable frame rates."""
        times = self._info.get("times") if self._info else None
        if not isinstance(times, FrameTimes) or not 0 <= index < len(times):
            return None
        return times.time_of(index)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.isRunning()

    def stats(self) -> PlaybackStats:
        return self._counters.snapshot()

    def reset_stats(self) -> None:
        self._counters.reset()

    # -- worker → UI ------------------------------------------------------------------------------

    def _post_event(self, event: tuple) -> None:
        """Worker thread: queue an event for the UI thread."""
        safe_emit(self._event, event)

    def _put_mail(self, gen: int, index: int, image: QImage, playing: bool) -> None:
        """Worker thread: leave a frame for the UI, replacing one it has not taken yet."""
        with self._mail_lock:
            replaced = self._mailbox
            self._mailbox = (gen, index, image, playing)
        if replaced is None:
            safe_emit(self._mail)
        else:
            self._counters.add(coalesced=1, dropped=1 if replaced[3] else 0)

    @Slot()
    def _on_mail(self) -> None:
        with self._mail_lock:
            mail, self._mailbox = self._mailbox, None
        if mail is None or mail[0] != self._gen:
            return
        _, index, image, _ = mail
        self._position = index
        self._counters.add(displayed=1)
        safe_emit(self.frameReady, index, image)

    @Slot(object)
    def _on_event(self, event: tuple) -> None:
        kind, gen, *args = event
        if gen != self._gen:
            return  # about a file since replaced, or from before close()
        if kind == "opened":
            self._info = dict(args[0])
            safe_emit(self.opened, dict(args[0]))
        elif kind == "failed":
            safe_emit(self.failed, args[0])
        elif kind == "playing":
            self._set_playing(args[0])
        elif kind == "ended":
            safe_emit(self.ended)
        elif kind == "indexing":
            safe_emit(self.indexing, args[0])

    def _set_playing(self, playing: bool) -> None:
        if playing != self._playing:
            self._playing = playing
            safe_emit(self.playingChanged, playing)


_LIVE: weakref.WeakSet[PlaybackController] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for controller in list(_LIVE):
        controller.close()
