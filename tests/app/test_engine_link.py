"""The engine in a child process: ready, streaming over IPC, pause, death, restart, clean stop."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from app.engine_link import EngineLink, death_reason
from app.engine_worker import Outbox, WorkerSpec, default_threads
from engine.modeldir import ModelDirError, inspect_model_dir
from engine.profiles import get_profile
from engine.store import CaseStore
from engine.worker_protocol import Done, Pieces, Started

ROOT = Path(__file__).resolve().parents[2]
LOAD_MS = 90_000  # spawn + importing torch/transformers in the child: ~4 s here, more on a busy CI machine
SIGNALS = ("ready", "error", "died", "case_opened", "case_failed", "started", "pieces", "done", "failed")
SIGNALS += ("progress", "idle", "stopped", "state_changed")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from engine.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny", init_std=0.1)


@pytest.fixture
def video(synth_case, tmp_path, monkeypatch) -> Path:
    """The synthetic case, with case stores in a fresh data folder (the child inherits the variable)."""
    monkeypatch.setenv("SURGVIEW_DATA", str(tmp_path / "data"))
    return synth_case[0] / "cholec80" / "videos" / "video01.mp4"


class Events:
    """Every signal of a link, in order of arrival."""

    def __init__(self, link: EngineLink):
        self.log: list[tuple[str, tuple]] = []
        for name in SIGNALS:
            getattr(link, name).connect(lambda *args, name=name: self.log.append((name, args)))

    def of(self, name: str, since: int = 0) -> list[tuple]:
        return [args for kind, args in self.log[since:] if kind == name]

    def mark(self) -> int:
        return len(self.log)


@pytest.fixture
def link(qtbot):
    link = EngineLink()
    yield link
    link.stop()
    assert not link.alive


def tiny_spec(model: Path, **extra) -> dict:
    return {"kind": "transformers", "model": str(model), "max_new_tokens": 32, "stride_s": 10.0, **extra}


def start_ready(qtbot, link: EngineLink, spec: dict) -> tuple[str, str]:
    """Start the engine and wait for ready; its (model_id, device) (the profile is checked to be reported)."""
    with qtbot.waitSignal(link.ready, timeout=LOAD_MS) as blocker:
        link.start(spec)
        assert link.state == "starting"
    assert link.state == "ready" and link.alive
    model_id, device, profile = blocker.args
    assert profile == link.profile and profile["questions"] and profile["version"]
    return model_id, device


def stored_frames(video: Path, info: dict) -> set[int]:
    with CaseStore.for_video(video, readonly=True) as store:
        return store.analysed_frames(info["model_id"], info["prompt_version"], info["task"])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---------------------------------------------------------------------------------------- end to end
def test_request_streams_over_ipc_and_the_sweep_runs_and_pauses(qtbot, link, tiny_model, video):
    events = Events(link)
    model_id, device = start_ready(qtbot, link, tiny_spec(tiny_model))
    assert model_id.startswith("tiny-qwen2.5-vl") and device == "cpu"

    with qtbot.waitSignal(link.case_opened, timeout=10_000) as opened:
        link.open_case(str(video))
    info = opened.args[1]
    assert info["frame_count"] == 1500 and (info["width"], info["height"]) == (320, 180)
    link.request(700)
    qtbot.waitUntil(lambda: any(args[0] == 700 for args in events.of("done")), timeout=20_000)
    assert (700, "frame_analysis", True) in events.of("started")
    text = "".join(t for frame, _task, t in events.of("pieces") if frame == 700)
    assert text
    (done,) = [i for f, i in events.of("done") if f == 700]
    assert done["requested"] and done["tokens"] == 32 and done["model_id"] == model_id
    assert done["raw_text"] == text  # coalescing loses nothing
    with CaseStore.for_video(video, readonly=True) as store:  # the store is the source of truth
        result = store.get_result(700, done["model_id"], done["prompt_version"], done["task"])
    assert result is not None and result.raw_text == text

    # The sweep at 10 s: 6 frames, then idle.
    qtbot.waitUntil(lambda: (6, 6) in events.of("progress"), timeout=20_000)
    assert {0, 250, 500, 750, 1000, 1250} <= stored_frames(video, info)

    # A finer stride gives more work; pausing holds it after the frame in flight.
    link.set_stride(0.5)
    qtbot.waitUntil(lambda: any(total > 6 and d >= 9 for d, total in events.of("progress")), timeout=20_000)
    link.pause()
    paused_at = events.mark()
    qtbot.waitUntil(lambda: bool(events.of("idle", paused_at)), timeout=10_000)
    quiet = events.mark()
    qtbot.wait(800)
    assert not events.of("progress", quiet) and not events.of("started", quiet)
    assert link.paused

    # Requested frames are still served while paused; resuming moves the sweep on.
    link.request(1111)
    qtbot.waitUntil(lambda: any(f == 1111 for f, _ in events.of("done", quiet)), timeout=20_000)
    assert not [f for f, _task, requested in events.of("started", quiet) if not requested]
    before = max(d for d, _ in events.of("progress"))
    link.resume()
    qtbot.waitUntil(lambda: any(d > before for d, _ in events.of("progress", quiet)), timeout=20_000)
    assert not events.of("died") and not events.of("error")


def test_a_killed_engine_is_reported_keeps_its_results_and_restarts(qtbot, link, tiny_model, video):
    events = Events(link)
    start_ready(qtbot, link, tiny_spec(tiny_model))
    link.open_case(str(video))
    link.request(700)
    qtbot.waitUntil(lambda: any(f == 700 for f, _ in events.of("done")), timeout=30_000)
    info = link.case_info
    pid = link.pid

    t0 = time.monotonic()
    with qtbot.waitSignal(link.died, timeout=2_000) as died:
        os.kill(pid, signal.SIGKILL)
    assert time.monotonic() - t0 < 2.0
    assert "signal 9" in died.args[0] and "SIGKILL" in died.args[0]
    assert link.state == "died" and not link.alive and link.last_error == died.args[0]
    assert not any(p.pid == pid for p in multiprocessing.active_children())  # reaped, no zombie
    before = stored_frames(video, info)
    assert 700 in before  # nothing stored is lost

    link.request(900)  # while dead: remembered, replayed by the restart
    mark = events.mark()
    with qtbot.waitSignal(link.ready, timeout=LOAD_MS):
        link.restart()
    assert link.pid != pid
    qtbot.waitUntil(lambda: any(f == 900 for f, _ in events.of("done", mark)), timeout=30_000)
    assert (900, "frame_analysis", True) in events.of("started", mark)
    assert link.case_info["model_id"] == info["model_id"]
    link.request(1200)
    qtbot.waitUntil(lambda: any(f == 1200 for f, _ in events.of("done", mark)), timeout=30_000)
    recomputed = {f for f, *_ in events.of("started", mark)} & before
    assert not recomputed  # the new engine reads the store and never redoes a frame
    assert {700, 900, 1200} <= stored_frames(video, info)

    child_pid = link.pid
    link.stop()
    link.stop()  # safe twice
    assert link.state == "stopped" and not link.alive and link.pid is None
    assert all(p.pid != child_pid for p in multiprocessing.active_children())
    assert not events.of("died", mark)


# ---------------------------------------------------------------------------------------- failures
@pytest.mark.parametrize("layout", ["missing", "empty", "pickle"])
def test_a_bad_model_directory_is_an_error_not_a_crash(qtbot, link, tmp_path, layout):
    model = tmp_path / "model"
    if layout != "missing":
        model.mkdir()
    if layout == "pickle":
        (model / "config.json").write_text("{}")
        (model / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(ModelDirError) as expected:
        inspect_model_dir(model)
    events = Events(link)
    with qtbot.waitSignal(link.error, timeout=30_000) as error:
        link.start({"kind": "transformers", "model": str(model)})
    assert error.args[0] == str(expected.value) and "\n" not in error.args[0]
    assert link.state == "failed" and link.last_error == error.args[0]
    qtbot.waitUntil(lambda: not link.alive, timeout=10_000)
    qtbot.wait(100)
    assert link.state == "failed" and not events.of("died") and not events.of("ready")
    link.stop()
    assert link.state == "stopped"


def test_an_unknown_task_is_an_error(qtbot, link):
    with qtbot.waitSignal(link.error, timeout=30_000) as error:
        # A task picks the surgview profile's one question (a server's default profile asks its own).
        link.start({"kind": "openai", "url": "http://127.0.0.1:9/v1", "profile": "surgview", "task": "no_such_task"})
    assert "no_such_task" in error.args[0] and link.state == "failed"


def test_openai_backend_unreachable_server_and_missing_video(qtbot, link, video, tmp_path):
    """The client makes no connection until it generates: ready at once, then a one-line stop."""
    events = Events(link)
    url = f"http://127.0.0.1:{closed_port()}/v1"
    # give_up_s: the server pool waits this long for an unreachable server before the analysis stops.
    spec = {"kind": "openai", "model": "surg-r1", "url": url, "give_up_s": 1.0}
    model_id, device = start_ready(qtbot, link, spec)
    assert model_id.startswith("openai:surg-r1@") and device.startswith("remote:")

    with qtbot.waitSignal(link.case_failed, timeout=10_000) as failed:
        link.open_case(str(tmp_path / "gone.mp4"))
    assert failed.args[0].endswith("gone.mp4") and "gone.mp4" in failed.args[1]

    with qtbot.waitSignal(link.stopped, timeout=20_000) as stopped:
        link.open_case(str(video))
        link.request(10)
    assert "127.0.0.1" in stopped.args[0] and "\n" not in stopped.args[0]
    assert link.state == "ready" and link.alive  # the engine lives on; only that case's analysis stopped
    assert not events.of("died")


def test_stop_while_loading_does_not_wait_for_the_load(qtbot, link, tiny_model):
    events = Events(link)
    link.start(tiny_spec(tiny_model))
    qtbot.wait(300)  # the child is importing torch
    pid = link.pid
    t0 = time.monotonic()
    link.stop()
    assert time.monotonic() - t0 < 1.0
    assert link.state == "stopped" and not link.alive
    assert all(p.pid != pid for p in multiprocessing.active_children())
    qtbot.wait(50)
    assert not events.of("died") and not events.of("ready")


def test_commands_without_an_engine_are_kept_for_restart(qtbot):
    link = EngineLink()
    link.stop()  # never started: nothing to do
    assert link.state == "stopped" and not link.alive
    link.request(5)  # no engine: nothing is sent, nothing raises
    with pytest.raises(RuntimeError):
        link.restart()


@pytest.mark.parametrize("when", ["serving", "loading"])
def test_the_engine_exits_when_its_parent_dies(tmp_path, tiny_model, when):
    spec = (
        {"kind": "openai", "model": "m", "url": f"http://127.0.0.1:{closed_port()}/v1"}
        if when == "serving"
        else {"kind": "transformers", "model": str(tiny_model)}
    )
    script = textwrap.dedent(f"""
        import multiprocessing, os, signal, sys, time
        from app import engine_worker
        from engine.worker_protocol import Ready
        if __name__ == "__main__":
            ctx = multiprocessing.get_context("spawn")
            ours, theirs = ctx.Pipe()
            child = ctx.Process(target=engine_worker.run, args=(theirs, {spec!r}), daemon=True)
            child.start()
            print(child.pid, flush=True)
            if {when!r} == "serving":
                assert isinstance(ours.recv(), Ready)
            else:
                time.sleep(0.5)  # the child is still importing torch
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup at all: the pipe closes with us
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pid = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _running(pid):
        time.sleep(0.05)
    assert not _running(pid), f"the orphaned engine {pid} is still running"


