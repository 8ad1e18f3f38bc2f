"""Opening a case without work that can wait (issue 20: a 90-minute case reopens in <= 1 s).

``CaseLoading`` sets :attr:`app.session.CaseSession.hand_off` to a queued signal: the session reads
a case's stored answers in bulk on its warm-up thread once the first frame is on screen, and hands
them to the UI thread (a failure shows in the status bar). It reads the procedures' ontologies
(YAML, ~0.2 s) on a thread when the window is built, not when the first case's timelines and
records need them, and ``after_opening`` runs work that can wait (the library's refresh, which
opens every recent case's store: 70-350 ms) once the case's first frame has been on screen for a
moment.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Qt, QTimer, Signal

from app.playback import safe_emit
from engine.procedures import load_procedures

__all__ = ["CaseLoading"]

SETTLE_MS = 300  # after the first frame is shown: its paint and the timelines' go first


class CaseLoading(QObject):
    _deliver = Signal(object)  # a function: warm-up thread -> UI thread

    def __init__(self, window: Any):
        super().__init__(window)
        self.window, session = window, window.session
        self.playhead = session.playhead
        self._deliver.connect(self._run, Qt.ConnectionType.QueuedConnection)
        session.hand_off = self._hand_off
        session.subscribe(self._on_session)
        self._pending: Callable[[], None] | None = None
        self.playhead.subscribe(lambda name, _value: self._maybe_run() if name == "displayed" else None)
        threading.Thread(target=load_procedures, name="procedures-preload", daemon=True).start()

    def _hand_off(self, fn: Callable[[], None]) -> None:
        """(Any thread) Run ``fn`` on the UI thread; nothing when the window has gone."""
        with contextlib.suppress(RuntimeError):  # the window was closed first
            safe_emit(self._deliver, fn)

    def _run(self, fn: Callable[[], None]) -> None:
        fn()

    def _on_session(self, name: str, value: object) -> None:
        if name == "problem":
            self.window.statusBar().showMessage(str(value), 10000)

    def after_opening(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once, shortly after the case just opened shows its first frame (a case opened
        before then replaces it)."""
        self._pending = fn
        self._maybe_run()

    def _maybe_run(self) -> None:
        if self._pending is not None and self.playhead.displayed >= 0:
            fn, self._pending = self._pending, None
            QTimer.singleShot(SETTLE_MS, self, fn)
