"""The analysis scheduler: the frame on screen first, then a background sweep of the case.

One worker thread owns the video reader and calls the backend; callers talk to it through
:meth:`AnalysisScheduler.request` (the playhead moved), :meth:`reask` and :meth:`set_stride`,
and hear back through a :class:`SchedulerListener` (plain callbacks, called on the worker
thread: a Qt caller forwards them over queued signals). A request pre-empts the sweep: a sweep
frame in flight is cancelled and re-queued. Frames already in the case store are never
computed again, and each result is committed the moment it completes.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.backends.base import Backend, BackendError, GenerationRequest, TextStream
from engine.chain_parser import parse_chain
from engine.prompts import TaskPrompt
from engine.store import CaseStore, FrameResult, StoreError
from engine.video import VideoError, VideoReader

__all__ = ["AnalysisScheduler", "SchedulerConfig", "SchedulerListener", "sweep_frames"]


@dataclass(frozen=True)
class SchedulerConfig:
    stride_s: float = 1.0  # sweep one frame per stride
    batch_size: int = 1  # >1: sweep frames in batches when the backend gains from it
    max_new_tokens: int = 768  # the token cap per frame
    sweep: bool = True  # False: only requested frames


class SchedulerListener:
    """Callbacks from the worker thread; override what you need."""

    def frame_started(self, frame: int, requested: bool) -> None: ...
    def text_piece(self, frame: int, piece: str) -> None: ...
    def frame_done(self, result: FrameResult, requested: bool) -> None: ...
    def frame_failed(self, frame: int, message: str) -> None: ...
    def progress(self, done: int, total: int) -> None: ...
    def idle(self) -> None: ...
    def stopped(self, error: str | None) -> None: ...


def sweep_frames(frame_count: int, fps: float, stride_s: float) -> list[int]:
    """Frame indices of a sweep at ``stride_s`` seconds (at least every frame)."""
    step = max(1, round(stride_s * fps))
    return list(range(0, frame_count, step))


class AnalysisScheduler:
    def __init__(
        self,
        video: Path,
        backend: Backend,
        store: CaseStore,
        prompt: TaskPrompt,
        config: SchedulerConfig | None = None,
        listener: SchedulerListener | None = None,
        reader_factory: Callable[[Path], VideoReader] = VideoReader,
    ):
        self.video = Path(video)
        self.backend = backend
        self.store = store
        self.prompt = prompt
        self.config = config or SchedulerConfig()
        self.listener = listener or SchedulerListener()
        self._reader_factory = reader_factory
        self._lock = threading.Condition()
        self._requested: int | None = None
        self._forced: set[int] = set()
        self._playhead = 0
        self._stride_s = self.config.stride_s
        self._pending: list[int] = []  # sorted sweep frames not yet done
        self._total = 0
        self._done: set[int] = set()
        self._failed: set[int] = set()
        self._inflight: int | None = None
        self._inflight_stream: TextStream | None = None
        self._inflight_requested = False
        self._stop = False
        self._paused = False
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        self.frame_count = 0
        self.fps = 0.0

    # ------------------------------------------------------------------ control (any thread)
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="surgview-analysis", daemon=True)
        self._thread.start()

    def stop(self, wait: bool = True, timeout: float | None = 10.0) -> None:
        with self._lock:
            self._stop = True
            if self._inflight_stream is not None:
                self._inflight_stream.cancel()
            self._lock.notify_all()
        if wait and self._thread is not None:
            self._thread.join(timeout)

    def request(self, frame: int) -> None:
        """The playhead is on ``frame``: analyse it next and sweep onward from here."""
        with self._lock:
            self._playhead = frame
            if frame in self._done and frame not in self._forced:
                self._lock.notify_all()
                return
            self._requested = frame
            self._idle.clear()
            if self._inflight is not None and self._inflight != frame and self._inflight_stream is not None:
                self._inflight_stream.cancel()  # pre-empt: it returns to the queue
            self._lock.notify_all()

    def pause(self) -> None:
        """Hold the background sweep (requested frames are still served)."""
        with self._lock:
            self._paused = True
            self._lock.notify_all()

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            self._idle.clear()
            self._lock.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused

    def reask(self, frame: int) -> None:
        """Generate ``frame`` again even though a result is stored."""
        with self._lock:
            self._forced.add(frame)
        self.request(frame)

    def set_stride(self, stride_s: float) -> None:
        with self._lock:
            self._stride_s = stride_s
            self._plan_sweep()
            self._idle.clear()
            self._lock.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is left to do (or the scheduler stopped)."""
        return self._idle.wait(timeout)

    @property
    def progress(self) -> tuple[int, int]:
        with self._lock:
            return self._total - len(self._pending), self._total

    # ------------------------------------------------------------------ worker
    def _plan_sweep(self) -> None:
        frames = sweep_frames(self.frame_count, self.fps, self._stride_s) if self.config.sweep else []
        self._total = len(frames)
        self._pending = [f for f in frames if f not in self._done and f not in self._failed]

    def _next(self) -> tuple[list[int], bool] | None:
        """The next frames to compute and whether they were requested; None to stop."""
        with self._lock:
            while True:
                if self._stop:
                    return None
                if self._requested is not None:
                    frame, self._requested = self._requested, None
                    if frame not in self._done or frame in self._forced:
                        self._forced.discard(frame)
                        return [frame], True
                if self._pending and not self._paused:
                    i = bisect.bisect_left(self._pending, self._playhead)
                    order = self._pending[i:] + self._pending[:i]
                    k = self.config.batch_size if self.backend.supports_batching else 1
                    return order[: max(1, k)], False
                self._idle.set()
                self.listener.idle()  # listeners must not block: the scheduler's lock is held
                self._lock.wait()

    def _run(self) -> None:
        reason: str | None = None
        try:
            with self._reader_factory(self.video) as reader:
                self.fps, self.frame_count = float(reader.fps), reader.frame_count
                with self._lock:
                    self._done = self.store.analysed_frames(
                        self.backend.model_id, self.prompt.version, self.prompt.task
                    )
                    self._plan_sweep()
                self.listener.progress(*self.progress)
                while (job := self._next()) is not None:
                    frames, requested = job
                    if len(frames) > 1:
                        self._compute_batch(reader, frames)
                    else:
                        self._compute(reader, frames[0], requested)
        except (BackendError, StoreError, VideoError) as exc:
            reason = str(exc)
        except Exception as exc:  # the worker must report, never die silently
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            self.error = reason
            self._idle.set()
            self.listener.stopped(reason)

    def _image(self, reader: VideoReader, frame: int) -> np.ndarray | None:
        try:
            return reader.frame(frame)
        except (VideoError, IndexError) as exc:
            self._fail(frame, str(exc))
            return None

    def _fail(self, frame: int, message: str) -> None:
        with self._lock:
            self._failed.add(frame)
            if frame in self._pending:
                self._pending.remove(frame)
        self.listener.frame_failed(frame, message)

    def _request_for(self, image: np.ndarray) -> GenerationRequest:
        return GenerationRequest(
            prompt=self.prompt.text, image=image, system=self.prompt.system, max_new_tokens=self.config.max_new_tokens
        )

    def _compute(self, reader: VideoReader, frame: int, requested: bool) -> None:
        image = self._image(reader, frame)
        if image is None:
            return
        self.listener.frame_started(frame, requested)
        stream = self.backend.stream(self._request_for(image))
        with self._lock:
            self._inflight, self._inflight_stream, self._inflight_requested = frame, stream, requested
            if self._stop:
                stream.cancel()
        pieces = []
        try:
            for piece in stream:
                pieces.append(piece)
                self.listener.text_piece(frame, piece)
        finally:
            with self._lock:
                self._inflight = self._inflight_stream = None
        if stream.stats.finish_reason == "cancelled":
            return  # pre-empted or stopping: the frame stays pending
        self._commit(
            frame, "".join(pieces), stream.stats.first_token_s, stream.stats.total_s, stream.stats.tokens, requested
        )

    def _compute_batch(self, reader: VideoReader, frames: list[int]) -> None:
        images = {f: img for f in frames if (img := self._image(reader, f)) is not None}
        if not images:
            return
        start = time.perf_counter()
        texts = self.backend.generate_batch([self._request_for(img) for img in images.values()])
        per_item = (time.perf_counter() - start) / len(images)
        for frame, text in zip(images, texts, strict=True):
            self._commit(frame, text, None, per_item, 0, False)

    def _commit(
        self, frame: int, text: str, first_token_s: float | None, total_s: float, tokens: int, requested: bool
    ) -> None:
        chain = parse_chain(text)
        result = FrameResult(
            frame=frame,
            model_id=self.backend.model_id,
            prompt_version=self.prompt.version,
            task=self.prompt.task,
            raw_text=text,
            chain=chain,
            first_token_s=first_token_s,
            total_s=total_s,
            tokens=tokens,
        )
        self.store.put_result(result)
        with self._lock:
            self._done.add(frame)
            i = bisect.bisect_left(self._pending, frame)
            if i < len(self._pending) and self._pending[i] == frame:
                self._pending.pop(i)
        self.listener.frame_done(result, requested)
        self.listener.progress(*self.progress)
