"""The packaging files without building: the menu entry, the excludes against a real run, the
files left out, the icons, the program dispatch and the install script."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtGui import QImage

from tests.packaging.helpers import PACKAGING, ROOT, load

config = load("bundle_config")
build = load("build")


def validate_desktop(path: Path) -> None:
    """desktop-file-validate when installed; else the keys a menu needs, parsed."""
    tool = shutil.which("desktop-file-validate")
    if tool:
        done = subprocess.run([tool, str(path)], capture_output=True, text=True)
        assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr
        return
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(path)
    entry = parser["Desktop Entry"]
    assert entry["Type"] == "Application" and entry["Name"] and entry["Exec"] and entry["Icon"]
    assert entry["Categories"].endswith(";")


def test_the_desktop_entry_is_valid_and_opens_videos():
    path = PACKAGING / "surgview.desktop"
    validate_desktop(path)
    text = path.read_text()
    assert "Exec=surgview %f" in text and "Icon=surgview" in text and "video/mp4;" in text


def test_nothing_a_real_run_imports_is_excluded():
    """runtime_modules.py loads a model and generates; only the tolerated optional modules may be excluded."""
    modules = build.runtime_modules(None)
    assert "transformers.models.qwen2_5_vl.modeling_qwen2_5_vl" in modules and "app.main_window" in modules
    assert build.excluded_but_needed(modules, "cpu", False) == []
    assert "train" not in {m.split(".")[0] for m in modules}  # the viewer never imports the training stack


def test_the_onnx_variant_run_needs_nothing_of_the_torch_stack():
    """The onnx variant's recorded run: window, engine worker modules, the demo model's onnx/ export
    streaming tokens, with torch and transformers unimportable as in that bundle."""
    modules = build.runtime_modules(None, "onnx")
    assert "engine.backends.onnx.backend" in modules and "onnxruntime" in modules and "tokenizers" in modules
    assert "app.engine_worker" in modules and "app.main_window" in modules
    assert not {"torch", "transformers", "safetensors"} & {m.split(".")[0] for m in modules}
    assert build.excluded_but_needed(modules, "onnx", False) == []
    # an import of the torch stack would be caught
    assert build.excluded_but_needed(["torch.nn", "transformers"], "onnx", False) == ["torch", "transformers"]


def test_the_onnx_variant_is_the_default_and_leaves_out_torch_but_not_its_runtime():
    assert build.BuildOptions().variant == "onnx" and build.parse_args([]).variant == "onnx"
    onnx = config.excludes("onnx")
    assert config.excludes() == onnx
    for name in ("torch", "transformers", "accelerate", "safetensors", "sympy", "trl", "nvidia"):
        assert name in onnx
    for name in ("onnxruntime", "tokenizers", "jinja2", "PIL", "numpy", "av", "cv2", "PySide6"):
        assert config.excluded(name, onnx) is None
    assert "torch" not in config.excludes("cpu") and "transformers" not in config.excludes("cpu")
    assert "torch" not in config.excludes("onnx", with_train=True)  # the training stack needs torch
    build.check_variant("onnx")


def test_the_check_catches_an_excluded_module_a_run_needs():
    assert build.excluded_but_needed(["trl.trainer", "torch", "accelerate.utils"], "cpu", False) == ["trl"]
    assert build.excluded_but_needed(["trl.trainer"], "cpu", True) == []  # --with-train keeps it
    assert build.excluded_but_needed(["nvidia.cublas"], "gpu", False) == []


def test_the_training_stack_is_left_out_unless_asked_for():
    cpu = config.excludes("cpu")
    for name in ("train", "trl", "peft", "datasets", "tensorboard", "sklearn", "accelerate"):
        assert name in cpu
    assert "PySide6.QtQml" in cpu and "nvidia" in cpu
    with_train = config.excludes("cpu", with_train=True)
    assert "train" not in with_train and "trl" not in with_train
    assert "nvidia" not in config.excludes("gpu")
    with pytest.raises(ValueError):
        config.excludes("rocm")


@pytest.mark.parametrize(
    ("dest", "variant", "dropped"),
    [
        ("torch/lib/libtorch_cpu.so", "cpu", False),
        ("torch/bin/torch_shm_manager", "cpu", False),
        ("torch/bin/test_api", "cpu", True),
        ("torch/lib/libtorchbind_test.so", "cpu", True),
        ("torch/include/ATen/core/Tensor.h", "cpu", True),
        ("PySide6/Qt/translations/qtbase_en.qm", "cpu", False),
        ("PySide6/Qt/translations/qtbase_de.qm", "cpu", True),
        ("PySide6/Qt/plugins/platforms/libqoffscreen.so", "cpu", False),
        ("nvidia/cublas/lib/libcublas.so.12", "cpu", True),
        ("nvidia/cublas/lib/libcublas.so.12", "gpu", False),
        ("torch/lib/libtorch_cuda.so", "gpu", False),
    ],
)
def test_files_left_out(dest, variant, dropped):
    assert config.pruned(dest, variant) is dropped


def test_icons_are_rendered_at_every_size(qapp, tmp_path):
    written = build.render_icons(PACKAGING / "icons" / "surgview.svg", tmp_path)
    for size in build.ICON_SIZES:
        image = QImage(str(tmp_path / f"{size}x{size}" / "apps" / "surgview.png"))
        assert (image.width(), image.height()) == (size, size)
        assert image.pixelColor(size // 2, size // 2).alpha() == 255  # drawn, not blank
        assert image.pixelColor(0, 0).alpha() == 0  # rounded corner stays transparent
    assert (tmp_path / "scalable" / "apps" / "surgview.svg").is_file() and len(written) == len(build.ICON_SIZES) + 1


def test_the_variant_must_match_the_installed_torch():
    import torch

    if torch.version.cuda:
        pytest.skip("a CUDA torch is installed")
    build.check_variant("cpu")
    with pytest.raises(build.BuildError, match="no CUDA"):
        build.check_variant("gpu")


@pytest.mark.parametrize(
    ("argv0", "expect"), [("surgview", "usage: surgview "), ("surgview-engine", "surgview-engine")]
)
def test_the_bundle_program_dispatches_by_its_name(argv0, expect):
    code = (
        "import importlib.util, sys; "
        f"spec = importlib.util.spec_from_file_location('entry', {str(PACKAGING / 'entry.py')!r}); "
        "entry = importlib.util.module_from_spec(spec); spec.loader.exec_module(entry); "
        f"sys.argv = [{('/opt/surgview/bin/' + argv0)!r}, '--help']; sys.exit(entry.main())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert expect in done.stdout


# ------------------------------------------------------------------ install.sh
@pytest.fixture
def fake_bundle(tmp_path) -> Path:
    """A bundle's layout with a shell script standing in for the executable."""
    bundle = tmp_path / "dist" / "surgview"
    (bundle / "_internal").mkdir(parents=True)
    exe = bundle / "surgview"
    exe.write_text('#!/bin/sh\necho "ran as $(basename "$0") $*"\n')
    exe.chmod(0o755)
    shutil.copy2(PACKAGING / "install.sh", bundle / "install.sh")
    (bundle / "share" / "applications").mkdir(parents=True)
    shutil.copy2(PACKAGING / "surgview.desktop", bundle / "share" / "applications" / "surgview.desktop")
    icon = bundle / "share" / "icons" / "hicolor" / "48x48" / "apps"
    icon.mkdir(parents=True)
    (icon / "surgview.png").write_bytes(b"png")
    return bundle


