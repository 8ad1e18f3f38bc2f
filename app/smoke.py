"""``surgview --smoke``: prove an install works end to end without a screen, then exit.

It opens the main window offscreen on a case (the demo case with ``--demo``), lets the engine
child process load the model and stream the analysis of one frame, prints a summary (model,
device, frame, chain status, tokens, time to first text and to the finished chain) and exits 0;
any failure (engine did not load or died, the case did not open, nothing within the time
limit) is one line on stderr and exit 1. This is what the packaging smoke test runs inside a
clean environment, so it exercises the real parts: Qt platform plugins, the spawned engine
process of a frozen bundle, torch and transformers, the video decoder and the case store.

Results go to a temporary case store (``SURGVIEW_DATA`` pointed at a temporary folder) and
settings to a temporary file, so a smoke run neither reads nor changes the user's data, and
the frame is always generated afresh rather than read back from an earlier run.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["run_smoke"]


def run_smoke(video: Path, engine_spec: dict, timeout_s: float = 300.0) -> int:
    """Open ``video`` offscreen, wait for one streamed chain, print a summary; 0 if it came."""
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    if not engine_spec:
        print("surgview: --smoke needs a model (--demo, --model DIR or --url URL)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="surgview-smoke-") as tmp:
        os.environ["SURGVIEW_DATA"] = str(Path(tmp) / "data")  # inherited by the engine process
        return _run(video, engine_spec, Path(tmp), timeout_s)


def _run(video: Path, engine_spec: dict, tmp: Path, timeout_s: float) -> int:
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from app.main_window import SurgviewWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    t0 = time.monotonic()
    marks: dict[str, float] = {}
    outcome: dict = {"pieces": 0, "chars": 0}

    settings = QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)
    window = SurgviewWindow(engine_spec=engine_spec, settings=settings)
    engine = window.engine

    def finish(error: str | None = None) -> None:
        if "end" not in marks:
            marks["end"] = time.monotonic() - t0
            outcome["error"] = error
            app.quit()

    def on_ready(model_id: str, device: str, profile: dict) -> None:
        marks["ready"] = time.monotonic() - t0
        outcome.update(model_id=model_id, device=device, profile=profile.get("name", "?"))

    def on_pieces(frame: int, task: str, text: str) -> None:
        marks.setdefault("first_text", time.monotonic() - t0)
        outcome["pieces"] += 1
        outcome["chars"] += len(text)

    def on_done(frame: int, info: dict) -> None:
        outcome.update(frame=frame, info=info)
        if info.get("frame_complete", True):  # every question of the profile answered
            finish()

    engine.ready.connect(on_ready)
    engine.pieces.connect(on_pieces)
    engine.done.connect(on_done)
    engine.error.connect(lambda message: finish(f"the model did not load: {message}"))
    engine.died.connect(lambda reason: finish(reason))
    engine.case_failed.connect(lambda path, message: finish(f"the engine could not open the case: {message}"))
    window.player.failed.connect(lambda message: finish(f"the video did not open: {message}"))
    QTimer.singleShot(int(timeout_s * 1000), lambda: finish(f"no chain within {timeout_s:g} s"))
    window.show()
    window.open_case(video)
    app.exec()
    window.close()
    if outcome.get("error"):
        print(f"surgview: smoke test failed: {outcome['error']}", file=sys.stderr)
        return 1
    if not outcome["pieces"]:
        print("surgview: smoke test failed: the chain arrived without any streamed text", file=sys.stderr)
        return 1
    info = outcome["info"]
    print(f"case: {video} ({window.case.frame_count} frames)")
    print(f"model: {outcome.get('model_id', '?')} on {outcome.get('device', '?')}, profile {outcome.get('profile')}")
    print(
        f"chain: frame {outcome['frame']}, status {info.get('status')}, {info.get('tokens')} tokens, "
        f"{outcome['pieces']} streamed messages ({outcome['chars']} characters)"
    )
    print(
        f"timings: engine ready {marks.get('ready', 0):.2f} s, first text {marks.get('first_text', 0):.2f} s, "
        f"chain done {marks['end']:.2f} s after start"
    )
    return 0
