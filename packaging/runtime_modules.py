"""List the modules the viewer and its engine process load while doing real work.

Run as a script (``python packaging/runtime_modules.py [--backend transformers|onnx] [MODEL_DIR]``):
it imports the viewer's modules, opens the main window offscreen, loads a model (transformers: a
tiny one built on the spot when none is given; onnx: the shipped demo model's ``onnx/`` export
when none is given), decodes a synthetic frame and streams a few tokens, then prints one loaded
module name per line. The build checks its excludes against this list: what a run imports must
not be left out of the bundle (except the optional modules that transformers probes for and does
without, see ``bundle_config.OPTIONAL``).

With ``--backend onnx`` the torch stack (``bundle_config.TORCH_STACK``) cannot be imported, as in
the torch-free bundle: code that probes for torch takes the same path as there, and an import
of it fails the run (so the build refuses) instead of passing unnoticed.
"""

from __future__ import annotations

import argparse
import importlib.abc
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent


class _Blocked(importlib.abc.MetaPathFinder):
    """Makes ``names`` (and their submodules) unimportable, as if not installed."""

    def __init__(self, names: set[str]):
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (left out of the onnx bundle)", name=fullname)
        return None


def block(names: set[str]) -> None:
    """Hide ``names`` from imports (they must not be imported yet)."""
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in names)
    if loaded:
        raise RuntimeError(f"already imported: {', '.join(loaded[:5])}")
    sys.meta_path.insert(0, _Blocked(names))


def exercise(model_dir: Path | None, backend_kind: str = "transformers") -> None:
    """Do what the two processes do: window, engine worker, model load, generation."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import numpy as np
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    import app.about
    import app.engine_worker
    import app.first_run
    import app.main
    import app.smoke
    import app.viewer  # noqa: F401 (the modules the bundle's program and engine child import)
    from app.main_window import SurgviewWindow
    from engine.backend_factory import BackendSpec, open_backend
    from engine.backends.base import GenerationRequest
    from engine.prompts import frame_prompt

    qt = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        settings = QSettings(str(Path(tmp) / "s.ini"), QSettings.Format.IniFormat)
        window = SurgviewWindow(settings=settings, start_engine=False)
        window.close()
        qt.processEvents()
        if model_dir is None and backend_kind == "onnx":
            from engine.resources import resource_path

            model_dir = resource_path("demo_model")
        elif model_dir is None:
            from engine.tiny_model import build_tiny_model

            model_dir = build_tiny_model(Path(tmp) / "model", seed=1)
        _decode(Path(tmp) / "probe.mp4")
        backend = open_backend(BackendSpec(kind=backend_kind, model=str(model_dir), threads=1))
        task = frame_prompt("frame_analysis", 64, 64)
        image = np.zeros((64, 64, 3), np.uint8)
        stream = backend.stream(GenerationRequest(task.text, image=image, system=task.system, max_new_tokens=4))
        "".join(stream)


def _decode(path: Path) -> None:
    """Encode a few frames with PyAV, then index, seek and decode them as the viewer does."""
    import av
    import numpy as np

    from engine.video import VideoReader

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(8):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 20, np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with VideoReader(path) as reader:
        reader.frame(5)
        reader.frame(2)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="runtime_modules.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", nargs="?", type=Path)
    parser.add_argument("--backend", choices=("transformers", "onnx"), default="transformers")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.backend == "onnx":
        sys.path.insert(0, str(HERE))
        import bundle_config

        block(set(bundle_config.TORCH_STACK))
    exercise(args.model_dir, args.backend)
    for name in sorted(sys.modules):
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
