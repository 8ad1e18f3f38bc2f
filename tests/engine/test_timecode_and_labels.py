from __future__ import annotations

import pytest

from engine.phase_labels import LabelFileError, read_cholec80_phases, segments
from engine.timecode import format_timecode, parse_position


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
