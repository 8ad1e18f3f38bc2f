"""Viewer playback through PlaybackController and VideoCanvas, as the window runs it.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/viewer_playback_bench.py [--file VIDEO ...] [--seconds 10]

Without --file it writes 1-minute 1280x720 and 1920x1080 H.264 cases with a 250-frame GOP (the
synthetic generator; about 1.5 min on 2 cores). For each file it prints:

- play at 1x for --seconds with every overlay drawn (a chain with three boxes, two triplets,
  phase and CVS set on every frame, canvas 1280x720): frames displayed per second against the
  source rate, frames dropped, frames painted, paint time, and the longest stall of the UI
  thread (a 5 ms timer's worst lateness; budget: never blocks more than 50 ms);
- the same backwards (the J shuttle at -1x), which walks into a new GOP every 10 s;
- step latency (order to frameReady) one frame forward and back, and one frame back across a
  keyframe with the background prefetch on and off (off: a whole GOP's decode);
- three steps forward 0.4 s after each of 24 random jumps, with the refill after a jump on and off,
  interleaved (``--steps-only`` runs just this).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QElapsedTimer, QEventLoop, Qt, QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.playback import PlaybackConfig, PlaybackController  # noqa: E402
from app.widgets.video_canvas import VideoCanvas  # noqa: E402
from engine.chain_parser import parse_chain  # noqa: E402
from engine.video import VideoReader  # noqa: E402


def make_cases(folder: Path) -> list[Path]:
    from train.synth.generate import SynthConfig, generate

    paths = []
    for w, h in ((1280, 720), (1920, 1080)):
        out = folder / f"{h}p"
        generate(out, SynthConfig(cases=1, minutes=1.0, seed=11, width=w, height=h, fps=25, gop=250))
        paths.append(out / "cholec80" / "videos" / "video01.mp4")
    return paths


def overlay_chain(w: int, h: int):
    def box(x1, y1, x2, y2):
        return f"[{int(x1 * w)}, {int(y1 * h)}, {int(x2 * w)}, {int(y2 * h)}]"

    return parse_chain(
        "<think>\nLevel 1 (Perception): Instruments: "
        f"Grasper {box(0.1, 0.2, 0.4, 0.6)} (0.93), Hook {box(0.5, 0.4, 0.9, 0.9)}, Zapper {box(0.6, 0.1, 0.8, 0.3)}. "
        "Anatomy: liver, gallbladder.\nLevel 2 (Relation): Triplets: grasper retract gallbladder; hook dissect "
        "cystic duct.\nLevel 3 (Context): Phase: Calot Triangle Dissection. CVS: C1 met, C2 not met, C3 not "
        "assessable.\n</think>\n<answer>CalotTriangleDissection</answer>"
    )


class Bench:
    """One controller and one canvas wired as the window wires them, with probes."""

    def __init__(self, path: Path, prefetch: bool = True, refill: int | None = None):
        config = PlaybackConfig(prefetch=prefetch)
        if refill is not None:
            config = replace(config, refill_ahead=refill)
        self.controller = PlaybackController(config=config)
        self.canvas = ProbeCanvas()
        self.canvas.resize(1280, 720)
        self.canvas.show()
        self.arrivals: list[tuple[float, int]] = []
        self.info: dict | None = None
        self.chain = None
        self.controller.opened.connect(self._opened)
        self.controller.frameReady.connect(self._frame)
        self.controller.failed.connect(lambda m: sys.exit(f"failed: {m}"))
        self.controller.open(path)
        self.spin_until(lambda: self.info is not None and self.arrivals)
        self.canvas.set_fps(self.info["fps"])

    def _opened(self, info: dict) -> None:
        self.info = info
        self.chain = overlay_chain(info["width"], info["height"])

    def _frame(self, index: int, image) -> None:
        self.arrivals.append((time.perf_counter(), index))
        self.canvas.set_frame(index, image)
        self.canvas.set_chain(index, self.chain)

    @staticmethod
    def spin(seconds: float) -> None:
        loop, timer = QEventLoop(), QTimer()
        timer.setTimerType(Qt.TimerType.PreciseTimer)  # a coarse timer may fire 5% early
        timer.setSingleShot(True)
        timer.timeout.connect(loop.quit)
        timer.start(int(seconds * 1000))
        loop.exec()

    def spin_until(self, done, timeout: float = 30.0) -> None:
        end = time.perf_counter() + timeout
        while not done():
            if time.perf_counter() > end:
                raise TimeoutError("timed out")
            QApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 2)
            time.sleep(0.0005)

    def play(self, speed: float, seconds: float) -> dict:
        stall = StallProbe()
        self.controller.reset_stats()
        self.canvas.reset()
        self.arrivals.clear()
        t0 = time.perf_counter()
        self.controller.play(speed)
        self.spin(seconds)
        self.controller.pause()
        seconds = time.perf_counter() - t0
        stall.stop()
        self.spin(0.2)
        stats = self.controller.stats()
        shown = [i for t, i in self.arrivals if t - t0 <= seconds]
        span = abs(shown[-1] - shown[0]) if len(shown) > 1 else 0
        return {
            "displayed_fps": (len(shown) - 1) / seconds,
            "source_fps": self.info["fps"] * abs(speed),
            "advance_fps": span / seconds,
            "dropped": stats.dropped,
            "painted": self.canvas.painted,
            "paint_ms": statistics.median(self.canvas.paint_ms) if self.canvas.paint_ms else 0.0,
            "paint_max_ms": max(self.canvas.paint_ms, default=0.0),
            "stall_ms": stall.worst_ms,
        }

    def step_latency(self, order, expected: int) -> float:
        self.arrivals.clear()
        t0 = time.perf_counter()
        order()
        self.spin_until(lambda: any(i == expected for _, i in self.arrivals))
        return (next(t for t, i in self.arrivals if i == expected) - t0) * 1000

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until background prefetch has stopped (nothing new prefetched for 0.3 s)."""
        end = time.perf_counter() + timeout
        last = -1
        while time.perf_counter() < end:
            now = self.controller.stats().prefetched
            if now == last:
                return
            last = now
            self.spin(0.3)

    def close(self) -> None:
        self.controller.close()
        self.canvas.close()


