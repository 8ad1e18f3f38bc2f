"""Start the Qt application and the main window."""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from app.first_run import FirstRunDialog, needs_model_choice
from app.main_window import APPLICATION, ORGANIZATION, SurgviewWindow
from app.theme import apply_theme


def run_viewer(video: Path | None, engine_spec: dict) -> int:
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
