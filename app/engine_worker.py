"""The engine's child process: loads a backend and analyses the open case, driven over a pipe.

The viewer runs the engine in a process of its own (:class:`app.engine_link.EngineLink` starts
it), so a crash in torch, a CUDA fault or an out-of-memory kill takes down only the engine, and
generation never competes with the UI for the GIL. This module therefore imports no Qt.

Protocol: the frozen dataclasses of :mod:`engine.worker_protocol` (parent → child: ``OpenCase``,
``CloseCase``, ``Request``, ``Reask``, ``Pause``, ``Resume``, ``SetStride``, ``Shutdown``; child →
parent: ``Ready``, ``Error``, ``CaseOpened``/``CaseFailed``/``CaseClosed``, the scheduler's
``Started``, ``Pieces``, ``Done``, ``Failed``, ``Progress``, ``Rate``, ``Idle``, ``Stopped``, then
``Crashed`` and ``Bye``), served in one place (:meth:`_Engine.handle`).

A model profile may ask several questions of a frame (``task`` names the question); ``Done`` comes
once per question, its info saying whether the frame is now complete. ``seq`` lets the parent drop
scheduler events of a case it has since replaced. ``Done`` info holds the store keys (model_id,
prompt_version, task) so the viewer can read the result from the case store, the source of truth,
plus status, timings and the raw text. Text pieces stream only for the frame at the playhead (the
sweep's many concurrent answers would flood the pipe); they are coalesced per question (at most
one message per ``flush_s``) and always flushed before any other message.

The child exits when the parent goes away: EOF on the pipe, or the parent's sentinel (also
watched while the model loads, which can take minutes for a large model).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from engine.backend_factory import LOCAL_KINDS, BackendSpec, answer_limits, open_backend
from engine.backend_factory import default_threads as engine_default_threads
from engine.backends.base import Backend, BackendError
from engine.case_procedure import ProcedureChoiceError, case_procedure
from engine.procedures import procedure_of_version
from engine.profiles import ModelProfile, ProfileError, resolve_profile
from engine.scheduler import AnalysisScheduler, SchedulerConfig, SchedulerListener
from engine.store import CaseStore, FrameResult, StoreError
from engine.video import VideoError, VideoReader
from engine.worker_protocol import (
    Bye,
    CaseClosed,
    CaseFailed,
    CaseOpened,
    CloseCase,
    Command,
    Crashed,
    Done,
    Error,
    Event,
    Failed,
    Idle,
    OpenCase,
    Pause,
    Pieces,
    Progress,
    Rate,
    Ready,
    Reask,
    Request,
    Resume,
    SetStride,
    Shutdown,
    Started,
    Stopped,
)

__all__ = ["WorkerSpec", "default_threads", "profile_info", "run"]

VIEWER_GIVE_UP_S = 60.0  # a server unreachable this long stops the case's analysis (Restart resumes it)
FLUSH_S = 0.015  # text pieces are sent at most this often: ~60 messages a second while streaming
_CLOSE = object()


def default_threads() -> int:
    """CPU threads of the viewer's engine when none are chosen: the rule every surgview engine follows
    (half the cores, never all: the UI keeps one, and another engine running beside it shares the rest)."""
    return engine_default_threads()


@dataclass(frozen=True)
class WorkerSpec:
    """The spec dict, checked: the backend choice plus how to analyse."""

    backend: BackendSpec
    task: str | None = None  # surgview profile: its one question (default Task.FRAME)
    profile: str | None = None  # None: the model manifest's, else the stated default
    stride_s: float = 1.0
    max_new_tokens: int | None = None  # None: the profile's
    batch_size: int = 1
    sweep: bool = True
    concurrency: int = 16  # requests in flight to a model server (a local model runs one at a time)
    flush_s: float = FLUSH_S

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> WorkerSpec:
        kind = str(spec.get("kind") or "transformers")
        threads = spec.get("threads")
        if threads is None and kind in LOCAL_KINDS:
            threads = default_threads()
        backend = BackendSpec(
            kind=kind,
            model=_opt_str(spec.get("model")),
            url=_opt_str(spec.get("url")),
            urls=tuple(str(u) for u in spec.get("urls") or () if u),
            api_key=_opt_str(spec.get("api_key")),
            threads=int(threads) if threads else None,
            give_up_s=float(spec.get("give_up_s") or VIEWER_GIVE_UP_S),
        )
        tokens = spec.get("max_new_tokens")
        return cls(
            backend=backend,
            task=_opt_str(spec.get("task")),
            profile=_opt_str(spec.get("profile")),
            stride_s=float(spec.get("stride_s", 1.0)),
            max_new_tokens=int(tokens) if tokens else None,
            batch_size=int(spec.get("batch_size", 1)),
            sweep=bool(spec.get("sweep", True)),
            concurrency=max(1, int(spec.get("concurrency") or 16)),
            flush_s=float(spec.get("flush_s", FLUSH_S)),
        )


def _opt_str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


# ------------------------------------------------------------------------------------- sending
class Outbox:
    """Sends messages from any thread without blocking it: a queue drained by one sender thread,
    which coalesces text pieces (one message per ``flush_s`` at most, flushed before anything
    else) and notices a closed pipe (``broken``: the parent is gone)."""

    def __init__(self, conn: Connection, flush_s: float = FLUSH_S):
        self._conn = conn
        self._flush_s = flush_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.broken = threading.Event()
        self._thread = threading.Thread(target=self._run, name="surgview-engine-send", daemon=True)
        self._thread.start()

    def put(self, message: Event) -> None:
        self._queue.put(message)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued, then stop the sender thread."""
        self._queue.put(_CLOSE)
        self._thread.join(timeout)

    def _send(self, message: Event) -> None:
        if self.broken.is_set():
            return
        try:
            self._conn.send(message)
        except (OSError, EOFError, ValueError):  # the parent closed its end or died
            self.broken.set()

    def _run(self) -> None:
        frame: tuple[int, str] | None = None  # (frame, task) of the pieces held
        text: list[str] = []
        last_flush = 0.0

        def flush() -> None:
            nonlocal frame, last_flush
            if text:
                self._send(Pieces(*frame, "".join(text)))
                text.clear()
                last_flush = time.monotonic()
            frame = None

        while True:
            timeout = None if not text else max(0.0, last_flush + self._flush_s - time.monotonic())
            try:
                message = self._queue.get(timeout=timeout)
            except queue.Empty:
                flush()
                continue
            if message is _CLOSE:
                flush()
                return
            if not isinstance(message, Pieces):
                flush()
                self._send(message)
                continue
            key = (message.frame, message.task)
            if frame is not None and key != frame:
                flush()
            frame = key
            text.append(message.text)
            if time.monotonic() - last_flush >= self._flush_s:
                flush()  # the first piece after a pause goes out at once


