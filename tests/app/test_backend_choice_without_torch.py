"""Which backend runs a local model folder: onnx where torch is missing (the torch-free desktop bundle)
and the folder has an ``onnx/`` export, else transformers; a folder this install cannot run is one line.

"Torch missing" is simulated by patching the probe ``engine.backend_factory.torch_available``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtWidgets import QDialog

from app.first_run import FirstRunDialog
from app.main import engine_spec
from app.main_window import SurgviewWindow
from engine import backend_factory
from engine.backend_factory import BackendSpec, add_backend_arguments, default_kind, open_backend, spec_from_args
from engine.backends.base import BackendError
from engine.resources import resource_path

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """The shipped demo model, which carries an onnx/ export."""
    target = tmp_path_factory.mktemp("models") / "with-onnx"
    shutil.copytree(resource_path("demo_model"), target)
    assert (target / "onnx" / "onnx.json").is_file()
    return target


@pytest.fixture(scope="module")
def plain(tmp_path_factory, exported) -> Path:
    """The same model folder without its export."""
    target = tmp_path_factory.mktemp("models") / "no-onnx"
    shutil.copytree(exported, target, ignore=shutil.ignore_patterns("onnx"))
    return target


@pytest.fixture
def no_torch(monkeypatch):
    monkeypatch.setattr(backend_factory, "torch_available", lambda: False)


def test_the_probe_finds_torch_without_importing_it():
    code = "import sys, engine.backend_factory as b; print(b.torch_available(), 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.split() == ["True", "False"]


def test_with_torch_the_transformers_backend_stays_the_default(exported):
    assert default_kind(exported) == "transformers"


def test_without_torch_a_folder_with_an_export_runs_on_onnx(no_torch, exported, plain, tmp_path):
    assert default_kind(exported) == "onnx"
    assert default_kind(plain) == "transformers"
    assert default_kind(None) == "transformers"
    partial = tmp_path / "partial"
    shutil.copytree(exported, partial)
    (partial / "onnx" / "onnx.json").unlink()  # an export that did not finish
    assert default_kind(partial) == "transformers"


def test_without_torch_a_folder_without_export_is_refused_in_one_line(no_torch, plain):
    with pytest.raises(BackendError) as exc:
        open_backend(BackendSpec(kind="transformers", model=str(plain)))
    message = str(exc.value)
    assert "\n" not in message and "no torch" in message and f"export-onnx {plain}" in message


def test_without_torch_asking_transformers_for_an_exported_folder_names_the_onnx_backend(no_torch, exported):
    with pytest.raises(BackendError, match=r"run .* with the onnx backend"):
        open_backend(BackendSpec(kind="transformers", model=str(exported)))


def test_surgview_engine_backend_defaults_to_onnx_without_torch(no_torch, exported, plain, monkeypatch):
    parser = argparse.ArgumentParser()
    add_backend_arguments(parser)
    assert spec_from_args(parser.parse_args(["--model", str(exported)])).kind == "onnx"
    assert spec_from_args(parser.parse_args(["--model", str(plain)])).kind == "transformers"
    assert spec_from_args(parser.parse_args(["--backend", "openai", "--url", "http://h/v1"])).kind == "openai"
    monkeypatch.setattr(backend_factory, "torch_available", lambda: True)
    assert spec_from_args(parser.parse_args(["--model", str(exported)])).kind == "transformers"


def test_surgview_model_uses_onnx_without_torch(no_torch, exported, plain):
    args = argparse.Namespace(url=None, served_model=None, model=str(exported), stride=1.0)
    assert engine_spec(args)["kind"] == "onnx"
    args.model = str(plain)
    assert engine_spec(args)["kind"] == "transformers"  # the engine then says why it cannot load


def test_the_window_runs_the_configured_folder_on_onnx_without_torch(qtbot, no_torch, settings, exported):
    settings.setValue("engine/backend", "transformers")
    settings.setValue("engine/model", str(exported))
    window = SurgviewWindow(settings=settings, start_engine=False)
    qtbot.addWidget(window)
    assert window.engine_spec["kind"] == "onnx" and window.engine_spec["model"] == str(exported)


def test_first_run_without_torch_refuses_a_folder_without_export_then_stores_onnx(
    qtbot, no_torch, settings, exported, plain, tmp_path, monkeypatch
):
    monkeypatch.setenv("SURGVIEW_DATA", str(tmp_path / "data"))  # no demo model installed
    dialog = FirstRunDialog(settings)
    qtbot.addWidget(dialog)
    dialog.show()
    dialog.folder.setText(str(plain))
    dialog.accept()
    assert dialog.result() != QDialog.DialogCode.Accepted
    assert dialog.error.isVisible() and "\n" not in dialog.error.text() and "no torch" in dialog.error.text()
    assert not settings.value("engine/model")

    dialog.folder.setText(str(exported))
    dialog.accept()
    assert dialog.result() == QDialog.DialogCode.Accepted
    assert settings.value("engine/backend") == "onnx"
