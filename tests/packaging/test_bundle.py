"""Build the default desktop bundle (the torch-free onnx variant), then run it where no Python
exists: the demo case opens and the engine process streams a chain with onnxruntime. Slow (the build takes minutes): ``pytest -m slow tests/packaging``.

``SURGVIEW_BUNDLE=dist/surgview`` tests an already built bundle instead of building one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.packaging import sandbox
from tests.packaging.helpers import PACKAGING, ROOT, load

pytestmark = pytest.mark.slow
OPT = "/opt/surgview"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    given = os.environ.get("SURGVIEW_BUNDLE")
    if given:
        return Path(given).resolve()
    dist = tmp_path_factory.mktemp("dist")
    cmd = ["nice", "-n", "10", sys.executable, str(PACKAGING / "build.py"), "--dist", str(dist), "--skip-check"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    return dist / "surgview"


def in_sandbox(bundle: Path, home: Path, *args: str) -> subprocess.CompletedProcess:
    return sandbox.run([f"{OPT}/surgview", *args], home, {bundle: OPT})


def test_the_bundle_has_what_a_desktop_install_needs(bundle):
    internal = bundle / "_internal"
    assert (bundle / "surgview").is_file() and os.access(bundle / "surgview", os.X_OK)
    assert (bundle / "install.sh").is_file() and (bundle / "share" / "applications" / "surgview.desktop").is_file()
    assert (bundle / "share" / "icons" / "hicolor" / "256x256" / "apps" / "surgview.png").is_file()
    assert (internal / "demo" / "cholec80" / "videos" / "video01.mp4").is_file()
    assert (internal / "demo" / "model" / "surgview.json").is_file()
    assert (internal / "resources" / "ontology" / "ontology.yaml").is_file()
    assert not (internal / "train").exists() and not (internal / "trl").exists() and not (internal / "sklearn").exists()
    assert not list(internal.rglob("libcudart*")) and not (internal / "nvidia").exists()
    assert not (internal / "torch").exists() and not (internal / "transformers").exists()
    assert list(internal.rglob("libonnxruntime*.so*")) and (internal / "tokenizers").is_dir()
    assert (internal / "demo" / "model" / "onnx" / "onnx.json").is_file()


def test_no_python_in_the_sandbox(tmp_path):
    if not sandbox.isolated:
        pytest.skip("no bubblewrap: env -i cannot hide the system's Python")
    done = sandbox.run(["/bin/sh", "-c", "python3 -c 'print(1)'; ls /work /root 2>&1; echo end"], tmp_path)
    assert "1\n" not in done.stdout.split("end")[0]
    assert "No such file" in done.stdout


def test_the_demo_case_opens_without_python(bundle, tmp_path):
    done = in_sandbox(bundle, tmp_path, "--demo", "--info")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("case video01.mp4:") and "phase timeline (ground truth):" in done.stdout


def test_the_bundle_streams_a_chain_from_its_engine_process_without_python(bundle, tmp_path):
    done = in_sandbox(bundle, tmp_path, "--demo", "--smoke")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "chain: frame " in done.stdout and " tokens, " in done.stdout and "on cpu (onnxruntime)" in done.stdout
    assert not (tmp_path / ".local" / "share" / "surgview").exists()  # the smoke run keeps no data


def test_installed_from_the_bundle_it_runs_from_the_menu_entry(bundle, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
    done = subprocess.run(["bash", str(bundle / "install.sh")], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    desktop = (home / ".local" / "share" / "applications" / "surgview.desktop").read_text()
    exec_line = next(line for line in desktop.splitlines() if line.startswith("Exec="))
    program = exec_line.split('"')[1]
    assert Path(program) == home / ".local" / "opt" / "surgview" / "surgview"
    # what the menu runs, through the PATH link, in a clean environment (the prefix at its own path)
    prefix = home / ".local"
    run = sandbox.run([str(prefix / "bin" / "surgview"), "--demo", "--info"], tmp_path, {prefix: str(prefix)})
    assert run.returncode == 0, run.stderr
    assert "case video01.mp4" in run.stdout


def test_build_info_records_size_and_excludes(bundle):
    info = json.loads((bundle / "BUILD-INFO.json").read_text())
    config = load("bundle_config")
    assert info["variant"] == "onnx" and not info["with_train"]
    assert set(info["excluded_modules"]) == set(config.excludes("onnx"))
    assert 100e6 < info["bytes"] < 800e6