class _Forwarder(SchedulerListener):
    """Scheduler callbacks → messages. Never blocks: the scheduler calls ``idle`` under its lock."""

    def __init__(self, outbox: Outbox):
        self._out = outbox

    def question_started(self, frame: int, task: str, requested: bool) -> None:
        self._out.put(Started(frame, task, requested))

    def question_piece(self, frame: int, task: str, piece: str) -> None:
        self._out.put(Pieces(frame, task, piece))

    def question_done(self, result: FrameResult, requested: bool, frame_complete: bool) -> None:
        self._out.put(Done(result.frame, {**done_info(result, requested), "frame_complete": frame_complete}))

    def throughput(self, frames_per_s: float, eta_s: float | None) -> None:
        self._out.put(Rate(frames_per_s, eta_s))

    def frame_failed(self, frame: int, message: str) -> None:
        self._out.put(Failed(frame, message))

    def progress(self, done: int, total: int) -> None:
        self._out.put(Progress(done, total))

    def idle(self) -> None:
        self._out.put(Idle())

    def stopped(self, error: str | None) -> None:
        self._out.put(Stopped(error))


def done_info(result: FrameResult, requested: bool) -> dict[str, Any]:
    """What the viewer needs about a finished frame: the store keys to read it back, and the rest."""
    return {
        "frame": result.frame,
        "status": result.status,
        "tokens": result.tokens,
        "total_s": result.total_s,
        "first_token_s": result.first_token_s,
        "requested": requested,
        "model_id": result.model_id,
        "prompt_version": result.prompt_version,
        "task": result.task,
        "raw_text": result.raw_text,
    }


