"""High-DPI layouts: at Qt scale factors 1.5 and 2 the timeline's row labels never overlap (or lose a
name), and the transport bar's frame and time read-outs are never cut. The scale factor is read when the
QApplication is made, so each runs the real window in a process of its own (``tests/app/hidpi_probe.py``)
that prints the geometry pyqtgraph and Qt really laid out; the window sizes are the default layout and
the logical size of a 2560×1440 screen at 2× or a 1920×1080 one at 1.5×."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.profiles import get_profile
from train.synth.truth_store import TRUTH_MODEL_ID, store_truth_chains

ROOT = Path(__file__).resolve().parents[2]
SIZES = ("1440x900", "1280x720")


@pytest.fixture(scope="module")
def analysed_case(synth_case, tmp_path_factory) -> tuple[Path, Path]:
    """The synthetic case with a stored answer on every analysed frame (all seven instrument rows show)."""
    data = tmp_path_factory.mktemp("hidpi-data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SURGVIEW_DATA", str(data))
        video, _ = store_truth_chains(synth_case[0], prompt_version=get_profile().version)
    return video, data


def probe(scale: float, case: tuple[Path, Path], tmp_path: Path) -> dict:
    video, data = case
    env = {**os.environ, "QT_SCALE_FACTOR": str(scale), "QT_QPA_PLATFORM": "offscreen", "SURGVIEW_DATA": str(data)}
    env.pop("QT_SCREEN_SCALE_FACTORS", None)
    args = [sys.executable, "-m", "tests.app.hidpi_probe", str(video), "--settings", str(tmp_path / "s.ini")]
    args += [f"--size={size}" for size in SIZES] + ["--model", TRUTH_MODEL_ID]
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_labels(timeline: dict) -> set[str]:
    """No two row labels closer than a line of text, each whole inside the label column; their names."""
    ax, ay, aw, ah = timeline["axis"]
    labels = sorted(timeline["labels"], key=lambda label: label["rect"][1] + label["rect"][3] / 2)
    assert labels, "no row label drawn"
    for label in labels:
        x, y, w, h = label["rect"]
        need_w, need_h = label["need"]
        centre = y + h / 2
        assert x >= ax - 0.5 and x + w <= ax + aw + 0.5 and need_w <= w + 1.0, label  # the whole name
        assert ay - 1.0 <= centre - need_h / 2 and centre + need_h / 2 <= ay + ah + 1.0, label
    for above, below in itertools.pairwise(labels):
        gap = (below["rect"][1] + below["rect"][3] / 2) - (above["rect"][1] + above["rect"][3] / 2)
        line = max(above["need"][1], below["need"][1])
        assert gap >= line - 0.5, f"{above['text']!r} and {below['text']!r} overlap: {gap:.1f} px apart, {line:.1f}"
    return {label["text"] for label in labels}


def check_read_out(read_out: dict) -> None:
    assert read_out["visible"] and read_out["inside"], read_out
    assert read_out["need"] <= read_out["has"] and read_out["ink"] <= read_out["has"], read_out  # not cut
    assert read_out["need_h"] <= read_out["has_h"], read_out


@pytest.mark.parametrize("scale", [1.5, 2.0])
def test_row_labels_and_read_outs_hold_at_high_dpi(scale, analysed_case, tmp_path):
    measured = probe(scale, analysed_case, tmp_path)
    assert measured["scale"] == pytest.approx(scale)
    assert [layout["window"] for layout in measured["layouts"]] == [[1440, 900], [1280, 720]]
    for layout in measured["layouts"]:
        pages = layout["timeline_pages"]
        tracks = pages[0]["tracks"]
        assert len(tracks) >= 14  # truth, phases, CVS, the seven instruments, confidence, ...
        seen = set().union(*(check_labels(page) for page in pages))
        assert seen == set(tracks), "every row's name can be read (scrolling when they do not all fit)"
        check_read_out(layout["frame_label"])
        check_read_out(layout["time_label"])
        assert layout["frame_label"]["text"] == "frame 1499 / 1499"
