"""Every exporting command against a FIFO, a symlink and standard output: a device is written in
place and never replaced, a link stays a link with its target written, ``-`` is standard output,
and nothing temporary is left behind."""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import cv2
import pytest

from app.main import main as app_main
from bench.openai_standin import StandinConfig, StandinServer
from engine.cli import main as engine_main
from engine.outputs import OutputError, output_path, write_output
from engine.video import VideoReader
from train.synth.truth_store import store_truth_chains

ANSWER = "<think> Level 1: a grasper. </think><answer>A. Preparation</answer>"


@pytest.fixture(scope="module")
def case(synth_case, tmp_path_factory) -> Path:
    """The synthetic case with ground-truth chains, in a private data folder for this module's tests."""
    data = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SURGVIEW_DATA", str(data))
        video, _ = store_truth_chains(synth_case[0], every=10)
        yield video


@pytest.fixture(scope="module")
def eval_set(case, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("evalset")
    with VideoReader(case) as reader:
        cv2.imwrite(str(folder / "f0.jpg"), cv2.cvtColor(reader.frame(100), cv2.COLOR_RGB2BGR))
    row = {
        "messages": [{"role": "user", "content": "Which phase? <image>"}, {"role": "assistant", "content": "A"}],
        "images": ["f0.jpg"],
    }
    (folder / "set.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    return folder / "set.jsonl"


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("results") / "results.jsonl"
    rows = [{"response": "<answer>A. Preparation</answer>", "labels": "A. Preparation"}] * 2
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def server():
    with StandinServer(StandinConfig(answer=ANSWER, first_token_s=0.0, per_token_s=0.0)) as s:
        yield s


def commands(case: Path, eval_set: Path, results: Path, url: str) -> dict[str, Callable[[str], int]]:
    """Each exporting command, as a function of its output target."""
    served = ["--backend", "openai", "--url", url, "--model", "standin", "--quiet"]
    return {
        "export.jsonl": lambda out: engine_main(["export", str(case), "--jsonl", out]),
        "export.csv": lambda out: engine_main(["export", str(case), "--csv", out]),
        "score.json": lambda out: engine_main(["score", str(results), "--json", out]),
        "eval.jsonl": lambda out: engine_main(["eval", str(eval_set), "--out", out, *served]),
        "report.html": lambda out: app_main(["report", str(case), "--out", out]),
        "clip.mp4": lambda out: app_main(["clip", str(case), "--from", "0", "--to", "24", "--out", out, "--quiet"]),
    }


def check_content(name: str, data: bytes) -> None:
    """What each export must hold (enough to tell a complete one from nothing or a fragment)."""
    if name.endswith(".jsonl"):
        rows = [json.loads(line) for line in data.decode().splitlines()]
        assert rows
    elif name.endswith(".csv"):
        assert data.decode().startswith("frame,time,status,phase")
    elif name.endswith(".json"):
        assert "accuracy" in json.loads(data)
    elif name.endswith(".html"):
        assert b"<html" in data[:200].lower() and data.rstrip().endswith(b"</html>")
    else:
        assert data[4:8] == b"ftyp" and len(data) > 1000  # an MP4, whole


class FifoReader(threading.Thread):
    """Reads a FIFO to its end, as a program at the other end of a named pipe does."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path = path
        self.data = b""

    def run(self) -> None:
        with open(self.path, "rb") as fh:
            self.data = fh.read()


NAMES = ["export.jsonl", "export.csv", "score.json", "eval.jsonl", "report.html", "clip.mp4"]


@pytest.mark.parametrize("name", NAMES)
def test_a_fifo_is_written_in_place_and_stays_a_fifo(name, case, eval_set, results, server, tmp_path):
    fifo = tmp_path / name
    os.mkfifo(fifo)
    reader = FifoReader(fifo)
    reader.start()
    assert commands(case, eval_set, results, server.url)[name](str(fifo)) == 0
    reader.join(30)
    assert not reader.is_alive()
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # never replaced by a regular file
    check_content(name, reader.data)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("name", NAMES)
def test_a_symlink_stays_a_link_and_its_target_is_written(name, case, eval_set, results, server, tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / name
    target.write_bytes(b"old")
    link = tmp_path / name
    link.symlink_to(target)
    assert commands(case, eval_set, results, server.url)[name](str(link)) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    check_content(name, target.read_bytes())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["real", name])
    assert sorted(p.name for p in target.parent.iterdir()) == [name]  # no temporary left beside the target


@pytest.mark.parametrize("name", ["export.jsonl", "export.csv", "score.json", "eval.jsonl"])
def test_dash_is_standard_output_and_the_commands_own_lines_go_to_stderr(
    name, case, eval_set, results, server, capsysbinary
):
    assert commands(case, eval_set, results, server.url)[name]("-") == 0
    out = capsysbinary.readouterr().out
    check_content(name, out)


@pytest.mark.parametrize("name", ["report.html", "clip.mp4"])
def test_report_and_clip_refuse_standard_output_with_one_line(name, case, capsys, tmp_path):
    assert commands(case, Path("unused"), Path("unused"), "http://127.0.0.1:9/v1")[name]("-") == 1
    err = capsys.readouterr().err
    assert "standard output" in err and len(err.strip().splitlines()) == 1


def test_a_socket_or_folder_is_refused_and_a_failed_write_leaves_the_old_file(tmp_path):
    import socket

    sock_path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        with pytest.raises(OutputError, match="socket"):
            write_output(sock_path, "x")
    with pytest.raises(OutputError, match="folder"):
        write_output(tmp_path, "x")
    with pytest.raises(OutputError, match="does not exist"):
        write_output(tmp_path / "missing" / "x.txt", "x")
    old = tmp_path / "keep.txt"
    old.write_text("good")
    old.chmod(0o640)
    with pytest.raises(OutputError, match="No space"), output_path(old) as tmp:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")
    assert old.read_text() == "good"
    write_output(old, "new")
    assert old.read_text() == "new" and stat.S_IMODE(old.stat().st_mode) == 0o640  # the old mode is kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt", "s.sock"]
