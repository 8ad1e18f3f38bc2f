"""GRPO on the SFT model with trl's GRPOTrainer and the rule-based rewards (Surg-R1 stage 2).

The data is the GRPO set of the CoT builder (``prompt`` turns with an ``<image>`` placeholder,
``images``, the task's ``answer`` and the label columns the rewards read). Prompts are laid out
exactly as the engine lays them out at run time (:func:`engine.prompts.user_content`), the
processor is passed explicitly (``AutoProcessor`` cannot build the image-only one), and the
completion length must hold a whole chain: a clipped chain has no ``</answer>`` and earns nothing,
so the share of clipped completions is recorded in the manifest. vLLM generates when installed and
asked for (``trainer: {use_vllm: true}``); otherwise transformers' ``generate`` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.modeldir import Stage
from train.grpo.rewards import REWARDS, reward_functions
from train.model_output import finish_model_dir, last_logged
from train.stage_inputs import (
    checked_model,
    image_dataset,
    jsonl_rows,
    load_trainable,
    placed_turns,
    recipe_section,
    resolved_images,
    shared_trainer_settings,
    train_resuming,
)

__all__ = ["DEFAULT_REWARDS", "GRPORecipe", "GRPORunError", "load_grpo_recipe", "load_grpo_rows", "run_grpo"]

DEFAULT_REWARDS: dict[str, float] = {"format": 1.0, "accuracy": 2.0, "level1": 0.5, "level2": 0.5, "consistency": 0.5}
LABEL_COLUMNS = ("task", "level", "answer", "phase", "tools", "triplets", "cvs", "boxes")


class GRPORunError(Exception):
    """A recipe, data set or model GRPO cannot run on; the message says why in one line."""


@dataclass
class GRPORecipe:
    model: str  # the SFT model directory
    data: str  # GRPO JSONL (CoT builder output)
    output_dir: str
    seed: int = 0
    name: str = "grpo"
    rewards: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_REWARDS))  # name → weight
    trainer: dict[str, Any] = field(default_factory=dict)  # GRPOConfig fields

    def __post_init__(self) -> None:
        unknown = [n for n in self.rewards if n not in REWARDS]
        if unknown:
            raise GRPORunError(f"unknown reward(s) {', '.join(unknown)}; known: {', '.join(REWARDS)}")
        if not self.rewards:
            raise GRPORunError("GRPO needs at least one reward")


def load_grpo_rows(path: Path) -> list[dict[str, Any]]:
    """GRPO rows in trl's conversational vision form; label columns JSON-encoded where nested.

    Nested label columns (lists of lists, dicts) are kept as JSON text so Arrow never has to unify
    their types across rows (a row without triplet labels has None); the rewards decode them.
    """
    path = Path(path)
    rows = []
    for number, row in jsonl_rows(path, GRPORunError):
        try:
            prompt, images = row["prompt"], row.get("images", [])
        except (KeyError, TypeError, AttributeError):
            raise GRPORunError(f"{path}:{number}: expected an object with 'prompt' (and 'images')") from None
        turns = placed_turns(prompt, len(images))
        labels = {name: json.dumps(row.get(name)) for name in LABEL_COLUMNS}
        rows.append({"prompt": turns, "images": resolved_images(path, number, images, GRPORunError), **labels})
    if not rows:
        raise GRPORunError(f"{path}: no rows")
    return rows


def decoded_columns(columns: dict[str, Any]) -> dict[str, Any]:
    """Label columns back from their JSON text (what :func:`load_grpo_rows` stored)."""
    out = dict(columns)
    for name in LABEL_COLUMNS:
        if name in out and out[name] is not None:
            out[name] = [json.loads(v) if isinstance(v, str) else v for v in out[name]]
    return out


def _decoding(functions):
    wrapped = []
    for fn in functions:

        def reward(completions, _fn=fn, **columns):
            return _fn(completions, **decoded_columns(columns))

        reward.__name__ = fn.__name__
        wrapped.append(reward)
    return wrapped


def run_grpo(recipe: GRPORecipe, resume: bool = True) -> Path:
    """Train; return the model directory written to ``output_dir/model``."""
    from trl import GRPOConfig, GRPOTrainer

    info = checked_model(recipe.model, GRPORunError)
    rows = load_grpo_rows(Path(recipe.data))
    out = Path(recipe.output_dir)
    checkpoints = out / "checkpoints"
    model, processor = load_trainable(info, recipe.seed)
    names = list(recipe.rewards)
    settings: dict[str, Any] = {
        **shared_trainer_settings(checkpoints, recipe.seed),
        "num_generations": 4,
        "per_device_train_batch_size": 8,
        "max_completion_length": 256,
        "beta": 0.0,  # no reference model: half the memory and time; the clipped objective keeps steps small
        "reward_weights": [float(recipe.rewards[n]) for n in names],
        "save_steps": 50,
        "logging_steps": 5,
        **recipe.trainer,
    }
    if settings.get("use_vllm") and not _module_exists("vllm"):
        raise GRPORunError("the recipe asks for vLLM generation (use_vllm: true) but vllm is not installed")
    try:
        config = GRPOConfig(**settings)
    except (TypeError, ValueError) as exc:
        raise GRPORunError(f"recipe trainer settings: {exc}") from None
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=_decoding(reward_functions(names)),
        args=config,
        train_dataset=image_dataset(rows),
        processing_class=processor,
    )
    train_resuming(trainer, checkpoints, resume)
    history = trainer.state.log_history
    stage = Stage(
        "grpo",
        data=[str(recipe.data)],
        seed=recipe.seed,
        details={
            "steps": int(trainer.state.global_step),
            "rows": len(rows),
            "rewards": dict(recipe.rewards),
            "num_generations": config.num_generations,
            "max_completion_length": config.max_completion_length,
            "clipped_ratio": last_logged(history, "completions/clipped_ratio", mean=True),
            "reward_first": _first_logged(history, "reward"),
            "reward_last": last_logged(history, "reward"),
            **{f"reward_{n}": last_logged(history, f"rewards/{n}/mean") for n in names},
        },
    )
    return finish_model_dir(trainer, processor, info, out / "model", stage, recipe.name)


def _first_logged(history: list[dict[str, Any]], key: str) -> float | None:
    for entry in history:
        if key in entry:
            return float(entry[key])
    return None


def _module_exists(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def load_grpo_recipe(path: Path) -> GRPORecipe:
    """A GRPO recipe from YAML (top level, or under ``grpo:``); paths relative to the file."""
    known = {"model", "data", "output_dir", "seed", "name", "rewards", "trainer"}
    return GRPORecipe(**recipe_section(Path(path), "grpo", known, ("model", "data", "output_dir"), GRPORunError))
