"""The whole viewer window, real widgets, events and decoder: clicks, scrubbing, long cases, UI stalls.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/viewer_bench.py [--file VIDEO] [--clicks 40] [--skip-long]

Without --file it writes a 1-minute 1280x720 H.264 case with a 250-frame GOP (the synthetic
generator). It opens SurgviewWindow with the engine child process (the tiny model) sweeping the
case at a 0.5 s stride, then:

- plays at 1x for --seconds during the sweep: frames displayed per second and the UI event loop's
  longest stall (a 2 ms timer's worst lateness);
- clicks the timeline at --clicks random positions, twice: first as the viewer was before issue 20
  ("before": no preview, no refill after a jump), then as it is ("now"). For each click: click ->
  picture on screen (the canvas has *painted* the preview or the exact frame of the target), click
  -> exact frame on screen, and 0.3 s later three single steps forward (step -> frame on screen);
  beside them one GOP's decode (the last frame of a random GOP from a fresh seek, the viewer's
  reader settings, same load): the bound for an exact frame;
- a scrub: a 3-second mouse drag across the whole timeline (press, moves every 16 ms, release),
  counting the distinct pictures the canvas painted per second, before and now.

Then (unless --skip-long) a 90-minute 1920x1080 case (``bench/long_case.py``: a 10-second GOP-250
segment repeated, ~170 MB, kept in the temp folder) with a stored answer every second, opened in a
fresh process (first open: index and preview strip built), then reopened --reopens times, each in a
fresh process (index and strip loaded): time to the first frame painted and to the stored timelines
shown (the median of the reopens' later of the two), peak RSS; and, in the last reopened process, the
UI thread's longest stall while the analysed case plays at 1x (overlay held between analysed frames).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PySide6.QtCore import QElapsedTimer, QPoint, QSettings, Qt, QTimer  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from app.main_window import SurgviewWindow  # noqa: E402
from app.playback import PlaybackConfig  # noqa: E402
from app.viewer import SWITCH_INTERVAL_S, configure_interpreter  # noqa: E402
from engine.video import VideoReader  # noqa: E402


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


def pump(app: QApplication, seconds: float, until: Callable[[], bool] | None = None) -> bool:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        if until is not None and until():
            return True
        time.sleep(0.0005)
    return until is None


def stats(values: list[float]) -> str:
    values = sorted(values)
    if not values:
        return "no samples"
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    return f"median {statistics.median(values):.0f} ms, p95 {p95:.0f} ms"


def new_window(tmp: Path, spec: dict | None) -> SurgviewWindow:
    settings = QSettings(str(tmp / f"settings-{time.monotonic_ns()}.ini"), QSettings.Format.IniFormat)
    window = SurgviewWindow(engine_spec=spec, settings=settings, start_engine=spec is not None)
    window.resize(1600, 1000)
    window.show()
    return window


def set_mode(app: QApplication, window: SurgviewWindow, video: Path, now: bool) -> None:
    """Reopen ``video`` as the viewer was before issue 20 (no preview, no refill, Python's default 5 ms
    GIL switch interval) or as it is now."""
    sys.setswitchinterval(SWITCH_INTERVAL_S if now else 0.005)
    window.player.close()
    window.player._config = PlaybackConfig() if now else replace(PlaybackConfig(), refill_ahead=0)
    window.previews.enabled = now
    window.open_case(video)
    pump(app, 60, lambda: window.canvas.last_painted == (0, False))
    pump(app, 60, lambda: window.session.thumbnails is not None)
    pump(app, 1.0)


def painted(canvas, frame: int, exact: bool) -> Callable[[], bool]:
    return lambda: canvas.last_painted == (frame, False) or (not exact and canvas.last_painted == (frame, True))


def clicks(app: QApplication, window: SurgviewWindow, n: int, seed: int) -> dict[str, list[float]]:
    """``n`` random timeline clicks: click -> picture, click -> exact frame, then three steps forward."""
    rng = random.Random(seed)
    out: dict[str, list[float]] = {"picture": [], "exact": [], "step": []}
    canvas, fps = window.canvas, window.case.fps
    while len(out["exact"]) < n:
        point = window.timeline.viewport_point(rng.uniform(0, (window.case.frame_count - 30) / fps), "phase")
        target = window.timeline.frame_at(point)
        if target is None or abs(target - window.playhead.displayed) < 2:
            continue
        t0 = time.perf_counter()
        QTest.mouseClick(window.timeline.viewport(), Qt.MouseButton.LeftButton, pos=point)
        if not pump(app, 5, painted(canvas, target, exact=False)):
            continue
        out["picture"].append((time.perf_counter() - t0) * 1000)
        if not pump(app, 5, painted(canvas, target, exact=True)):
            continue
        out["exact"].append((time.perf_counter() - t0) * 1000)
        pump(app, 0.3)  # a reviewer looks before stepping
        for k in range(1, 4):
            t0 = time.perf_counter()
            window.trigger("step_forward")
            if pump(app, 5, painted(canvas, target + k, exact=True)):
                out["step"].append((time.perf_counter() - t0) * 1000)
        pump(app, 0.05)
    return out


def gop_decodes(video: Path, n: int, seed: int) -> list[float]:
    """One GOP's decode: the last frame of a random GOP from a fresh seek, as the viewer's reader does it."""
    rng = random.Random(seed)
    config = PlaybackConfig().reader
    times = []
    with VideoReader(video, config) as reader:
        keys = [*reader.keyframes, reader.frame_count]
    for _ in range(n):
        g = rng.randrange(len(keys) - 1)
        with VideoReader(video, config) as reader:  # a fresh decoder and cache
            t0 = time.perf_counter()
            reader.frame(keys[g + 1] - 1)
            times.append((time.perf_counter() - t0) * 1000)
    return times


def scrub(app: QApplication, window: SurgviewWindow, seconds: float = 3.0) -> tuple[float, float]:
    """Drag the playhead across the whole timeline in ``seconds``: (pictures painted/s, exact frames/s)."""
    viewport, canvas = window.timeline.viewport(), window.canvas
    last_s = (window.case.frame_count - 1) / window.case.fps
    start = window.timeline.viewport_point(0.0, "phase")
    end = window.timeline.viewport_point(last_s, "phase")
    seen: set[tuple[int, bool]] = set()
    before = canvas.last_painted
    QTest.mousePress(viewport, Qt.MouseButton.LeftButton, pos=start)
    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        x = round(start.x() + (end.x() - start.x()) * elapsed / seconds)
        QTest.mouseMove(viewport, QPoint(x, start.y()))
        tick = time.perf_counter() + 0.016
        while time.perf_counter() < tick:
            app.processEvents()
            if canvas.last_painted != before:
                before = canvas.last_painted
                seen.add(before)
            time.sleep(0.0005)
    QTest.mouseRelease(viewport, Qt.MouseButton.LeftButton, pos=end)
    pump(app, 1.0)
    return len(seen) / seconds, sum(1 for _, preview in seen if not preview) / seconds


def short_case(args: argparse.Namespace, tmp: Path) -> None:
    from engine.tiny_model import build_tiny_model
    from train.synth.generate import SynthConfig, generate

    video = args.file
    if video is None:
        generate(tmp / "case", SynthConfig(cases=1, minutes=1.0, seed=9, width=1280, height=720, gop=250))
        video = tmp / "case" / "cholec80" / "videos" / "video01.mp4"
    model = build_tiny_model(tmp / "tiny", seed=0, init_std=0.1)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    # Every frame is on the sweep's list (1,500 frames at ~6/s): the engine sweeps through every measurement.
    spec = {"kind": "transformers", "model": str(model), "threads": 1, "stride_s": 0.04}
    spec.update(max_new_tokens=48, task="frame_analysis")
    window = new_window(tmp, spec)
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
    gaps = sorted(meter.gaps)
    print(
        f"file: {video.name} {window.case.width}x{window.case.height} @ {fps:g} fps, {window.case.frame_count} "
        f"frames, {len(window.player.info['times']) if window.player.info else 0} timestamps; "
        f"engine: {window.analysis.model_id} sweeping every frame"
    )
    print(
        f"play 1x for {args.seconds:g} s during the sweep: {len(shown) / args.seconds:.1f} frames/s displayed of "
        f"{fps:g}, {window.analysis.done - done_before} frames analysed meanwhile; UI stall max {gaps[-1]:.1f} ms, "
        f"p99 {gaps[int(0.99 * (len(gaps) - 1))]:.1f} ms"
    )
    results = {}
    for now in (False, True):
        set_mode(app, window, video, now)
        name = "now" if now else "before"
        done = window.analysis.done
        got = clicks(app, window, args.clicks, seed=1)
        gop = gop_decodes(video, 10, seed=2)
        rate, exact_rate = scrub(app, window)
        results[name] = (got, gop, rate, exact_rate)
        print(f"[{name}] measured at load average {os.getloadavg()[0]:.1f}, {window.analysis.done - done} frames swept")
    for name, (got, gop, rate, exact_rate) in results.items():
        print(f"[{name}] click -> picture on screen: {stats(got['picture'])}")
        print(f"[{name}] click -> exact frame on screen: {stats(got['exact'])}")
        print(f"[{name}] one GOP's decode (250 frames, same load): {stats(gop)}")
        print(f"[{name}] step -> frame on screen, 3 steps after each jump: {stats(got['step'])}")
        print(f"[{name}] scrub, a 3 s drag across the case: {rate:.1f} pictures/s shown ({exact_rate:.1f} exact)")
    window.close()


# -- the 90-minute case, each open in a fresh process ---------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: ru_maxrss would carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def open_long(video: Path, data: Path, play_s: float) -> dict:
    """(In a child process) open ``video`` with its stored answers: first frame and timelines times,
    peak RSS, and the UI's longest stall while the analysed case plays."""
    from bench.long_case import MODEL_ID, engine_info

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = new_window(data, None)
    window.session.set_engine(MODEL_ID, engine_info())  # as the engine's "ready" does
    pump(app, 0.5)
    t0 = time.perf_counter()
    window.open_case(video)
    result: dict = {}
    while time.perf_counter() - t0 < 120 and len(result) < 2:
        app.processEvents()
        now = (time.perf_counter() - t0) * 1000
        if "first_frame_ms" not in result and window.canvas.last_painted == (0, False):
            result["first_frame_ms"] = now
        if "timelines_ms" not in result and window.timeline._timelines is not None:
            result["timelines_ms"] = now
        time.sleep(0.0005)
    pump(app, 60, lambda: window.session.thumbnails is not None)
    result["previews_ms"] = (time.perf_counter() - t0) * 1000
    result["index_from_cache"] = bool(window.player.info and window.player.info.get("keyframes"))
    result["rss_open_mb"] = peak_rss_mb()
    if play_s > 0:
        pump(app, 2.0)  # the records' warm-up thread
        window.seek(window.case.frame_count // 2)
        pump(app, 10, lambda: window.canvas.last_painted == (window.case.frame_count // 2, False))
        drawn: list[bool] = []
        window.player.frameReady.connect(lambda _i, _img: drawn.append(window.canvas.drawn_chain is not None))
        meter = StallMeter()
        meter.start()
        window.toggle_play()
        pump(app, play_s)
        window.toggle_play()
        meter.stop()
        gaps = sorted(meter.gaps)
        result["play_fps"] = len(drawn) / play_s
        result["overlay_share"] = sum(drawn) / max(1, len(drawn))
        result["stall_max_ms"] = gaps[-1]
        result["stall_p99_ms"] = gaps[int(0.99 * (len(gaps) - 1))]
    result["rss_peak_mb"] = peak_rss_mb()
    window.close()
    return result


def long_cases(args: argparse.Namespace, tmp: Path) -> None:
    from bench.long_case import long_case, store_answers

    t0 = time.perf_counter()
    video = long_case(
        Path(tempfile.gettempdir()) / f"surgview-bench-{args.long_minutes:g}min-1080p.mp4", minutes=args.long_minutes
    )
    made = time.perf_counter() - t0
    with VideoReader(video) as reader:
        fps, count, size = float(reader.fps), reader.frame_count, video.stat().st_size
    t0 = time.perf_counter()
    answers = store_answers(video, fps, count, stride=round(fps))
    print(
        f"long case: {video.name}, {count} frames ({count / fps / 60:.0f} min), {size / 2**20:.0f} MB, written in "
        f"{made:.0f} s; {answers} stored answers in {time.perf_counter() - t0:.0f} s"
    )
    runs = []
    opens = [("first open", 0.0)] + [(f"reopen {k + 1}", 0.0) for k in range(args.reopens - 1)]
    for name, play in [*opens, (f"reopen {args.reopens}", args.seconds)]:
        cmd = [sys.executable, __file__, "--child-open", str(video), "--play", str(play)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=os.environ, check=False)
        if out.returncode:
            print(f"{name}: failed\n{out.stderr[-2000:]}")
            return
        runs.append((name, json.loads(out.stdout.strip().splitlines()[-1])))
    for name, r in runs:
        print(
            f"{name}: first frame on screen {r['first_frame_ms']:.0f} ms, stored timelines on screen "
            f"{r['timelines_ms']:.0f} ms, previews {r['previews_ms']:.0f} ms; peak RSS {r['rss_open_mb']:.0f} MB"
        )
    r = runs[-1][1]
    both = sorted(max(r["first_frame_ms"], r["timelines_ms"]) for _, r in runs[1:])
    print(
        f"reopen -> first frame and stored timelines: median {statistics.median(both):.0f} ms of {len(both)} "
        f"(each {', '.join(f'{v:.0f}' for v in both)}; target <= 1000 ms) at load average "
        f"{os.getloadavg()[0]:.1f}; peak RSS {r['rss_peak_mb']:.0f} MB after playing"
    )
    print(
        f"play 1x for {args.seconds:g} s, analysed 1080p case: {r['play_fps']:.1f} frames/s, overlay on "
        f"{100 * r['overlay_share']:.0f}% of frames; UI stall max {r['stall_max_ms']:.1f} ms, "
        f"p99 {r['stall_p99_ms']:.1f} ms (target max <= 50 ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clicks", type=int, default=40)
    parser.add_argument("--long-minutes", type=float, default=90.0)
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument("--reopens", type=int, default=1, help="reopen the long case this many times (median)")
    parser.add_argument("--skip-short", action="store_true")
    parser.add_argument("--child-open", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--play", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    configure_interpreter()  # as app.viewer.run_viewer does
    if args.child_open is not None:
        print(json.dumps(open_long(args.child_open, Path(os.environ["SURGVIEW_BENCH_TMP"]), args.play)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="surgview-bench-"))
    os.environ["SURGVIEW_DATA"] = str(tmp / "data")
    os.environ["SURGVIEW_BENCH_TMP"] = str(tmp)
    print(f"load average before: {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")
    if not args.skip_short:
        short_case(args, tmp)
    if not args.skip_long:
        long_cases(args, tmp)
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
