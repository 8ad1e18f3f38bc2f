"""Routes reasoning to the panel: the engine's streamed pieces of the frame on screen, and the
session's stored answers of that frame when nothing of it streams.

``ReasoningFeed`` subscribes to the session (its playhead's displayed frame, new answers, the
profile) and to :class:`app.engine_link.EngineLink`'s Qt signals (``started``, ``pieces``,
``done``, ``failed``, ``died``). A ``done`` tells the session to read that frame's answers again
(one query, when the answer arrives); everything shown otherwise comes from the session's cache.

While the video plays, a frame that was not analysed itself shows the latest analysed frame before
it (``CaseSession.latest_analysed_at``, within ``hold_s``): its answers are rendered once per
analysed frame, titled "held", and a line above them says how old they are, updated per displayed
frame (a label's text: no SQL, no parsing).
"""

from __future__ import annotations

from PySide6.QtWidgets import QLabel

from app import palette
from app.engine_link import EngineLink
from app.session import CaseSession
from app.state import AnalysisState
from app.widgets.reasoning_panel import ReasoningPanel
from engine.procedures import procedure_of_version

__all__ = ["ReasoningFeed"]

NOT_ANALYSED = "Not analysed yet: the model is asked when playback stops here."


class ReasoningFeed:
    def __init__(self, session: CaseSession, panel: ReasoningPanel, engine: EngineLink, analysis: AnalysisState):
        self.session, self.panel, self.engine, self.analysis = session, panel, engine, analysis
        self.live_frame: int | None = None  # the displayed frame while its questions stream
        self.live_tasks: set[str] = set()  # its questions streaming now
        self.held_from: int | None = None  # the analysed frame shown for the one on screen (while playing)
        self.held_label = QLabel()  # how old the held answers are, above them
        self.held_label.setObjectName("heldAge")
        self.held_label.setStyleSheet(f"color: {palette.HELD_AGE};")
        self.held_label.setVisible(False)
        layout = panel.layout()
        if layout is not None:
            layout.insertWidget(1, self.held_label)
        engine.started.connect(self._on_started)
        engine.pieces.connect(self._on_pieces)
        engine.done.connect(self._on_done)
        engine.failed.connect(self._on_failed)
        engine.died.connect(self._on_died)
        session.playhead.subscribe(self._on_playhead)
        session.subscribe(self._on_session)

    def _on_playhead(self, name: str, value: object) -> None:
        if name == "displayed" and isinstance(value, int) and value >= 0:
            self.show_stored(value)
        elif name == "playing" and self.session.playhead.displayed >= 0:
            self.show_stored(self.session.playhead.displayed)

    def _on_session(self, name: str, value: object) -> None:
        if name == "analysis":
            self.live_frame, self.live_tasks = None, set()
            self.panel.set_ontology(procedure_of_version(self.session.profile.version).ontology)
            self.panel.set_questions([(q.task, q.title) for q in self.session.profile.questions])
        elif name == "results" and value in (None, here := self.session.playhead.displayed) and here >= 0:
            self.show_stored(here)
        elif name == "results" and value == self.held_from and value is not None:
            self.held_from = None  # the held frame's answers changed: render them again
            self.show_stored(self.session.playhead.displayed)

    def show_stored(self, frame: int) -> bool:
        """Show what is stored of ``frame`` in the panel (left alone while a question of this frame
        still streams there)."""
        results = self.session.results(frame)
        streaming_here = self.live_frame == frame and bool(self.live_tasks) and self.panel.frame == frame
        if not results and not streaming_here and self.session.playhead.playing and self.show_held(frame):
            return False
        self._drop_held()
        if not results:
            if not streaming_here:
                self.panel.clear(NOT_ANALYSED)
            return False
        if not streaming_here:
            self.panel.show_cached(frame, {task: r.raw_text for task, r in results.items()})
        self.panel.set_nearby(self.session.nearby(frame))
        return True

    def show_held(self, frame: int) -> bool:
        """While playing: the latest analysed frame before ``frame`` (rendered once per analysed
        frame), under a line saying how old it is. False when none is recent enough."""
        source = self.session.latest_analysed_at(frame)
        if source is None:
            return False
        if source != self.held_from or self.panel.frame != source:
            results = self.session.results(source)
            if not results:
                return False
            self.panel.show_cached(source, {task: r.raw_text for task, r in results.items()}, source="held")
            self.panel.set_nearby(self.session.nearby(source))
            self.held_from = source
        text = f"Held: the model's answer {self.session.age_text(source, frame)}, not of the frame on screen"
        self.held_label.setText(text)
        self.held_label.setVisible(True)
        return True

    def _drop_held(self) -> None:
        if self.held_from is not None or self.held_label.isVisible():
            self.held_from = None
            self.held_label.setVisible(False)

    def _on_started(self, frame: int, task: str, requested: bool) -> None:
        if frame != self.session.playhead.displayed:
            return
        self._drop_held()
        if self.live_frame != frame:
            self.live_frame, self.live_tasks = frame, set()
        self.live_tasks.add(task)
        self.panel.begin(frame, "live", task)

    def _on_pieces(self, frame: int, task: str, text: str) -> None:
        if frame == self.live_frame and task in self.live_tasks:
            self.panel.feed(frame, text, task)

    def _on_done(self, frame: int, info: dict) -> None:
        if info.get("tokens") and info.get("total_s"):
            first = info.get("first_token_s") or 0.0
            gen = max(1e-6, info["total_s"] - first)
            self.analysis.tokens_per_s = max(0, info["tokens"] - 1) / gen
        task = str(info.get("task") or "")
        if frame == self.live_frame and task in self.live_tasks:
            self.panel.finish(frame, task=task)
            self.live_tasks.discard(task)
            if not self.live_tasks:
                self.live_frame = None
        self.session.answer_arrived(frame)  # the merged record so far; the panel once no question streams

    def _on_failed(self, frame: int, message: str) -> None:
        if frame == self.live_frame:
            self.live_frame, self.live_tasks = None, set()
        if frame == self.session.playhead.displayed:
            self.panel.clear(f"The model could not analyse this frame: {message}")

    def _on_died(self, reason: str) -> None:
        self.live_frame = None
        self.panel.clear(
            f"The engine stopped: {reason}. Everything already analysed is kept; use Restart engine to continue."
        )
