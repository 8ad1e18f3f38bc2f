"""List the modules the viewer and its engine process load while doing real work.

Run as a script (``python packaging/runtime_modules.py [MODEL_DIR]``): it imports the viewer's
modules, opens the main window offscreen, loads a model with the transformers backend (a tiny
one built on the spot when none is given), decodes a synthetic frame and streams a few tokens,
then prints one loaded module name per line. The build checks its excludes against this list:
what a run imports must not be left out of the bundle (except the optional modules that
transformers probes for and does without, see ``bundle_config.OPTIONAL``).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def exercise(model_dir: Path | None) -> None:
    """Do what the two processes do: window, engine worker, model load, generation."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import numpy as np
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.main_window import SurgviewWindow
    from engine.backends.base import GenerationRequest
    from engine.backends.transformers_backend import TransformersBackend
    from engine.prompts import frame_prompt

    qt = QApplication.instance() or QApplication([])
    with tempfile.TemporaryDirectory() as tmp:
        settings = QSettings(str(Path(tmp) / "s.ini"), QSettings.Format.IniFormat)
        window = SurgviewWindow(settings=settings, start_engine=False)
        window.close()
        qt.processEvents()
        if model_dir is None:
            from engine.tiny_model import build_tiny_model

            model_dir = build_tiny_model(Path(tmp) / "model", seed=1)
        _decode(Path(tmp) / "probe.mp4")
        backend = TransformersBackend(str(model_dir), threads=1)
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
    sys.path.insert(0, str(ROOT))
    exercise(Path(argv[0]) if argv else None)
    for name in sorted(sys.modules):
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
