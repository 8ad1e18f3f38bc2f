"""Preferences: the engine settings (backend, model, server(s), profile, requests in flight, stride).

``PreferencesDialog`` writes them to QSettings (the keys the first-run dialog writes too) and
``spec_from_settings`` turns them into the engine spec; restarting the engine with it is the
window's business, not the dialog's.
"""

from __future__ import annotations

import contextlib

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from app.dialogs import add_ok_cancel
from app.first_run import DEFAULT_CONCURRENCY, MAX_CONCURRENCY, ProfileChoice, check_urls, parse_urls
from engine.backend_factory import default_kind

__all__ = ["PreferencesDialog", "edit_preferences", "spec_from_settings"]


def _int_setting(settings: QSettings, key: str, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(settings.value(key, default))))
    except (TypeError, ValueError):
        return default


def spec_from_settings(settings: QSettings) -> dict:
    """The engine spec the Preferences (or the first-run dialog) chose; empty when no model is set."""
    kind = settings.value("engine/backend", "transformers")
    model = settings.value("engine/model", "")
    urls = parse_urls(str(settings.value("engine/url", "") or ""))
    if not model and not urls:
        return {}
    if kind == "transformers" and model:
        kind = default_kind(model)  # onnx in the torch-free bundle, when the folder has an export
    spec = {
        "kind": kind,
        "model": model or None,
        "url": urls[0] if urls else None,  # one server as always; several also as "urls"
        "stride_s": float(settings.value("engine/stride", 1.0)),
        "profile": str(settings.value("engine/profile", "") or "") or None,  # None: the model's own, or the default
        "concurrency": _int_setting(settings, "engine/concurrency", DEFAULT_CONCURRENCY, 1, MAX_CONCURRENCY),
    }
    if len(urls) > 1:
        spec["urls"] = urls
    return spec


class PreferencesDialog(QDialog):
    """The engine settings: backend, model, server(s), model profile, concurrency, sweep stride.

    Accepting writes them to ``settings`` (the keys the first-run dialog writes too); the window
    then restarts the engine with them.
    """

    def __init__(self, settings: QSettings, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.setWindowTitle("Preferences")
        form = QFormLayout(self)
        self.backend = QComboBox()
        self.backend.addItems(["transformers", "onnx", "openai"])  # onnx: the model folder's onnx/ export
        self.backend.setCurrentText(settings.value("engine/backend", "transformers"))
        self.model = QLineEdit(settings.value("engine/model", ""))
        browse = QPushButton("Browse…")
        browse.clicked.connect(
            lambda: self.model.setText(QFileDialog.getExistingDirectory(self, "Model directory") or self.model.text())
        )
        self.url = QLineEdit(settings.value("engine/url", ""))
        self.url.setPlaceholderText("http://127.0.0.1:8000/v1 (several: separated by spaces or commas)")
        self.url.setToolTip("Several servers of the same model share the frames between them")
        self.profile = ProfileChoice(str(settings.value("engine/profile", "") or ""))
        self.concurrency = QSpinBox()
        self.concurrency.setRange(1, MAX_CONCURRENCY)
        self.concurrency.setValue(_int_setting(settings, "engine/concurrency", DEFAULT_CONCURRENCY, 1, MAX_CONCURRENCY))
        self.concurrency.setToolTip("Questions sent to the server(s) at once; a local model answers one at a time")
        self.stride = QLineEdit(str(settings.value("engine/stride", 1.0)))
        self.error = QLabel()
        self.error.setTextFormat(Qt.TextFormat.PlainText)
        self.error.setWordWrap(True)
        self.error.hide()
        row = QHBoxLayout()
        row.addWidget(self.model)
        row.addWidget(browse)
        form.addRow("Backend", self.backend)
        form.addRow("Model directory (or served model name)", row)
        form.addRow("Server URL(s) (openai backend)", self.url)
        form.addRow("Model profile", self.profile)
        form.addRow("Requests in flight (openai backend)", self.concurrency)
        form.addRow("Background analysis: seconds between frames", self.stride)
        form.addRow(self.error)
        add_ok_cancel(self, form)
        self.backend.currentTextChanged.connect(self._follow_backend)
        self._follow_backend(self.backend.currentText())

    def _follow_backend(self, kind: str) -> None:
        self.concurrency.setEnabled(kind == "openai")

    def accept(self) -> None:
        """Save, or say why the server URLs cannot be used and stay open."""
        try:
            urls = check_urls(self.url.text()) if self.url.text().strip() else []
        except ValueError as exc:
            self.error.setText(str(exc))
            self.error.show()
            return
        s = self.settings
        s.setValue("engine/backend", self.backend.currentText())
        s.setValue("engine/model", self.model.text().strip())
        s.setValue("engine/url", " ".join(urls))
        s.setValue("engine/profile", self.profile.profile())
        s.setValue("engine/concurrency", self.concurrency.value())
        with contextlib.suppress(ValueError):  # an unreadable number keeps the previous stride
            s.setValue("engine/stride", max(0.04, float(self.stride.text())))
        super().accept()


def edit_preferences(settings: QSettings, parent: QWidget | None = None) -> dict | None:
    """Show the dialog; the new engine spec when accepted (empty without a model), None when cancelled."""
    dialog = PreferencesDialog(settings, parent)
    if dialog.exec() != QDialog.DialogCode.Accepted:
        return None
    return spec_from_settings(settings)
