"""bench/gpu_train.py, the GPU lease's training run: the recipes it writes are the shipped ones with only the run
folder, the base model's path, the lease's cap and (smoke) the size changed; and its whole path runs on a CPU."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
import yaml

from bench import gpu_train
from train.pipeline import load_pipeline_recipe


def test_the_prepared_recipes_are_the_shipped_ones_with_the_lease_cap(tmp_path):
    for run in gpu_train.RUNS:
        run = gpu_train.TrainingRun(run.name, run.recipe_file, tmp_path / run.name)
        path = gpu_train.prepared_recipe(run, tmp_path, smoke=False, max_minutes=3.256)
        shipped = yaml.safe_load((gpu_train.RECIPES / run.recipe_file).read_text())
        written = yaml.safe_load(path.read_text())
        assert written["sft"].pop("max_minutes") == 3.26
        assert written.pop("out") == str(tmp_path / run.name) and shipped.pop("out")
        base, shipped_base = written.pop("base_model"), shipped.pop("base_model")
        assert base == shipped_base or Path(base) == (gpu_train.RECIPES / shipped_base).resolve()
        assert written == shipped
        recipe = load_pipeline_recipe(path)  # a recipe the pipeline accepts, the cap on its SFT stage
        assert recipe.sft.max_minutes == 3.26 and recipe.data.max_test == 480
    demo = load_pipeline_recipe(tmp_path / "demo.yaml")
    assert Path(demo.base_model) == (gpu_train.ROOT / "resources" / "demo_model").resolve()


@pytest.mark.slow
def test_the_whole_gpu_run_goes_through_on_a_cpu_in_smoke_size(tmp_path):
    """Cases, both SFT runs at once on one data folder, both evaluations, and what comes back from the lease."""
    code = gpu_train.main(
        ["--smoke", "--deadline", "1500", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    )
    assert code == 0
    summary = json.loads((tmp_path / "out" / "gpu_train.json").read_text())
    assert summary["runs"]["demo"]["ok"] and summary["runs"]["large"]["ok"]
    assert summary["runs"]["large"]["parameters"] > 6 * summary["runs"]["demo"]["parameters"]
    assert summary["runs"]["demo"]["heldout"]["complete_chains"] is not None
    assert (tmp_path / "runs" / "large" / "data").resolve() == (tmp_path / "runs" / "demo" / "data").resolve()
    with tarfile.open(tmp_path / "out" / "model-demo.tgz") as tar:
        assert "model/model.safetensors" in tar.getnames()
    with tarfile.open(tmp_path / "out" / "reports.tgz") as tar:
        assert {"demo/eval-heldout/report.json", "large/eval-heldout/report.json"} <= set(tar.getnames())


def test_the_3b_shaped_benchmark_model_has_the_3b_shape(tmp_path):
    """bench/gpu_decode.py's model: the H200 lease found its config refused (the tiny model's two layer types for
    36 layers), so the benchmark had never run; the shape is built here without its 3 B weights."""
    from bench.onnx_vs_transformers import SHAPE_3B_TEXT, shape_3b_config
    from engine.tiny_model import build_tiny_model

    config = shape_3b_config(build_tiny_model(tmp_path / "tiny", seed=0))
    assert config.text_config.num_hidden_layers == SHAPE_3B_TEXT["num_hidden_layers"] == 36
    assert len(config.text_config.layer_types) == 36 and config.vision_config.depth == 32


def test_a_data_stage_that_fails_is_reported_and_nothing_claims_to_be_trained(tmp_path, monkeypatch):
    """The H200 lease ran out while its cases were being rendered: the summary must say so, not call the runs ok."""
    import sys

    monkeypatch.setattr(gpu_train, "_pipeline", lambda recipe, stop: [sys.executable, "-c", "raise SystemExit(3)"])
    out = tmp_path / "out"
    assert gpu_train.main(["--deadline", "400", "--runs", str(tmp_path / "runs"), "--out", str(out)]) == 1
    summary = json.loads((out / "gpu_train.json").read_text())
    assert summary["error"] == "data stage exit 3"
    assert not summary["runs"]["demo"]["ok"] and not summary["runs"]["large"]["ok"]
    assert not (out / "model-demo.tgz").exists()
