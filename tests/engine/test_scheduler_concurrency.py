"""The scheduler against a model server: N requests in flight, several questions per frame, the frame
on screen beside the sweep, retries of what a restarting server lost, and a stop when none answers."""

from __future__ import annotations

import threading
import time

import pytest

from engine.backends.base import Backend, BackendError, BackendUnavailable, GenerationRequest, TextStream
from engine.profiles import get_profile
from engine.scheduler import AnalysisScheduler, SchedulerConfig, SchedulerListener

ANSWER = (
    "<think> Level 1: a hook. Level 2: the hook dissects. Level 3: Preparation. </think><answer>Preparation</answer>"
)


class ServerLikeBackend(Backend):
    """Answers after ``latency_s`` (no CPU used), any number at once, like a continuous-batching server."""

    name = "server-like"
    supports_concurrency = True

    def __init__(self, latency_s: float = 0.05, fail: dict | None = None):
        self.latency_s = latency_s
        self.fail = dict(fail or {})  # prompt-prefix → list of exceptions to raise, one per call
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.asked: list[tuple[int, str]] = []  # (image height, first words of the prompt)
        self.cancelled = 0

    @property
    def model_id(self) -> str:
        return "server-like@1"

    def stream(self, request: GenerationRequest, cancel: threading.Event | None = None) -> TextStream:
        event = cancel or threading.Event()
        with self.lock:
            self.asked.append((request.image.shape[0], request.prompt[:60]))
            errors = next((v for k, v in self.fail.items() if request.prompt.startswith(k) and v), None)
            error = errors.pop(0) if errors else None

        def pieces():
            with self.lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if event.wait(self.latency_s):
                    with self.lock:
                        self.cancelled += 1
                    return
                yield ANSWER[:20]
                if error is not None:
                    raise error
                yield ANSWER[20:]
            finally:
                with self.lock:
                    self.in_flight -= 1

        return TextStream(pieces(), event)


class Recorder(SchedulerListener):
    def __init__(self):
        self.lock = threading.Lock()
        self.started: list[tuple[int, str, bool, float]] = []
        self.done: list[tuple[int, str, bool]] = []
        self.failed: list[tuple[int, str]] = []
        self.rates: list[tuple[float, float | None]] = []

    def question_started(self, frame, task, requested):
        with self.lock:
            self.started.append((frame, task, requested, time.monotonic()))

    def question_done(self, result, requested, frame_complete):
        with self.lock:
            self.done.append((result.frame, result.task, frame_complete))

    def frame_failed(self, frame, message):
        self.failed.append((frame, message))

    def throughput(self, frames_per_s, eta_s):
        self.rates.append((frames_per_s, eta_s))


@pytest.fixture
def store(tmp_path):
    from engine.store import CaseStore

    with CaseStore.open(tmp_path / "case.sqlite") as s:
        yield s


def _run(video, backend, store, profile, config, rec, before=None, timeout=60):
    scheduler = AnalysisScheduler(video, backend, store, profile, config, rec)
    if before:
        before(scheduler)
    scheduler.start()
    assert scheduler.wait_idle(timeout)
    scheduler.stop()
    return scheduler


def test_a_server_is_kept_busy_with_n_requests_and_every_question_is_asked_once(video, store):
    backend, rec = ServerLikeBackend(0.1), Recorder()
    profile = get_profile("surg-r1")
    started = time.perf_counter()
    scheduler = _run(video, backend, store, profile, SchedulerConfig(stride_s=2.0, concurrency=12), rec)
    wall = time.perf_counter() - started
    frames = list(range(0, 1500, 50))  # 30 frames x 3 questions = 90 requests of 0.1 s
    assert backend.max_in_flight >= 12
    assert sorted((f, t) for f, t, _ in rec.done) == sorted((f, t) for f in frames for t in profile.tasks)
    assert wall < 3.0  # one at a time would take 9 s
    for task in profile.tasks:
        assert store.analysed_frames("server-like@1", "surg-r1-release", task) == set(frames)
    assert {h for h, _ in backend.asked} == {476}  # every frame sent at the release's 840x476
    assert scheduler.progress == (30, 30)
    completes = [f for f, _, complete in rec.done if complete]
    assert sorted(completes) == frames  # each frame reported complete once, after its last question
    assert rec.rates and rec.rates[-1][0] > 0


def test_the_frame_on_screen_never_waits_behind_the_sweep(video, store):
    backend, rec = ServerLikeBackend(0.5), Recorder()
    scheduler = AnalysisScheduler(
        video, backend, store, get_profile("surgview"), SchedulerConfig(stride_s=1.0, concurrency=4), rec
    )
    scheduler.start()
    deadline = time.monotonic() + 10
    while backend.in_flight < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    asked = time.monotonic()
    scheduler.request(777)
    while not any(f == 777 for f, _, _ in rec.done) and time.monotonic() < deadline:
        time.sleep(0.01)
    waited = time.monotonic() - asked
    cancelled = backend.cancelled
    scheduler.stop()
    assert backend.max_in_flight == 5  # four sweep requests and the frame on screen beside them
    assert waited < 0.9  # one request's latency, not behind the sweep's
    assert cancelled == 0  # the sweep was not pre-empted: a server runs both


def test_moving_the_playhead_cancels_the_previous_frames_requests(video, store):
    backend, rec = ServerLikeBackend(5.0), Recorder()
    config = SchedulerConfig(stride_s=1.0, concurrency=2, sweep=False)
    scheduler = AnalysisScheduler(video, backend, store, get_profile("surg-r1"), config, rec)
    scheduler.start()
    scheduler.request(100)
    deadline = time.monotonic() + 5
    while backend.in_flight < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    scheduler.request(200)
    while backend.cancelled < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert backend.cancelled == 3  # frame 100's three questions
    scheduler.stop()
    assert rec.done == []


def test_an_answer_lost_mid_stream_is_asked_again_and_a_bad_request_is_reported(video, store):
    lost = BackendError("the model server closed the connection mid-answer", retryable=True)
    refused = BackendError("the server rejected the request (HTTP 400)")
    backend = ServerLikeBackend(0.01, fail={"Given the laparoscopic cholecystectomy image <image>, describe": [lost]})
    rec = Recorder()
    _run(video, backend, store, get_profile("surg-r1"), SchedulerConfig(stride_s=20.0, concurrency=4), rec)
    assert sorted({f for f, _, c in rec.done if c}) == [0, 500, 1000]  # the lost answer was asked again
    assert rec.failed == []

    backend = ServerLikeBackend(0.01, fail={"Given the laparoscopic cholecystectomy image <image>, locate": [refused]})
    rec = Recorder()
    store2 = store
    for task in ("phase", "triplet", "localisation"):
        assert store2.analysed_frames("server-like@1", "surg-r1-release", task) == {0, 500, 1000}
    _run(video, backend, store, get_profile("surg-r1"), SchedulerConfig(stride_s=10.0, concurrency=4), rec)
    assert len(rec.failed) == 1 and "HTTP 400" in rec.failed[0][1] and "(localisation)" in rec.failed[0][1]
    assert len({f for f, _, c in rec.done if c}) == 2  # the other new frames carry on: 250, 750, 1250 less one


def test_no_server_at_all_stops_the_analysis_with_one_line(video, store):
    down = BackendUnavailable("no model server answered for 120 s: http://127.0.0.1:9/v1 (connection refused)")
    backend = ServerLikeBackend(0.01, fail={"": [down] * 100})
    rec = Recorder()
    scheduler = _run(video, backend, store, get_profile("surgview"), SchedulerConfig(stride_s=5.0, concurrency=4), rec)
    assert scheduler.error == str(down)
