"""SFT with trl on the tiny model: trains, writes a loadable model directory with lineage, resumes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.backends.base import GenerationRequest
from engine.modeldir import Manifest
from engine.prompts import system_prompt
from engine.tiny_model import build_tiny_model
from train.sft import SFTRecipe, SFTRunError, load_recipe, load_sft_rows, run_sft

CHAINS = {
    "red": "<think>\nLevel 3 (Context): Phase: Preparation.\n</think>\n<answer>Preparation</answer>",
    "green": "<think>\nLevel 3 (Context): Phase: Clipping Cutting.\n</think>\n<answer>Clipping Cutting</answer>",
}


def write_set(folder: Path, n: int = 32) -> Path:
    rows = []
    for i in range(n):
        colour = "red" if i % 2 else "green"
        image = folder / f"{i}.png"
        rgb = (200, 40, 40) if colour == "red" else (40, 200, 40)
        cv2.imwrite(str(image), np.full((112, 112, 3), rgb[::-1], np.uint8))
        rows.append(
            {
                "messages": [  # with the system turn the engine sends, as the CoT builder writes rows
                    {"role": "system", "content": system_prompt()},
                    {"role": "user", "content": "<image>Which phase is this?"},
                    {"role": "assistant", "content": CHAINS[colour]},
                ],
                "images": [image.name],
            }
        )
    path = folder / "sft.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("base") / "tiny", seed=0)


def test_sft_learns_the_set_and_writes_a_loadable_model(base, tmp_path):
    from engine.backends.transformers_backend import TransformersBackend

    data = write_set(tmp_path)
    recipe = SFTRecipe(
        model=str(base),
        data=str(data),
        output_dir=str(tmp_path / "run"),
        seed=0,
        max_steps=60,
        learning_rate=3e-3,
        per_device_train_batch_size=8,
        save_steps=30,
        report_to=[],
    )
    model_dir = run_sft(recipe)
    manifest = Manifest.read(model_dir)
    assert [s.name for s in manifest.lineage][-1] == "sft" and manifest.lineage[-1].details["steps"] == 60
    with TransformersBackend(model_dir) as backend:
        red = np.full((112, 112, 3), (200, 40, 40), np.uint8)
        out = backend.generate(GenerationRequest("Which phase is this?", red, max_new_tokens=40))
    assert "Level 3 (Context): Phase" in out  # the chain's wording is learned (a random model never says it)
    assert manifest.lineage[-1].details["final_loss"] < 2.0


def test_sft_resumes_from_its_last_checkpoint(base, tmp_path):
    data = write_set(tmp_path, 16)
    settings = {"learning_rate": 3e-3, "per_device_train_batch_size": 8, "save_steps": 4, "report_to": []}
    paths = {"model": str(base), "data": str(data), "output_dir": str(tmp_path / "run")}
    first = SFTRecipe(**paths, **settings, max_steps=4)
    run_sft(first)
    second = SFTRecipe(**paths, **settings, max_steps=8)
    model_dir = run_sft(second)
    assert Manifest.read(model_dir).lineage[-1].details["steps"] == 8
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-4").is_dir()


def test_a_time_cap_ends_training_with_a_whole_model_whose_manifest_says_so(base, tmp_path):
    """A run given ``max_minutes`` (a GPU lease, a bounded CPU budget) stops at the first step past it, still
    writes a loadable model, and its lineage says it stopped early and how many steps were planned."""
    data = write_set(tmp_path, 16)
    settings = {"learning_rate": 3e-3, "per_device_train_batch_size": 8, "save_steps": 100, "report_to": []}
    paths = {"model": str(base), "data": str(data), "output_dir": str(tmp_path / "run")}
    model_dir = run_sft(SFTRecipe(**paths, **settings, max_steps=500, max_minutes=1e-6))
    details = Manifest.read(model_dir).lineage[-1].details
    assert details["steps"] == 1 and details["stopped_by_time_cap"] == 1e-6 and details["planned_steps"] == 500
    assert (model_dir / "model.safetensors").is_file()
    uncapped = run_sft(SFTRecipe(**{**paths, "output_dir": str(tmp_path / "run2")}, **settings, max_steps=2))
    assert "stopped_by_time_cap" not in Manifest.read(uncapped).lineage[-1].details
    with pytest.raises(ValueError, match="max_minutes must be a positive number"):
        SFTRecipe(**paths, **settings, max_minutes=0)


def test_recipes_and_data_are_checked(tmp_path, base):
    bad = tmp_path / "r.yaml"
    bad.write_text("sft: {model: m, data: d, output_dir: o, epochs: 3}\n")
    with pytest.raises(SFTRunError, match="unknown key"):
        load_recipe(bad)
    good = tmp_path / "g.yaml"
    good.write_text("sft: {model: m, data: d.jsonl, output_dir: out, trainer: {max_steps: 3}}\n")
    recipe = load_recipe(good)
    assert recipe.data == str(tmp_path / "d.jsonl") and recipe.max_steps == 3
    (tmp_path / "d.jsonl").write_text('{"messages": [], "images": ["missing.png"]}\n')
    with pytest.raises(SFTRunError, match=r"missing\.png not found"):
        load_sft_rows(tmp_path / "d.jsonl")
    with pytest.raises(SFTRunError, match=r"config\.json|does not exist|no such"):
        run_sft(
            SFTRecipe(model=str(tmp_path / "nomodel"), data=str(tmp_path / "d.jsonl"), output_dir=str(tmp_path / "o"))
        )
