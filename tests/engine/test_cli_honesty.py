"""``surgview-engine`` says exactly what happened, and lets no model or server drive the terminal.

Hostile text (clear screen, window title, OSC 52 clipboard write, BEL, NUL, C1 CSI, a bidi
override) reaches stdout and stderr escaped, split across stream pieces or not; a server's error
body is one escaped line. ``analyze`` counts what it stored, names the frames it could not
analyse, exits 1 for them (on every rerun), and stops at once when the video file is deleted or
replaced mid-run, filing nothing computed from another file under the video's fingerprint.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import pytest

from bench.openai_standin import StandinConfig, StandinServer
from engine.cli import main as engine_main
from engine.cli_commands import frame_ranges
from engine.store import case_store_path, video_fingerprint
from engine.terminal import safe_for_terminal, safe_json
from engine.video import VideoError, VideoReader

ROOT = Path(__file__).resolve().parents[2]
RAW = ("\x1b", "\x07", "\x00", "\x9b", "\u202e")  # none of these may reach a terminal raw
HOSTILE = (
    "<think> Level 1 (Perception): Instruments: grasper.\x1b[2J\x1b]0;owned\x07 \x1b]52;c;ZXZpbA==\x07 "
    "bell\x07 nul\x00 csi\x9b31m evil\u202etxt.exe\n"
    "Level 2 (Relation): Triplets: grasper retract gallbladder.\n"
    "Level 3 (Context): Phase: Preparation. </think><answer>Preparation\x1b[0m</answer>"
)
SHORT = "<think> Level 1: a grasper. </think><answer>Preparation</answer>"


@pytest.fixture
def video(synth_case, tmp_path) -> Path:
    """A private copy of the synthetic case (60 s, 25 fps: 60 frames at the default stride)."""
    copy = tmp_path / "case.mp4"
    shutil.copy(synth_case[0] / "cholec80" / "videos" / "video01.mp4", copy)
    return copy


def served(url: str) -> list[str]:
    return ["--backend", "openai", "--url", url, "--model", "standin", "--give-up-after", "2"]


def assert_no_raw_controls(*texts: str) -> None:
    for text in texts:
        for char in RAW:
            assert char not in text, (char, text)


def stored_frames(store: Path) -> list[int]:
    if not store.exists():
        return []
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as conn:
        return [row[0] for row in conn.execute("SELECT frame FROM results ORDER BY frame")]


# ------------------------------------------------------------------------------------- terminal safety
def test_the_escaping_is_the_same_piece_by_piece_and_json_stays_valid():
    pieces = [HOSTILE[i : i + 3] for i in range(0, len(HOSTILE), 3)]
    assert "".join(safe_for_terminal(p) for p in pieces) == safe_for_terminal(HOSTILE)
    assert_no_raw_controls(safe_for_terminal(HOSTILE))
    shown = safe_json({"text": HOSTILE})
    assert_no_raw_controls(shown)
    assert json.loads(shown) == {"text": HOSTILE}


def test_ask_streams_hostile_model_text_escaped_and_stores_it_verbatim(video, data_home, capsys):
    with StandinServer(StandinConfig(answer=HOSTILE, first_token_s=0.0, per_token_s=0.0)) as server:
        assert engine_main(["ask", str(video), "--frame", "100", *served(server.url)]) == 0
        first = capsys.readouterr()
        assert engine_main(["ask", str(video), "--frame", "100", *served(server.url)]) == 0  # the cached answer
        again = capsys.readouterr()
    assert_no_raw_controls(first.out, first.err, again.out, again.err)
    assert "\\x1b[2J" in first.out and "\\x1b]52;c;ZXZpbA==\\x07" in first.out and "evil\\u202etxt.exe" in first.out
    assert again.out.strip() == first.out.strip() and "cached result" in again.err
    with sqlite3.connect(case_store_path(video)) as conn:
        (raw,) = conn.execute("SELECT raw_text FROM results").fetchone()
    assert raw == HOSTILE  # kept as the model wrote it; escaped only where it is shown


class _Failing(BaseHTTPRequestHandler):
    """A server whose every answer is HTTP 500 with a hostile body."""

    body = b""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"error": {"message": "boom\x1b]0;owned\x07\nsecond line \u202eevil"}}).encode(),
        "<html>\x1b[2J\x07 plain \x00 text\u202e\r\nline two</html>".encode(),
    ],
    ids=["json", "plain"],  # the bodies themselves would drive the terminal that shows the test names
)
def test_a_server_error_is_one_escaped_line(video, data_home, body, capsys):
    handler = type("Handler", (_Failing,), {"body": body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        assert engine_main(["ask", str(video), "--frame", "5", *served(url)]) == 1
    finally:
        server.shutdown()
        server.server_close()
    out, err = capsys.readouterr()
    assert_no_raw_controls(out, err)
    lines = [line for line in err.splitlines() if line.startswith("surgview-engine")]
    assert len(lines) == 1 and lines[0].startswith("surgview-engine: error: "), err
    assert "internal error" not in err and "Traceback" not in err


def test_parse_prints_hostile_text_escaped_as_text_and_as_json():
    for extra in ([], ["--json"], ["--events"]):
        result = subprocess.run(
            [sys.executable, "-m", "engine.cli", "parse", "-", "--lenient", *extra],
            cwd=ROOT,
            input=HOSTILE,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert_no_raw_controls(result.stdout, result.stderr)
        if extra == ["--json"]:
            assert json.loads(result.stdout)["answer"]["text"].startswith("Preparation\x1b")


# ------------------------------------------------------------------------------------- analyze counts
def answering(after: int, action: Callable[[], None]) -> Callable[[dict], str]:
    """A stand-in's answer that does ``action`` when the ``after``-th request arrives."""
    count = itertools.count(1)

    def answer(body: dict) -> str:
        if next(count) == after:
            action()
        return SHORT

    return answer


