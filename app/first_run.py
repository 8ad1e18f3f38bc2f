"""First start without a model: ask once which model the viewer should use.

A surgeon who installed the desktop bundle has no model configured and no idea what a model
directory is. Rather than an empty window whose status bar says "no model", the first start
offers the three ways the engine can run: the demo model that ships with the bundle, a model
folder on this computer (checked with :func:`engine.modeldir.inspect_model_dir` before it is
accepted, so a wrong folder is refused here with one line, not later by the engine), or an
OpenAI-compatible server. The choice is written to the same QSettings keys the Preferences
dialog edits, so it can be changed there later. "Later" leaves the settings untouched.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QGridLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWidget,
)

from engine import backend_factory
from engine.modeldir import MANIFEST_NAME, ModelDirError, inspect_model_dir
from engine.userdata import demo_dir

__all__ = ["FirstRunDialog", "demo_model_dir", "local_kind", "needs_model_choice"]


def needs_model_choice(settings: QSettings) -> bool:
    """True when neither a model folder nor a server is configured."""
    return (
        not str(settings.value("engine/model", "") or "").strip()
        and not str(settings.value("engine/url", "") or "").strip()
    )


def local_kind(model: Path) -> str:
    """The backend for a local model folder; raises ValueError (one line) if this install cannot run it."""
    kind = backend_factory.default_kind(model)
    if kind == "transformers" and not backend_factory.torch_available():
        raise ValueError(backend_factory.no_torch_message(model))
    return kind


def demo_model_dir() -> Path | None:
    """The demo model (bundled with the desktop install, or built by ``surgview-train demo``), if present."""
    model = demo_dir() / "model"
    return model if (model / MANIFEST_NAME).is_file() else None


class FirstRunDialog(QDialog):
    """Demo model, a model folder, or a server URL; accepting writes the choice to ``settings``."""

    def __init__(self, settings: QSettings, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.setWindowTitle("surgview — choose a model")
        self.demo_model = demo_model_dir()

        intro = QLabel(
            "surgview analyses each frame with a vision-language model that runs on this computer "
            "or on a server you name. Choose one; you can change it later under File ▸ Preferences."
        )
        intro.setWordWrap(True)
        self.demo_option = QRadioButton("The demo model that comes with surgview (for trying the viewer)")
        self.folder_option = QRadioButton("A model folder on this computer")
        self.server_option = QRadioButton("A model server (OpenAI-compatible, e.g. vLLM or surgview-engine serve)")
        self.group = QButtonGroup(self)
        for option in (self.demo_option, self.folder_option, self.server_option):
            self.group.addButton(option)
        if self.demo_model is None:
            self.demo_option.setEnabled(False)
            self.demo_option.setText(self.demo_option.text() + " — not installed")

        self.folder = QLineEdit()
        self.folder.setPlaceholderText("folder with config.json, *.safetensors and surgview.json")
        self.browse = QPushButton("Browse…")
        self.browse.clicked.connect(self._browse)
        self.url = QLineEdit()
        self.url.setPlaceholderText("http://127.0.0.1:8000/v1")
        self.served_model = QLineEdit()
        self.served_model.setPlaceholderText("served model name (optional)")
        self.folder.textEdited.connect(lambda _: self.folder_option.setChecked(True))
        self.url.textEdited.connect(lambda _: self.server_option.setChecked(True))

        grid = QGridLayout()
        grid.addWidget(self.demo_option, 0, 0, 1, 3)
        grid.addWidget(self.folder_option, 1, 0, 1, 3)
        grid.addWidget(self.folder, 2, 1)
        grid.addWidget(self.browse, 2, 2)
        grid.addWidget(self.server_option, 3, 0, 1, 3)
        grid.addWidget(self.url, 4, 1, 1, 2)
        grid.addWidget(self.served_model, 5, 1, 1, 2)
        grid.setColumnMinimumWidth(0, 18)

        self.error = QLabel()
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #e66")
        self.error.hide()
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok)
        later = self.buttons.addButton("Later", QDialogButtonBox.ButtonRole.RejectRole)
        later.setToolTip("Open the viewer without a model: videos play, nothing is analysed")
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addWidget(intro)
        layout.addLayout(grid)
        layout.addWidget(self.error)
        layout.addWidget(self.buttons)
        (self.demo_option if self.demo_model is not None else self.folder_option).setChecked(True)

    def _browse(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Model folder", self.folder.text() or str(Path.home()))
        if chosen:
            self.folder.setText(chosen)
            self.folder_option.setChecked(True)

    def choice(self) -> dict[str, str]:
        """The settings the current choice stands for; raises ValueError with one line if it is unusable."""
        if self.demo_option.isChecked():
            if self.demo_model is None:
                raise ValueError("the demo model is not installed")
            return {"backend": local_kind(self.demo_model), "model": str(self.demo_model), "url": ""}
        if self.folder_option.isChecked():
            text = self.folder.text().strip()
            if not text:
                raise ValueError("choose a model folder")
            try:
                info = inspect_model_dir(text)
            except ModelDirError as exc:
                raise ValueError(str(exc)) from None
            return {"backend": local_kind(info.path), "model": str(info.path.resolve()), "url": ""}
        if self.server_option.isChecked():
            url = self.url.text().strip()
            if not url.startswith(("http://", "https://")):
                raise ValueError("the server URL must start with http:// or https://")
            return {"backend": "openai", "model": self.served_model.text().strip(), "url": url}
        raise ValueError("choose one of the three")

    def accept(self) -> None:
        """Write the choice, or show why it cannot be used and stay open."""
        try:
            choice = self.choice()
        except ValueError as exc:
            self.error.setText(str(exc))
            self.error.show()
            return
        for key, value in choice.items():
            self.settings.setValue(f"engine/{key}", value)
        self.settings.sync()
        super().accept()
