"""Help ▸ About: the versions of everything that shapes an analysis, and the model's manifest.

A result is only as reproducible as the software and the model behind it, so the About box
lists surgview, Python, Qt, torch, transformers (and onnxruntime where installed) and, for the
configured model folder, what its ``surgview.json`` says (name, architecture, ontology and
prompt versions, training lineage, evaluation) with the content fingerprint that keys stored
results. Package versions come from the installed metadata, so opening the box never imports
torch into the viewer process (the engine runs in its own process). Everything is shown as
plain text: a manifest is data from a file, never markup.
"""

from __future__ import annotations

import json
import platform
from importlib import metadata
from typing import Any

import PySide6
from PySide6.QtCore import qVersion
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from engine.modeldir import ModelDirError, inspect_model_dir

__all__ = ["AboutDialog", "about_text", "model_lines", "versions"]

_PACKAGES = (("surgview", "surgview"), ("torch", "torch"), ("transformers", "transformers"))
_OPTIONAL = (("onnxruntime", ("onnxruntime", "onnxruntime-gpu")),)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions() -> list[tuple[str, str]]:
    """(name, version) of surgview, Python, Qt, PySide6, torch, transformers, and onnxruntime if present."""
    rows = [("surgview", _version("surgview") or "unknown")]
    rows.append(("Python", f"{platform.python_version()} ({platform.python_implementation()})"))
    rows.append(("Qt", qVersion()))
    rows.append(("PySide6", PySide6.__version__))
    for label, dist in _PACKAGES[1:]:
        rows.append((label, _version(dist) or "not installed"))
    for label, dists in _OPTIONAL:
        found = next((v for v in map(_version, dists) if v), None)
        if found:
            rows.append((label, found))
    return rows


def model_lines(spec: dict[str, Any] | None, model_id: str = "", device: str = "") -> list[str]:
    """What the configured model is: its manifest for a model folder, the address for a server."""
    if not spec:
        return ["no model configured (File ▸ Preferences)"]
    lines: list[str] = []
    if model_id:
        lines.append(f"loaded: {model_id}" + (f" on {device}" if device else ""))
    if spec.get("kind") == "openai":
        lines.append(f"server: {spec.get('url')}  served model: {spec.get('model') or 'default'}")
        return lines
    folder = spec.get("model")
    if not folder:
        return [*lines, "no model folder configured"]
    try:
        info = inspect_model_dir(folder)
    except ModelDirError as exc:
        return [*lines, f"folder: {folder}", f"cannot be read: {exc}"]
    lines += [
        f"folder: {info.path}",
        f"name: {info.name}",
        f"architecture: {info.architecture}",
        f"fingerprint: {info.fingerprint[:16]}",
        f"weights: {info.weight_bytes / 1e6:.1f} MB in {len(info.weights)} file(s)",
    ]
    manifest = info.manifest
    if manifest is None:
        lines.append("manifest: none (a plain Hugging Face folder, default prompts)")
    else:
        lines += [
            f"manifest format: {manifest.format_version}",
            f"ontology version: {manifest.ontology_version}",
            f"prompts version: {manifest.prompts_version}",
        ]
        for stage in manifest.lineage:
            data = ", ".join(stage.data) or "—"
            seed = "" if stage.seed is None else f", seed {stage.seed}"
            lines.append(f"lineage: {stage.name} on {data}{seed}")
        for key, value in manifest.evaluation.items():
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
            lines.append(f"evaluation: {key} = {text}")
        if not manifest.evaluation:
            lines.append("evaluation: none recorded")
    lines += [f"warning: {w}" for w in info.warnings]
    return lines


def about_text(spec: dict[str, Any] | None, model_id: str = "", device: str = "") -> str:
    width = max(len(name) for name, _ in versions())
    parts = ["surgview — review recorded laparoscopic cases with a model that shows its reasoning", ""]
    parts += [f"{name.ljust(width)}  {version}" for name, version in versions()]
    parts += ["", "Model"]
    parts += [f"  {line}" for line in model_lines(spec, model_id, device)]
    return "\n".join(parts)


class AboutDialog(QDialog):
    """The about text in a read-only plain-text box, with a Copy button for bug reports."""

    def __init__(
        self, spec: dict[str, Any] | None, model_id: str = "", device: str = "", parent: QWidget | None = None
    ):
        super().__init__(parent)
        self.setWindowTitle("About surgview")
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setPlainText(about_text(spec, model_id, device))
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        copy = QPushButton("Copy")
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(self.text.toPlainText()))
        buttons.addButton(copy, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(self.text)
        layout.addWidget(buttons)
        self.resize(640, 460)
