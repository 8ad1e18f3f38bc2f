"""The viewer's handle on the engine process: start it, talk to it, notice when it dies.

The engine (:mod:`app.engine_worker`) runs in a child process the app owns: a crash in torch
or an out-of-memory kill costs the engine, not the viewer, and generation never holds the UI's
GIL. :class:`EngineLink` lives on the UI thread. Two plain threads per child move the messages:
a sender (so no call on the UI thread ever waits on a full pipe) and a reader, which hands each
message to the UI thread over a queued signal; the public signals are then emitted there.

The reader is also the death detector: EOF on the pipe means the child is gone (the kernel
closes its end however it ended); the reader reaps it and reports the exit code, so ``died``
comes within milliseconds of a kill, with the signal or exit code in its reason. It is the only
thread that waits on the process; the UI thread just reads the process sentinel.

The case store stays the source of truth: the child commits each frame as it completes, so a
dead engine loses at most the frame in flight, and ``done`` carries the keys to read it back.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import signal
import threading
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject, Qt, Signal

from app import engine_worker
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
    SchedulerEvent,
    SetStride,
    Shutdown,
    Started,
    Stopped,
)

__all__ = ["STATES", "EngineLink", "death_reason"]

STATES = ("stopped", "starting", "ready", "failed", "died")


def death_reason(exitcode: int | None, crash: str | None = None) -> str:
    """One line for the status bar: why the engine process went away."""
    if crash:
        return f"the engine stopped unexpectedly: {crash}"
    if exitcode is None:
        return "the engine stopped answering (its connection closed)"
    if exitcode < 0:
        number = -exitcode
        try:
            name = f", {signal.Signals(number).name}"
        except ValueError:
            name = ""
        hint = ": the system may have run out of memory" if number == signal.SIGKILL else ""
        return f"the engine stopped unexpectedly (killed by signal {number}{name}){hint}"
    return f"the engine stopped unexpectedly (exit code {exitcode})"


@dataclass(eq=False)
class _Child:
    """One engine process and the two threads that talk to it."""

    generation: int
    process: BaseProcess
    conn: Connection
    outbox: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    reader: threading.Thread | None = None
    sender: threading.Thread | None = None
    expected_exit: bool = False  # an error was reported, or we asked it to shut down
    crash: str | None = None  # the child's own last words, if it sent any


@dataclass(frozen=True)
class _Exited:
    """The reader's last word about a child (not part of the protocol): its pipe closed, it was reaped."""

    exitcode: int | None


