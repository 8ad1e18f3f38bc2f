"""First start without a model: ask once which model the viewer should use.

A surgeon who installed the desktop bundle has no model configured and no idea what a model
directory is. Rather than an empty window whose status bar says "no model", the first start
offers the three ways the engine can run: the demo model that ships with the bundle, a model
folder on this computer (checked with :func:`engine.modeldir.inspect_model_dir` before it is
accepted, so a wrong folder is refused here with one line, not later by the engine), or one or
more OpenAI-compatible servers. A model is asked the way it was trained to be asked (its model
profile: the questions, system prompt and image size); "Automatic" takes the model's own or the
stated default, and the choice can name one. The choice is written to the same QSettings keys
the Preferences dialog edits, so it can be changed there later. "Later" leaves the settings
untouched.
"""

from __future__ import annotations

import re
from pathlib import Path

from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QGridLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine import backend_factory
from engine.modeldir import MANIFEST_NAME, ModelDirError, inspect_model_dir
from engine.profiles import PROFILE_NAMES, get_profile
from engine.userdata import demo_dir

__all__ = [
    "DEFAULT_CONCURRENCY",
    "MAX_CONCURRENCY",
    "FirstRunDialog",
    "ProfileChoice",
    "check_urls",
    "demo_model_dir",
    "local_kind",
    "needs_model_choice",
    "parse_urls",
]

DEFAULT_CONCURRENCY = 16  # requests in flight to a model server: enough to keep vLLM's batch full
MAX_CONCURRENCY = 256
AUTOMATIC = "Automatic"
AUTOMATIC_DESCRIPTION = (
    "the profile the model's manifest names; a folder or server without one gets a stated default "
    "(surg-r1 when its name says so, qwen3-vl for a Qwen3-VL, else qwen-vl)"
)


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


def parse_urls(text: str) -> list[str]:
    """Server URLs typed into one field, separated by spaces or commas."""
    return [u for u in re.split(r"[\s,]+", text.strip()) if u]


def check_urls(text: str) -> list[str]:
    """The URLs of ``text``; raises ValueError (one line) when there is none or one is not http(s)."""
    urls = parse_urls(text)
    if not urls:
        raise ValueError("give the server URL, e.g. http://127.0.0.1:8000/v1")
    bad = [u for u in urls if not u.startswith(("http://", "https://"))]
    if bad:
        raise ValueError(f"the server URL must start with http:// or https:// ({bad[0]})")
    return urls


class ProfileChoice(QWidget):
    """The model profile: Automatic, or one by name, with its one-line description underneath.

    ``profile()`` is the settings value: "" for Automatic, else the profile's name.
    """

    def __init__(self, current: str = "", parent: QWidget | None = None):
        super().__init__(parent)
        self.combo = QComboBox()
        self.combo.addItem(f"{AUTOMATIC} — the model's own, or the stated default", "")
        self.combo.setItemData(0, AUTOMATIC_DESCRIPTION, Qt.ItemDataRole.ToolTipRole)
        for name in PROFILE_NAMES:
            self.combo.addItem(name, name)
            self.combo.setItemData(self.combo.count() - 1, self.description(name), Qt.ItemDataRole.ToolTipRole)
        self.about = QLabel()
        self.about.setTextFormat(Qt.TextFormat.PlainText)
        self.about.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.combo)
        layout.addWidget(self.about)
        self.combo.currentIndexChanged.connect(lambda _: self.about.setText(self.description(self.profile())))
        self.set_profile(current)
        self.about.setText(self.description(self.profile()))

    @staticmethod
    def description(name: str) -> str:
        return get_profile(name).description if name else AUTOMATIC_DESCRIPTION

    def profile(self) -> str:
        return str(self.combo.currentData() or "")

    def set_profile(self, name: str) -> None:
        """Select ``name`` (an unknown name, e.g. from an older settings file: Automatic)."""
        self.combo.setCurrentIndex(max(0, self.combo.findData(name or "")))


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
        self.url.setToolTip("Several servers of the same model: separate their URLs by spaces or commas")
        self.served_model = QLineEdit()
        self.served_model.setPlaceholderText("served model name (optional)")
        self.concurrency = QSpinBox()
        self.concurrency.setRange(1, MAX_CONCURRENCY)
        self.concurrency.setValue(DEFAULT_CONCURRENCY)
        self.concurrency.setPrefix("requests in flight: ")
        self.concurrency.setToolTip("Questions sent to the server(s) at once")
        self.profile = ProfileChoice()
        self.folder.textEdited.connect(lambda _: self.folder_option.setChecked(True))
        self.url.textEdited.connect(lambda _: self.server_option.setChecked(True))
        self.server_option.toggled.connect(self.concurrency.setEnabled)

        grid = QGridLayout()
        grid.addWidget(self.demo_option, 0, 0, 1, 3)
        grid.addWidget(self.folder_option, 1, 0, 1, 3)
        grid.addWidget(self.folder, 2, 1)
        grid.addWidget(self.browse, 2, 2)
        grid.addWidget(self.server_option, 3, 0, 1, 3)
        grid.addWidget(self.url, 4, 1, 1, 2)
        grid.addWidget(self.served_model, 5, 1, 1, 2)
        grid.addWidget(self.concurrency, 6, 1, 1, 2)
        grid.addWidget(QLabel("How to ask the model (model profile):"), 7, 0, 1, 3)
        grid.addWidget(self.profile, 8, 1, 1, 2)
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
        self.concurrency.setEnabled(self.server_option.isChecked())

    def _browse(self) -> None:
        chosen = QFileDialog.getExistingDirectory(self, "Model folder", self.folder.text() or str(Path.home()))
        if chosen:
            self.folder.setText(chosen)
            self.folder_option.setChecked(True)

    def choice(self) -> dict[str, str | int]:
        """The settings the current choice stands for; raises ValueError with one line if it is unusable."""
        return {**self._model_choice(), "profile": self.profile.profile()}

    def _model_choice(self) -> dict[str, str | int]:
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
            urls = check_urls(self.url.text())
            return {
                "backend": "openai",
                "model": self.served_model.text().strip(),
                "url": " ".join(urls),
                "concurrency": self.concurrency.value(),
            }
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
