"""Repeat-factor sampling: a frame showing a rarely seen instrument is trained on more often, so the model gets
enough of the rare tools' boxes to place them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.train.test_pipeline import MICRO, write_recipe
from train.data.repeat_factor import class_frequencies, repeat_factor_sampled, repeat_factors
from train.data.sample import FrameRef, Instrument, Sample, Task, Truth
from train.pipeline import PipelineError, check_recipe, load_pipeline_recipe


def _frame(index: int, *tools: str) -> Sample:
    truth = Truth(phase="CalotTriangleDissection", instruments=tuple(Instrument(t, (0, 0, 10, 10)) for t in tools))
    return Sample("synthetic", "video01", FrameRef(Path("v.mp4"), index), Task.FRAME, truth)


def _case(n_bipolar: int, n_grasper: int, n_empty: int) -> list[Sample]:
    tools = [("Grasper", "Bipolar")] * n_bipolar + [("Grasper",)] * n_grasper + [()] * n_empty
    return [_frame(k, *t) for k, t in enumerate(tools)]


def test_frames_of_a_rare_tool_are_repeated_by_the_square_root_of_its_rarity():
    samples = _case(4, 86, 10)  # the bipolar in 4% of frames, the grasper in 90%
    assert class_frequencies(samples) == {"Grasper": 0.9, "Bipolar": 0.04}
    factors = repeat_factors(samples, 0.36)  # sqrt(0.36 / 0.04) = 3
    assert factors[:4] == pytest.approx([3.0] * 4) and set(factors[4:]) == {1.0}
    out = repeat_factor_sampled(samples, 0.36, seed=0)
    assert len(out) == 108
    assert [s.frame.index for s in out[:13]] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4]  # in place, case order kept
    assert repeat_factor_sampled(samples, None, seed=0) is samples


def test_a_fractional_repeat_is_rounded_at_random_but_repeatably():
    samples = _case(40, 860, 100)
    rare = set(range(40))
    runs = {seed: repeat_factor_sampled(samples, 0.25, seed) for seed in (0, 0, 1)}  # factor sqrt(0.25/0.04) = 2.5
    copies = sum(s.frame.index in rare for s in runs[0])
    assert 80 <= copies <= 120  # between 2 and 3 copies each, 2.5 on average
    assert all(2 <= sum(s.frame.index == k for s in runs[0]) <= 3 for k in rare)
    assert repeat_factor_sampled(samples, 0.25, 0) == runs[0]
    assert [s.frame.index for s in runs[1]] != [s.frame.index for s in runs[0]]
    assert sum(s.frame.index not in rare for s in runs[0]) == 960  # common and empty frames once each


def test_a_threshold_outside_the_unit_interval_is_refused(tmp_path):
    for wrong in (0, 1.5, -0.1, True, "rare"):
        with pytest.raises(PipelineError, match=r"data\.repeat_factor_threshold must be a fraction"):
            check_recipe(
                load_pipeline_recipe(write_recipe(tmp_path, data={**MICRO["data"], "repeat_factor_threshold": wrong}))
            )
    check_recipe(load_pipeline_recipe(write_recipe(tmp_path, data={**MICRO["data"], "repeat_factor_threshold": 0.3})))
