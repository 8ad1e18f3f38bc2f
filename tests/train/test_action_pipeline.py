"""The action path end to end: synth (SAR-RARP50 layout) -> adapter -> chains -> SFT -> GRPO -> eval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from engine.profiles import get_profile
from train.pipeline import check_recipe, load_pipeline_recipe, run_pipeline

RECIPES = Path(__file__).resolve().parents[2] / "train" / "recipes"

MICRO_ACTION = {
    "name": "micro-action",
    "out": "run",
    "base_model": "tiny",
    "canonical_chains": True,
    "data": {
        "synthetic": {"procedure": "rarp", "train_cases": 1, "test_cases": 1, "minutes": 0.25, "seed": 0},
        "tasks": ["action"],
        "fps": 1.0,
        "frame_size": [160, 90],
        "max_train": 8,
        "max_test": 6,
    },
    "sft": {"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1},
    "grpo": {
        "rewards": {"format": 1.0, "accuracy": 2.0, "level2": 0.5, "consistency": 0.5},
        "trainer": {
            "max_steps": 1,
            "per_device_train_batch_size": 4,
            "num_generations": 2,
            "max_completion_length": 32,
        },
    },
    "iterate": {
        "rounds": 1,
        "samples_per_row": 2,
        "max_rows": 2,
        "max_new_tokens": 32,
        "sft": {"max_steps": 1, "per_device_train_batch_size": 4},
        "grpo": {"max_steps": 1, "per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 32},
    },
    "ablation": False,
    "evaluation": {"max_new_tokens": 32, "batch_size": 6},
}


def test_the_shipped_action_recipe_passes_the_checks():
    recipe = load_pipeline_recipe(RECIPES / "tiny-action.yaml")
    check_recipe(recipe)
    assert recipe.data.synthetic.procedure == "rarp" and recipe.data.tasks == ["action"]
    assert recipe.rounds >= 1 and recipe.ablation


@pytest.mark.slow
def test_the_action_path_runs_end_to_end(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(MICRO_ACTION), encoding="utf-8")
    result = run_pipeline(load_pipeline_recipe(path), say=lambda *_: None)
    run = tmp_path / "run"
    # synth wrote SAR-RARP50's own layout, which the adapter read
    assert (run / "data" / "sar_rarp50" / "train1" / "video_01" / "action_discrete.txt").is_file()
    assert (run / "data" / "sar_rarp50" / "test" / "video_50" / "video_left.avi").is_file()
    rows = [json.loads(line) for line in (run / "cot" / "sft.jsonl").read_text().splitlines()]
    profile = get_profile("surgview", procedure="rarp")
    assert rows and all(r["messages"][0]["content"] == profile.system for r in rows)
    assert all("Level 2 (Relation): Action:" in r["messages"][2]["content"] for r in rows)
    grpo = [json.loads(line) for line in (run / "cot" / "grpo.jsonl").read_text().splitlines()]
    assert {r["procedure"] for r in grpo} == {"rarp"} and all(r["action"] for r in grpo)
    report = json.loads((run / "eval" / "chain-grpo" / "report.json").read_text())
    action = report["tasks"]["action"]
    assert action["n"] == 6 and set(action["f1"]) == {"F1@10", "F1@25", "F1@50"}
    assert {"accuracy", "precision", "recall", "jaccard", "edit"} <= set(action)
    assert "phase" not in report["tasks"]
    assert result


@pytest.mark.slow
def test_surgview_train_eval_reports_the_action_metrics(tmp_path):
    import subprocess
    import sys

    from engine.tiny_model import build_tiny_model
    from train.synth.rarp import RarpConfig, generate_rarp

    generate_rarp(tmp_path / "rarp", RarpConfig(cases=1, minutes=0.25, seed=5, split="test", first_id=41))
    build_tiny_model(tmp_path / "model")
    out = tmp_path / "eval"
    result = subprocess.run(
        [sys.executable, "-m", "train.cli", "eval", str(tmp_path / "model"), "--sar-rarp50", str(tmp_path / "rarp"),
         "--task", "action", "--limit", "4", "--max-tokens", "16", "--out", str(out), "--quiet"],
        cwd=RECIPES.parents[1], capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "| action | 4 | action accuracy |" in result.stdout and "F1@50" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["tasks"]["action"]["videos"] == 1 and report["key_metrics"]["action"] is not None
