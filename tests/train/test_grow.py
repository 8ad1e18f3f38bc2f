"""surgview-train grow: a deeper copy of a model that answers as its parent did, with room to learn more."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from engine.backends.base import GenerationRequest
from engine.backends.transformers_backend import TransformersBackend
from engine.modeldir import Manifest, inspect_model_dir
from engine.tiny_model import build_tiny_model
from tests.train.recipe_base import built_base, recipe_text
from train.cli import main as train_main
from train.grow import GrowError, grow_model, spread_copies


@pytest.fixture(scope="module")
def parent(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("grow")
    model = build_tiny_model(root / "parent", seed=3, init_std=0.1)
    manifest = Manifest.read(model)
    manifest.evaluation = {"held_out": {"n": 120}}
    manifest.extra["onnx"] = {"path": "onnx"}
    manifest.write(model)
    (model / "onnx").mkdir()
    return model


def _frame() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)


def _answers(model: Path) -> list[tuple[str, list[float]]]:
    requests = [GenerationRequest(p, _frame(), max_new_tokens=24) for p in ("Which phase?", "Which instruments?")]
    with TransformersBackend(model) as backend:
        return [(text, [p for _, p in probs]) for text, probs in backend.generate_batch_with_probs(requests)]


def test_copies_are_spread_over_the_stack_each_after_its_source():
    assert spread_copies(4, 8) == [(0, False), (0, True), (1, False), (1, True), (2, False), (2, True), (3, False),
                                   (3, True)]  # fmt: skip
    assert spread_copies(3, 4) == [(0, False), (1, False), (2, False), (2, True)]
    assert spread_copies(2, 5) == [(0, False), (0, True), (1, False), (1, True), (1, True)]
    assert spread_copies(3, 3) == [(0, False), (1, False), (2, False)]
    with pytest.raises(GrowError, match="only adds"):
        spread_copies(4, 3)


def test_the_grown_model_answers_as_its_parent_did(parent, tmp_path):
    config = json.loads((parent / "config.json").read_text())
    depth, layers = config["vision_config"]["depth"], config["text_config"]["num_hidden_layers"]
    grown = grow_model(parent, tmp_path / "grown", vision_depth=2 * depth, text_layers=layers + 1, name="grown")
    grown_config = json.loads((grown / "config.json").read_text())
    assert grown_config["vision_config"]["depth"] == 2 * depth
    assert grown_config["text_config"]["num_hidden_layers"] == layers + 1
    assert len(grown_config["text_config"]["layer_types"]) == layers + 1
    full = config["vision_config"].get("fullatt_block_indexes")
    if full:  # each copy attends as the block it copies
        assert grown_config["vision_config"]["fullatt_block_indexes"] == [i for k in full for i in (2 * k, 2 * k + 1)]
    before, after = _answers(parent), _answers(grown)
    for (text_a, probs_a), (text_b, probs_b) in zip(before, after, strict=True):
        assert text_b == text_a and len(text_a) > 0
        assert np.allclose(probs_b, probs_a, atol=1e-5)
    info = inspect_model_dir(grown)
    stage = info.manifest.lineage[-1]
    assert stage.name == "expansion" and stage.details["from"] == inspect_model_dir(parent).model_id
    assert stage.details["vision_depth"] == [depth, 2 * depth] and stage.details["text_layers"] == [layers, layers + 1]
    parent_params = sum(t.numel() for t in load_file(str(parent / "model.safetensors")).values())
    assert stage.details["parameters"] > parent_params
    # the parent's figures and graphs were the parent's: the grown model claims neither until it is measured
    assert info.manifest.name == "grown" and info.manifest.evaluation == {}
    assert "onnx" not in info.manifest.extra and not (grown / "onnx").exists()


def test_the_new_blocks_learn_from_the_first_step(parent, tmp_path):
    """Zero output projections would be dead weights if their gradients were zero too: they are not."""
    from transformers import AutoModelForImageTextToText

    from engine.vlm_processor import load_processor

    config = json.loads((parent / "config.json").read_text())
    depth, layers = config["vision_config"]["depth"], config["text_config"]["num_hidden_layers"]
    grown = grow_model(parent, tmp_path / "grown", vision_depth=depth + 1, text_layers=layers + 1)
    model = AutoModelForImageTextToText.from_pretrained(grown)
    processor = load_processor(grown)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which phase?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True) + "Preparation"
    inputs = processor(text=[text], images=[_frame()], return_tensors="pt")
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    named = dict(model.named_parameters())
    zeroed = [n for n, p in named.items() if p.dim() == 2 and not p.detach().abs().sum()]
    # the copies' output projections, and nothing else: attention's and the MLP's in each new block
    assert len([n for n in zeroed if f"blocks.{depth}." in n]) == 2
    assert len([n for n in zeroed if f"layers.{layers}." in n]) == 2 and len(zeroed) == 4
    for name in zeroed:
        assert named[name].grad is not None and named[name].grad.abs().sum() > 0, name


def test_what_cannot_be_grown_is_refused_and_nothing_is_left_half_written(parent, tmp_path):
    config = json.loads((parent / "config.json").read_text())
    depth = config["vision_config"]["depth"]
    with pytest.raises(GrowError, match="only adds"):
        grow_model(parent, tmp_path / "less", vision_depth=depth - 1)
    with pytest.raises(GrowError, match="nothing to grow"):
        grow_model(parent, tmp_path / "same", vision_depth=depth)
    with pytest.raises(GrowError, match="does not exist"):
        grow_model(tmp_path / "nowhere", tmp_path / "x", vision_depth=depth + 1)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(GrowError, match="not an empty folder"):
        grow_model(parent, taken, vision_depth=depth + 1)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    assert not list(tmp_path.glob(".*partial"))


def test_the_cli_grows_a_model_and_says_how_to_use_it(parent, tmp_path, capsys):
    out = tmp_path / "g"
    assert train_main(["grow", str(parent), "--out", str(out), "--text-layers", "9"]) == 0
    assert "base_model" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["text_config"]["num_hidden_layers"] == 9
    assert train_main(["grow", str(parent), "--out", str(tmp_path / "h"), "--text-layers", "1"]) == 1
    assert "only adds" in capsys.readouterr().err


def test_a_recipe_that_grows_its_base_trains_from_a_deeper_copy_and_leaves_the_source_as_it_was(parent, tmp_path):
    from train.pipeline import PipelineError, _base_model, check_recipe, load_pipeline_recipe

    before = (parent / "model.safetensors").read_bytes()
    base = built_base(parent, tmp_path, "grow: {text_layers: 7}")
    assert base == tmp_path / "run" / "base-model"
    assert json.loads((base / "config.json").read_text())["text_config"]["num_hidden_layers"] == 7
    assert inspect_model_dir(base).manifest.lineage[-1].name == "expansion"
    assert built_base(parent, tmp_path, "grow: {text_layers: 7}") == base  # a resumed run keeps its grown copy
    assert (parent / "model.safetensors").read_bytes() == before and not (parent / "base-model").exists()
    (tmp_path / "r.yaml").write_text(recipe_text(parent, tmp_path / "run", "grow: {text_layers: 1}"))
    with pytest.raises(PipelineError, match=r"grow: .*only adds"):
        _base_model(load_pipeline_recipe(tmp_path / "r.yaml"), tmp_path / "other")
    (tmp_path / "r.yaml").write_text(recipe_text("tiny", tmp_path / "run", "grow: {text_layers: 7}"))
    with pytest.raises(PipelineError, match="grow a model folder"):
        check_recipe(load_pipeline_recipe(tmp_path / "r.yaml"))
