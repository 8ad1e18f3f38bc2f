"""UI state as plain Python objects that announce their changes.

Widgets subscribe to these models and write back only by setting model attributes; the models
know nothing of Qt, so the state logic is testable without a window and the same model can
drive several widgets (the timeline's playhead and the transport bar share ``Playhead``).
Listeners are called synchronously on the thread that sets the attribute, which is always the
UI thread: workers never touch these models, they send indices and results over queued signals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

Listener = Callable[[str, Any], None]


class Observable:
    """Dataclass mixin: ``subscribe(fn)`` and ``fn(name, value)`` after every attribute change."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_listeners", [])

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def __setattr__(self, name: str, value: Any) -> None:
        old = getattr(self, name, _MISSING)
        object.__setattr__(self, name, value)
        if name.startswith("_") or old == value or not hasattr(self, "_listeners"):
            return
        for listener in list(self._listeners):
            listener(name, value)

    def update(self, **changes: Any) -> None:
        names = {f.name for f in fields(self)}  # type: ignore[arg-type]
        unknown = set(changes) - names
        if unknown:
            raise AttributeError(f"{type(self).__name__} has no field(s) {sorted(unknown)}")
        for name, value in changes.items():
            setattr(self, name, value)


_MISSING = object()


@dataclass(eq=False)
class CaseState(Observable):
    """The open case."""

    video: Path | None = None
    fps: float = 25.0
    frame_count: int = 0
    width: int = 0
    height: int = 0
    error: str | None = None  # why the last open failed, for the status bar
    selection: tuple[int, int] | None = None  # frames (first, last) chosen on the timeline, e.g. for a clip


@dataclass(eq=False)
class Playhead(Observable):
    """The frame the user asked for and the frame actually on screen (they differ while decoding)."""

    requested: int = 0
    displayed: int = -1
    playing: bool = False
    speed: float = 1.0  # 0.25 .. 4; negative while shuttling backwards (J)

    def clamp(self, frame: int, frame_count: int) -> int:
        return max(0, min(frame, max(0, frame_count - 1)))


@dataclass(eq=False)
class AnalysisState(Observable):
    """The engine and the background analysis of the open case."""

    engine: str = "stopped"  # stopped | starting | ready | failed
    engine_error: str | None = None
    model_id: str = ""
    device: str = ""
    profile: str = ""  # the model profile's name: which questions are asked of each frame
    profile_note: str = ""  # which profile and why (chosen, the manifest's, or a stated default)
    done: int = 0
    total: int = 0
    paused: bool = False
    tokens_per_s: float = 0.0
    frames_per_s: float = 0.0  # the sweep's pace, every question of a frame answered
    eta_s: float | None = None  # the sweep's time left; None while unknown


@dataclass(eq=False)
class LayerState(Observable):
    """Which overlay layers are shown on the video."""

    boxes: bool = True
    triplets: bool = True
    phase: bool = True
    cvs: bool = True
    highlighted: str | None = field(default=None)  # entity under the mouse (label), highlighted everywhere
