"""The Cases dock: recently opened cases (kept in QSettings), a missing file greyed out, and the
keyboard-shortcut table of Help ▸ Keyboard shortcuts."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QDialog, QLabel, QListWidget, QListWidgetItem, QTableWidget, QTableWidgetItem, QVBoxLayout

from app.review_session import library_agreement
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

    def remember(self, path: Path, duration_s: float | None = None) -> None:
        if duration_s is not None and duration_s > 0:
            self.settings.setValue(f"cases/duration/{_key(str(path))}", float(duration_s))
        recent = [p for p in self.settings.value("cases/recent", [], type=list) if p != str(path)]
        self.settings.setValue("cases/recent", [str(path), *recent][:MAX_RECENT])
        self.refresh()

    def refresh(self) -> None:
        self.clear()
        paths = self.settings.value("cases/recent", [], type=list)
        names = [Path(p).name for p in paths]
        for p in paths:
            path = Path(p)
            duration = self.settings.value(f"cases/duration/{_key(p)}", None)
            details = _details(path, duration)
            review = library_agreement(path) if path.exists() else ""  # the model against the reviewer
            details = " · ".join(d for d in (details, review) if d)
            text = path.name
            if names.count(path.name) > 1:  # two cases share a file name: say which is which
                text += f"  — {path.parent.name}/" + (f" · {details}" if details else "")
            if review:
                text += f"\n{review}"
            item = QListWidgetItem(text)
            item.setToolTip(f"{p}\n{details}" if details else p)
            item.setData(Qt.ItemDataRole.UserRole, p)
            if not path.exists():
                item.setForeground(Qt.GlobalColor.gray)
                item.setToolTip(f"{p} (not found)")
            self.addItem(item)


def _key(path: str) -> str:
    """A QSettings-safe key for a path."""
    return hashlib.sha1(path.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _details(path: Path, duration: object) -> str:
    """Duration (when known) and the file's date: "42:10 · 2024-03-05"."""
    parts = []
    with contextlib.suppress(TypeError, ValueError):
        if duration is not None:
            seconds = round(float(duration))  # type: ignore[arg-type]
            h, rest = divmod(seconds, 3600)
            parts.append(f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}")
    with contextlib.suppress(OSError):
        parts.append(datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d"))
    return " · ".join(parts)


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
