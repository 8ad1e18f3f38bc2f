"""The four-stage pipeline: recipes are checked before a run; a stopped run resumes where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from engine.modeldir import Manifest, inspect_model_dir
from train.data.sample import FrameRef, Sample, Task, Truth
from train.pipeline import (
    PipelineError,
    check_recipe,
    choose_learning_rate,
    load_pipeline_recipe,
    oversampled,
    run_pipeline,
)

RECIPES = Path(__file__).resolve().parents[2] / "train" / "recipes"

MICRO = {
    "name": "micro",
    "out": "run",
    "base_model": "tiny",
    "data": {
        "synthetic": {"train_cases": 1, "test_cases": 1, "minutes": 1.0, "seed": 0, "width": 320, "height": 180},
        "tasks": ["phase"],
        "frame_size": [160, 90],
        "max_train": 8,
        "max_test": 4,
    },
    "sft": {"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1},
    "grpo": {
        "trainer": {
            "max_steps": 1,
            "per_device_train_batch_size": 4,
            "num_generations": 2,
            "max_completion_length": 32,
        }
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
    "evaluation": {"max_new_tokens": 32, "batch_size": 4},
}


def write_recipe(folder: Path, **changes) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump({**MICRO, **changes}), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "name",
    [
        "tiny-synthetic.yaml",
        "qwen2_5_vl_3b-real.yaml",
        "demo.yaml",
        "demo-size.yaml",
        "demo-448.yaml",
        "demo-continue.yaml",
        "demo-heldout8.yaml",
        "ablation.yaml",
        "gpu-demo.yaml",
        "gpu-large.yaml",
    ],
)
def test_shipped_recipes_pass_the_checks(name):
    recipe = load_pipeline_recipe(RECIPES / name)
    check_recipe(recipe)  # loading refused any key that is no SFTConfig / GRPOConfig field; every reward known
    if not name.startswith(("demo", "gpu")):  # the ablation recipes run every stage of the paper's table
        assert recipe.rounds >= 1 and recipe.ablation


def test_real_backbone_recipe_uses_zero3_and_vllm():
    recipe = load_pipeline_recipe(RECIPES / "qwen2_5_vl_3b-real.yaml")
    config = yaml.safe_load(Path(recipe.accelerate).read_text())
    assert config["distributed_type"] == "DEEPSPEED" and config["deepspeed_config"]["zero_stage"] == 3
    assert recipe.grpo.use_vllm and recipe.iterate.grpo.use_vllm
    assert {"cholec80", "cholect50", "endoscapes"} <= {
        k for k in ("cholec80", "cholect50", "endoscapes") if getattr(recipe.data, k)
    }
    # chains must fit: completions far longer than the longest chain the CoT builder writes
    assert recipe.grpo.max_completion_length >= 512


def test_misspelt_settings_are_refused_before_training(tmp_path):
    with pytest.raises(PipelineError, match="max_stpes"):
        check_recipe(load_pipeline_recipe(write_recipe(tmp_path, sft={"max_stpes": 3})))
    with pytest.raises(PipelineError, match="unknown key"):
        load_pipeline_recipe(write_recipe(tmp_path, epochs=3))
    with pytest.raises(PipelineError, match="unknown reward"):
        check_recipe(load_pipeline_recipe(write_recipe(tmp_path, grpo={"rewards": {"length": 1.0}})))
    with pytest.raises(PipelineError, match="unknown task"):
        load_pipeline_recipe(write_recipe(tmp_path, data={**MICRO["data"], "tasks": ["surgery"]}))
    for wrong in ([], ["chain", "chain"], ["cot"]):  # a warm-up names which variants it trains, each once
        with pytest.raises(PipelineError, match="variants must name chain and/or direct"):
            check_recipe(load_pipeline_recipe(write_recipe(tmp_path, variants=wrong)))
    check_recipe(load_pipeline_recipe(write_recipe(tmp_path, variants=["direct"])))


def test_oversampling_repeats_the_named_phases_frames_where_they_stand(tmp_path):
    def frame(index, phase):
        return Sample("synthetic", "video01", FrameRef(Path("v.mp4"), index), Task.FRAME, Truth(phase=phase))

    samples = [frame(0, "Preparation"), frame(25, "CalotTriangleDissection"), frame(50, "ClippingCutting")]
    out = oversampled(samples, {"Calot Triangle Dissection": 3})  # any spelling of the phase
    assert [s.frame.index for s in out] == [0, 25, 25, 25, 50]
    assert oversampled(samples, None) == samples
    with pytest.raises(PipelineError, match="'Calot dissection', a phase no training sample has"):
        oversampled(samples, {"Calot dissection": 2})  # a misspelt phase would otherwise change nothing
    for wrong in (0, 1.5, True):
        with pytest.raises(PipelineError, match=r"data\.oversample\.ClippingCutting must be a whole number"):
            data = {**MICRO["data"], "oversample": {"ClippingCutting": wrong}}
            check_recipe(load_pipeline_recipe(write_recipe(tmp_path, data=data)))


def test_a_run_refuses_to_remake_the_cases_its_stages_were_built_on(tmp_path):
    """Resuming a run whose recipe now names other cases (or whose cases an older renderer made) would train its
    remaining stages on the old frames and evaluate on new ones: it stops with the reason instead."""
    from train.synth.generate import GENERATOR_VERSION

    recipe = load_pipeline_recipe(write_recipe(tmp_path))
    out = Path(recipe.out)
    (out / "data" / "cases-train").mkdir(parents=True)
    (out / "data" / "cases-train" / "synth.json").write_text(json.dumps({"version": GENERATOR_VERSION - 1}))
    (out / "stages.json").write_text(json.dumps({"cot": 1.0}))
    with pytest.raises(PipelineError, match="stages were built on those cases"):
        run_pipeline(recipe, say=lambda line: None)
    assert (out / "data" / "cases-train" / "synth.json").exists()  # left as it was
    assert not (out / "data" / "cases-train.partial").exists()


def test_a_size_name_is_a_base_model_not_a_folder(tmp_path):
    """``base_model: demo`` builds that size; any other name is a folder beside the recipe."""
    assert load_pipeline_recipe(write_recipe(tmp_path, base_model="demo")).base_model == "demo"
    assert load_pipeline_recipe(write_recipe(tmp_path, base_model="models/x")).base_model == str(tmp_path / "models/x")


def test_a_stopped_run_resumes_at_the_stage_it_stopped_in(tmp_path, monkeypatch):
    monkeypatch.setenv("SURGVIEW_NO_TENSORBOARD", "1")
    recipe_file = write_recipe(tmp_path)
    lines: list[str] = []
    first = run_pipeline(load_pipeline_recipe(recipe_file), say=lines.append, stop_after="chain/grpo")
    assert first == {"stopped_after": "chain/grpo"}
    sft_model = tmp_path / "run" / "chain" / "sft" / "model"
    sft_weights = (sft_model / "model.safetensors").stat().st_mtime_ns
    assert not (tmp_path / "run" / "chain" / "iter1").exists()

    lines.clear()
    result = run_pipeline(load_pipeline_recipe(recipe_file), say=lines.append)
    assert any(line.startswith("  chain/sft: done earlier") for line in lines)
    assert any(line.startswith("  chain/grpo: done earlier") for line in lines)
    assert any(line == "▶ chain/iter1/sample" for line in lines)
    assert (sft_model / "model.safetensors").stat().st_mtime_ns == sft_weights  # not trained again

    exported = Path(result["model"])
    info = inspect_model_dir(exported)  # the engine loads what the pipeline exports
    manifest = Manifest.read(exported)
    assert [s.name for s in manifest.lineage] == ["init", "sft", "grpo", "sft", "grpo", "export"]
    assert [row["stage"] for row in manifest.evaluation["stages"]] == ["sft", "grpo", "iter1"]
    assert info.manifest is not None and info.manifest.name == "micro"
    table = (tmp_path / "run" / "table.md").read_text()
    assert "| hierarchical chain | SFT |" in table and "+ iteration 1" in table
    grpo_stage = manifest.lineage[2].details
    assert set(grpo_stage["rewards"]) == {"format", "accuracy", "level1", "level2", "consistency"}
    assert json.loads((tmp_path / "run" / "chain" / "iter1" / "samples.json").read_text())["sampled"] == 4

    # The recipe now ships the SFT stage's model: the finished run exports again, training nothing.
    lines.clear()
    recipe = load_pipeline_recipe(write_recipe(tmp_path, export={"stage": "sft"}))
    again = Manifest.read(Path(run_pipeline(recipe, say=lines.append)["model"]))
    assert [s.name for s in again.lineage] == ["init", "sft", "export"]
    assert again.lineage[-1].details["from"] == str(sft_model)
    sft_row = next(row for row in manifest.evaluation["stages"] if row["stage"] == "sft")
    assert again.evaluation["held_out"]["arena_score"] == sft_row["arena"]
    assert not any(line.startswith("▶ chain/") for line in lines)  # every training stage done earlier
    with pytest.raises(PipelineError, match=r"export\.stage must be one of"):
        check_recipe(load_pipeline_recipe(write_recipe(tmp_path, export={"stage": "iter2"})))


def test_the_gentler_learning_rate_wins_a_tie_and_an_unscored_model_ranks_last():
    assert choose_learning_rate({3e-4: 0.60, 1e-4: 0.71, 3e-5: 0.65}) == 1e-4
    assert choose_learning_rate({3e-4: 0.70, 1e-4: 0.70}) == 1e-4
    assert choose_learning_rate({1e-4: None, 3e-4: 0.1}) == 3e-4


def test_iteration_learning_rates_need_a_validation_split(tmp_path):
    iterate = {**MICRO["iterate"], "learning_rates": [1e-4, 1e-3]}
    with pytest.raises(PipelineError, match=r"validation split: set data\.validation_cases"):
        check_recipe(load_pipeline_recipe(write_recipe(tmp_path, iterate=iterate)))
    with pytest.raises(PipelineError, match="positive numbers"):
        check_recipe(load_pipeline_recipe(write_recipe(tmp_path, iterate={**iterate, "learning_rates": [0]})))


def test_the_iteration_round_is_tuned_on_validation_cases_it_never_trains_on(tmp_path, monkeypatch):
    monkeypatch.setenv("SURGVIEW_NO_TENSORBOARD", "1")
    synthetic = {**MICRO["data"]["synthetic"], "train_cases": 3}
    data = {**MICRO["data"], "synthetic": synthetic, "validation_cases": 1, "max_validation": 4}
    iterate = {**MICRO["iterate"], "learning_rates": [1e-4, 1e-3]}
    lines: list[str] = []
    run_pipeline(load_pipeline_recipe(write_recipe(tmp_path, data=data, iterate=iterate)), say=lines.append)
    run = tmp_path / "run"
    assert "  4 validation samples from 1 case(s) set aside" in lines

    trained = "\n".join((run / "cot" / name).read_text() for name in ("sft.jsonl", "grpo.jsonl", "sft-direct.jsonl"))
    assert "video01" in trained and "video02" in trained and "video03" not in trained  # the last case set aside

    choice = json.loads((run / "chain" / "iter1" / "learning-rate.json").read_text())
    scores = {
        rate: json.loads((run / "eval" / f"validation-chain-iter1-sft-lr{rate}" / "report.json").read_text())
        for rate in ("0.0001", "0.001")
    }
    assert all(report["n"] == 4 for report in scores.values())  # judged on the validation cases, not the held-out
    assert choice["validation_arena"] == {rate: report["arena_score"] for rate, report in scores.items()}
    assert choice["chosen"] == choose_learning_rate({float(r): v for r, v in choice["validation_arena"].items()})
    grpo_recipe = yaml.safe_load((run / "chain" / "iter1" / "grpo" / "grpo.yaml").read_text())["grpo"]
    assert grpo_recipe["model"] == str(run / "chain" / "iter1" / f"sft-lr{choice['chosen']:g}" / "model")
