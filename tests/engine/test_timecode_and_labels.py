from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from engine.phase_labels import LabelFileError, read_cholec80_phases, segments
from engine.timecode import format_time, format_timecode, parse_position
from engine.video import FrameTimes


@pytest.mark.parametrize(
    "frame, fps, text",
    [
        (0, 25, "00:00:00.00"),
        (24, 25, "00:00:00.24"),
        (25, 25, "00:00:01.00"),
        (25 * 3661 + 7, 25, "01:01:01.07"),
        (30, 29.97, "00:00:01.00"),
        (1, 0, "--:--:--.--"),
    ],
)
def test_timecodes(frame, fps, text):
    assert format_timecode(frame, fps) == text


@pytest.mark.parametrize("text, frame", [("1234", 1234), ("00:01:00.05", 1505), ("1:00", 1500), ("00:00:02", 50)])
def test_go_to_accepts_frames_and_timecodes(text, frame):
    assert parse_position(text, 25) == frame


@pytest.mark.parametrize(
    "seconds, fps, text",
    [
        (0.0, 25, "00:00:00.00"),
        (6.0, 25, "00:00:06.00"),
        (3661 + 7 / 25, 25, "01:01:01.07"),
        (1.001, Fraction(30000, 1001), "00:00:01.00"),
        (29 * 1001 / 30000, Fraction(30000, 1001), "00:00:00.29"),
        (9.99, 20, "00:00:10.00"),  # rounds to the nearest ff, as frame numbers do
        (6.0, 0, "--:--:--.--"),
        (math.nan, 25, "--:--:--.--"),
    ],
)
def test_times_format_as_timecodes(seconds, fps, text):
    assert format_time(seconds, fps) == text


@pytest.mark.parametrize("fps", [Fraction(25), Fraction(30000, 1001), Fraction(24), Fraction(60000, 1001)])
def test_constant_rate_times_give_the_frame_number_timecodes(fps):
    """With a constant rate, formatting a frame's time and parsing through index_at change nothing."""
    tb = Fraction(1, 90000)
    ticks = np.array([round(i / fps / tb) for i in range(0, 40_000)], np.int64)
    times = FrameTimes(ticks, int(ticks[-1]) + round(1 / fps / tb), tb)
    for i in range(0, len(ticks), 37):
        text = format_timecode(i, fps)
        assert format_time(times.time_of(i), fps) == text
        assert parse_position(text, fps, times.index_at) == parse_position(text, fps) == i


def test_a_timecode_names_the_frame_on_screen_in_a_variable_rate_file():
    """Frames at 10 fps for 10 s, then 30 fps: 'frames × average rate' is 6 s off at 00:00:06."""
    tb = Fraction(1, 30)
    times = FrameTimes(np.array([3 * i if i < 100 else 200 + i for i in range(400)], np.int64), 600, tb)
    fps = Fraction(20)  # the average
    assert parse_position("00:00:06.00", fps) == 120  # counted at the average rate: wrong
    assert parse_position("00:00:06.00", fps, times.index_at) == 60
    assert parse_position("00:00:12.00", fps, times.index_at) == 160
    assert parse_position("00:00:06.01", fps, times.index_at) == 60  # 6.05 s: frame 60 is still on screen
    assert parse_position("00:00:30.00", fps, times.index_at) == 399  # clamped to the video
    assert parse_position("120", fps, times.index_at) == 120
    assert format_time(times.time_of(160), fps) == "00:00:12.00" and times.duration_s == 20.0
    assert times.index_at(-1) == 0 and times.index_at(math.inf) == 399 and times.index_at(math.nan) == 0


@pytest.mark.parametrize("text", ["", "abc", "00:61:00", "00:00:00.30", "-5"])
def test_go_to_rejects_nonsense(text):
    with pytest.raises(ValueError):
        parse_position(text, 25)


def test_phase_file_round_trip_and_segments(tmp_path):
    path = tmp_path / "video01-phase.txt"
    path.write_text("Frame\tPhase\n0\tPreparation\n1\tPreparation\n2\tCalotTriangleDissection\n")
    phases = read_cholec80_phases(path)
    assert phases == ["Preparation", "Preparation", "CalotTriangleDissection"]
    assert [(s.label, s.start, s.end) for s in segments(phases)] == [
        ("Preparation", 0, 2),
        ("CalotTriangleDissection", 2, 3),
    ]


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "header"),
        ("Frame\tPhase\n0\tPreparation\n2\tPreparation\n", "out of sequence"),
        ("Frame\tPhase\n0\tAppendectomy\n", "unknown phase 'Appendectomy'"),
        ("Frame\tPhase\nzero\tPreparation\n", "expected 'frame<TAB>phase'"),
    ],
)
def test_bad_phase_files_are_reported_with_the_line(tmp_path, content, message):
    path = tmp_path / "video01-phase.txt"
    path.write_text(content)
    with pytest.raises(LabelFileError, match=message):
        read_cholec80_phases(path)


def test_missing_or_binary_phase_file(tmp_path):
    with pytest.raises(LabelFileError):
        read_cholec80_phases(tmp_path / "absent.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(LabelFileError, match="not a UTF-8 text file"):
        read_cholec80_phases(tmp_path / "bin.txt")
