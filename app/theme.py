"""Dark theme for review in a darkened operating or meeting room: low glare, high legibility."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

from app import palette

BACKGROUND = palette.THEME_BACKGROUND
PANEL = palette.THEME_PANEL
RAISED = palette.THEME_RAISED
TEXT = palette.THEME_TEXT
MUTED = palette.THEME_MUTED
ACCENT = palette.THEME_ACCENT
WARNING = palette.THEME_WARNING
ERROR = palette.THEME_ERROR
BORDER = palette.THEME_BORDER
BORDER_FIELD = palette.THEME_BORDER_FIELD
CHECKED = palette.THEME_CHECKED
SELECTION = palette.THEME_SELECTION
SELECTED_TEXT = palette.THEME_SELECTED_TEXT
PROGRESS = palette.THEME_PROGRESS

STYLE = f"""
QMainWindow, QDialog {{ background: {BACKGROUND}; }}
QDockWidget {{ color: {TEXT}; titlebar-close-icon: none; }}
QDockWidget::title {{ background: {PANEL}; padding: 4px 8px; }}
QToolBar {{ background: {PANEL}; border: none; spacing: 4px; }}
QStatusBar {{ background: {PANEL}; color: {MUTED}; }}
QStatusBar QLabel {{ color: {MUTED}; padding: 0 6px; }}
QPushButton, QToolButton {{ background: {RAISED}; color: {TEXT}; border: 1px solid {BORDER};
    border-radius: 4px; padding: 3px 10px; }}
QPushButton:hover, QToolButton:hover {{ border-color: {ACCENT}; }}
QPushButton:checked, QToolButton:checked {{ background: {CHECKED}; }}
QListWidget, QTreeWidget, QTextEdit, QPlainTextEdit, QLineEdit, QSpinBox, QComboBox {{
    background: {PANEL}; color: {TEXT}; border: 1px solid {BORDER_FIELD}; selection-background-color: {SELECTION}; }}
QProgressBar {{ background: {RAISED}; color: {TEXT}; border: 1px solid {BORDER_FIELD}; border-radius: 3px;
    text-align: center; max-height: 14px; }}
QProgressBar::chunk {{ background: {PROGRESS}; }}
QToolTip {{ background: {RAISED}; color: {TEXT}; border: 1px solid {BORDER}; }}
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
        QPalette.ColorRole.Highlight: SELECTION,
        QPalette.ColorRole.HighlightedText: SELECTED_TEXT,
        QPalette.ColorRole.ToolTipBase: RAISED,
        QPalette.ColorRole.ToolTipText: TEXT,
        QPalette.ColorRole.PlaceholderText: MUTED,
        QPalette.ColorRole.Link: ACCENT,
    }
    for role, color in roles.items():
        palette.setColor(role, QColor(color))
    app.setPalette(palette)
    app.setStyleSheet(STYLE)
