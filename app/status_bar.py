"""The status bar's engine read-out: model and profile, device, pace, progress, Pause / Restart.

``EngineStatus`` shows :class:`app.state.AnalysisState` (it subscribes to it) and the session's
profile (for the model label's tooltip); its buttons call what the window gives it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtWidgets import QLabel, QProgressBar, QPushButton, QStatusBar, QToolButton

from app.export.pictures import format_seconds
from app.session import CaseSession
from app.state import AnalysisState

__all__ = ["EngineStatus", "rate_text"]


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

    def follow(self, engine: Any) -> None:
        """The engine link's progress, pace, errors and death (its Qt signals) into ``analysis``."""
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
