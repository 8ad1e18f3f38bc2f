"""Dark theme for review in a darkened operating or meeting room: low glare, high legibility."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

BACKGROUND = "#1b1d21"
PANEL = "#23262b"
RAISED = "#2c3036"
TEXT = "#d7dae0"
MUTED = "#8b919b"
ACCENT = "#4aa3df"
WARNING = "#e0a84a"
ERROR = "#e06c6c"

STYLE = f"""
QMainWindow, QDialog {{ background: {BACKGROUND}; }}
QDockWidget {{ color: {TEXT}; titlebar-close-icon: none; }}
QDockWidget::title {{ background: {PANEL}; padding: 4px 8px; }}
QToolBar {{ background: {PANEL}; border: none; spacing: 4px; }}
QStatusBar {{ background: {PANEL}; color: {MUTED}; }}
QStatusBar QLabel {{ color: {MUTED}; padding: 0 6px; }}
QPushButton, QToolButton {{ background: {RAISED}; color: {TEXT}; border: 1px solid #3a3f46;
    border-radius: 4px; padding: 3px 10px; }}
QPushButton:hover, QToolButton:hover {{ border-color: {ACCENT}; }}
QPushButton:checked, QToolButton:checked {{ background: #33475a; }}
QListWidget, QTreeWidget, QTextEdit, QPlainTextEdit, QLineEdit, QSpinBox, QComboBox {{
    background: {PANEL}; color: {TEXT}; border: 1px solid #33373d; selection-background-color: #2f4a61; }}
QProgressBar {{ background: {RAISED}; color: {TEXT}; border: 1px solid #33373d; border-radius: 3px;
    text-align: center; max-height: 14px; }}
QProgressBar::chunk {{ background: #2f6f9f; }}
QToolTip {{ background: {RAISED}; color: {TEXT}; border: 1px solid #3a3f46; }}
"""


def apply_theme(app: QApplication) -> None:
    app.setStyle("Fusion")
    palette = QPalette()
    roles = {
        QPalette.ColorRole.Window: BACKGROUND,
        QPalette.ColorRole.WindowText: TEXT,
        QPalette.ColorRole.Base: PANEL,
        QPalette.ColorRole.AlternateBase: RAISED,
        QPalette.ColorRole.Text: TEXT,
        QPalette.ColorRole.Button: RAISED,
        QPalette.ColorRole.ButtonText: TEXT,
        QPalette.ColorRole.Highlight: "#2f4a61",
        QPalette.ColorRole.HighlightedText: "#ffffff",
        QPalette.ColorRole.ToolTipBase: RAISED,
        QPalette.ColorRole.ToolTipText: TEXT,
        QPalette.ColorRole.PlaceholderText: MUTED,
        QPalette.ColorRole.Link: ACCENT,
    }
    for role, color in roles.items():
        palette.setColor(role, QColor(color))
    app.setPalette(palette)
    app.setStyleSheet(STYLE)
