"""A model continued at a higher resolution: the recipe's ``image_pixels`` makes the first SFT read more image
tokens per frame, and the model folder it starts from is left as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from engine.tiny_model import build_tiny_model
from tests.train.test_pipeline import write_recipe
from train.image_budget import ImageBudgetError, frame_grid, set_image_pixels
from train.pipeline import PipelineError, _base_model, check_recipe, load_pipeline_recipe


@pytest.fixture(scope="module")
def demo_size(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demo-size") / "model"
    build_tiny_model(folder, seed=0, size="demo")
    return folder


def test_a_continued_run_reads_more_image_tokens_and_leaves_its_source_alone(tmp_path, demo_size):
    source = tmp_path / "trained"
    shutil.copytree(demo_size, source)
    before = {p.name: p.read_bytes() for p in source.iterdir() if p.is_file()}
    assert frame_grid(source, 640, 360) == (12, 6)  # the demo size: 336x168

    recipe = load_pipeline_recipe(write_recipe(tmp_path, base_model=str(source), image_pixels=448 * 252))
    check_recipe(recipe)
    base = _base_model(recipe, Path(recipe.out))

    assert base != source and frame_grid(base, 640, 360) == (16, 9)  # 144 image tokens instead of 72
    assert {p.name: p.read_bytes() for p in source.iterdir() if p.is_file()} == before
    assert _base_model(recipe, Path(recipe.out)) == base  # a resumed run reuses the copy


def test_the_continued_model_reads_the_larger_grid_with_the_same_weights(tmp_path, demo_size):
    """Rotary positions only: the same weights run on the larger grid (what makes continuing possible)."""
    from PIL import Image
    from transformers import AutoModelForImageTextToText

    from engine.vlm_processor import load_processor

    model_dir = tmp_path / "m"
    shutil.copytree(demo_size, model_dir)
    set_image_pixels(model_dir, 448 * 252)
    processor = load_processor(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, local_files_only=True)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Phase?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[text], images=[Image.new("RGB", (640, 360), (120, 40, 40))], return_tensors="pt")
    assert inputs["image_grid_thw"][0].tolist() == [1, 18, 32]
    with torch.no_grad():
        logits = model(**inputs).logits
    assert torch.isfinite(logits).all()


def test_a_budget_below_one_image_token_is_refused(tmp_path, demo_size):
    model_dir = tmp_path / "m"
    shutil.copytree(demo_size, model_dir)
    with pytest.raises(ImageBudgetError, match="below one image token"):
        set_image_pixels(model_dir, 100)
    assert frame_grid(model_dir, 640, 360) == (12, 6)  # unchanged
    with pytest.raises(PipelineError, match="image_pixels must be a positive"):
        check_recipe(load_pipeline_recipe(write_recipe(tmp_path, image_pixels=-5)))


def test_a_size_built_from_random_weights_reads_at_the_recipes_budget(tmp_path):
    recipe = load_pipeline_recipe(write_recipe(tmp_path, base_model="demo", image_pixels=448 * 252))
    assert frame_grid(_base_model(recipe, Path(recipe.out)), 640, 360) == (16, 9)
