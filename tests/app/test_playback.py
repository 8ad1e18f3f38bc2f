"""PlaybackController: exact frames off the UI thread, latest seek wins, timed play, faults."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtGui import QImage

from app.playback import PlaybackConfig, PlaybackController, rgb_to_qimage
from engine.video import FrameTimes, VideoReader, VideoReaderConfig
from tests.engine.test_video_rotation_vfr import UH, UW, close, phone_recording, upright, write_vfr

TIMEOUT = 10_000  # ms


def qimage_to_rgb(image: QImage) -> np.ndarray:
    assert image.format() == QImage.Format.Format_RGB888
    w, h, bpl = image.width(), image.height(), image.bytesPerLine()
    raw = np.frombuffer(image.constBits(), np.uint8, count=image.sizeInBytes()).reshape(h, bpl)
    return raw[:, : w * 3].reshape(h, w, 3).copy()


class Recorder:
    """Everything a controller emitted, in order, with the time each frame arrived."""

    def __init__(self, controller: PlaybackController):
        self.frames: list[tuple[float, int, QImage]] = []
        self.opened: list[dict] = []
        self.failed: list[str] = []
        self.playing: list[bool] = []
        self.ended = 0
        self.threads: set[int] = set()
        controller.frameReady.connect(self._frame)
        controller.opened.connect(self.opened.append)
        controller.failed.connect(self.failed.append)
        controller.playingChanged.connect(self.playing.append)
        controller.ended.connect(self._ended)

    def _frame(self, index: int, image: QImage) -> None:
        self.threads.add(threading.get_ident())
        self.frames.append((time.monotonic(), index, image))

    def _ended(self) -> None:
        self.ended += 1

    @property
    def last(self) -> int:
        return self.frames[-1][1] if self.frames else -1

    @property
    def indices(self) -> list[int]:
        return [i for _, i, _ in self.frames]


class CountingReader(VideoReader):
    """A VideoReader that records frame() calls of all its instances (and what each decoded), optionally slow."""

    calls: list[int]
    decodes: dict[int, int]  # frame asked for -> frames the decoder produced to serve it (all calls)
    warmed: dict[int, int]  # the same for frames decoded in the background (refill, prefetch)
    delay = 0.0

    def frame(self, i: int) -> np.ndarray:
        type(self).calls.append(i)
        if self.delay:
            time.sleep(self.delay)
        before = self.stats.decoded
        rgb = super().frame(i)
        type(self).decodes[i] = type(self).decodes.get(i, 0) + self.stats.decoded - before
        return rgb

    def warm(self, i: int) -> bool:
        if self.delay:
            time.sleep(self.delay)
        before = self.stats.decoded
        worked = super().warm(i)
        type(self).warmed[i] = type(self).warmed.get(i, 0) + self.stats.decoded - before
        return worked


def counting(delay: float = 0.0) -> type[CountingReader]:
    return type("Counting", (CountingReader,), {"calls": [], "decodes": {}, "warmed": {}, "delay": delay})


@pytest.fixture
def reference(video):
    with VideoReader(video) as reader:
        yield reader


@pytest.fixture
def make(qtbot):
    made: list[PlaybackController] = []

    def _make(path: Path | None = None, **kwargs) -> tuple[PlaybackController, Recorder]:
        controller = PlaybackController(**kwargs)
        made.append(controller)
        rec = Recorder(controller)
        if path is not None:
            controller.open(path)
            qtbot.waitUntil(lambda: bool(rec.opened and rec.frames), timeout=TIMEOUT)
        return controller, rec

    yield _make
    for controller in made:
        controller.close()


def wait_for(qtbot, rec: Recorder, index: int) -> None:
    qtbot.waitUntil(lambda: rec.last == index, timeout=TIMEOUT)


def test_open_reports_the_video_and_shows_frame_0(make, video, reference, qtbot):
    controller, rec = make(video)
    info = rec.opened[0]
    assert info["frame_count"] == reference.frame_count == 1500
    assert (info["width"], info["height"], info["fps"]) == (320, 180, 25.0)
    assert info["path"] == str(video)
    assert controller.info == info
    assert rec.frames[0][1] == 0
    assert rec.threads == {threading.get_ident()}  # delivered on the UI thread
    assert not rec.failed


def test_a_rotated_recording_opens_upright_in_its_displayed_size(make, tmp_path, qtbot):
    _, rec = make(phone_recording(tmp_path / "phone.mp4"))
    info = rec.opened[0]
    assert (info["width"], info["height"]) == (UW, UH)
    assert close(qimage_to_rgb(rec.frames[0][2]), upright())


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is installed by ./dev.sh")
def test_play_follows_the_timestamps_of_a_variable_rate_file(make, tmp_path, qtbot):
    """10 fps for 10 s, then 30 fps: the average rate (20) would play the first part twice as fast."""
    controller, rec = make()
    assert controller.time_of(0) is None  # nothing open
    controller.open(write_vfr(tmp_path / "vfr.mp4"))
    qtbot.waitUntil(lambda: bool(rec.opened and rec.frames), timeout=TIMEOUT)
    info = rec.opened[0]
    assert isinstance(info["times"], FrameTimes) and info["duration_s"] == pytest.approx(20.0)
    assert controller.time_of(160) == pytest.approx(12.0) and controller.time_of(400) is None
    t0 = time.monotonic()
    controller.play(1.0)
    qtbot.wait(1000)
    controller.pause()
    qtbot.waitUntil(lambda: not controller.playing, timeout=TIMEOUT)
    t_last, last, _ = rec.frames[-1]
    expected = (t_last - t0) * 10
    assert 0.7 * expected - 2 <= last <= 1.3 * expected + 2


@pytest.mark.parametrize("target", [0, 1499, 737, 25, 24])
def test_seek_shows_exactly_the_frame_asked_for(make, video, reference, qtbot, target):
    controller, rec = make(video)
    controller.seek(target if target else 10)
    if not target:
        wait_for(qtbot, rec, 10)
        controller.seek(0)  # Home after somewhere else
    wait_for(qtbot, rec, target)
    image = rec.frames[-1][2]
    assert (image.width(), image.height()) == (320, 180)
    assert np.array_equal(qimage_to_rgb(image), reference.frame(target))
    assert controller.position == target


def test_seek_clamps_to_the_video(make, video, qtbot):
    controller, rec = make(video)
    controller.seek(10_000)
    wait_for(qtbot, rec, 1499)
    controller.seek(-5)
    wait_for(qtbot, rec, 0)


def test_steps_forward_back_and_across_keyframes(make, video, reference, qtbot):
    controller, rec = make(video)
    controller.seek(23)
    wait_for(qtbot, rec, 23)
    for delta, expected in [(1, 24), (1, 25), (1, 26), (-1, 25), (-1, 24), (-1, 23), (-10, 13), (30, 43), (-19, 24)]:
        controller.step(delta)
        wait_for(qtbot, rec, expected)
        assert np.array_equal(qimage_to_rgb(rec.frames[-1][2]), reference.frame(expected)), expected
    controller.step(-100)
    wait_for(qtbot, rec, 0)
    controller.seek(1499)
    wait_for(qtbot, rec, 1499)
    controller.step(1)  # End, then one more: stays
    controller.step(-1)
    wait_for(qtbot, rec, 1498)


def test_steps_accumulate_before_the_worker_takes_them(make, video, qtbot):
    controller, rec = make(video)
    controller.seek(100)
    for _ in range(5):
        controller.step(1)
    wait_for(qtbot, rec, 105)


def test_latest_seek_wins(make, video, qtbot):
    kind = counting(delay=0.03)  # each decode takes a while: seeks pile up behind it
    controller, rec = make(video, reader_factory=kind, config=PlaybackConfig(prefetch=False))
    kind.calls.clear()
    rec.frames.clear()
    targets = [50 * k + 7 for k in range(20)]
    for t in targets:
        controller.seek(t)
    wait_for(qtbot, rec, targets[-1])
    qtbot.wait(200)  # nothing else comes after it
    assert rec.indices[-1] == targets[-1]
    assert len(kind.calls) < 20 and len(rec.frames) < 20
    assert set(rec.indices) <= set(targets)


def test_play_keeps_the_source_frame_rate(make, video, qtbot):
    controller, rec = make(video)
    controller.seek(100)
    wait_for(qtbot, rec, 100)
    rec.frames.clear()
    controller.reset_stats()
    t0 = time.monotonic()
    controller.play(1.0)
    qtbot.waitUntil(lambda: rec.playing == [True], timeout=TIMEOUT)
    qtbot.wait(1000)
    controller.pause()
    qtbot.waitUntil(lambda: rec.playing == [True, False], timeout=TIMEOUT)
    indices = rec.indices
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    t_last, last, _ = rec.frames[-1]
    expected = (t_last - t0) * 25
    assert abs((last - 100) - expected) <= 0.3 * expected + 1
    assert 0.7 * 25 <= last - 100 <= 1.3 * 25 * (time.monotonic() - t0)
    stats = controller.stats()
    assert stats.displayed == len(indices)
    # Pause stops: nothing more arrives.
    n = len(rec.frames)
    qtbot.wait(300)
    assert len(rec.frames) == n and not controller.playing


def test_slow_decode_drops_frames_not_time(make, video, qtbot):
    kind = counting(delay=0.1)  # 10 frames/s at most against 25 due
    controller, rec = make(video, reader_factory=kind, config=PlaybackConfig(prefetch=False))
    rec.frames.clear()
    controller.reset_stats()
    t0 = time.monotonic()
    controller.play()
    qtbot.wait(1500)
    controller.pause()
    qtbot.waitUntil(lambda: not controller.playing, timeout=TIMEOUT)
    indices = rec.indices
    assert indices == sorted(indices)
    t_last, last, _ = rec.frames[-1]
    expected = (t_last - t0) * 25  # the frame shown is the one due when its decode began
    assert expected - 8 <= last <= expected + 2  # late by one slow decode (0.1 s) and some scheduling
    stats = controller.stats()
    assert stats.displayed < 20 and stats.dropped > 10
    assert stats.displayed + stats.dropped >= last - 1


def test_speed_scales_time(make, video, qtbot):
    controller, rec = make(video)
    t0 = time.monotonic()
    controller.play(4.0)
    qtbot.wait(500)
    controller.pause()
    qtbot.waitUntil(lambda: not controller.playing, timeout=TIMEOUT)
    t_last, last, _ = rec.frames[-1]
    expected = (t_last - t0) * 100
    assert 0.7 * expected - 4 <= last <= 1.3 * expected + 4


def test_backwards_play_goes_down(make, video, qtbot):
    controller, rec = make(video)
    controller.seek(500)
    wait_for(qtbot, rec, 500)
    rec.frames.clear()
    t0 = time.monotonic()
    controller.play(-1.0)
    qtbot.wait(800)
    controller.pause()
    qtbot.waitUntil(lambda: not controller.playing, timeout=TIMEOUT)
    indices = rec.indices
    assert indices == sorted(indices, reverse=True) and indices[-1] < 500
    t_last, last, _ = rec.frames[-1]
    expected = (t_last - t0) * 25
    assert abs((500 - last) - expected) <= 0.3 * expected + 2


def test_backwards_play_stops_at_frame_0(make, video, qtbot):
    controller, rec = make(video)
    controller.seek(10)
    wait_for(qtbot, rec, 10)
    controller.play(-4.0)
    qtbot.waitUntil(lambda: rec.playing == [True, False], timeout=TIMEOUT)
    assert rec.last == 0 and rec.ended == 0


def test_play_ends_at_the_last_frame_and_starts_over(make, video, qtbot):
    controller, rec = make(video)
    controller.seek(1480)
    wait_for(qtbot, rec, 1480)
    controller.play(4.0)
    qtbot.waitUntil(lambda: rec.ended == 1, timeout=TIMEOUT)
    assert rec.last == 1499 and rec.playing == [True, False] and not controller.playing
    rec.frames.clear()
    controller.play()
    qtbot.waitUntil(lambda: bool(rec.frames and controller.playing), timeout=TIMEOUT)
    assert rec.frames[0][1] == 0
    controller.pause()


def test_step_pauses_playback(make, video, qtbot):
    controller, rec = make(video)
    controller.play()
    qtbot.waitUntil(lambda: rec.last >= 5, timeout=TIMEOUT)
    controller.step(1)
    qtbot.waitUntil(lambda: rec.playing == [True, False], timeout=TIMEOUT)
    stopped_at = rec.last
    qtbot.wait(200)
    assert rec.last == stopped_at


def test_seek_while_playing_continues_from_there(make, video, qtbot):
    controller, rec = make(video)
    controller.play()
    qtbot.waitUntil(lambda: rec.last >= 3, timeout=TIMEOUT)
    controller.seek(900)
    qtbot.waitUntil(lambda: rec.last > 905, timeout=TIMEOUT)
    assert controller.playing
    controller.pause()


def test_prefetch_makes_a_step_back_across_a_keyframe_a_cache_hit(make, video, qtbot):
    kind = counting()
    controller, rec = make(video, reader_factory=kind)
    controller.seek(760)  # keyframes every 25 frames: 750 is one
    wait_for(qtbot, rec, 760)
    qtbot.waitUntil(lambda: controller.stats().prefetched >= 25, timeout=TIMEOUT)
    assert set(range(725, 750)) <= set(kind.warmed)  # the GOP before, decoded in the background
    kind.decodes.clear()
    for expected in range(759, 730, -1):  # back over 750, deep into the GOP before
        controller.step(-1)
        wait_for(qtbot, rec, expected)
    assert all(kind.decodes[i] == 0 for i in range(759, 730, -1))  # every step was a cache hit
    # Forward again, over the keyframe: the decoders run on, nothing like a GOP's decode.
    for expected in range(732, 765):
        controller.step(1)
        wait_for(qtbot, rec, expected)
    assert all(kind.decodes.get(i, 0) <= 3 for i in range(732, 765))


@pytest.mark.parametrize("refill", [25, 0])
def test_after_a_jump_the_next_steps_forward_are_cache_hits(make, video, qtbot, refill):
    """The frames after the playhead are decoded in idle time after a jump (the refill): stepping
    forward then only converts cached frames. The control without refill decodes on every step."""
    kind = counting()
    config = PlaybackConfig(refill_ahead=refill, prefetch=False)
    controller, rec = make(video, reader_factory=kind, config=config)
    controller.seek(1010)  # a jump into the GOP of keyframe 1000
    wait_for(qtbot, rec, 1010)
    if refill:
        # decoded in the background, over keyframe 1025
        qtbot.waitUntil(lambda: set(range(1011, 1036)) <= set(kind.warmed), timeout=TIMEOUT)
    else:
        qtbot.wait(300)
        assert controller.stats().refilled == 0 and not kind.warmed
    kind.decodes.clear()
    for expected in range(1011, 1036):
        controller.step(1)
        wait_for(qtbot, rec, expected)
    served = [kind.decodes[i] for i in range(1011, 1036)]
    if refill:
        assert served == [0] * 25  # every step a cache hit
    else:
        assert all(n >= 1 for n in served)  # each step ran the decoder


def test_refill_yields_to_orders_and_follows_the_playhead(make, video, qtbot):
    kind = counting(delay=0.02)
    controller, rec = make(video, reader_factory=kind, config=PlaybackConfig(prefetch=False))
    controller.seek(500)
    wait_for(qtbot, rec, 500)
    qtbot.waitUntil(lambda: controller.stats().refilled >= 2, timeout=TIMEOUT)
    t0 = time.monotonic()
    controller.seek(1200)  # a new jump while the refill runs: served at once, then refilled there
    wait_for(qtbot, rec, 1200)
    assert time.monotonic() - t0 < 0.5 + 0.02 * 25  # at most one refill frame before the seek's own GOP decode
    qtbot.waitUntil(lambda: kind.warmed.get(1210, 0) >= 1, timeout=TIMEOUT)


def test_prefetch_yields_to_orders(make, video, qtbot):
    kind = counting(delay=0.05)  # prefetch of a 25-frame GOP takes ~1.25 s
    controller, rec = make(video, reader_factory=kind)
    controller.seek(1000)
    wait_for(qtbot, rec, 1000)
    qtbot.waitUntil(lambda: controller.stats().prefetched >= 2, timeout=TIMEOUT)
    t0 = time.monotonic()
    controller.seek(1001)
    wait_for(qtbot, rec, 1001)
    assert time.monotonic() - t0 < 0.6  # one prefetch frame at most, not the whole GOP


def test_a_new_file_replaces_the_old(make, video, tmp_path, qtbot):
    other = tmp_path / "other.mp4"
    shutil.copy(video, other)
    controller, rec = make(video)
    controller.seek(700)
    controller.open(other)
    qtbot.waitUntil(lambda: rec.opened[-1]["path"] == str(other), timeout=TIMEOUT)
    assert controller.info["path"] == str(other)
    wait_for(qtbot, rec, 0)


@pytest.mark.parametrize("kind", ["random", "missing", "empty", "truncated"])
def test_bad_files_fail_with_the_file_name(make, video, tmp_path, qtbot, kind):
    bad = tmp_path / f"bad-{kind}.mp4"
    if kind == "random":
        bad.write_bytes(np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes())
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "truncated":
        bad.write_bytes(video.read_bytes()[:3000])
    controller, rec = make()
    controller.open(bad)
    qtbot.waitUntil(lambda: bool(rec.failed), timeout=TIMEOUT)
    assert bad.name in rec.failed[0] and "\n" not in rec.failed[0]
    assert not rec.opened and not rec.frames
    controller.seek(10)  # orders to nothing open are ignored, no crash
    controller.play()
    qtbot.wait(100)
    assert controller.running
    controller.open(video)  # and the controller is still usable
    qtbot.waitUntil(lambda: bool(rec.opened), timeout=TIMEOUT)


def test_vanished_file_fails_without_crashing(make, video, tmp_path, qtbot):
    copy = tmp_path / "vanishing.mp4"
    shutil.copy(video, copy)
    controller, rec = make(copy, config=PlaybackConfig(prefetch=False))
    os.remove(copy)
    controller.seek(1200)
    qtbot.waitUntil(lambda: bool(rec.failed), timeout=TIMEOUT)
    assert "vanishing.mp4" in rec.failed[0] and "vanished" in rec.failed[0]
    controller.play()
    qtbot.waitUntil(lambda: len(rec.failed) >= 2, timeout=TIMEOUT)
    assert not controller.playing and controller.running


def test_close_joins_the_thread_and_is_idempotent(make, video, qtbot):
    controller, rec = make(video)
    controller.play()
    qtbot.waitUntil(lambda: rec.last >= 2, timeout=TIMEOUT)
    thread = controller._thread
    controller.close()
    assert thread is not None and thread.isFinished()
    assert not controller.running and not controller.playing
    n = len(rec.frames)
    qtbot.wait(100)
    assert len(rec.frames) == n  # nothing after close
    controller.close()
    names = {t.name for t in threading.enumerate()}
    assert "surgview-spare-open" not in names


def test_rgb_to_qimage_copies_odd_widths_and_views():
    rgb = np.random.default_rng(1).integers(0, 256, (7, 11, 3), dtype=np.uint8)
    image = rgb_to_qimage(rgb)
    assert (image.width(), image.height(), image.format()) == (11, 7, QImage.Format.Format_RGB888)
    assert np.array_equal(qimage_to_rgb(image), rgb)
    view = rgb[:, ::2]  # non-contiguous
    assert np.array_equal(qimage_to_rgb(rgb_to_qimage(view)), view)
    rgb[:] = 0  # the image owns its pixels
    assert qimage_to_rgb(image).any()
    with pytest.raises(ValueError):
        rgb_to_qimage(np.zeros((4, 4), np.uint8))


def test_reader_cache_config_is_used(make, video, qtbot):
    seen: list[VideoReaderConfig] = []

    def factory(path, config):
        seen.append(config)
        return VideoReader(path, config)

    config = PlaybackConfig(reader=VideoReaderConfig(cache_frames=40), prefetch=False)
    make(video, reader_factory=factory, config=config)
    assert seen == [config.reader]


def test_safe_emit_keeps_bool_reference_counts(qtbot):
    from PySide6.QtCore import QObject, Signal

    from app.playback import safe_emit

    class Source(QObject):
        ping = Signal(int)

    source, got = Source(), []
    source.ping.connect(got.append)
    before = sys.getrefcount(True)
    for i in range(3000):  # more emits than True has references in a small process
        safe_emit(source.ping, i)
    assert len(got) == 3000
    assert sys.getrefcount(True) >= before


def test_a_bug_in_decoding_is_reported_not_fatal(make, video, qtbot):
    class Buggy(VideoReader):
        def frame(self, i: int) -> np.ndarray:
            if i == 666:
                raise RuntimeError("boom")
            return super().frame(i)

    controller, rec = make(video, reader_factory=Buggy)
    controller.seek(666)
    qtbot.waitUntil(lambda: bool(rec.failed), timeout=TIMEOUT)
    assert "boom" in rec.failed[0]
    controller.seek(667)  # the worker lives on
    wait_for(qtbot, rec, 667)
    assert controller.running


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux's")
def test_the_worker_thread_is_nicer_than_the_ui_thread():
    from app.playback import lower_thread_priority

    seen: dict[str, int] = {}

    def body() -> None:
        tid = threading.get_native_id()
        seen["before"] = os.getpriority(os.PRIO_PROCESS, tid)
        seen["lowered"] = lower_thread_priority(3)
        seen["after"] = os.getpriority(os.PRIO_PROCESS, tid)
        child = threading.Thread(target=lambda: seen.update(child=os.getpriority(os.PRIO_PROCESS, 0)))
        child.start()
        child.join()

    ui = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    worker = threading.Thread(target=body)
    worker.start()
    worker.join()
    assert seen["lowered"] and seen["after"] == min(19, seen["before"] + 3)
    assert seen["child"] == seen["after"]  # threads it starts (FFmpeg's decoders) inherit it
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == ui  # the calling thread is untouched
    assert not lower_thread_priority(0)