class ProbeCanvas(VideoCanvas):
    def __init__(self) -> None:
        super().__init__()
        self.reset()

    def reset(self) -> None:
        self.painted = 0
        self.paint_ms: list[float] = []

    def paintEvent(self, event) -> None:
        t0 = time.perf_counter()
        super().paintEvent(event)
        self.paint_ms.append((time.perf_counter() - t0) * 1000)
        self.painted += 1


class StallProbe:
    """The UI thread's worst stall: how late a 5 ms repeating timer fires at most."""

    def __init__(self) -> None:
        self.worst_ms = 0.0
        self._clock = QElapsedTimer()
        self._clock.start()
        self._timer = QTimer()
        self._timer.setInterval(5)
        self._timer.timeout.connect(self._tick)
        self._timer.start()

    def _tick(self) -> None:
        elapsed = self._clock.nsecsElapsed() / 1e6
        self._clock.restart()
        self.worst_ms = max(self.worst_ms, elapsed - 5)

    def stop(self) -> None:
        self._timer.stop()


def summary(ms: list[float]) -> str:
    return f"median {statistics.median(ms):6.1f} ms   max {max(ms):6.1f} ms   (n={len(ms)})"


def measure(path: Path, seconds: float) -> None:
    bench = Bench(path)
    info = bench.info
    with VideoReader(path) as reader:
        keyframes = [k for k in reader.keyframes if k > 0 and k + 10 < reader.frame_count][:12]
    print(
        f"\n{path.name}: {info['width']}x{info['height']}, {info['frame_count']} frames @ {info['fps']:g} fps, "
        f"{info['keyframes']} keyframes; canvas 1280x720, all overlays on"
    )
    for speed, start in ((1.0, 0), (-1.0, info["frame_count"] - 1)):
        bench.controller.seek(start)
        bench.spin_until(lambda s=start: bench.arrivals and bench.arrivals[-1][1] == s)
        bench.settle()
        r = bench.play(speed, seconds)
        print(
            f"  play {speed:+g}x for {seconds:g} s: displayed {r['displayed_fps']:5.1f} fps of {r['source_fps']:g} "
            f"(ratio {r['displayed_fps'] / r['source_fps']:.2f}), playhead advanced at {r['advance_fps']:5.1f} fps, "
            f"dropped {r['dropped']}, painted {r['painted']}, paint median {r['paint_ms']:.1f} ms "
            f"(max {r['paint_max_ms']:.1f}), worst UI stall {r['stall_ms']:.1f} ms"
        )

    # Steps: land mid-GOP, wait for the prefetch, then one frame forward and back, and back over a keyframe.
    forward, backward, across = [], [], []
    for k in keyframes:
        bench.controller.seek(k + 3)
        bench.spin_until(lambda k=k: bench.arrivals and bench.arrivals[-1][1] == k + 3)
        bench.settle()
        forward.append(bench.step_latency(lambda: bench.controller.step(1), k + 4))
        backward.append(bench.step_latency(lambda: bench.controller.step(-1), k + 3))
        for j in (k + 2, k + 1, k):
            bench.step_latency(lambda: bench.controller.step(-1), j)
        across.append(bench.step_latency(lambda: bench.controller.step(-1), k - 1))
    bench.close()
    print(f"  step +1                         {summary(forward)}")
    print(f"  step -1                         {summary(backward)}")
    print(f"  step -1 across a keyframe, prefetch on    {summary(across)}")

    bench = Bench(path, prefetch=False)
    cold = []
    for k in keyframes:
        bench.controller.seek(k + 1)
        bench.spin_until(lambda k=k: bench.arrivals and bench.arrivals[-1][1] == k + 1)
        bench.step_latency(lambda: bench.controller.step(-1), k)
        cold.append(bench.step_latency(lambda: bench.controller.step(-1), k - 1))
    bench.close()
    print(f"  step -1 across a keyframe, prefetch off   {summary(cold)}")
    print(f"  ratio (off / on, medians): {statistics.median(cold) / statistics.median(across):.0f}x")


