"""The Cases dock: recently opened cases (kept in QSettings), a missing file greyed out, and the
keyboard-shortcut table of Help ▸ Keyboard shortcuts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QDialog, QLabel, QListWidget, QListWidgetItem, QTableWidget, QTableWidgetItem, QVBoxLayout

from app.shortcuts import describe, keymap

__all__ = ["MAX_RECENT", "CaseLibrary", "shortcuts_dialog"]

MAX_RECENT = 12


class CaseLibrary(QListWidget):
    """Activating a row calls ``open_case(path)``."""

    def __init__(self, settings: QSettings, open_case: Callable[[str], Any]):
        super().__init__()
        self.settings = settings
        self.itemActivated.connect(lambda item: open_case(item.data(Qt.ItemDataRole.UserRole)))
        self.refresh()

    def remember(self, path: Path) -> None:
        recent = [p for p in self.settings.value("cases/recent", [], type=list) if p != str(path)]
        self.settings.setValue("cases/recent", [str(path), *recent][:MAX_RECENT])
        self.refresh()

    def refresh(self) -> None:
        self.clear()
        for p in self.settings.value("cases/recent", [], type=list):
            item = QListWidgetItem(Path(p).name)
            item.setToolTip(p)
            item.setData(Qt.ItemDataRole.UserRole, p)
            if not Path(p).exists():
                item.setForeground(Qt.GlobalColor.gray)
                item.setToolTip(f"{p} (not found)")
            self.addItem(item)


def shortcuts_dialog(settings: QSettings, parent) -> QDialog:
    """Every shortcut (defaults overridden by the settings file), shown non-modally."""
    rows = describe(keymap(settings))
    dialog = QDialog(parent)
    dialog.setWindowTitle("Keyboard shortcuts")
    table = QTableWidget(len(rows), 2, dialog)
    table.setHorizontalHeaderLabels(["Keys", "Action"])
    for r, (keys, what) in enumerate(rows):
        table.setItem(r, 0, QTableWidgetItem(keys))
        table.setItem(r, 1, QTableWidgetItem(what))
    table.resizeColumnsToContents()
    table.verticalHeader().hide()
    note = QLabel("Change a shortcut in the settings file under [shortcuts], e.g. play_pause=Space;K")
    note.setWordWrap(True)
    layout = QVBoxLayout(dialog)
    layout.addWidget(table)
    layout.addWidget(note)
    dialog.resize(560, 640)
    dialog.show()
    return dialog
