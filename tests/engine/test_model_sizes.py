"""The tiny model's sizes: how many parameters, and how many image tokens a 16:9 frame becomes (what the
vision tower can resolve: the Calot triangle and an instrument's jaws are a few pixels at the tiny size)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from engine.tiny_model import SIZES, build_tiny_model
from engine.vlm_processor import load_processor


@pytest.mark.parametrize(
    ("size", "grid", "parameters"), [("tiny", (6, 10), (0.6e6, 0.7e6)), ("demo", (12, 24), (2.0e6, 2.3e6))]
)
def test_a_size_sets_the_frame_resolution_and_the_parameter_count(tmp_path, size, grid, parameters):
    model = build_tiny_model(tmp_path / size, size=size)
    frame = Image.fromarray(np.zeros((360, 640, 3), np.uint8))
    thw = load_processor(model).image_processor(images=[frame])["image_grid_thw"].tolist()[0]
    assert tuple(thw[1:]) == grid  # patches of 14 px; the model sees (h/2)*(w/2) merged tokens
    assert thw[1] * thw[2] // 4 == (15 if size == "tiny" else 72)
    count = json.loads((model / "surgview.json").read_text())["lineage"][0]["details"]["parameters"]
    assert parameters[0] < count < parameters[1]
    config = json.loads((model / "config.json").read_text())["vision_config"]
    assert config["depth"] == SIZES[size].vision_depth and config["fullatt_block_indexes"][-1] < config["depth"]
