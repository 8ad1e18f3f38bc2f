"""The analysis scheduler: the frame on screen first, then a background sweep of the case.

A model profile asks one or more questions of each frame; one question about one frame is a
*job*, and its answer is stored (committed at once) under the question's task. Worker threads
take jobs: the requested frame's first, then the sweep's, onward from the playhead. Callers talk
to it through :meth:`AnalysisScheduler.request` (the playhead moved), :meth:`reask`,
:meth:`set_stride`, :meth:`pause`; they hear back through a :class:`SchedulerListener` (plain
callbacks, called on worker threads, one at a time: a Qt caller forwards them over queued signals).

Two ways to share the model:

- A local model (transformers, ONNX: one generation at a time on this machine's cores) runs one
  worker; a request *pre-empts* the sweep: the sweep job in flight is cancelled and re-queued.
- A serving engine (vLLM, SGLang: continuous batching) is kept busy with ``concurrency`` sweep
  jobs in flight, and the requested frame's questions run beside them on workers of their own,
  so the frame on screen never waits behind the sweep; moving the playhead cancels the previous
  requested frame's jobs still in flight (a sweep frame among them returns to the queue).

Frames already in the case store are never computed again. A job that fails for a reason worth
retrying (a server restarting mid-answer) returns to the queue after a backoff; one that fails
for good is reported and skipped (and counted apart from the frames stored: :meth:`stored`,
:meth:`failures`); a model that cannot be reached at all stops the scheduler. So does a video
file that vanishes or is replaced mid-run: its identity is checked before every commit
(:class:`VideoIdentity`), so results computed from another file are never filed under the
fingerprint the store belongs to.
"""

from __future__ import annotations

import bisect
import itertools
import os
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.backends.base import Backend, BackendError, BackendUnavailable, StreamLimits, TextStream
from engine.profiles import ModelProfile, Question
from engine.prompts import TaskPrompt
from engine.store import CaseStore, FrameResult, StoreError, video_fingerprint
from engine.timeline import sweep_step
from engine.video import VideoError, VideoReader

__all__ = ["AnalysisScheduler", "SchedulerConfig", "SchedulerListener", "VideoChanged", "VideoIdentity", "sweep_frames"]

_RETRY_INITIAL_S = 0.5
_RETRY_MAX_S = 8.0
_MAX_ATTEMPTS = 8  # a job failing this often for a retryable reason is reported as failed
_RATE_WINDOW = 64  # frames/s over the last this many completed frames


@dataclass(frozen=True)
class SchedulerConfig:
    stride_s: float = 1.0  # sweep one frame per stride
    batch_size: int = 1  # >1: sweep frames in batches when the backend gains from it
    max_new_tokens: int | None = None  # the token cap per answer; None: the profile's
    sweep: bool = True  # False: only requested frames
    concurrency: int = 1  # sweep jobs in flight at once (a serving engine batches them)
    preempt: bool | None = None  # a request cancels sweep jobs in flight; None: when the backend is local
    stream_sweep_text: bool = True  # False: text pieces only for the frame at the playhead
    slots: threading.Semaphore | None = None  # sweep jobs in flight across several schedulers (cases)
    limits: StreamLimits | None = None  # size and time bounds of each answer; None: the defaults


class SchedulerListener:
    """Callbacks from the worker threads (one at a time); override what you need.

    ``question_started`` / ``question_piece`` / ``question_done`` carry the question's task; their
    defaults call the frame-level callbacks, which is all a one-question profile needs.
    """

    def frame_started(self, frame: int, requested: bool) -> None: ...
    def text_piece(self, frame: int, piece: str) -> None: ...
    def frame_done(self, result: FrameResult, requested: bool) -> None: ...
    def frame_failed(self, frame: int, message: str) -> None: ...
    def progress(self, done: int, total: int) -> None: ...
    def throughput(self, frames_per_s: float, eta_s: float | None) -> None: ...
    def idle(self) -> None: ...
    def stopped(self, error: str | None) -> None: ...

    def question_started(self, frame: int, task: str, requested: bool) -> None:
        self.frame_started(frame, requested)

    def question_piece(self, frame: int, task: str, piece: str) -> None:
        self.text_piece(frame, piece)

    def question_done(self, result: FrameResult, requested: bool, frame_complete: bool) -> None:
        self.frame_done(result, requested)


