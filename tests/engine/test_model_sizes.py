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
    ("size", "grid", "tokens", "parameters"),
    [
        ("tiny", (6, 10), 15, (0.6e6, 0.7e6)),
        ("demo", (12, 24), 72, (2.0e6, 2.3e6)),
        ("demo-large", (26, 46), 299, (14e6, 15e6)),  # the GPU variant: the frame at its own size
    ],
)
def test_a_size_sets_the_frame_resolution_and_the_parameter_count(tmp_path, size, grid, tokens, parameters):
    model = build_tiny_model(tmp_path / size, size=size)
    frame = Image.fromarray(np.zeros((360, 640, 3), np.uint8))
    thw = load_processor(model).image_processor(images=[frame])["image_grid_thw"].tolist()[0]
    assert tuple(thw[1:]) == grid  # patches of 14 px; the model sees (h/2)*(w/2) merged tokens
    assert thw[1] * thw[2] // 4 == tokens
    count = json.loads((model / "surgview.json").read_text())["lineage"][0]["details"]["parameters"]
    assert parameters[0] < count < parameters[1]
    config = json.loads((model / "config.json").read_text())["vision_config"]
    assert config["depth"] == SIZES[size].vision_depth and config["fullatt_block_indexes"][-1] < config["depth"]


def test_the_qwen3_demo_size_reads_the_same_tokens_with_absolute_positions_and_loads(tmp_path):
    """The demo size as a Qwen3-VL, whose vision tower adds learned absolute position embeddings to the
    patches: same 72 tokens for a 16:9 frame (16-px patches at 384x192), a loadable model folder."""
    from engine.backends.base import GenerationRequest
    from engine.backends.transformers_backend import TransformersBackend
    from engine.modeldir import inspect_model_dir

    model = build_tiny_model(tmp_path / "q3", size="demo-qwen3", init_std=0.1)
    assert inspect_model_dir(model).architecture == "Qwen3VLForConditionalGeneration"
    frame = np.zeros((360, 640, 3), np.uint8)
    thw = load_processor(model).image_processor(images=[Image.fromarray(frame)])["image_grid_thw"].tolist()[0]
    assert tuple(thw[1:]) == (12, 24) and thw[1] * thw[2] // 4 == 72
    config = json.loads((model / "config.json").read_text())["vision_config"]
    assert config["num_position_embeddings"] > 0 and config["patch_size"] == 16
    with TransformersBackend(model) as backend:
        text = backend.generate(GenerationRequest("Which phase?", image=frame, max_new_tokens=6))
    assert isinstance(text, str) and text
