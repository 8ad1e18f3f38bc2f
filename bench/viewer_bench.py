"""The whole viewer window under load: UI stalls while playing during a background sweep, and the
time from a click on the timeline to the new frame on screen.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/viewer_bench.py [--file VIDEO] [--seconds 15]

Without --file it writes a 1-minute 1280x720 H.264 case with a 250-frame GOP (the synthetic
generator). It opens SurgviewWindow with the engine child process (the tiny model) sweeping
the case at a 0.5 s stride, then:

- plays at 1x for --seconds while the engine sweeps, measuring displayed frames per second
  against the source rate and the UI event loop's longest stall (a 2 ms timer's worst lateness;
  budget: the UI thread never blocks for more than 50 ms);
- clicks the timeline at 40 random positions (paused) and measures click → new frame on screen
  (canvas showing the target frame): median and p95 (budget: median ≤ 100 ms on a long-GOP file).

For 1080p playback with every overlay drawn, see bench/viewer_playback_bench.py.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QElapsedTimer, QSettings, Qt, QTimer  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.main_window import SurgviewWindow  # noqa: E402
from engine.tiny_model import build_tiny_model  # noqa: E402
from train.synth.generate import SynthConfig, generate  # noqa: E402


class StallMeter:
    """A fast timer whose lateness is the time the event loop could not run."""

    def __init__(self, interval_ms: int = 2):
        self.interval = interval_ms
        self.clock = QElapsedTimer()
        self.gaps: list[float] = []
        self.timer = QTimer(interval=interval_ms)
        self.timer.timeout.connect(self._tick)
        self._last = 0

    def start(self) -> None:
        self.gaps.clear()
        self.clock.start()
        self._last = self.clock.nsecsElapsed()
        self.timer.start()

    def stop(self) -> None:
        self.timer.stop()

    def _tick(self) -> None:
        now = self.clock.nsecsElapsed()
        self.gaps.append(max(0.0, (now - self._last) / 1e6 - self.interval))
        self._last = now


def pump(app: QApplication, seconds: float, until=None) -> bool:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        if until is not None and until():
            return True
        time.sleep(0.0005)
    return until is None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--clicks", type=int, default=40)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="surgview-bench-"))
    os.environ["SURGVIEW_DATA"] = str(tmp / "data")
    video = args.file
    if video is None:
        generate(tmp / "case", SynthConfig(cases=1, minutes=1.0, seed=9, width=1280, height=720, gop=250))
        video = tmp / "case" / "cholec80" / "videos" / "video01.mp4"
    model = build_tiny_model(tmp / "tiny", seed=0, init_std=0.1)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    settings = QSettings(str(tmp / "settings.ini"), QSettings.Format.IniFormat)
    spec = {
        "kind": "transformers",
        "model": str(model),
        "threads": 1,
        "stride_s": 0.5,
        "max_new_tokens": 48,
        "task": "frame_analysis",
    }
    window = SurgviewWindow(engine_spec=spec, settings=settings)
    window.resize(1600, 1000)
    window.show()
    pump(app, 90, lambda: window.analysis.engine == "ready")
    window.open_case(video)
    pump(app, 30, lambda: window.playhead.displayed == 0)
    pump(app, 3)  # the sweep gets going

    meter = StallMeter()
    shown: list[int] = []
    window.player.frameReady.connect(lambda index, _image: shown.append(index))
    done_before = window.analysis.done
    meter.start()
    window.toggle_play()
    pump(app, args.seconds)
    window.toggle_play()
    meter.stop()
    pump(app, 0.5)
    fps = window.case.fps
    displayed = len(shown) / args.seconds
    swept = window.analysis.done - done_before
    gaps = sorted(meter.gaps)
    print(
        f"file: {video.name} {window.case.width}x{window.case.height} @ {fps:g} fps, "
        f"{window.case.frame_count} frames; engine: {window.analysis.model_id} sweeping at 0.5 s"
    )
    print(
        f"play 1x for {args.seconds:g} s during the sweep: {displayed:.1f} frames/s displayed of {fps:g} "
        f"({displayed / fps:.2f}x), {swept} frames analysed meanwhile"
    )
    print(
        f"UI event loop stall: max {gaps[-1]:.1f} ms, p99 {gaps[int(0.99 * (len(gaps) - 1))]:.1f} ms, "
        f"median {statistics.median(gaps):.2f} ms over {len(gaps)} ticks (budget: max <= 50 ms)"
    )

    rng = random.Random(1)
    latencies = []
    for _ in range(args.clicks):
        seconds = rng.uniform(0, (window.case.frame_count - 1) / fps)
        point = window.timeline.viewport_point(seconds, "phase")
        target = window.timeline.frame_at(point)
        if target is None or target == window.playhead.displayed:
            continue
        t0 = time.perf_counter()
        QTest.mouseClick(window.timeline.viewport(), Qt.MouseButton.LeftButton, pos=point)
        if pump(app, 5, lambda t=target: window.canvas.index == t):
            latencies.append((time.perf_counter() - t0) * 1000)
        pump(app, 0.05)
    latencies.sort()
    print(
        f"timeline click -> frame on screen: "
        f"median {statistics.median(latencies):.0f} ms, p95 {latencies[int(0.95 * (len(latencies) - 1))]:.0f} ms, "
        f"max {latencies[-1]:.0f} ms over {len(latencies)} clicks (budget: median <= 100 ms)"
    )
    window.close()


if __name__ == "__main__":
    main()
