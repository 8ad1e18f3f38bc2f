"""Interleaved M-RoPE: the decoder reads image rows and columns on fast rotary frequencies; text is read as before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.tiny_model import build_tiny_model
from tests.train.recipe_base import built_base, recipe_text
from train.rope_layout import RopeLayoutError, interleave_mrope, mrope_sections


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("rope") / "m", seed=5, init_std=0.1)


def _logits(model_dir: Path, with_image: bool) -> torch.Tensor:
    from transformers import AutoModelForImageTextToText

    from engine.vlm_processor import load_processor

    processor = load_processor(model_dir)
    net = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    content = [{"type": "text", "text": "Which instruments are in view, and where?"}]
    if with_image:
        content.insert(0, {"type": "image"})
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    image = np.random.default_rng(0).integers(0, 255, (96, 160, 3), dtype=np.uint8)
    inputs = processor(text=[text], images=[image] if with_image else None, return_tensors="pt")
    with torch.no_grad():
        return net(**inputs).logits


def test_interleaving_moves_how_the_image_is_seen_and_leaves_text_as_it_was(model, tmp_path):
    interleaved = tmp_path / "interleaved"
    shutil.copytree(model, interleaved)
    before = mrope_sections(model)
    assert interleave_mrope(interleaved) == [1] * sum(before) == mrope_sections(interleaved)
    # a text token's time, row and column positions are equal: which pair reads which position does not matter
    assert torch.allclose(_logits(model, False), _logits(interleaved, False), atol=1e-5)
    # an image token's row and column differ from its time: the decoder now sees the image on other frequencies
    assert not torch.allclose(_logits(model, True), _logits(interleaved, True), atol=1e-3)
    assert interleave_mrope(interleaved) == mrope_sections(interleaved)  # once interleaved, it stays so


def test_models_without_sections_to_interleave_are_refused_in_one_line(model, tmp_path):
    for change, message in (
        (lambda rope: rope.pop("mrope_section"), "no M-RoPE sections"),
        (lambda rope: rope.update(mrope_interleaved=True), "interleaved already"),
    ):
        folder = tmp_path / message.replace(" ", "-")
        shutil.copytree(model, folder)
        config = json.loads((folder / "config.json").read_text())
        change(config["text_config"]["rope_parameters"])
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(RopeLayoutError, match=message):
            interleave_mrope(folder)
        assert json.loads((folder / "config.json").read_text()) == config  # left as it was


def test_a_recipe_can_continue_a_model_with_interleaved_sections_leaving_its_source_as_it_was(model, tmp_path):
    from train.pipeline import PipelineError, check_recipe, load_pipeline_recipe

    source_config = (model / "config.json").read_text()
    base = built_base(model, tmp_path, "mrope: interleaved")
    assert base == tmp_path / "run" / "base-model" and set(mrope_sections(base)) == {1}
    assert (model / "config.json").read_text() == source_config
    (tmp_path / "r.yaml").write_text(recipe_text(model, tmp_path / "run", "mrope: spiral"))
    with pytest.raises(PipelineError, match="mrope must be interleaved"):
        check_recipe(load_pipeline_recipe(tmp_path / "r.yaml"))