class EngineLink(QObject):
    """The engine process seen from the UI thread. Methods return at once; results arrive as signals.

    Signals (all emitted on the UI thread): ``ready(model_id, device, profile)`` with the model
    profile as a dict (name, note: which and why, version: the store's prompt_version, questions:
    [{task, title}]); ``error(message)`` when the backend cannot load (state "failed");
    ``died(reason)`` when the process ends unexpectedly (state "died"; :meth:`restart` offers a
    fresh one); per question of a frame ``started(frame, task, requested)``, ``pieces(frame, task,
    text)`` (the frame at the playhead only), ``done(frame, info)`` (info: task, frame_complete,
    store keys, timings, raw_text); per frame ``failed(frame, message)``; ``progress(done, total)``
    and ``rate(frames_per_s, eta_s or None)`` of the background sweep; ``idle()``;
    ``case_opened(path, info)`` with the store keys (model_id, prompt_version, profile, tasks) and
    the video's fps, frame_count, width, height; ``case_failed(path, message)``;
    ``stopped(message)`` when the open case's analysis ends on an error (a vanished video, a full
    disk); ``state_changed(state)``.
    """

    ready = Signal(str, str, object)  # model_id, device, profile dict
    error = Signal(str)
    died = Signal(str)
    state_changed = Signal(str)
    case_opened = Signal(str, object)  # path, info dict (``object``: Qt would convert a dict)
    case_failed = Signal(str, str)
    started = Signal(int, str, bool)  # frame, task, requested
    pieces = Signal(int, str, str)  # frame, task, text
    done = Signal(int, object)  # frame, info dict: status, tokens, timings, store keys, raw_text
    failed = Signal(int, str)
    progress = Signal(int, int)
    rate = Signal(float, object)  # frames/s of the sweep, seconds left (None: unknown)
    idle = Signal()
    stopped = Signal(str)

    _arrived = Signal(int, object)  # (generation, message): reader thread → UI thread

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._arrived.connect(self._on_message, Qt.ConnectionType.QueuedConnection)
        app = QCoreApplication.instance()
        if app is not None:  # a safety net: the window should stop the engine when it closes
            app.aboutToQuit.connect(self.stop)
        self._child: _Child | None = None
        self._generation = 0
        self._state = "stopped"
        self._spec: dict[str, Any] | None = None
        self._case_path: str | None = None
        self._case_seq = 0  # the case last asked for; events of older cases are dropped
        self._case_ack = 0  # the case the child last confirmed (opened, failed or closed)
        self._last_frame: int | None = None
        self._paused = False
        self._stride_s: float | None = None
        self.case_info: dict[str, Any] | None = None  # from case_opened: how to read the store
        self.model_id: str | None = None
        self.device: str | None = None
        self.profile: dict[str, Any] | None = None  # from ready: name, note, version, questions
        self.last_error: str | None = None  # the last error or death reason, for the status bar

    # ------------------------------------------------------------------------------ status
    @property
    def state(self) -> str:
        """One of :data:`STATES`."""
        return self._state

    @property
    def alive(self) -> bool:
        """True while an engine process runs (it may still be loading)."""
        child = self._child
        return child is not None and not wait([child.process.sentinel], 0)

    @property
    def pid(self) -> int | None:
        return self._child.process.pid if self._child is not None else None

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def spec(self) -> dict[str, Any] | None:
        return dict(self._spec) if self._spec is not None else None

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self.state_changed.emit(state)

    # ------------------------------------------------------------------------------ lifecycle
    def start(self, spec: dict[str, Any]) -> None:
        """Spawn an engine with ``spec`` (a running one is stopped first); ``ready`` or ``error`` follows.

        ``spec``: kind ("transformers" | "onnx" | "openai"), model (a model directory, or the served
        model's name), url (openai: http://HOST:PORT/v1) or urls (several servers of one model),
        give_up_s (openai: how long every server may fail before the analysis stops), api_key,
        threads (torch CPU threads; default all cores but one), profile (None: the model's own, else
        the stated default), task (the surgview profile's one question), concurrency (requests in
        flight to a server, 16), stride_s (1.0), max_new_tokens (None: the profile's), batch_size
        (1), sweep (True), flush_s (0.015: how often streamed text is sent).
        """
        if self._child is not None:
            self.stop()
        self._spec = dict(spec)
        self._paused, self._stride_s = False, None
        self._case_path, self._last_frame, self.case_info = None, None, None
        self.last_error = None
        self._generation += 1
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe(duplex=True)
        process = ctx.Process(target=engine_worker.run, args=(theirs, self._spec), name="surgview-engine", daemon=True)
        try:
            process.start()
        except Exception as exc:  # no executable, no memory, an unpicklable spec: one line, state "failed"
            ours.close()
            theirs.close()
            self._fail(f"the engine could not be started: {exc}")
            return
        theirs.close()  # only the child holds its end now: its exit is EOF here
        child = _Child(self._generation, process, ours)
        child.reader = threading.Thread(target=self._read, args=(child,), name="surgview-link-read", daemon=True)
        child.sender = threading.Thread(target=_send_loop, args=(child,), name="surgview-link-send", daemon=True)
        self._child = child
        self._set_state("starting")
        child.reader.start()
        child.sender.start()

    def restart(self) -> None:
        """A fresh engine with the same spec; it reopens the last case and asks for the last frame."""
        if self._spec is None:
            raise RuntimeError("the engine was never started")
        case, frame, paused, stride = self._case_path, self._last_frame, self._paused, self._stride_s
        self.start(self._spec)
        if stride is not None:
            self.set_stride(stride)
        if paused:
            self.pause()  # before the case opens, so its sweep starts held
        if case is not None:
            self.open_case(case)
            if frame is not None:
                self.request(frame)

    def stop(self, timeout: float = 5.0) -> None:
        """Shut the engine down (graceful, then terminate, then kill); safe to call twice.

        This waits for the process (normally well under a second), so call it when closing,
        not while the user works.
        """
        child, self._child = self._child, None
        if child is not None:
            child.expected_exit = True
            child.outbox.put(Shutdown())
            child.outbox.put(None)
            assert child.reader is not None and child.sender is not None
            if self._state == "starting":  # still loading: nothing to save, and no wait for the load
                with contextlib.suppress(OSError):
                    child.process.terminate()
            child.reader.join(timeout)  # the reader sees EOF when the child exits, then reaps it
            for escalate in (child.process.terminate, child.process.kill):
                if not child.reader.is_alive():
                    break
                with contextlib.suppress(OSError):
                    escalate()
                child.reader.join(2.0)
            child.sender.join(1.0)
            if not child.reader.is_alive():
                child.conn.close()
        self._set_state("stopped")

    # ------------------------------------------------------------------------------ commands
    def open_case(self, path: str) -> None:
        """Open a case: its stored results stay, and its background analysis starts on its own."""
        self._case_path = str(path)
        self._case_seq += 1
        self._last_frame = None
        self.case_info = None
        self._send(OpenCase(self._case_seq, self._case_path))

    def close_case(self) -> None:
        self._case_path, self._last_frame, self.case_info = None, None, None
        self._case_seq += 1
        self._send(CloseCase(self._case_seq))

    def request(self, frame: int) -> None:
        """The playhead is on ``frame``: analyse it first (no work if it is stored)."""
        self._last_frame = int(frame)
        self._send(Request(int(frame)))

    def reask(self, frame: int) -> None:
        """Generate ``frame`` again although it is stored."""
        self._last_frame = int(frame)
        self._send(Reask(int(frame)))

    def pause(self) -> None:
        """Hold the background sweep; frames the user asks for are still analysed."""
        self._paused = True
        self._send(Pause())

    def resume(self) -> None:
        self._paused = False
        self._send(Resume())

    def set_stride(self, seconds: float) -> None:
        self._stride_s = float(seconds)
        self._send(SetStride(float(seconds)))

    def _send(self, message: Command) -> None:
        if self._child is not None:  # no engine: the intent is kept (restart replays it)
            self._child.outbox.put(message)

    # ------------------------------------------------------------------------------ receiving
    def _read(self, child: _Child) -> None:
        """Reader thread: every message to the UI thread, then the exit code once the pipe closes."""
        while True:
            try:
                message = child.conn.recv()
            except (EOFError, OSError):
                break
            except Exception as exc:  # an unpicklable message: the protocol is broken, treat as death
                child.crash = f"garbled message from the engine ({type(exc).__name__})"
                break
            if not self._post(child.generation, message):
                return
        child.process.join(5.0)  # the only thread that waits on the process (reaps it)
        self._post(child.generation, _Exited(child.process.exitcode))

    def _post(self, generation: int, message: Event | _Exited) -> bool:
        try:
            self._arrived.emit(generation, message)
        except RuntimeError:  # the link was deleted under us
            return False
        return True

    def _on_message(self, generation: int, message: Event | _Exited) -> None:
        """Every message of the child, on the UI thread: the one place the protocol is dispatched."""
        child = self._child
        if child is None or generation != child.generation:
            return  # from an engine since stopped or replaced
        if isinstance(message, SchedulerEvent) and (self._case_ack != self._case_seq or self._case_path is None):
            return  # an event of a case since replaced or closed
        match message:
            case Pieces(frame, task, text):
                self.pieces.emit(frame, task, text)
            case Started(frame, task, requested):
                self.started.emit(frame, task, bool(requested))
            case Done(frame, info):
                self.done.emit(frame, info)
            case Progress(done, total):
                self.progress.emit(done, total)
            case Rate(frames_per_s, eta_s):
                self.rate.emit(float(frames_per_s), eta_s)
            case Failed(frame, text):
                self.failed.emit(frame, text)
            case Idle():
                self.idle.emit()
            case Stopped(error):
                if error:  # a deliberate stop is not news; an error is
                    self.stopped.emit(error)
            case Ready(model_id, device, profile):
                self.model_id, self.device, self.profile = model_id, device, profile
                self._set_state("ready")
                self.ready.emit(model_id, device, profile)
            case Error(text):
                child.expected_exit = True
                self._fail(text)
            case CaseOpened(seq, path, info):
                self._case_ack = seq
                if seq == self._case_seq:
                    self.case_info = info
                    self.case_opened.emit(path, info)
            case CaseFailed(seq, path, text):
                self._case_ack = seq
                if seq == self._case_seq:
                    self.case_failed.emit(path, text)
            case CaseClosed(seq):
                self._case_ack = seq
            case Crashed(text):
                child.crash = text
            case Bye():
                child.expected_exit = True
            case _Exited(exitcode):
                self._on_exit(child, exitcode)

    def _on_exit(self, child: _Child, exitcode: int | None) -> None:
        self._child = None
        child.outbox.put(None)
        if exitcode is None:  # the pipe closed but the process hangs on
            with contextlib.suppress(OSError):
                child.process.kill()
        if child.sender is not None:
            child.sender.join(1.0)
        child.conn.close()
        if child.expected_exit and child.crash is None:
            if self._state != "failed":
                self._set_state("stopped")
            return
        reason = death_reason(exitcode, child.crash)
        self.last_error = reason
        self._set_state("died")
        self.died.emit(reason)

    def _fail(self, message: str) -> None:
        self.last_error = message
        self._set_state("failed")
        self.error.emit(message)


def _send_loop(child: _Child) -> None:
    """Sender thread: commands to the child in order; after a broken pipe, drop them (the reader
    reports the death)."""
    broken = False
    while (message := child.outbox.get()) is not None:
        if broken:
            continue
        try:
            child.conn.send(message)
        except (OSError, ValueError):
            broken = True
