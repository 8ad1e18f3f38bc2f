"""Start the Qt application and the main window."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from app.first_run import FirstRunDialog, needs_model_choice
from app.main_window import APPLICATION, ORGANIZATION, SurgviewWindow
from app.theme import apply_theme

# The UI thread holds the GIL only in short bursts between Qt calls (PySide releases it around each
# one); a background thread running Python (records warm-up, preview strip, the playback worker)
# would keep it for the whole switch interval at each of those hand-backs, 5 ms by default: a paint
# of ~100 Qt calls then waits up to half a second. 0.5 ms bounds that wait (measured with
# bench/viewer_bench.py: the longest UI stall while playing an analysed 1080p case fell ~2.5x).
SWITCH_INTERVAL_S = 0.0005


def configure_interpreter() -> None:
    """Interpreter settings the viewer runs with (its benchmarks call this too)."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def run_viewer(video: Path | None, engine_spec: dict) -> int:
    configure_interpreter()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setDesktopFileName("surgview")  # matches packaging/surgview.desktop: the menu's icon and name on Wayland
    apply_theme(app)
    if not engine_spec and needs_model_choice(QSettings(ORGANIZATION, APPLICATION)):
        FirstRunDialog(QSettings(ORGANIZATION, APPLICATION)).exec()  # "Later" opens the viewer without a model
    window = SurgviewWindow(engine_spec=engine_spec or None)
    window.show()
    if video is not None:
        window.open_case(video)
    return app.exec()
