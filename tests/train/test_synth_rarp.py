"""Synthetic robotic suturing: natural action order, exact ground truth, SAR-RARP50's own layout."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.procedures import get_procedure
from engine.video import VideoReader
from train.data.sar_rarp50 import read_actions, sar_rarp50_samples
from train.synth.rarp import RarpConfig, RarpSynthError, generate_rarp
from train.synth.suturing import ACTION_SECONDS, SuturingRenderer, build_suturing_script

ROOT = Path(__file__).resolve().parents[2]
ACTION_IDS = {lab.name: lab.id for lab in get_procedure("rarp").vocabulary("action")}
CYCLE = ["positioning_the_needle_tip", "pushing_the_needle_through_the_tissue", "pulling_the_needle_out_of_the_tissue"]


@pytest.mark.parametrize("seed", range(6))
def test_actions_follow_the_natural_order_of_a_running_suture(seed):
    script = build_suturing_script(3, 60 * 60 * 2, 60, seed)
    spans = script.spans
    assert spans[0].start == 0 and spans[-1].end == script.frames
    assert all(a.end == b.start and a.end > a.start for a, b in itertools.pairwise(spans))
    actions = [s.action for s in spans if s.action != "other"]
    assert actions[0] == "picking_up_the_needle"
    assert actions[-3:] == ["tying_a_knot", "cutting_the_suture", "returning_dropping_the_needle"]
    body = [a for a in actions[1:-3] if a != "picking_up_the_needle"]
    assert len(body) % 3 == 0 and body == CYCLE * (len(body) // 3) and script.stitches == len(body) // 3 >= 2
    for span in spans[:-1]:  # the last action runs to the end of the case
        low, high = ACTION_SECONDS[span.action]
        assert 0.5 * low <= (span.end - span.start) / 60 <= 2 * high


def test_the_renderer_reports_what_it_draws():
    script = build_suturing_script(1, 1800, 60, 0)
    renderer = SuturingRenderer(script, 320, 180)
    for frame in (0, 400, 700, 900, 1300, 1700):
        rgb, truth = renderer.render(frame, with_mask=True)
        assert rgb.shape == (180, 320, 3) and truth.action == script.action_at(frame).action
        assert set(np.unique(truth.mask).tolist()) <= {0, 1, 2, 3, 4, 5}
        assert (4 in truth.mask) == truth.needle_visible and (5 in truth.mask) == truth.thread_visible
        for x1, y1, x2, y2 in truth.boxes.values():
            assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 180
    cutting = next(s for s in script.spans if s.action == "cutting_the_suture")
    assert "Monopolar_Curved_Scissors" in renderer.render((cutting.start + cutting.end) // 2)[1].boxes


def test_cases_are_written_in_sar_rarp50s_layout_and_read_by_its_adapter(tmp_path):
    summary = generate_rarp(tmp_path, RarpConfig(cases=1, minutes=0.25, seed=2))
    folder = tmp_path / "train1" / "video_01"
    rows = read_actions(folder / "action_discrete.txt")
    assert [f for f, _ in rows] == list(range(0, 900, 6))  # every 6th frame of 60 fps: 10 Hz
    assert (folder / "action_discrete.txt").read_text().splitlines()[0] == "000000000,0"
    spans = summary["cases"][0]["actions"]
    for frame, action in rows:
        expected = next(name for name, start, end in spans if start <= frame < end)
        assert action == ACTION_IDS[expected]
    assert sorted(p.name for p in (folder / "segmentation").iterdir()) == [f"{f:09d}.png" for f in range(0, 900, 60)]
    mask = cv2.imread(str(folder / "segmentation" / "000000060.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (180, 320) and mask.max() <= 5
    reader = VideoReader(folder / "video_left.avi")
    assert (reader.frame_count, round(reader.fps)) == (900, 60)
    samples = sar_rarp50_samples(tmp_path)
    assert len(samples) == 150 and {s.split for s in samples} == {"train"}
    assert samples[10].frame.index == 60 and samples[10].truth.anatomy  # the needle or thread is in the mask
    truth = [json.loads(line) for line in (folder / "synth-truth.jsonl").read_text().splitlines()]
    assert len(truth) == 150 and set(truth[0]["boxes"]) >= {"Large_Needle_Driver", "Prograsp_Forceps"}


def test_bad_settings_are_refused():
    with pytest.raises(RarpSynthError, match="60 fps"):
        RarpConfig(fps=25).validate()
    with pytest.raises(RarpSynthError, match="train1, train2 or test"):
        RarpConfig(split="val").validate()


def test_the_cli_writes_a_suturing_case(tmp_path):
    out = tmp_path / "rarp"
    result = subprocess.run(
        [sys.executable, "-m", "train.cli", "synth", "--procedure", "rarp", "--out", str(out), "--cases", "1",
         "--minutes", "0.25", "--split", "test", "--first-id", "41", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "test/video_41/video_left.avi: 900 frames" in result.stdout
    assert (out / "test" / "video_41" / "action_discrete.txt").is_file()
    refused = subprocess.run(
        [sys.executable, "-m", "train.cli", "synth", "--procedure", "bypass", "--out", str(tmp_path / "b")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert refused.returncode != 0 and "no synthetic cases of bypass" in refused.stderr