def sweep_frames(frame_count: int, fps: float, stride_s: float) -> list[int]:
    """Frame indices of a sweep at ``stride_s`` seconds (at least every frame)."""
    return list(range(0, frame_count, sweep_step(stride_s, fps)))


Job = tuple[int, str]  # (frame, task)


class VideoChanged(VideoError):
    """The video file vanished or now holds another video: the analysis of this case must stop."""


class VideoIdentity:
    """The video a case store belongs to, checked before each result is filed under its fingerprint.

    A stat of (device, inode, size, mtime) per check costs microseconds; the content fingerprint
    (2 MiB read) is taken again only when the stat changed, so a file that was merely touched is
    still the same video, while a deleted, moved or replaced one stops the analysis.
    """

    def __init__(self, path: Path, fingerprint: str | None = None):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._signature = self._stat()
        actual = self._fingerprint()
        self.fingerprint = fingerprint or actual
        if actual != self.fingerprint:
            raise VideoChanged(self._replaced())

    @property
    def signature(self) -> tuple[int, int, int, int]:
        """The file's stat when last found to hold the video (it changes when the file is touched)."""
        return self._signature

    def check(self) -> None:
        """Raise :class:`VideoError` when the file vanished or holds another video now."""
        with self._lock:
            signature = self._stat()
            if signature == self._signature:
                return
            if self._fingerprint() != self.fingerprint:
                raise VideoChanged(self._replaced())
            self._signature = signature

    def _stat(self) -> tuple[int, int, int, int]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            message = f"{self.path}: the video file has vanished since it was opened; the analysis stopped"
            raise VideoChanged(message) from None
        except OSError as exc:
            raise VideoChanged(f"{self.path}: cannot check the video file ({exc.strerror or exc})") from None
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns

    def _fingerprint(self) -> str:
        try:
            return video_fingerprint(self.path)
        except StoreError as exc:
            raise VideoChanged(f"{self.path}: {exc}; the analysis stopped") from None

    def _replaced(self) -> str:
        return (
            f"{self.path}: the video file was replaced by another since it was opened; the analysis stopped "
            "(nothing computed from the new file is stored under the old one)"
        )


_FRAME_IN_REASON = re.compile(r"\bframe \d+ ")


def failure_reason(message: str, video: Path) -> str:
    """A failure message without the video's path and frame number, so frames failing alike group."""
    return _FRAME_IN_REASON.sub("", message.removeprefix(f"{video}: "))


@dataclass
class _Running:
    stream: TextStream | None
    requested: bool
    cancel: threading.Event


def _single_question(prompt: TaskPrompt) -> ModelProfile:
    """A ready prompt as a one-question profile (callers that built their own prompt)."""
    return ModelProfile(
        name="surgview",
        description="one prompt",
        version=prompt.version,
        system=prompt.system,
        questions=(Question(prompt.task, prompt.task, prompt.text),),
    )