# ------------------------------------------------------------------------------------- the engine
class _Engine:
    """The loaded backend and at most one open case (its store and scheduler)."""

    def __init__(self, backend: Backend, spec: WorkerSpec, outbox: Outbox, profile: ModelProfile):
        self.backend = backend
        self.spec = spec
        self.profile = profile
        self.out = outbox
        self.stride_s = spec.stride_s
        self.paused = False
        self.scheduler: AnalysisScheduler | None = None
        self.store: CaseStore | None = None
        self._profiles: dict[str, ModelProfile] = {}  # by procedure: the profile asking in its prompts

    def case_profile(self, video: Path, fingerprint: str | None) -> tuple[ModelProfile, str]:
        """The profile this case is asked with, and a line saying why: the engine's profile in the case's
        procedure (chosen for the case in the viewer or with ``--procedure``, else its dataset layout's, else
        cholecystectomy), so a suturing case is asked its own default question in its own vocabulary."""
        try:
            chosen = case_procedure(video, fingerprint)
        except ProcedureChoiceError as exc:
            return self.profile, str(exc)
        proc = chosen.procedure
        if proc.name == procedure_of_version(self.profile.version).name:
            return self.profile, chosen.note
        if proc.name not in self._profiles:
            task = self.spec.task if self.spec.task in proc.tasks else None  # else the procedure's default task
            kind, model = self.spec.backend.kind, self.spec.backend.model
            try:
                self._profiles[proc.name], _ = resolve_profile(
                    self.spec.profile, kind=kind, model=model, task=task, procedure=proc.name
                )
            except ProfileError as exc:
                return self.profile, f"{chosen.note}; asked as {self.profile.name} instead: {exc}"
        return self._profiles[proc.name], chosen.note

    def open_case(self, seq: int, path: str) -> None:
        self.close_case()
        video = Path(path)
        reader: VideoReader | None = None
        try:
            # Opening indexes every packet (seconds for a long case): the scheduler's worker
            # thread takes this reader over rather than indexing the file again.
            reader = VideoReader(video)
            width, height, fps, frames = reader.width, reader.height, float(reader.fps), reader.frame_count
            store = CaseStore.for_video(video, fps=fps, frame_count=frames)
        except (VideoError, StoreError, OSError) as exc:
            if reader is not None:
                reader.close()
            self.out.put(CaseFailed(seq, path, str(exc)))
            return
        config = SchedulerConfig(
            stride_s=self.stride_s,
            batch_size=self.spec.batch_size,
            max_new_tokens=self.spec.max_new_tokens,
            sweep=self.spec.sweep,
            concurrency=self.spec.concurrency,
            stream_sweep_text=False,
            limits=answer_limits(self.spec.backend.kind),
        )
        handover = reader
        known = store.case_info()
        profile, procedure_note = self.case_profile(video, known.fingerprint if known is not None else None)
        scheduler = AnalysisScheduler(
            video, self.backend, store, profile, config, _Forwarder(self.out), reader_factory=lambda _: handover
        )
        if self.paused:
            scheduler.pause()
        info = {
            "model_id": self.backend.model_id,
            "prompt_version": profile.version,
            "profile": profile.name,
            "tasks": list(profile.tasks),
            "task": profile.tasks[0],
            "procedure": procedure_of_version(profile.version).name,
            "procedure_note": procedure_note,
            "fps": fps,
            "frame_count": frames,
            "width": width,
            "height": height,
            "store": str(store.path),
        }
        self.store, self.scheduler = store, scheduler
        self.out.put(CaseOpened(seq, path, info))  # before any event of the new scheduler
        scheduler.start()

    def close_case(self) -> None:
        scheduler, store = self.scheduler, self.store
        self.scheduler = self.store = None
        if scheduler is not None:
            scheduler.stop(wait=True, timeout=30.0)
        if store is not None:
            store.close()

    def handle(self, message: Command) -> bool:
        """Serve one command; False on shutdown."""
        scheduler = self.scheduler
        match message:
            case OpenCase(seq, path):
                self.open_case(seq, path)
            case CloseCase(seq):
                self.close_case()
                self.out.put(CaseClosed(seq))
            case Request(frame) if scheduler is not None:
                scheduler.request(int(frame))
            case Reask(frame) if scheduler is not None:
                scheduler.reask(int(frame))
            case Pause():
                self.paused = True
                if scheduler is not None:
                    scheduler.pause()
            case Resume():
                self.paused = False
                if scheduler is not None:
                    scheduler.resume()
            case SetStride(seconds):
                self.stride_s = float(seconds)
                if scheduler is not None:
                    scheduler.set_stride(self.stride_s)
            case Shutdown():
                return False
        return True

    def close(self) -> None:
        self.close_case()
        self.backend.close()