def _running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has exited; only its parent's reaper is missing


# ---------------------------------------------------------------------------------------- pieces
def test_death_reasons_are_one_line():
    assert death_reason(-9) == (
        "the engine stopped unexpectedly (killed by signal 9, SIGKILL): the system may have run out of memory"
    )
    assert death_reason(-11) == "the engine stopped unexpectedly (killed by signal 11, SIGSEGV)"
    assert death_reason(3) == "the engine stopped unexpectedly (exit code 3)"
    assert "MemoryError" in death_reason(1, "MemoryError: boom")
    assert "connection" in death_reason(None)


def test_spec_defaults():
    spec = WorkerSpec.from_dict({"model": "/m"})
    assert spec.backend.kind == "transformers" and spec.backend.threads == default_threads() >= 1
    # The task and the token cap now come from the model profile (None here): surgview's one question.
    profile = get_profile(spec.profile, spec.task)
    assert (profile.tasks[0], spec.stride_s, spec.max_new_tokens or profile.sampling.max_tokens) == (
        "frame_analysis",
        1.0,
        768,
    )
    assert (spec.profile, spec.concurrency) == (None, 16)
    remote = WorkerSpec.from_dict({"kind": "openai", "url": "http://h:8000/v1", "api_key": "", "stride_s": 5})
    assert remote.backend.threads is None and remote.backend.api_key is None and remote.stride_s == 5.0


