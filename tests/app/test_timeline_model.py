"""The timeline's Qt-free run maths: runs of labels, confidence levels and coverage cells by the
engine's one rule, and the confidence colour ramp."""

from __future__ import annotations

import numpy as np

from app import palette
from app.timeline_model import Runs, confidence_color, confidence_runs, coverage_runs, label_runs
from engine.timeline import coverage_cells


def test_label_runs_merge_equal_neighbours_and_skip_none():
    runs = label_runs(["A", "A", None, "B", "B", "A"])
    assert list(zip(runs.starts.tolist(), runs.ends.tolist(), runs.labels, strict=True)) == [
        (0, 2, "A"),
        (3, 5, "B"),
        (5, 6, "A"),
    ]
    assert runs.at(4) == 1 and runs.at(2) is None and len(Runs.empty()) == 0


def test_coverage_and_confidence_use_the_engines_cells():
    frames = np.array([0, 25, 50, 500])
    starts, ends = coverage_cells(frames, 100, 600)
    cover = coverage_runs(frames, 100, 600)
    assert cover.starts.tolist() == [starts[0], starts[3]] and cover.ends.tolist() == [ends[2], ends[3]]
    conf = confidence_runs(frames, np.array([1.0, 1.0, 0.5, 0.0]), 100, 600)
    assert conf.labels == ["1", "0.5", "0"] and conf.levels.tolist() == [1.0, 0.5, 0.0]


def test_confidence_colours_come_from_the_palette():
    assert confidence_color(0.0) == "#{:02x}{:02x}{:02x}".format(*palette.CONFIDENCE_RAMP[0])
    assert confidence_color(1.0) == "#{:02x}{:02x}{:02x}".format(*palette.CONFIDENCE_RAMP[2])
