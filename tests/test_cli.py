"""The command-line tools: clear messages and exit codes, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cli(module: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=120
    )


def assert_clean_failure(result: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    for needle in needles:
        assert needle in result.stderr


@pytest.mark.parametrize(
    "module, args",
    [
        ("train.cli", []),
        ("train.cli", ["synth"]),
        ("train.cli", ["synth", "--out", "x", "--cases", "two"]),
        ("train.cli", ["bogus"]),
        ("engine.cli", ["parse", "--nope"]),
        ("app.main", ["--info"]),
        ("app.main", ["--stride", "fast"]),
    ],
)
def test_bad_arguments_exit_2_with_usage(module, args):
    result = cli(module, *args)
    assert_clean_failure(result, 2, "usage:", "error:")


def test_synth_refuses_impossible_settings(tmp_path):
    result = cli("train.cli", "synth", "--out", str(tmp_path / "o"), "--minutes", "0.2", "--quiet")
    assert_clean_failure(result, 1, "--minutes must be between")
    assert not (tmp_path / "o" / "synth.json").exists()
    result = cli("train.cli", "synth", "--out", str(tmp_path / "o"), "--workers", "0", "--quiet")
    assert_clean_failure(result, 1, "--workers must be at least 1")
    assert not (tmp_path / "o" / "synth.json").exists()


def test_synth_never_writes_into_a_folder_of_other_files(tmp_path):
    (tmp_path / "patient-notes.txt").write_text("keep me")
    result = cli("train.cli", "synth", "--out", str(tmp_path), "--cases", "1", "--minutes", "1", "--quiet")
    assert_clean_failure(result, 1, "not empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["patient-notes.txt"]


def test_synth_writes_cases_and_says_where(tmp_path):
    out = tmp_path / "cases"
    result = cli(
        "train.cli",
        "synth",
        "--out",
        str(out),
        "--cases",
        "1",
        "--minutes",
        "1",
        "--seed",
        "4",
        "--width",
        "160",
        "--height",
        "90",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert "video01.mp4: 1500 frames" in result.stdout
    assert (out / "CholecT50" / "labels" / "VID01.json").exists()
    assert not list(out.rglob("*.part"))


def test_unknown_label_gives_suggestions(tmp_path):
    result = cli("engine.cli", "ontology", "phase", "--resolve", "Calot Dissectoin")
    assert_clean_failure(result, 1, "unknown phase", "Calot Triangle Dissection")
    ok = cli("engine.cli", "ontology", "--resolve", "carlot-triangle-dissection")
    assert ok.returncode == 0 and "CalotTriangleDissection" in ok.stdout


def test_unknown_vocabulary_is_named(tmp_path):
    result = cli("engine.cli", "ontology", "organs")
    assert_clean_failure(result, 1, "no vocabulary 'organs'")


def test_unparseable_text_is_reported_with_what_was_recovered():
    result = cli("engine.cli", "parse", "--json", stdin="\x00<think>Level 2: <b>?</b> L1: ]]]]")
    assert_clean_failure(result, 1, "not a well-formed reasoning chain", "Level 1 after Level 2")
    assert '"status": "malformed"' in result.stdout
    lenient = cli("engine.cli", "parse", "--lenient", stdin="B. Calot Triangle Dissection")
    assert lenient.returncode == 0
    assert "status: malformed" in lenient.stdout and "Answer: 'B. Calot Triangle Dissection'" in lenient.stdout


def test_a_malformed_hostile_chain_is_one_escaped_error_line():
    hostile = "<think>Level 2: \x1b]0;owned\x07 \x1b[2J Level 1: \u202eevil\x9b\n</think>\x00"
    result = cli("engine.cli", "parse", stdin=hostile)
    assert_clean_failure(result, 1, "not a well-formed reasoning chain")
    assert len(result.stderr.strip().splitlines()) == 1
    for raw in ("\x1b", "\x07", "\x00", "\x9b", "\u202e"):
        assert raw not in result.stdout + result.stderr


def test_parse_prints_each_level(tmp_path):
    text = (
        "<think> L1: a hook and a grasper. L2: hook dissect cystic duct. L3: Phase: Calot Triangle "
        "Dissection. C1 met. </think><answer>Calot Triangle Dissection</answer>"
    )
    (tmp_path / "out.txt").write_text(text)
    result = cli("engine.cli", "parse", str(tmp_path / "out.txt"))
    assert result.returncode == 0
    assert "status: complete" in result.stdout
    assert "<hook, dissect, cystic_duct>" in result.stdout
    assert "phase: CalotTriangleDissection; CVS: C1 met" in result.stdout


def test_parse_events_include_the_level_the_stream_ended_in():
    cut_off = "<think>\nLevel 1 (Perception): Instruments: Grasper.\nLevel 2 (Relation): Triplets: none.\nLevel 3 (Context): Phase: Preparation."
    result = cli("engine.cli", "parse", "--events", "--lenient", stdin=cut_off)
    assert result.returncode == 0 and "status: partial" in result.stdout
    assert [line for line in result.stderr.splitlines() if "closed" in line] == [
        "[level 1 closed]",
        "[level 2 closed]",
        "[level 3 closed]",
    ]


def test_parse_missing_file_is_a_clear_error(tmp_path):
    result = cli("engine.cli", "parse", str(tmp_path / "absent.txt"))
    assert_clean_failure(result, 1, "cannot read")


@pytest.mark.parametrize("content", [b"", b"\x00" * 1000, b"not a video at all" * 50])
def test_probe_rejects_broken_videos(tmp_path, content):
    bad = tmp_path / "case.mp4"
    bad.write_bytes(content)
    result = cli("engine.cli", "probe", str(bad))
    assert_clean_failure(result, 1, "case.mp4")


def test_probe_rejects_a_truncated_video(synth_case, tmp_path):
    out, _ = synth_case
    data = (out / "cholec80" / "videos" / "video01.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    result = cli("engine.cli", "probe", str(cut))
    assert_clean_failure(result, 1, "cut.mp4")


def test_probe_counts_frames(synth_case):
    out, _ = synth_case
    result = cli("engine.cli", "probe", str(out / "cholec80" / "videos" / "video01.mp4"))
    assert result.returncode == 0
    assert "1500 frames (00:01:00.00)" in result.stdout


def test_viewer_entry_opens_a_case_and_shows_its_timeline(synth_case):
    out, _ = synth_case
    result = cli("app.main", "--info", str(out / "cholec80" / "videos" / "video01.mp4"))
    assert result.returncode == 0, result.stderr
    assert "1500 frames" in result.stdout
    lines = result.stdout.splitlines()
    order = [
        name
        for name in ("Preparation", "CalotTriangleDissection", "ClippingCutting")
        for line in lines
        if line.endswith(name)
    ]
    assert order == ["Preparation", "CalotTriangleDissection", "ClippingCutting"]


def test_viewer_entry_on_a_vanished_case(tmp_path):
    result = cli("app.main", "--info", str(tmp_path / "gone.mp4"))
    assert_clean_failure(result, 1, "no such video file")


def test_viewer_refuses_a_missing_case_before_opening_a_window(tmp_path):
    result = cli("app.main", str(tmp_path / "gone.mp4"))
    assert_clean_failure(result, 1, "no such video file")
