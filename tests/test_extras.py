"""The extras follow the rooms: the base install is the viewer and the engine, ``[train]`` the
training stack, which app/ and engine/ never import (so ``pip install .`` gives a working viewer
and engine)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
TRAINING_ONLY = ("trl", "peft", "sklearn", "ivtmetrics", "pycocotools", "tensorboard", "accelerate", "onnxscript")


def _requirements() -> list[Requirement]:
    return [Requirement(line) for line in importlib.metadata.requires("surgview") or []]


def _extras(req: Requirement) -> set[str]:
    """The extras a requirement is under ("" for the base install)."""
    if req.marker is None:
        return {""}
    return {name for name in ("", "train", "dev", "packaging") if req.marker.evaluate({"extra": name})}


def test_the_training_stack_is_only_required_under_train():
    by_name = {}
    for req in _requirements():
        by_name.setdefault(req.name.lower(), set()).update(_extras(req))
    for name in ("trl", "peft", "accelerate", "tensorboard", "ivtmetrics", "pycocotools", "onnxscript"):
        assert by_name.get(name) == {"train"}, (name, by_name.get(name))
    # The engine's own needs are in the base install: backends, the client, the server, score.
    for name in ("torch", "transformers", "onnx", "onnxruntime", "httpx", "starlette", "uvicorn", "scikit-learn"):
        assert by_name.get(name) == {""}, (name, by_name.get(name))


# A package that is not installed: ``import`` raises ModuleNotFoundError and importlib.util.find_spec
# answers None. A meta-path finder that raises would differ from that (transformers probes optional
# packages such as accelerate with find_spec and would fail on the exception), so each blocked name
# is marked absent the way Python itself does it: None in sys.modules. The meta-path hook records any
# attempt that gets past that (a submodule looked up by another route).
BLOCKER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
for name in BLOCKED:
    sys.modules[name] = None

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not in the base install)", name=name)
        return None

sys.meta_path.insert(0, Blocker())
import app.main_window, engine.cli, engine.cli_commands, engine.backends.server_pool, engine.server
loaded = sorted(m for m, mod in sys.modules.items() if mod is not None and m.partition(".")[0] in BLOCKED)
assert not loaded, loaded
print("ok")
"""


def test_the_viewer_and_the_engine_import_without_the_training_stack():
    env = os.environ | {"QT_QPA_PLATFORM": "offscreen"}
    done = subprocess.run(
        [sys.executable, "-c", BLOCKER, ",".join(TRAINING_ONLY)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
