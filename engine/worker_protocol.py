"""The messages between the viewer and its engine process (:mod:`app.engine_link` ↔ :mod:`app.engine_worker`).

Small frozen dataclasses sent whole over a ``multiprocessing`` pipe (pickled), each side dispatching
on the type in one place. Qt-free and free of the engine's heavy modules, so both sides (and tests)
import it cheaply.

Parent → child (:class:`Command`): :class:`OpenCase`, :class:`CloseCase`, :class:`Request`,
:class:`Reask`, :class:`Pause`, :class:`Resume`, :class:`SetStride`, :class:`Shutdown`.

Child → parent (:class:`Event`): :class:`Ready` (the backend loaded; ``profile``: name, note,
version, questions [{task, title}]), :class:`Error` (the backend did not load; the child exits),
:class:`CaseOpened`, :class:`CaseFailed`, :class:`CaseClosed`; the open case's scheduler events
(:class:`SchedulerEvent`): :class:`Started`, :class:`Pieces`, :class:`Done`, :class:`Failed`,
:class:`Progress`, :class:`Rate`, :class:`Idle`, :class:`Stopped`; then :class:`Crashed` (an
unexpected exception; the child exits after it) and :class:`Bye` (the answer to :class:`Shutdown`,
the last message).

``seq`` lets the parent drop scheduler events of a case it has since replaced. A model profile may
ask several questions of a frame (``task`` names the question); :class:`Done` comes once per
question, its ``info`` holding the store keys (model_id, prompt_version, task) to read the result
back from the case store, plus status, timings, the raw text and ``frame_complete``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "Bye",
    "CaseClosed",
    "CaseFailed",
    "CaseOpened",
    "CloseCase",
    "Command",
    "Crashed",
    "Done",
    "Error",
    "Event",
    "Failed",
    "Idle",
    "Message",
    "OpenCase",
    "Pause",
    "Pieces",
    "Progress",
    "Rate",
    "Ready",
    "Reask",
    "Request",
    "Resume",
    "SchedulerEvent",
    "SetStride",
    "Shutdown",
    "Started",
    "Stopped",
]


@dataclass(frozen=True)
class Message:
    """Anything sent over the engine's pipe."""


# ------------------------------------------------------------------------------ parent → child
@dataclass(frozen=True)
class Command(Message):
    """What the viewer asks of the engine."""


@dataclass(frozen=True)
class OpenCase(Command):
    seq: int
    path: str


@dataclass(frozen=True)
class CloseCase(Command):
    seq: int


@dataclass(frozen=True)
class Request(Command):
    """The playhead is on ``frame``: analyse it first."""

    frame: int


@dataclass(frozen=True)
class Reask(Command):
    """Generate ``frame`` again although it is stored."""

    frame: int


@dataclass(frozen=True)
class Pause(Command):
    """Hold the background sweep."""


@dataclass(frozen=True)
class Resume(Command):
    pass


@dataclass(frozen=True)
class SetStride(Command):
    seconds: float


@dataclass(frozen=True)
class Shutdown(Command):
    pass


# ------------------------------------------------------------------------------ child → parent
@dataclass(frozen=True)
class Event(Message):
    """What the engine tells the viewer."""


@dataclass(frozen=True)
class Ready(Event):
    model_id: str
    device: str
    profile: dict[str, Any] | None = None  # name, note, version, questions [{task, title}]


@dataclass(frozen=True)
class Error(Event):
    """The backend did not load; the child exits."""

    message: str


@dataclass(frozen=True)
class CaseOpened(Event):
    seq: int
    path: str
    info: dict[str, Any]  # store keys (model_id, prompt_version, profile, tasks) and the video's geometry


@dataclass(frozen=True)
class CaseFailed(Event):
    seq: int
    path: str
    message: str


@dataclass(frozen=True)
class CaseClosed(Event):
    seq: int


@dataclass(frozen=True)
class SchedulerEvent(Event):
    """An event of the open case's analysis (dropped by the parent once it has asked for another case)."""


@dataclass(frozen=True)
class Started(SchedulerEvent):
    frame: int
    task: str
    requested: bool


@dataclass(frozen=True)
class Pieces(SchedulerEvent):
    """Streamed text of one question about one frame (coalesced by the child's outbox)."""

    frame: int
    task: str
    text: str


@dataclass(frozen=True)
class Done(SchedulerEvent):
    frame: int
    info: dict[str, Any]  # status, tokens, timings, store keys, raw_text, frame_complete


@dataclass(frozen=True)
class Failed(SchedulerEvent):
    frame: int
    message: str


@dataclass(frozen=True)
class Progress(SchedulerEvent):
    done: int
    total: int


@dataclass(frozen=True)
class Rate(SchedulerEvent):
    frames_per_s: float
    eta_s: float | None


@dataclass(frozen=True)
class Idle(SchedulerEvent):
    pass


@dataclass(frozen=True)
class Stopped(SchedulerEvent):
    """The analysis ended: ``error`` None when it was asked to, else why."""

    error: str | None


@dataclass(frozen=True)
class Crashed(Event):
    """An unexpected exception in the child; it exits after this."""

    message: str


@dataclass(frozen=True)
class Bye(Event):
    """The answer to :class:`Shutdown`: the last message."""
