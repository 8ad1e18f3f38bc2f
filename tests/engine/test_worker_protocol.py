"""The engine child's protocol: every message is a frozen, picklable dataclass of the right side."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from engine import worker_protocol as wp

ROOT = Path(__file__).resolve().parents[2]

COMMANDS = [
    wp.OpenCase(3, "/videos/case.mp4"),
    wp.CloseCase(4),
    wp.Request(120),
    wp.Reask(120),
    wp.Pause(),
    wp.Resume(),
    wp.SetStride(2.5),
    wp.Shutdown(),
]
EVENTS = [
    wp.Ready("tiny@abc", "cpu", {"name": "surgview", "questions": [{"task": "frame_analysis", "title": "t"}]}),
    wp.Ready("tiny@abc", "cpu"),
    wp.Error("no model"),
    wp.CaseOpened(3, "/videos/case.mp4", {"fps": 25.0, "tasks": ["frame_analysis"]}),
    wp.CaseFailed(3, "/videos/case.mp4", "not a video"),
    wp.CaseClosed(4),
    wp.Started(7, "frame_analysis", True),
    wp.Pieces(7, "frame_analysis", "Level 1"),
    wp.Done(7, {"status": "complete", "frame_complete": True}),
    wp.Failed(8, "timed out"),
    wp.Progress(10, 100),
    wp.Rate(1.5, None),
    wp.Idle(),
    wp.Stopped(None),
    wp.Crashed("MemoryError: boom"),
    wp.Bye(),
]
SCHEDULER = (wp.Started, wp.Pieces, wp.Done, wp.Failed, wp.Progress, wp.Rate, wp.Idle, wp.Stopped)


@pytest.mark.parametrize("message", COMMANDS + EVENTS, ids=lambda m: type(m).__name__)
def test_messages_survive_the_pipe_and_are_frozen(message):
    assert pickle.loads(pickle.dumps(message)) == message
    fields = dataclasses.fields(message)
    if fields:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(message, fields[0].name, None)


def test_each_message_belongs_to_one_side():
    assert all(isinstance(m, wp.Command) and not isinstance(m, wp.Event) for m in COMMANDS)
    assert all(isinstance(m, wp.Event) and not isinstance(m, wp.Command) for m in EVENTS)
    assert {type(m) for m in EVENTS if isinstance(m, wp.SchedulerEvent)} == set(SCHEDULER)


def test_messages_match_by_position():
    match wp.Pieces(7, "phase", "abc"):
        case wp.Pieces(frame, task, text):
            assert (frame, task, text) == (7, "phase", "abc")
        case _:
            pytest.fail("no match")


def test_the_protocol_imports_nothing_heavy():
    code = (
        "import sys, engine.worker_protocol; "
        "bad = [m for m in ('PySide6', 'torch', 'numpy', 'engine.scheduler') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