class _Pipe:
    def __init__(self):
        self.sent: list[tuple[float, tuple]] = []

    def send(self, message):
        self.sent.append((time.monotonic(), message))


def test_outbox_coalesces_pieces_and_flushes_before_other_messages():
    pipe = _Pipe()
    outbox = Outbox(pipe, flush_s=0.05)
    outbox.put(Started(1, "phase", True))
    for i in range(200):  # a burst: far faster than the flush interval
        outbox.put(Pieces(1, "phase", str(i % 10)))
    outbox.put(Done(1, {}))
    outbox.put(Pieces(2, "phase", "a"))
    outbox.put(Pieces(3, "phase", "b"))  # another frame: never merged with the last
    time.sleep(0.01)
    outbox.close()
    kinds = [type(m) for _, m in pipe.sent]
    assert kinds[0] is Started and kinds.count(Pieces) <= 5
    done_at = kinds.index(Done)
    text = "".join(m.text for _, m in pipe.sent[:done_at] if isinstance(m, Pieces))
    assert text == "".join(str(i % 10) for i in range(200))  # complete and in order before done
    assert [m for _, m in pipe.sent[done_at + 1 :]] == [Pieces(2, "phase", "a"), Pieces(3, "phase", "b")]


def test_outbox_sends_a_lone_piece_within_the_flush_interval():
    pipe = _Pipe()
    outbox = Outbox(pipe, flush_s=0.05)
    outbox.put(Pieces(1, "phase", "x"))  # first piece: out at once
    time.sleep(0.01)
    outbox.put(Pieces(1, "phase", "y"))  # held, but not for longer than flush_s
    t = time.monotonic()
    deadline = t + 2
    while len(pipe.sent) < 2 and time.monotonic() < deadline:
        time.sleep(0.002)
    outbox.close()
    assert [m for _, m in pipe.sent] == [Pieces(1, "phase", "x"), Pieces(1, "phase", "y")]
    assert pipe.sent[1][0] - t < 0.1


def test_the_worker_imports_no_qt():
    code = (
        "import sys, app.engine_worker; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'shiboken6', 'pyqtgraph')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
