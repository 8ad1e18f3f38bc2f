"""The analysis scheduler: requested frame first, sweep after, no duplicate work, commit per frame."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

from engine.backends.base import Backend, GenerationRequest, TextStream
from engine.prompts import frame_prompt
from engine.scheduler import (
    AnalysisScheduler,
    SchedulerConfig,
    SchedulerListener,
    VideoChanged,
    VideoIdentity,
    failure_reason,
    sweep_frames,
)
from engine.store import CaseStore, video_fingerprint
from engine.video import VideoError, VideoReader

CHAIN = (
    "<think>\nLevel 1 (Perception): Instruments: Hook [1, 2, 30, 40]. Anatomy: liver.\n"
    "Level 2 (Relation): Triplets: hook dissect cystic duct.\n"
    "Level 3 (Context): Phase: Calot Triangle Dissection. CVS: C1 met, C2 not met, C3 not met.\n"
    "</think>\n<answer>Calot Triangle Dissection</answer>"
)


class CountingBackend(Backend):
    """Answers every frame with a fixed chain, piece by piece, slowly enough to be pre-empted."""

    name = "counting"

    def __init__(self, delay_s: float = 0.002, batching: bool = False):
        self.delay_s = delay_s
        self.supports_batching = batching
        self.calls: list[int] = []  # the mean pixel value identifies the frame asked about
        self.batches: list[int] = []
        self.lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return "counting@1"

    def stream(self, request: GenerationRequest, cancel: threading.Event | None = None) -> TextStream:
        with self.lock:
            self.calls.append(int(request.image.shape[0]))
        event = cancel or threading.Event()

        def pieces():
            for i in range(0, len(CHAIN), 8):
                if event.is_set():
                    return
                time.sleep(self.delay_s)
                yield CHAIN[i : i + 8]

        return TextStream(pieces(), event)

    def generate_batch(self, requests):
        with self.lock:
            self.batches.append(len(requests))
        return [CHAIN for _ in requests]


class Recorder(SchedulerListener):
    def __init__(self):
        self.started: list[tuple[int, bool]] = []
        self.done: list[int] = []
        self.pieces: dict[int, list[str]] = {}
        self.failed: list[tuple[int, str]] = []
        self.stopped_with: list[str | None] = []

    def frame_started(self, frame, requested):
        self.started.append((frame, requested))

    def text_piece(self, frame, piece):
        self.pieces.setdefault(frame, []).append(piece)

    def frame_done(self, result, requested):
        self.done.append(result.frame)

    def frame_failed(self, frame, message):
        self.failed.append((frame, message))

    def stopped(self, error):
        self.stopped_with.append(error)


@pytest.fixture
def case(synth_case):
    out, summary = synth_case
    return out / "cholec80" / "videos" / "video01.mp4", summary["cases"][0]


@pytest.fixture
def store(tmp_path):
    with CaseStore.open(tmp_path / "case.sqlite") as s:
        yield s


def run(video, backend, store, config, listener=None, before=None):
    scheduler = AnalysisScheduler(video, backend, store, frame_prompt("frame_analysis", 320, 180), config, listener)
    if before:
        before(scheduler)
    scheduler.start()
    assert scheduler.wait_idle(60)
    scheduler.stop()
    return scheduler


def test_sweep_covers_the_case_once_at_the_stride(case, store):
    video, info = case
    backend, rec = CountingBackend(0), Recorder()
    scheduler = run(video, backend, store, SchedulerConfig(stride_s=5.0), rec)
    expected = sweep_frames(info["frames"], 25, 5.0)
    assert sorted(rec.done) == expected == list(range(0, 1500, 125))
    assert scheduler.progress == (len(expected), len(expected))
    assert store.analysed_frames("counting@1", scheduler.prompt.version, "frame_analysis") == set(expected)
    assert rec.stopped_with == [None]
    result = store.get_result(125, "counting@1", scheduler.prompt.version, "frame_analysis")
    assert result.raw_text == CHAIN and "".join(rec.pieces[125]) == CHAIN


def test_nothing_is_computed_twice(case, store):
    video, _ = case
    first = CountingBackend(0)
    run(video, first, store, SchedulerConfig(stride_s=10.0))
    again = CountingBackend(0)
    rec = Recorder()
    run(video, again, store, SchedulerConfig(stride_s=10.0), rec)
    assert len(first.calls) == 6 and again.calls == [] and rec.done == []


def test_requested_frame_comes_first_and_the_sweep_continues_from_the_playhead(case, store):
    video, _ = case
    rec = Recorder()
    run(video, CountingBackend(0), store, SchedulerConfig(stride_s=10.0), rec, before=lambda s: s.request(777))
    assert rec.started[0] == (777, True)
    sweep = [f for f, requested in rec.started[1:] if not requested]
    assert sweep == [1000, 1250, 0, 250, 500, 750]  # onward from the playhead, then wrapping


def test_a_request_pre_empts_the_frame_in_flight(case, store):
    video, _ = case
    rec = Recorder()
    backend = CountingBackend(delay_s=0.02)  # ~0.8 s per frame
    scheduler = AnalysisScheduler(
        video, backend, store, frame_prompt("frame_analysis", 320, 180), SchedulerConfig(stride_s=20.0), rec
    )
    scheduler.start()
    deadline = time.time() + 10
    while not rec.started and time.time() < deadline:
        time.sleep(0.005)
    asked = time.perf_counter()
    scheduler.request(333)
    while 333 not in rec.done and time.time() < deadline:
        time.sleep(0.005)
    latency = time.perf_counter() - asked
    assert scheduler.wait_idle(30)
    scheduler.stop()
    assert rec.started[0][1] is False and rec.started[1] == (333, True)
    assert latency < 2.0  # one frame's generation, not the rest of the sweep frame in flight plus it
    assert sorted(set(rec.done)) == sorted(rec.done)  # each frame committed once
    assert 0 in rec.done  # the cancelled sweep frame was re-queued and finished later


def test_reask_generates_a_stored_frame_again(case, store):
    video, _ = case
    backend = CountingBackend(0)
    run(video, backend, store, SchedulerConfig(stride_s=30.0))
    rec = Recorder()
    run(video, backend, store, SchedulerConfig(stride_s=30.0), rec, before=lambda s: s.reask(750))
    assert rec.done == [750]


def test_batching_sweeps_in_batches_when_the_backend_gains(case, store):
    video, _ = case
    backend = CountingBackend(0, batching=True)
    run(video, backend, store, SchedulerConfig(stride_s=5.0, batch_size=4))
    assert backend.batches == [4, 4, 4] and backend.calls == []


def test_a_frame_that_cannot_be_decoded_is_reported_and_skipped(case, store):
    video, _ = case
    rec = Recorder()
    run(video, CountingBackend(0), store, SchedulerConfig(stride_s=30.0), rec, before=lambda s: s.request(10**6))
    assert rec.failed and rec.failed[0][0] == 10**6 and "out of range" in rec.failed[0][1]
    assert sorted(rec.done) == [0, 750]


def test_a_vanished_video_stops_the_scheduler_with_a_reason(tmp_path, store):
    rec = Recorder()
    scheduler = run(tmp_path / "gone.mp4", CountingBackend(0), store, SchedulerConfig(), rec)
    assert scheduler.error and "gone.mp4" in scheduler.error
    assert rec.stopped_with == [scheduler.error]


def test_sweep_frames():
    assert sweep_frames(100, 25, 1.0) == [0, 25, 50, 75]
    assert sweep_frames(5, 25, 0.001) == [0, 1, 2, 3, 4]


def test_pause_holds_the_sweep_but_serves_requests(case, store):
    video, _ = case
    rec = Recorder()
    scheduler = AnalysisScheduler(
        video, CountingBackend(0), store, frame_prompt("frame_analysis", 320, 180), SchedulerConfig(stride_s=10.0), rec
    )
    scheduler.pause()
    scheduler.start()
    assert scheduler.wait_idle(10)
    assert rec.done == []
    scheduler.request(42)
    deadline = time.time() + 10
    while 42 not in rec.done and time.time() < deadline:
        time.sleep(0.01)
    assert rec.done == [42]
    scheduler.resume()
    time.sleep(0.05)
    assert scheduler.wait_idle(30)
    scheduler.stop()
    assert sorted(rec.done) == [0, 42, 250, 500, 750, 1000, 1250]


class DamagedReader(VideoReader):
    """A reader of the case whose frames in ``damaged`` cannot be decoded."""

    damaged: frozenset[int] = frozenset()

    def frame(self, i):
        if i in self.damaged:
            raise VideoError(f"{self.path}: frame {i} cannot be decoded (the stream is damaged)")
        return super().frame(i)


def test_failed_frames_are_counted_apart_from_stored_ones(case, store):
    video, _ = case
    reader = type("Reader", (DamagedReader,), {"damaged": frozenset({250, 1000})})
    scheduler = AnalysisScheduler(
        video, CountingBackend(0), store, frame_prompt("frame_analysis", 320, 180), SchedulerConfig(stride_s=10.0),
        reader_factory=reader,
    )  # fmt: skip
    scheduler.start()
    assert scheduler.wait_idle(30)
    scheduler.stop()
    assert scheduler.progress == (6, 6)  # settled: the progress bar ends
    assert scheduler.stored() == 4
    failures = scheduler.failures()
    assert sorted(failures) == [250, 1000] and "cannot be decoded" in failures[250]
    assert failure_reason(failures[250], video) == "cannot be decoded (the stream is damaged)"


class HookBackend(CountingBackend):
    """Calls ``hook`` when the ``at``-th generation starts."""

    def __init__(self, at: int, hook):
        super().__init__(0)
        self.at, self.hook = at, hook

    def stream(self, request, cancel=None):
        if len(self.calls) + 1 == self.at:
            self.hook()
        return super().stream(request, cancel)


@pytest.fixture
def copy(case, tmp_path):
    path = tmp_path / "copy.mp4"
    shutil.copy(case[0], path)
    return path


def test_a_touched_video_is_still_the_same_video(copy, store):
    touch = lambda: os.utime(copy, ns=(time.time_ns(), time.time_ns() + 10**9))  # noqa: E731
    scheduler = run(copy, HookBackend(3, touch), store, SchedulerConfig(stride_s=10.0))
    assert scheduler.error is None and scheduler.stored() == 6 and not scheduler.failures()


@pytest.mark.parametrize("change", ["delete", "replace"])
def test_a_video_deleted_or_replaced_mid_run_stops_it_and_nothing_after_is_stored(copy, store, change):
    other = copy.with_name("other.mp4")
    other.write_bytes(copy.read_bytes()[:-1] + b"\x00")
    hook = copy.unlink if change == "delete" else lambda: os.replace(other, copy)
    rec = Recorder()
    scheduler = run(copy, HookBackend(3, hook), store, SchedulerConfig(stride_s=10.0), rec)
    assert isinstance(scheduler.failure, VideoChanged)
    assert ("vanished" if change == "delete" else "replaced") in scheduler.error
    assert sorted(
        store.analysed_frames("counting@1", frame_prompt("frame_analysis", 1, 1).version, "frame_analysis")
    ) == [
        0,
        250,
    ]
    assert scheduler.stored() == 2 and rec.stopped_with == [scheduler.error]


def test_video_identity_reads_the_fingerprint_again_only_when_the_stat_changes(copy, tmp_path):
    identity = VideoIdentity(copy)
    assert identity.fingerprint == video_fingerprint(copy)
    before = identity.signature
    identity.check()
    os.utime(copy, ns=(1, 2))
    identity.check()  # touched: the same content
    assert identity.signature != before
    with pytest.raises(VideoChanged, match="replaced"):
        VideoIdentity(copy, fingerprint="0" * 32)
    with open(copy, "r+b") as fh:
        fh.seek(-1, os.SEEK_END)
        fh.write(b"\x01")
    with pytest.raises(VideoChanged, match="replaced"):
        identity.check()