def _steps(bench: Bench, rng: random.Random, jumps: int, last: int) -> list[float]:
    out = []
    for _ in range(jumps):
        target = rng.randrange(0, last)
        bench.controller.seek(target)
        bench.spin_until(lambda t=target: bench.arrivals and bench.arrivals[-1][1] == t)
        bench.spin(0.4)  # a reviewer looks before stepping
        for k in range(1, 4):
            out.append(bench.step_latency(lambda: bench.controller.step(1), target + k))
    return out


def steps_after_jumps(path: Path, jumps: int = 12, rounds: int = 2) -> None:
    """Three steps forward 0.4 s after each random jump, refill on and off in turn (same load)."""
    with VideoReader(path) as reader:
        last = reader.frame_count - 10
    got: dict[int, list[float]] = {25: [], 0: []}
    for r in range(rounds):
        for refill in got:
            bench = Bench(path, refill=refill)
            got[refill] += _steps(bench, random.Random(r), jumps, last)
            bench.close()
    for refill, ms in got.items():
        ms.sort()
        p95 = ms[round(0.95 * (len(ms) - 1))]
        print(f"  step +1 after a jump, refill {'on ' if refill else 'off'}  {summary(ms)}, p95 {p95:.1f} ms")
    print(f"  (load average {os.getloadavg()[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, action="append", help="a video (repeatable; default: generated cases)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of play per direction")
    parser.add_argument("--steps-only", action="store_true", help="only the steps after jumps, refill on/off")
    args = parser.parse_args()
    app = QApplication.instance() or QApplication([])
    print(f"{os.cpu_count()} cores, Qt platform {app.platformName()}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = args.file or make_cases(Path(tmp))
        for path in paths:
            if not args.steps_only:
                measure(path, args.seconds)
            print(f"\n{path.name}:")
            steps_after_jumps(path)


if __name__ == "__main__":
    main()