def install(bundle: Path, *args: str, home: Path) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ["PATH"], "HOME": str(home)}
    return subprocess.run(["bash", str(bundle / "install.sh"), *args], capture_output=True, text=True, env=env)


def test_install_puts_program_menu_entry_and_icons_under_the_prefix(fake_bundle, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    done = install(fake_bundle, home=home)
    assert done.returncode == 0, done.stderr
    prefix = home / ".local"
    opt = prefix / "opt" / "surgview"
    assert (opt / "surgview").is_file() and (opt / "_internal").is_dir()
    assert (prefix / "bin" / "surgview").resolve() == (opt / "surgview").resolve()
    assert not (prefix / "bin" / "surgview-train").exists()  # no training stack in this bundle
    engine = subprocess.run([str(prefix / "bin" / "surgview-engine"), "ontology"], capture_output=True, text=True)
    assert engine.stdout.strip() == "ran as surgview-engine ontology"
    desktop = prefix / "share" / "applications" / "surgview.desktop"
    assert f'Exec="{opt}/surgview" %f' in desktop.read_text()
    validate_desktop(desktop)
    assert (prefix / "share" / "icons" / "hicolor" / "48x48" / "apps" / "surgview.png").is_file()

    # again, from a newer bundle: replaced in place
    (fake_bundle / "NEW").write_text("2")
    assert install(fake_bundle, home=home).returncode == 0
    assert (opt / "NEW").is_file() and not list((prefix / "opt").glob("surgview.*"))

    done = install(fake_bundle, "--uninstall", home=home)
    assert done.returncode == 0, done.stderr
    assert not opt.exists() and not (prefix / "bin" / "surgview").exists() and not desktop.exists()
    assert not (prefix / "share" / "icons" / "hicolor" / "48x48" / "apps" / "surgview.png").exists()


def test_install_to_a_chosen_prefix_and_refusals(fake_bundle, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (fake_bundle / "TRAINING-STACK").write_text("yes")
    assert install(fake_bundle, "--prefix", str(tmp_path / "apps"), home=home).returncode == 0
    assert (tmp_path / "apps" / "bin" / "surgview-train").is_symlink()
    assert not (home / ".local").exists()
    bad = install(fake_bundle, "--frobnicate", home=home)
    assert bad.returncode != 0 and "unknown option --frobnicate" in bad.stderr
    (fake_bundle / "_internal").rmdir()
    broken = install(fake_bundle, home=home)
    assert broken.returncode != 0 and "unpacked surgview bundle" in broken.stderr