def analyze(video: Path, url: str, *extra: str) -> list[str]:
    return ["analyze", str(video), *served(url), "--concurrency", "1", "--quiet", *extra]


def test_a_video_deleted_mid_run_stops_at_once_and_says_what_was_stored(video, data_home, capsys):
    store = case_store_path(video)
    config = StandinConfig(answer=answering(5, video.unlink), first_token_s=0.0, per_token_s=0.0)
    with StandinServer(config) as server:
        code = engine_main(analyze(video, server.url))
        requests = len(server.requests)
    out, err = capsys.readouterr()
    assert code == 1
    assert stored_frames(store) == [0, 25, 50, 75]  # the fifth answer came after the deletion: not filed
    assert f"{video}: 4 of 60 frames analysed and stored" in out
    assert "56 not analysed: the analysis stopped" in out
    assert "vanished" in err and "Traceback" not in err
    assert requests == 5  # stopped at once


@pytest.mark.parametrize("how", ["renamed over", "rewritten in place"])
def test_a_video_replaced_mid_run_files_nothing_from_the_new_file(video, data_home, tmp_path, capsys, how):
    other = tmp_path / "other.mp4"
    data = video.read_bytes()
    other.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # another video as far as the fingerprint goes
    old_store = case_store_path(video)

    def replace() -> None:
        if how == "renamed over":
            os.replace(other, video)
        else:
            with open(video, "r+b") as fh:
                fh.write(other.read_bytes())

    config = StandinConfig(answer=answering(5, replace), first_token_s=0.0, per_token_s=0.0)
    with StandinServer(config) as server:
        code = engine_main(analyze(video, server.url))
    out, err = capsys.readouterr()
    assert code == 1
    assert video_fingerprint(video) != old_store.stem
    assert stored_frames(old_store) == [0, 25, 50, 75]  # nothing computed after the replacement
    assert not case_store_path(video).exists()  # nor under the new file's fingerprint
    assert "4 of 60 frames analysed and stored" in out
    assert "replaced" in err and "Traceback" not in err


def test_frames_that_fail_are_counted_apart_named_in_ranges_and_reported_on_every_rerun(video, data_home, capsys):
    # Requests 3, 4, 5 and 10 of a sweep asked one at a time are frames 50, 75, 100 and 225: HTTP 400
    # (final, never retried). The rerun asks only those four again, and they fail again.
    count = itertools.count(1)
    fail = lambda body: 400 if (n := next(count)) in (3, 4, 5, 10) or n > 60 else None  # noqa: E731
    config = StandinConfig(answer=SHORT, first_token_s=0.0, per_token_s=0.0, status_for=fail)
    runs = []
    with StandinServer(config) as server:
        for _ in range(2):
            runs.append((engine_main(analyze(video, server.url)), capsys.readouterr(), len(server.requests)))
    assert [requests for _, _, requests in runs] == [60, 64]
    for code, (out, err), _ in runs:
        assert code == 1
        lines = out.splitlines()
        assert lines[0].startswith(f"{video}: 56 of 60 frames analysed and stored")
        assert lines[1].startswith("  4 could not be analysed (frames 50–100, 225, every 25 frames): ")
        assert "400" in lines[1]
        assert all(re.match(r"  \d\d:\d\d:\d\d\.\d\d – ", line) for line in lines[2:]) and lines[2:]
        assert "case.mp4: 4 of 60 frames could not be analysed" in err
        assert_no_raw_controls(out, err)
    assert stored_frames(case_store_path(video)) == [f for f in range(0, 1500, 25) if f not in (50, 75, 100, 225)]


