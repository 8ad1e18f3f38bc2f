"""First start without a model (demo model, model folder or server) and Help ▸ About (versions, manifest)."""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from PySide6.QtCore import qVersion
from PySide6.QtWidgets import QDialog

from app.about import AboutDialog, model_lines, versions
from app.first_run import FirstRunDialog, needs_model_choice
from app.main_window import SurgviewWindow
from engine.modeldir import inspect_model_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from engine.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", seed=3)


@pytest.fixture
def installed_demo(data_home, tiny_model) -> Path:
    """A demo model where the viewer looks for it (the bundle's, or ``surgview-train demo``'s)."""
    target = data_home / "demo" / "model"
    shutil.copytree(tiny_model, target)
    return target


def make_dialog(qtbot, settings) -> FirstRunDialog:
    dialog = FirstRunDialog(settings)
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


# ------------------------------------------------------------------ first run
def test_first_run_offers_the_demo_model_and_the_window_then_uses_it(qtbot, settings, installed_demo):
    assert needs_model_choice(settings)
    dialog = make_dialog(qtbot, settings)
    assert dialog.demo_option.isEnabled() and dialog.demo_option.isChecked()
    dialog.buttons.button(dialog.buttons.StandardButton.Ok).click()
    assert dialog.result() == QDialog.DialogCode.Accepted
    assert not needs_model_choice(settings)
    assert settings.value("engine/backend") == "transformers"
    window = SurgviewWindow(settings=settings, start_engine=False)
    qtbot.addWidget(window)
    assert window.engine_spec["model"] == str(installed_demo)


def test_a_wrong_model_folder_is_refused_in_the_dialog_then_a_right_one_accepted(
    qtbot, settings, data_home, tiny_model, tmp_path
):
    dialog = make_dialog(qtbot, settings)
    assert not dialog.demo_option.isEnabled()  # no demo installed here
    assert dialog.folder_option.isChecked()
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    dialog.folder.setText(str(empty))
    dialog.accept()
    assert dialog.isVisible() and dialog.result() != QDialog.DialogCode.Accepted
    assert dialog.error.isVisible() and "\n" not in dialog.error.text() and dialog.error.text()
    assert needs_model_choice(settings)  # nothing written

    dialog.folder.setText(str(tiny_model))
    dialog.accept()
    assert dialog.result() == QDialog.DialogCode.Accepted
    assert settings.value("engine/model") == str(tiny_model.resolve())


def test_a_server_url_is_checked_and_stored_for_the_openai_backend(qtbot, settings, data_home):
    dialog = make_dialog(qtbot, settings)
    dialog.server_option.setChecked(True)
    dialog.url.setText("ftp://10.0.0.5/v1")
    dialog.accept()
    assert "http://" in dialog.error.text() and needs_model_choice(settings)
    dialog.url.setText("http://10.0.0.5:8000/v1")
    dialog.served_model.setText("surg-r1")
    dialog.accept()
    assert dialog.result() == QDialog.DialogCode.Accepted
    window = SurgviewWindow(settings=settings, start_engine=False)
    qtbot.addWidget(window)
    assert window.engine_spec["kind"] == "openai"
    assert window.engine_spec["url"] == "http://10.0.0.5:8000/v1" and window.engine_spec["model"] == "surg-r1"


def test_first_run_chooses_the_profile_and_several_servers(qtbot, settings, data_home):
    dialog = make_dialog(qtbot, settings)
    assert not dialog.concurrency.isEnabled()  # for a server only
    assert dialog.profile.profile() == "" and "Automatic" in dialog.profile.combo.currentText()
    dialog.url.setText("http://10.0.0.5:8000/v1,http://10.0.0.6:8000/v1")
    dialog.url.textEdited.emit(dialog.url.text())  # as typed: the server option follows
    assert dialog.server_option.isChecked() and dialog.concurrency.isEnabled()
    dialog.concurrency.setValue(64)
    dialog.profile.set_profile("qwen-vl")
    assert "Qwen2.5-VL" in dialog.profile.about.text()
    dialog.accept()
    assert dialog.result() == QDialog.DialogCode.Accepted
    window = SurgviewWindow(settings=settings, start_engine=False)
    qtbot.addWidget(window)
    spec = window.engine_spec
    assert spec["urls"] == ["http://10.0.0.5:8000/v1", "http://10.0.0.6:8000/v1"]
    assert (spec["profile"], spec["concurrency"]) == ("qwen-vl", 64)


def test_later_leaves_the_settings_alone(qtbot, settings, installed_demo):
    dialog = make_dialog(qtbot, settings)
    dialog.reject()
    assert dialog.result() == QDialog.DialogCode.Rejected
    assert needs_model_choice(settings)


# ------------------------------------------------------------------ about
def test_versions_name_what_is_installed():
    rows = dict(versions())
    assert rows["surgview"] == metadata.version("surgview")
    assert rows["Python"].startswith(platform.python_version())
    assert rows["Qt"] == qVersion()
    assert rows["torch"] == metadata.version("torch")
    assert rows["transformers"] == metadata.version("transformers")
    assert rows["onnxruntime"] == metadata.version("onnxruntime")  # installed here


def test_model_lines_show_the_manifest_and_the_fingerprint(tiny_model):
    info = inspect_model_dir(tiny_model)
    lines = model_lines({"kind": "transformers", "model": str(tiny_model)}, "tiny@abc", "cpu")
    text = "\n".join(lines)
    assert lines[0] == "loaded: tiny@abc on cpu"
    assert f"name: {info.name}" in text
    assert f"fingerprint: {info.fingerprint[:16]}" in text
    assert f"ontology version: {info.manifest.ontology_version}" in text
    assert f"lineage: {info.manifest.lineage[0].name} on" in text
    assert "evaluation: none recorded" in text


def test_model_lines_for_a_server_a_broken_folder_and_nothing(tmp_path):
    server = model_lines({"kind": "openai", "url": "http://10.0.0.5:8000/v1", "model": "surg-r1"})
    assert server == ["server: http://10.0.0.5:8000/v1  served model: surg-r1"]
    broken = model_lines({"kind": "transformers", "model": str(tmp_path / "gone")})
    assert broken[-1].startswith("cannot be read: ") and "does not exist" in broken[-1]
    assert model_lines(None) == ["no model configured (File ▸ Preferences)"]


def test_help_about_shows_versions_and_the_manifest_as_plain_text(qtbot, settings, tiny_model, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    manifest = json.loads((model / "surgview.json").read_text())
    manifest["name"] = "<b>sft-v2</b>"
    manifest["evaluation"] = {"phase_accuracy": 0.81}
    (model / "surgview.json").write_text(json.dumps(manifest))
    window = SurgviewWindow(
        engine_spec={"kind": "transformers", "model": str(model)}, settings=settings, start_engine=False
    )
    qtbot.addWidget(window)
    about = next(
        a for m in window.menuBar().actions() if m.text() == "&Help" for a in m.menu().actions() if "About" in a.text()
    )
    about.trigger()
    dialog = window.about_dialog
    assert isinstance(dialog, AboutDialog) and dialog.isVisible()
    text = dialog.text.toPlainText()
    assert "name: <b>sft-v2</b>" in text  # shown literally, never as markup
    assert "evaluation: phase_accuracy = 0.81" in text
    assert "torch" in text and metadata.version("torch") in text and qVersion() in text


def test_about_does_not_import_torch_into_the_viewer_process(tiny_model):
    code = (
        "import sys; from app.about import about_text; "
        f"t = about_text({{'kind': 'transformers', 'model': {str(tiny_model)!r}}}); "
        "assert 'ontology version' in t, t; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
