"""The status bar's engine read-out: model and profile, device, pace, progress, Pause / Restart;
and the video's own background work (indexing a long file, building its preview strip).

``EngineStatus`` shows :class:`app.state.AnalysisState` (it subscribes to it) and the session's
profile (for the model label's tooltip); its buttons call what the window gives it. ``VideoStatus``
follows the player's ``indexing`` and the previews' ``progress``/``failed`` signals, so a long case
opening says "Indexing video… 40%" and a strip that cannot be built says why, instead of nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QStatusBar, QToolButton

from app.export.pictures import format_seconds
from app.session import CaseSession
from app.state import AnalysisState

__all__ = ["EngineStatus", "VideoStatus", "rate_text"]


def rate_text(tokens_per_s: float, frames_per_s: float, eta_s: float | None) -> str:
    """The status bar's pace: generation speed, the sweep's frames per second and its time left."""
    parts = []
    if tokens_per_s:
        parts.append(f"{tokens_per_s:.0f} tokens/s")
    if frames_per_s:
        parts.append(f"{frames_per_s:.2f} frames/s")
    if eta_s:
        parts.append(f"{format_seconds(eta_s)} left")
    return " · ".join(parts)


class EngineStatus:
    """The permanent widgets of the status bar, following ``analysis``."""

    def __init__(
        self,
        bar: QStatusBar,
        analysis: AnalysisState,
        session: CaseSession,
        pause: Callable[[bool], Any],
        restart: Callable[[], Any],
    ):
        self.bar, self.analysis, self.session = bar, analysis, session
        self.model_label = QLabel("no model")
        self.device_label = QLabel("")
        self.rate_label = QLabel("")
        self.progress = QProgressBar()
        self.progress.setFixedWidth(180)
        self.progress.setFormat("analysed %v/%m")
        self.pause_button = QToolButton(text="Pause analysis", checkable=True)
        self.pause_button.toggled.connect(pause)
        self.restart_button = QPushButton("Restart engine")
        self.restart_button.clicked.connect(restart)
        self.restart_button.hide()
        self.video = VideoStatus(bar)
        for w in (
            self.model_label,
            self.device_label,
            self.rate_label,
            self.progress,
            self.pause_button,
            self.restart_button,
        ):
            bar.addPermanentWidget(w)
        analysis.subscribe(lambda name, value: self.update())
        session.subscribe(lambda name, value: self.update() if name == "analysis" else None)
        self.update()

    def follow(self, engine: Any, player: Any = None, previews: Any = None) -> None:
        """The engine link's progress, pace, errors and death (its Qt signals) into ``analysis``;
        the player's indexing and the previews' build into :attr:`video` when given."""
        if player is not None or previews is not None:
            self.video.follow(player, previews)
        engine.progress.connect(lambda done, total: self.analysis.update(done=done, total=total))
        engine.rate.connect(self._on_rate)
        engine.idle.connect(lambda: self.analysis.update(frames_per_s=0.0, eta_s=None))  # nothing to sweep
        engine.error.connect(self._on_error)
        engine.died.connect(self._on_died)

    def _on_rate(self, frames_per_s: float, eta_s: object) -> None:
        eta = float(eta_s) if isinstance(eta_s, int | float) else None
        self.analysis.update(frames_per_s=float(frames_per_s), eta_s=eta)

    def _on_error(self, message: str) -> None:
        self.analysis.update(engine="failed", engine_error=message)
        self.bar.showMessage(f"engine: {message}", 15000)

    def _on_died(self, reason: str) -> None:
        self.analysis.update(engine="died", engine_error=reason)
        self.bar.showMessage(f"engine stopped: {reason}", 15000)

    def update(self) -> None:
        a = self.analysis
        names = {
            "ready": a.model_id or "model ready",
            "starting": "starting the model…",
            "failed": f"model failed: {a.engine_error}",
            "died": "engine stopped",
            "stopped": "no model (File ▸ Preferences)",
        }
        label = names.get(a.engine, a.engine)
        if a.engine == "ready" and a.profile:
            label += f" · {a.profile}"
        self.model_label.setText(label)
        self.model_label.setToolTip(self._profile_tooltip())
        self.device_label.setText(a.device)
        self.rate_label.setText(rate_text(a.tokens_per_s, a.frames_per_s, a.eta_s))
        self.progress.setMaximum(max(1, a.total))
        self.progress.setValue(a.done)
        self.progress.setVisible(a.total > 0)
        self.restart_button.setVisible(a.engine in ("failed", "died"))
        finished = a.total > 0 and a.done >= a.total
        self.pause_button.setEnabled(not finished)
        if finished:
            self.pause_button.setText("Analysis finished")
            self.pause_button.setToolTip("Every frame of the sweep is analysed: nothing left to pause")
        else:
            self.pause_button.setText("Resume analysis" if a.paused else "Pause analysis")
            self.pause_button.setToolTip("Pause or resume the background analysis (the frame on screen is still asked)")

    def _profile_tooltip(self) -> str:
        a = self.analysis
        if a.engine != "ready" or not a.profile:
            return ""
        profile = self.session.profile
        lines = [a.model_id, a.profile_note or f"profile {a.profile}", profile.description]
        titles = [q.title for q in profile.questions]
        if len(titles) > 1:
            lines.append("questions per frame: " + ", ".join(titles))
        lines.append("Choose the profile under File ▸ Preferences.")
        return "\n".join(line for line in lines if line)


class VideoStatus:
    """What the video's background work is doing: "Indexing video… 40%", "Building previews… 60%",
    or why there are no previews (kept in view with its reason as tooltip, and flashed in the bar)."""

    def __init__(self, bar: QStatusBar):
        self.bar = bar
        self.label = QLabel("")
        self.label.hide()
        self.problem: str | None = None
        bar.addPermanentWidget(self.label)  # permanent: a temporary message does not hide it

    def follow(self, player: Any = None, previews: Any = None) -> None:
        if player is not None:
            player.indexing.connect(self.indexing)
            player.opened.connect(lambda _facts: self.reset())  # a new case: its previews are to come
            player.failed.connect(lambda _line: self.reset())
        if previews is not None:
            previews.progress.connect(self.building)
            previews.failed.connect(self.failed)

    def indexing(self, share: float) -> None:
        self._show(f"Indexing video… {_percent(share)}%")

    def building(self, share: float) -> None:
        if share >= 1.0:
            self.done()
        else:
            self._show(f"Building previews… {_percent(share)}%")

    def failed(self, reason: str) -> None:
        self.problem = reason
        self.label.setText("No previews: seeking shows exact frames only")
        self.label.setToolTip(reason)
        self.label.show()
        self.bar.showMessage(f"previews unavailable: {reason}", 15000)

    def done(self) -> None:
        """Nothing in progress (a reason for missing previews stays until the next case)."""
        if self.problem is None:
            self.label.hide()
            self.label.setText("")

    def reset(self) -> None:
        self.problem = None
        self.label.setToolTip("")
        self.done()

    def _show(self, text: str) -> None:
        self.problem = None
        self.label.setToolTip("")
        self.label.setText(text)
        self.label.show()


def _percent(share: float) -> int:
    return int(max(0.0, min(1.0, share)) * 100)