def profile_info(profile: ModelProfile, note: str) -> dict[str, Any]:
    """What the viewer needs of the profile: its name, why it was chosen, its store version, its questions."""
    return {
        "name": profile.name,
        "note": note,
        "version": profile.version,
        "questions": [{"task": q.task, "title": q.title} for q in profile.questions],
    }


def _resolve_profile(spec: WorkerSpec) -> tuple[ModelProfile, str]:
    try:
        return resolve_profile(spec.profile, kind=spec.backend.kind, model=spec.backend.model, task=spec.task)
    except ProfileError as exc:
        raise BackendError(str(exc)) from exc


def _load_backend(spec: WorkerSpec) -> Backend:
    """Open the backend; a bad task, profile or model directory is refused before torch is imported (fast)."""
    _resolve_profile(spec)
    if spec.backend.kind == "transformers" and spec.backend.model:
        from engine.modeldir import ModelDirError, inspect_model_dir

        try:
            inspect_model_dir(spec.backend.model)
        except ModelDirError as exc:
            raise BackendError(str(exc)) from exc
    return open_backend(spec.backend)


def _exit_when_orphaned(sentinel: int | None, done: threading.Event) -> None:
    """While the model loads the pipe is not read: leave at once if the parent dies meanwhile."""
    if sentinel is None:
        return
    while not done.is_set():
        if wait([sentinel], 0.2):
            os._exit(0)  # nothing written yet; a half-loaded model is not worth a clean exit


def _parent_sentinel() -> int | None:
    parent = multiprocessing.parent_process()
    return parent.sentinel if parent is not None else None


def run(conn: Connection, spec: dict[str, Any], *, exit_process: bool = True) -> None:
    """The child's main: load the backend, report ``ready`` or ``error``, serve commands until
    ``shutdown`` or until the parent goes away, then stop every thread it started and (with
    ``exit_process``) leave at once."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    try:
        worker_spec = WorkerSpec.from_dict(spec)
    except (TypeError, ValueError) as exc:
        conn.send(Error(f"bad engine settings: {exc}"))
        conn.close()
        return
    outbox = Outbox(conn, worker_spec.flush_s)
    sentinel = _parent_sentinel()
    loaded = threading.Event()
    watch = threading.Thread(target=_exit_when_orphaned, args=(sentinel, loaded), name="surgview-orphan", daemon=True)
    watch.start()
    backend: Backend | None = None
    try:
        backend = _load_backend(worker_spec)
    except BackendError as exc:
        failure = str(exc)
    except Exception as exc:  # torch/transformers raise many kinds; the app shows one line
        failure = f"the engine could not start: {type(exc).__name__}: {exc}"
    finally:
        loaded.set()
        watch.join()
    if backend is None:
        outbox.put(Error(failure))
        outbox.close()
        conn.close()
        return
    profile, note = _resolve_profile(worker_spec)
    engine = _Engine(backend, worker_spec, outbox, profile)
    outbox.put(Ready(backend.model_id, backend.device, profile_info(profile, note)))
    try:
        _serve(conn, engine, outbox, sentinel)
    except Exception as exc:  # report and exit: the parent offers a restart
        outbox.put(Crashed(f"{type(exc).__name__}: {exc}"))
    finally:
        with contextlib.suppress(Exception):
            engine.close()
        outbox.put(Bye())
        outbox.close()
        conn.close()
    if exit_process:
        _exit_quickly()


def _exit_quickly() -> None:
    """Everything is closed and committed: skip the interpreter's teardown of torch (about a
    second on CPU), which would only delay the viewer's shutdown."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def _serve(conn: Connection, engine: _Engine, outbox: Outbox, sentinel: int | None) -> None:
    handles: list[Any] = [conn] if sentinel is None else [conn, sentinel]
    while not outbox.broken.is_set():
        ready = wait(handles, 1.0)
        if sentinel is not None and sentinel in ready:
            return  # the parent died
        if conn not in ready:
            continue
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent closed the pipe or died
        if not engine.handle(message):
            return
