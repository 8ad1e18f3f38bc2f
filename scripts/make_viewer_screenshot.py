"""Regenerate docs/viewer.png: the viewer on the demo case, offscreen or under a virtual display.

    QT_QPA_PLATFORM=offscreen .venv/bin/python scripts/make_viewer_screenshot.py
    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python scripts/make_viewer_screenshot.py

Builds (if needed) the demo case and model in a temporary data folder, opens the real window,
lets the engine analyse the case at a coarse stride, stops on a frame in Calot-triangle
dissection whose chain has been streamed, and saves a grab of the whole window.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "viewer.png")
    parser.add_argument("--frame", type=int, default=700)
    parser.add_argument("--settle", type=float, default=25.0, help="seconds of analysis before the grab")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="surgview-shot-"))
    os.environ["SURGVIEW_DATA"] = str(data)
    demo = data / "demo"
    subprocess.run([sys.executable, "-m", "train.cli", "demo", "--out", str(demo), "--quiet"], cwd=ROOT, check=True)

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.main_window import SurgviewWindow
    from app.theme import apply_theme

    app = QApplication(sys.argv[:1])
    apply_theme(app)
    settings = QSettings(str(data / "settings.ini"), QSettings.Format.IniFormat)
    spec = {
        "kind": "transformers",
        "model": str(demo / "model"),
        "threads": 1,
        "stride_s": 4.0,
        "max_new_tokens": 320,  # the demo model's chains are ~200 tokens
        "task": "frame_analysis",
    }
    window = SurgviewWindow(engine_spec=spec, settings=settings)
    window.resize(1600, 1000)
    window.show()
    window.open_case(demo / "cholec80" / "videos" / "video01.mp4")

    def pump(seconds: float, until=None) -> None:
        end = time.time() + seconds
        while time.time() < end and not (until and until()):
            app.processEvents()
            time.sleep(0.01)

    pump(60, lambda: window.analysis.engine == "ready" and window.case.frame_count > 0)
    pump(args.settle)
    window.seek(args.frame)
    pump(
        30,
        lambda: (
            window.panel.frame == args.frame
            and window.panel.chain is not None
            and window.panel.chain.status.value != "partial"
        ),
    )
    pump(1.0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    window.grab().save(str(args.out))
    print(args.out)
    window.close()


if __name__ == "__main__":
    main()
