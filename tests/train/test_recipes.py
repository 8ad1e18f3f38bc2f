"""Recipes are trl's config classes read by trl's parser: the shipped ones mean what they meant, bad keys fail in one line."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import yaml
from trl import GRPOConfig, SFTConfig

from train.cli import main as train_cli
from train.distributed_entry import main as distributed_main
from train.grpo.stage import DEFAULT_REWARDS, GRPORecipe, GRPORunError, load_grpo_recipe
from train.model_output import has_tensorboard
from train.pipeline import PipelineError, load_pipeline_recipe, stage_settings, write_stage_recipe
from train.sft import SFTRecipe, SFTRunError, load_recipe, run_sft

RECIPES = Path(__file__).resolve().parents[2] / "train" / "recipes"
ON_GPU = torch.cuda.is_available()


def before(config: type, checkpoints: Path, seed: int, settings: dict, rewards: dict | None = None) -> dict:
    """The trainer config a stage built before recipes were trl configs: shared settings, the stage's, the recipe's."""
    shared = {
        "output_dir": str(checkpoints),
        "seed": seed,
        "bf16": ON_GPU,
        "use_cpu": not ON_GPU,
        "save_strategy": "steps",
        "save_total_limit": 2,
        "report_to": ["tensorboard"] if has_tensorboard() else [],
        "dataloader_num_workers": 0,
    }
    if config is SFTConfig:
        stage = {"assistant_only_loss": True, "max_length": None, "save_steps": 200, "logging_steps": 10}
    else:
        weights = [float(w) for w in (rewards or DEFAULT_REWARDS).values()]
        stage = {"num_generations": 4, "per_device_train_batch_size": 8, "max_completion_length": 256, "beta": 0.0}
        stage |= {"reward_weights": weights, "save_steps": 50, "logging_steps": 5}
    return config(**{**shared, **stage, **settings}).to_dict()


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")  # plain trl configs
@pytest.mark.parametrize(
    "name",
    [
        "tiny-synthetic.yaml",
        "demo.yaml",
        "demo-448.yaml",
        "demo-continue.yaml",
        "qwen2_5_vl_3b-real.yaml",
        "ablation.yaml",
    ],
)
def test_shipped_recipes_resolve_to_the_same_trainer_settings(name, tmp_path):
    raw = yaml.safe_load((RECIPES / name).read_text())
    recipe = load_pipeline_recipe(RECIPES / name)
    grpo_rewards = raw["grpo"].get("rewards")
    cases = [  # (kind, the section as the pipeline holds it, as the file wrote it, rewards)
        ("sft", recipe.sft, raw["sft"], None),
        ("grpo", recipe.grpo, raw["grpo"]["trainer"], grpo_rewards),
        ("grpo", recipe.grpo, raw["grpo"]["trainer"], raw.get("direct_rewards", {"accuracy": 1.0})),
        ("sft", recipe.iterate.sft, raw["iterate"].get("sft", {}), None),
        ("grpo", recipe.iterate.grpo, raw["iterate"].get("grpo", {}), grpo_rewards),
    ]
    for number, (kind, section, written, rewards) in enumerate(cases):
        folder = tmp_path / str(number)
        extra = {"rewards": rewards} if rewards else {}
        settings = stage_settings(recipe, section, tmp_path / "model", tmp_path / "d.jsonl", folder, "n", **extra)
        load = load_recipe if kind == "sft" else load_grpo_recipe
        stage = load(write_stage_recipe(kind, settings, folder))  # as the pipeline runs a stage
        config = SFTConfig if kind == "sft" else GRPOConfig
        expected = before(config, folder / "checkpoints", recipe.seed, written, rewards)
        resolved = stage.trainer_args().to_dict()
        assert {k: v for k, v in resolved.items() if k in expected} == expected, (name, number)
        assert set(resolved) - set(expected) <= {"model", "data", "name", "lora", "rewards", "max_minutes"}


def test_bf16_only_on_a_gpu_unless_the_recipe_says(tmp_path):
    recipe = SFTRecipe(model="m", data="d", output_dir=str(tmp_path))
    assert recipe.bf16 is ON_GPU and recipe.use_cpu is not ON_GPU
    assert SFTRecipe(model="m", data="d", output_dir=str(tmp_path), bf16=True).bf16 is True
    assert recipe.trainer_args().output_dir == str(tmp_path / "checkpoints") and recipe.output_dir == str(tmp_path)
    with pytest.raises(SFTRunError, match="names no model, data, output_dir"):  # a pipeline section, not a stage
        run_sft(SFTRecipe(max_steps=1))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_unknown_keys_are_refused_by_the_parser_naming_key_and_file(tmp_path):
    sft = write(tmp_path / "sft.yaml", "sft: {model: m, data: d, output_dir: o, max_stpes: 3}\n")
    with pytest.raises(SFTRunError, match=rf"^recipe {sft}: unknown key\(s\): \['max_stpes'\]$"):
        load_recipe(sft)
    grpo = write(tmp_path / "grpo.yaml", "grpo: {model: m, data: d, output_dir: o, trainer: {num_gens: 4}}\n")
    with pytest.raises(GRPORunError, match=r"grpo\.yaml: unknown key\(s\): \['num_gens'\]"):
        load_grpo_recipe(grpo)
    with pytest.raises(GRPORunError, match="missing data, output_dir"):
        load_grpo_recipe(write(tmp_path / "g2.yaml", "model: m\n"))
    twice = write(tmp_path / "t.yaml", "model: m\ndata: d\noutput_dir: o\nmax_steps: 2\ntrainer: {max_steps: 3}\n")
    with pytest.raises(SFTRunError, match="max_steps given both"):
        load_recipe(twice)
    # trl's own checks on values come out the same way
    with pytest.raises(GRPORunError, match=r"g3\.yaml: .*num_generations"):
        load_grpo_recipe(write(tmp_path / "g3.yaml", "model: m\ndata: d\noutput_dir: o\nnum_generations: 3\n"))


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"grpo": {"trainer": {"max_stpes": 1}}}, r"grpo: unknown key\(s\): \['max_stpes'\]"),
        ({"iterate": {"grpo": {"bta": 0.0}}}, r"iterate\.grpo: unknown key\(s\): \['bta'\]"),
        ({"iterate": {"samples": 2}}, r"iterate: unknown key\(s\): \['samples'\]"),
        ({"evaluation": {"batch": 2}}, r"evaluation: unknown key\(s\): \['batch'\]"),
        ({"data": {"synthetic": {"cases": 1}}}, r"data\.synthetic: unknown key\(s\): \['cases'\]"),
        ({"sft": {"model": "x"}}, "sft: model are set by the pipeline"),
        ({"grow": {"text_layer": 7}}, r"grow: unknown key\(s\): \['text_layer'\]"),
    ],
)
def test_every_pipeline_section_is_read_by_the_parser(tmp_path, section, key):
    base = {"name": "r", "out": "run", "data": {"synthetic": {"train_cases": 1}}}
    path = write(tmp_path / "r.yaml", yaml.safe_dump({**base, **section}))
    with pytest.raises(PipelineError, match=rf"^recipe {path}: {key}"):
        load_pipeline_recipe(path)


def test_the_cli_reports_a_bad_recipe_in_one_line(tmp_path, capsys):
    bad = write(tmp_path / "bad.yaml", "grpo: {model: m, data: d, output_dir: o, epochs: 3}\n")
    with warnings.catch_warnings(record=True) as caught:  # no warning line before the error's
        warnings.simplefilter("always")
        assert train_cli(["grpo", str(bad)]) == 1
    assert [str(w.message) for w in caught] == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "epochs" in err and str(bad) in err and "Traceback" not in err
    assert distributed_main([str(bad), "--stage", "grpo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "epochs" in err and str(bad) in err


def test_grpo_reward_weights_follow_the_rewards():
    recipe = GRPORecipe(rewards={"format": 1.0, "accuracy": 3.0})
    assert recipe.reward_weights == [1.0, 3.0] and "reward_weights" not in recipe.given
    with pytest.raises(ValueError, match="unknown reward"):
        GRPORecipe(rewards={"length": 1.0})