class AnalysisScheduler:
    def __init__(
        self,
        video: Path,
        backend: Backend,
        store: CaseStore,
        profile: ModelProfile | TaskPrompt,
        config: SchedulerConfig | None = None,
        listener: SchedulerListener | None = None,
        reader_factory: Callable[[Path], VideoReader] = VideoReader,
    ):
        self.video = Path(video)
        self.backend = backend
        self.store = store
        self.profile = _single_question(profile) if isinstance(profile, TaskPrompt) else profile
        self.config = config or SchedulerConfig()
        self.listener = listener or SchedulerListener()
        self._reader_factory = reader_factory
        self._tasks = self.profile.tasks
        preempt = self.config.preempt
        self._preempt = (not getattr(backend, "supports_concurrency", False)) if preempt is None else preempt
        self._lock = threading.Condition()
        self._listener_lock = threading.RLock()
        self._reader_lock = threading.Lock()
        self._reader: VideoReader | None = None
        self._images: OrderedDict[int, np.ndarray] = OrderedDict()  # prepared frames, shared by their questions
        self._requested: int | None = None
        self._forced: set[Job] = set()
        self._playhead = 0
        self._stride_s = self.config.stride_s
        self._pending: list[int] = []  # sorted sweep frames with a question not yet answered
        self._sweep: list[int] = []
        self._total = 0
        self._done: set[Job] = set()
        self._failed: set[Job] = set()
        self._reasons: dict[int, str] = {}  # why a frame's question failed for good (the last reason)
        self._identity: VideoIdentity | None = None
        self._running: dict[Job, _Running] = {}
        self._not_before: dict[Job, float] = {}
        self._attempts: dict[Job, int] = {}
        self._completed_at: deque[float] = deque(maxlen=_RATE_WINDOW)
        self._stop = False
        self._paused = False
        self._idle = threading.Event()
        self._reopened = False  # the reader was reopened here (a touched file): close it at the end
        self._reader_signature: tuple[int, int, int, int] | None = None  # the file's stat the reader opened
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        self.failure: Exception | None = None  # what stopped it (VideoError: this video; else the model, the store)
        self.frame_count = 0
        self.fps = 0.0

    @property
    def prompt(self) -> TaskPrompt:
        """The first question as a ready prompt (the store keys of a one-question profile)."""
        q = self.profile.questions[0]
        return TaskPrompt(q.task, q.prompt, self.profile.system, self.profile.version)

    @property
    def workers(self) -> int:
        """Worker threads: one when pre-empting; else the sweep's and the requested frame's questions'."""
        return 1 if self._preempt else max(1, self.config.concurrency) + len(self._tasks)

    # ------------------------------------------------------------------ control (any thread)
    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="surgview-analysis", daemon=True)
        self._thread.start()

    def stop(self, wait: bool = True, timeout: float | None = 10.0) -> None:
        with self._lock:
            self._stop = True
            for running in self._running.values():
                running.cancel.set()
            self._lock.notify_all()
        if wait and self._thread is not None:
            self._thread.join(timeout)

    def request(self, frame: int) -> None:
        """The playhead is on ``frame``: analyse it next and sweep onward from here."""
        with self._lock:
            self._playhead = frame
            self._failed.difference_update((frame, t) for t in self._tasks)  # asked again: try again
            self._requested = frame if self._open_tasks(frame) else None
            if self._requested is not None:
                self._idle.clear()
            for (f, _), running in self._running.items():
                if f == frame:
                    continue
                if running.requested or self._preempt:
                    running.cancel.set()  # pre-empt: the job returns to the queue
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
        """Generate ``frame`` again even though its answers are stored."""
        with self._lock:
            self._forced.update((frame, t) for t in self._tasks)
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
        """(frames of the sweep settled: stored, or failed for good; frames in the sweep). For progress
        bars: what was stored and what failed are :meth:`stored` and :meth:`failures`."""
        with self._lock:
            return self._total - len(self._pending), self._total

    def stored(self) -> int:
        """Frames of the sweep whose every question is stored (by this run or an earlier one)."""
        with self._lock:
            return sum(1 for f in self._sweep if all((f, t) in self._done for t in self._tasks))

    def failures(self) -> dict[int, str]:
        """Frames with a question that could not be answered in this run, and why (frame order)."""
        with self._lock:
            failed = {f for f, _ in self._failed}
            return {f: self._reasons.get(f, "") for f in sorted(failed)}

    def queued(self) -> int:
        """Sweep jobs not started yet (0: the case's tail is in flight; the next case may start)."""
        with self._lock:
            now = time.monotonic()
            return sum(1 for f in self._pending for t in self._tasks if self._available((f, t), now))

    def rate(self) -> tuple[float, float | None]:
        """(frames per second lately, seconds left for the sweep at that rate; None when unknown)."""
        with self._lock:
            times = list(self._completed_at)
            left = len(self._pending)
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0, None
        fps = (len(times) - 1) / (times[-1] - times[0])
        return fps, left / fps

    # ------------------------------------------------------------------ planning (under the lock)
    def _plan_sweep(self) -> None:
        frames = sweep_frames(self.frame_count, self.fps, self._stride_s) if self.config.sweep else []
        self._sweep = frames
        self._total = len(frames)
        self._pending = [f for f in frames if not self._settled(f)]

    def _settled(self, frame: int) -> bool:
        return all((frame, t) in self._done or (frame, t) in self._failed for t in self._tasks)

    def _available(self, job: Job, now: float) -> bool:
        if job in self._running or self._not_before.get(job, 0.0) > now:
            return False
        return job in self._forced or (job not in self._done and job not in self._failed)

    def _open_tasks(self, frame: int) -> list[str]:
        """Tasks of ``frame`` still to answer (or to answer again)."""
        return [t for t in self._tasks if (frame, t) in self._forced or (frame, t) not in self._done]

    def _sweep_order(self) -> Iterator[int]:
        i = bisect.bisect_left(self._pending, self._playhead)
        return itertools.chain(itertools.islice(self._pending, i, None), itertools.islice(self._pending, 0, i))

    def _take(self, lane: str) -> tuple[list[Job], bool] | None:
        """The next jobs for a worker of ``lane`` ("any" or "requested") and whether they were
        requested; None to stop. Waits while there is nothing to do."""
        with self._lock:
            while True:
                if self._stop:
                    return None
                now = time.monotonic()
                wake = None
                frame = self._requested
                if frame is not None:
                    open_tasks = [t for t in self._tasks if self._available((frame, t), now)]
                    if open_tasks:
                        return self._claim([(frame, open_tasks[0])], True), True
                    if not any((frame, t) in self._running for t in self._tasks) and not any(
                        self._not_before.get((frame, t), 0.0) > now for t in self._tasks
                    ):
                        self._requested = None
                if lane == "any" and not self._paused:
                    jobs = self._sweep_jobs(now)
                    if jobs:
                        return self._claim(jobs, False), False
                waits = [t for t in self._not_before.values() if t > now]
                if waits:
                    wake = min(waits) - now
                quiet = not self._running and not waits and (self._paused or not self._pending)
                if quiet and not self._idle.is_set():
                    self._idle.set()
                    self.listener.idle()  # listeners must not block: the scheduler's lock is held
                self._lock.wait(wake)

    def _sweep_jobs(self, now: float) -> list[Job]:
        batch = self.config.batch_size if self.backend.supports_batching and self._preempt else 1
        jobs: list[Job] = []
        for frame in self._sweep_order():
            for task in self._tasks:
                if self._available((frame, task), now):
                    jobs.append((frame, task))
                    if len(jobs) >= max(1, batch):
                        return jobs
        return jobs

    # ------------------------------------------------------------------ workers
    def _run(self) -> None:
        reason: str | None = None
        try:
            with self._reader_factory(self.video) as reader:
                self._reader = reader
                self.fps, self.frame_count = float(reader.fps), reader.frame_count
                info = self.store.case_info()
                self._identity = VideoIdentity(self.video, info.fingerprint if info is not None else None)
                self._reader_signature = self._identity.signature
                with self._lock:
                    for task in self._tasks:
                        stored = self.store.analysed_frames(self.backend.model_id, self.profile.version, task)
                        self._done.update((f, task) for f in stored)
                    self._plan_sweep()
                self._notify(self.listener.progress, *self.progress)
                lanes = ["any"] * (1 if self._preempt else max(1, self.config.concurrency))
                lanes += [] if self._preempt else ["requested"] * len(self._tasks)
                failures: list[BaseException] = []
                threads = [
                    threading.Thread(target=self._work, args=(lane, failures), name=f"surgview-job-{i}", daemon=True)
                    for i, lane in enumerate(lanes)
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                if failures:
                    raise failures[0]
        except (BackendError, StoreError, VideoError) as exc:
            reason, self.failure = str(exc), exc
        except Exception as exc:  # the worker must report, never die silently
            reason, self.failure = f"{type(exc).__name__}: {exc}", exc
        finally:
            if self._reader is not None and self._reopened:
                self._reader.close()
            self._reader = None
            self.error = reason
            self._idle.set()
            self._notify(self.listener.stopped, reason)

    def _work(self, lane: str, failures: list[BaseException]) -> None:
        try:
            while (taken := self._take(lane)) is not None:
                jobs, requested = taken
                slots = self.config.slots if not requested else None
                if slots is not None and not self._wait_for_slot(slots, jobs):
                    slots = None  # stopping or cancelled while waiting: the job returns to the queue
                try:
                    if len(jobs) > 1:
                        self._compute_batch(jobs)
                    else:
                        self._compute(jobs[0], requested)
                finally:
                    if slots is not None:
                        slots.release()
        except (BackendUnavailable, StoreError, VideoError, Exception) as exc:
            with self._lock:
                failures.append(exc)
                self._stop = True
                for running in self._running.values():
                    running.cancel.set()
                self._lock.notify_all()

    def _wait_for_slot(self, slots: threading.Semaphore, jobs: list[Job]) -> bool:
        """Take one of the slots shared with other cases' schedulers (analyze over several cases);
        False when the jobs were cancelled meanwhile (they then run at once and end as cancelled)."""
        while not slots.acquire(timeout=0.05):
            with self._lock:
                if self._stop or any(self._running[job].cancel.is_set() for job in jobs):
                    return False
        return True

    def _notify(self, callback: Callable[..., None], *args: object) -> None:
        with self._listener_lock:
            callback(*args)

    def _image(self, frame: int) -> np.ndarray | None:
        """The frame as the profile sends it, decoded once for all of its questions."""
        with self._reader_lock:
            image = self._images.get(frame)
            if image is not None:
                return image
            try:
                image = self._decode(frame)
            except VideoChanged:
                raise  # stops the analysis (see _work)
            except (VideoError, IndexError) as exc:
                self._fail_frame(frame, str(exc))
                return None
            self._images[frame] = image
            while len(self._images) > 2 * (self.workers + 1):
                self._images.popitem(last=False)
            return image

    def _decode(self, frame: int) -> np.ndarray:
        """Under the reader lock: the prepared frame. A read that fails because the file vanished or was
        replaced stops the analysis (raised past the frame); a merely touched file is reopened."""
        assert self._reader is not None
        try:
            return self.profile.prepare_image(self._reader.frame(frame))
        except VideoError:
            if self._identity is None:
                raise
            self._identity.check()
            if self._identity.signature == self._reader_signature:
                raise  # the file is as the reader opened it: this frame cannot be read
        if self._reopened:
            self._reader.close()
        self._reader, self._reopened = VideoReader(self.video), True
        self._reader_signature = self._identity.signature
        return self.profile.prepare_image(self._reader.frame(frame))

    def _fail_frame(self, frame: int, message: str) -> None:
        with self._lock:
            self._reasons[frame] = message
            self._failed.update((frame, t) for t in self._tasks)
            self._forced.difference_update((frame, t) for t in self._tasks)
            self._settle(frame)
        self._notify(self.listener.frame_failed, frame, message)

    def _settle(self, frame: int) -> None:
        """Under the lock: drop ``frame`` from the sweep once all of its questions are settled."""
        if self._settled(frame):
            i = bisect.bisect_left(self._pending, frame)
            if i < len(self._pending) and self._pending[i] == frame:
                self._pending.pop(i)
                self._completed_at.append(time.monotonic())
            self._lock.notify_all()

    def _claim(self, jobs: list[Job], requested: bool) -> list[Job]:
        """Under the lock: mark ``jobs`` as running, so no other worker takes them."""
        self._idle.clear()
        for job in jobs:
            self._running[job] = _Running(None, requested, threading.Event())
            self._forced.discard(job)
        return jobs

    def _release(self, job: Job) -> None:
        with self._lock:
            self._running.pop(job, None)
            self._lock.notify_all()

    def _compute(self, job: Job, requested: bool) -> None:
        frame, task = job
        running = self._running[job]
        try:
            image = self._image(frame)
            if image is None:
                return
            request = self.profile.request(
                task, image, *self._source_size(), max_tokens=self.config.max_new_tokens, limits=self.config.limits
            )
            self._notify(self.listener.question_started, frame, task, requested)
            pieces: list[str] = []
            try:
                stream = self.backend.stream(request, running.cancel)
                running.stream = stream
                for piece in stream:
                    pieces.append(piece)
                    if self.config.stream_sweep_text or requested or frame == self._playhead:
                        self._notify(self.listener.question_piece, frame, task, piece)
            except BackendUnavailable:
                raise
            except BackendError as exc:
                if running.cancel.is_set():
                    return  # cancelled while failing: the job stays queued
                self._job_failed(job, exc)
                return
            if stream.stats.finish_reason == "cancelled" or running.cancel.is_set():
                return  # pre-empted or stopping: the job stays queued
            stats = stream.stats
            self._commit(job, "".join(pieces), stats.first_token_s, stats.total_s, stats.tokens, requested)
        finally:
            self._release(job)

    def _source_size(self) -> tuple[int, int]:
        reader = self._reader
        return (reader.width, reader.height) if reader is not None else (0, 0)

    def _job_failed(self, job: Job, exc: BackendError) -> None:
        frame, task = job
        with self._lock:
            attempts = self._attempts.get(job, 0) + 1
            self._attempts[job] = attempts
            if getattr(exc, "retryable", False) and attempts < _MAX_ATTEMPTS:
                delay = min(_RETRY_MAX_S, _RETRY_INITIAL_S * 2 ** (attempts - 1))
                self._not_before[job] = time.monotonic() + delay
                self._lock.notify_all()
                return
            where = f" ({task})" if len(self._tasks) > 1 else ""
            self._reasons[frame] = f"{exc}{where}"
            self._failed.add(job)
            self._settle(frame)
        self._notify(self.listener.frame_failed, frame, f"{exc}{where}")

    def _compute_batch(self, jobs: list[Job]) -> None:
        claimed = {job: self._running[job] for job in jobs}
        try:
            ready = [(job, img) for job in jobs if (img := self._image(job[0])) is not None]
            if not ready:
                return
            width, height = self._source_size()
            requests = [
                self.profile.request(
                    task, img, width, height, max_tokens=self.config.max_new_tokens, limits=self.config.limits
                )
                for (_, task), img in ready
            ]
            start = time.perf_counter()
            texts = self.backend.generate_batch(requests)
            per_item = (time.perf_counter() - start) / len(ready)
            for (job, _), text in zip(ready, texts, strict=True):
                if not claimed[job].cancel.is_set():
                    self._commit(job, text, None, per_item, 0, False)
        finally:
            for job in jobs:
                self._release(job)

    def _commit(
        self, job: Job, text: str, first_token_s: float | None, total_s: float, tokens: int, requested: bool
    ) -> None:
        frame, task = job
        # Read in the ontology of the procedure the profile asks in: a suturing answer's tools are EndoVis17's.
        result = FrameResult.from_text(
            frame,
            self.backend.model_id,
            self.profile.version,
            task,
            text,
            first_token_s=first_token_s,
            total_s=total_s,
            tokens=tokens,
        )
        if self._identity is not None:
            self._identity.check()  # never file what may come from another file under this one's fingerprint
        self.store.put_result(result)
        with self._lock:
            self._done.add(job)
            self._failed.discard(job)
            self._not_before.pop(job, None)
            self._attempts.pop(job, None)
            complete = all((frame, t) in self._done for t in self._tasks)
            self._settle(frame)
        self._notify(self.listener.question_done, result, requested, complete)
        with self._listener_lock:
            self.listener.progress(*self.progress)
            self.listener.throughput(*self.rate())
