"""surgview-train soup: the weights between two fine-tunes of one model, as a folder the engine loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.modeldir import Manifest, inspect_model_dir
from engine.tiny_model import build_tiny_model
from train.cli import main as train_main
from train.soup import SoupError, interpolate_models


@pytest.fixture(scope="module")
def parents(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny model and a "continuation" of it: the same files, every weight moved."""
    root = tmp_path_factory.mktemp("soup")
    first = build_tiny_model(root / "a", seed=0, init_std=0.1)
    second = root / "b"
    shutil.copytree(first, second)
    weights = load_file(str(second / "model.safetensors"))
    generator = torch.Generator().manual_seed(1)
    moved = {k: (v + 0.05 * torch.randn(v.shape, generator=generator)).contiguous() for k, v in weights.items()}
    save_file(moved, str(second / "model.safetensors"), metadata={"format": "pt"})
    manifest = Manifest.read(second)
    manifest.evaluation = {"held_out": {"n": 120}}
    manifest.extra["onnx"] = {"path": "onnx"}
    manifest.write(second)
    (second / "onnx").mkdir()
    return first, second


def test_the_soup_lies_between_its_parents_and_loads(parents, tmp_path):
    from engine.backends.base import GenerationRequest
    from engine.backends.transformers_backend import TransformersBackend

    first, second = parents
    out = interpolate_models(first, second, 0.25, tmp_path / "soup")
    a, b, mixed = (load_file(str(p / "model.safetensors")) for p in (first, second, out))
    for key in b:
        assert torch.allclose(mixed[key], 0.75 * a[key] + 0.25 * b[key], atol=1e-6), key
    info = inspect_model_dir(out)
    stage = info.manifest.lineage[-1]
    assert stage.name == "interpolation" and stage.details["weight"] == 0.25
    assert stage.details["from"] == inspect_model_dir(first).model_id
    assert stage.details["to"] == inspect_model_dir(second).model_id
    # the second parent's figures and graphs were its own: the soup claims neither until it is measured
    assert info.manifest.evaluation == {} and "onnx" not in info.manifest.extra and not (out / "onnx").exists()
    with TransformersBackend(out) as backend:
        text = backend.generate(GenerationRequest("Which phase?", np.zeros((64, 64, 3), np.uint8), max_new_tokens=5))
    assert isinstance(text, str)


def test_models_that_are_no_two_fine_tunes_of_one_model_are_refused(parents, tmp_path):
    first, second = parents
    for weight in (0.0, 1.0, 1.5):
        with pytest.raises(SoupError, match="strictly between 0 and 1"):
            interpolate_models(first, second, weight, tmp_path / f"w{weight}")
    other = build_tiny_model(tmp_path / "demo", seed=0, size="demo")
    with pytest.raises(SoupError, match=r"differ in config\.json"):
        interpolate_models(first, other, 0.5, tmp_path / "mixed")
    with pytest.raises(SoupError):
        interpolate_models(first, tmp_path / "nowhere", 0.5, tmp_path / "mixed")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(SoupError, match="not an empty folder"):
        interpolate_models(first, second, 0.5, taken)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]
    assert not list(tmp_path.glob(".*partial"))  # nothing half-written left beside them
    # a continuation trained to write boxes in thousandths: halfway between it and a pixel model writes neither
    retrained = tmp_path / "thousandths"
    shutil.copytree(second, retrained)
    manifest = Manifest.read(retrained)
    manifest.box_units = "thousandths"
    manifest.write(retrained)
    with pytest.raises(SoupError, match=r"boxes in pixels .* in thousandths"):
        interpolate_models(first, retrained, 0.5, tmp_path / "units")


def test_the_cli_writes_the_soup_and_says_to_evaluate_it(parents, tmp_path, capsys):
    first, second = parents
    assert train_main(["soup", str(first), str(second), "--out", str(tmp_path / "s"), "--name", "demo-soup"]) == 0
    assert "evaluate it before use" in capsys.readouterr().out
    assert json.loads((tmp_path / "s" / "surgview.json").read_text())["name"] == "demo-soup"
    assert train_main(["soup", str(first), str(second), "--weight", "2", "--out", str(tmp_path / "t")]) == 1
    assert "strictly between 0 and 1" in capsys.readouterr().err