def truncated_copy(source: Path, out: Path, frames: int = 33) -> Path:
    """The first ``frames`` frames of ``source`` re-encoded (moov first), with the file's last bytes cut off."""
    whole = out.with_suffix(".whole.mp4")
    with VideoReader(source) as reader, av.open(str(whole), "w", format="mp4", options={"movflags": "faststart"}) as c:
        stream = c.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = reader.width, reader.height, "yuv420p"
        stream.options = {"g": "10"}
        for _, rgb in reader.frames(0, frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    out.write_bytes(whole.read_bytes()[:-50])
    whole.unlink()
    return out


def test_a_truncated_video_counts_exactly_the_frames_stored_on_every_run(synth_case, data_home, tmp_path, capsys):
    """Whatever the reader makes of the cut-off tail (frames it lists but cannot decode, or fewer
    frames), the summary says what was stored, names what was not, and a rerun says the same."""
    video = truncated_copy(synth_case[0] / "cholec80" / "videos" / "video01.mp4", tmp_path / "cut.mp4")
    with VideoReader(video) as reader:
        total = reader.frame_count
        bad = []
        for i in range(total):
            try:
                reader.frame(i)
            except VideoError:
                bad.append(i)
    with StandinServer(StandinConfig(answer=SHORT, first_token_s=0.0, per_token_s=0.0)) as server:
        runs = []
        for _ in range(2):
            code = engine_main(analyze(video, server.url, "--stride", "0.04"))
            runs.append((code, capsys.readouterr()))
    for code, (out, err) in runs:
        assert code == (1 if bad else 0), (out, err)
        lines = out.splitlines()
        assert lines[0].startswith(f"{video}: {total - len(bad)} of {total} frames analysed and stored")
        segments = [i for i, line in enumerate(lines) if re.match(r"  \d\d:\d\d:\d\d\.\d\d – ", line)]
        failures = [
            i for i, line in enumerate(lines) if "could not be analysed" in line or line.startswith("    frame")
        ]
        assert segments and all(i < min(segments) for i in failures)  # before the phase segments
        failed = "\n".join(lines[i] for i in failures)
        assert listed_frames(failed) == bad
        if bad:
            assert failed.startswith(f"  {len(bad)} could not be analysed")
            assert f"{len(bad)} of {total} frames could not be analysed" in err
    # A rerun reports the same frames (the reader's words may differ: it reaches them another way), never
    # counting a failed frame as done.
    first, second = (out.splitlines() for _, (out, _) in runs)
    assert first[0] == second[0] and first[-1] == second[-1]
    assert stored_frames(case_store_path(video)) == [f for f in range(total) if f not in bad]


def listed_frames(text: str) -> list[int]:
    """The frames named in "frames 3, 30–32: ..." lines (ranges expanded; every frame of the sweep here)."""
    frames: list[int] = []
    for part in re.findall(r"frames? ([\d, –]+)", text):
        for item in filter(None, (p.strip() for p in part.split(","))):
            first, _, last = item.partition("–")
            frames += range(int(first), int(last or first) + 1)
    return sorted(frames)


def test_frame_ranges():
    assert frame_ranges([5]) == "frame 5"
    assert frame_ranges([0, 1, 2, 3, 7, 9, 10]) == "frames 0–3, 7, 9, 10"
    assert frame_ranges([0, 25, 50, 75, 200], 25) == "frames 0–75, 200, every 25 frames"


# ------------------------------------------------------------------------------------- small
@pytest.mark.parametrize(
    "args",
    [
        ["ask", "{dir}", "--frame", "1", "--backend", "openai", "--url", "http://127.0.0.1:9/v1"],
        ["export", "{dir}", "--csv", "x.csv"],
        ["probe", "{dir}"],
    ],
)
def test_a_folder_given_as_a_case_is_named_so(args, tmp_path, data_home, capsys):
    assert engine_main([a.format(dir=tmp_path) for a in args]) == 1
    assert f"{tmp_path} is a folder, not a video" in capsys.readouterr().err


def test_report_and_clip_name_a_folder_as_a_folder(tmp_path, capsys):
    from app.main import main as app_main

    assert app_main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 1
    assert app_main(["clip", str(tmp_path), "--from", "0", "--to", "1", "--out", str(tmp_path / "c.mp4")]) == 1
    err = capsys.readouterr().err
    assert err.count(f"{tmp_path} is a folder, not a video") == 2


def test_a_stride_that_is_no_positive_number_of_seconds_is_refused(tmp_path, capsys):
    from app.main import main as app_main

    with pytest.raises(SystemExit):
        app_main(["report", str(tmp_path / "c.mp4"), "--out", str(tmp_path / "r.html"), "--stride", "0"])
    with pytest.raises(SystemExit):
        engine_main(["export", str(tmp_path / "c.mp4"), "--csv", str(tmp_path / "x.csv"), "--stride", "-1"])
    err = capsys.readouterr().err
    assert "argument --stride: invalid positive float value: '0'" in err and "'-1'" in err
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "x.csv").exists()
