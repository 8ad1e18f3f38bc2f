"""GRPO on the SFT model with trl's GRPOTrainer and the rule-based rewards (Surg-R1 stage 2).

The data is the GRPO set of the CoT builder (``prompt`` turns with an ``<image>`` placeholder,
``images``, the task's ``answer`` and the label columns the rewards read). Prompts are laid out
exactly as the engine lays them out at run time (:func:`engine.prompts.user_content`), the
processor is passed explicitly (``AutoProcessor`` cannot build the image-only one), and the
completion length must hold a whole chain: a clipped chain has no ``</answer>`` and earns nothing,
so the share of clipped completions is recorded in the manifest. vLLM generates when installed and
asked for (``use_vllm: true``); otherwise transformers' ``generate`` does. A recipe is trl's
``GRPOConfig`` plus surgview's fields (:class:`GRPORecipe`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import GRPOConfig

from engine.modeldir import Stage
from train.grpo.rewards import REWARDS, reward_functions
from train.model_output import finish_model_dir, last_logged
from train.stage_inputs import (
    StageRecipe,
    checked_model,
    image_dataset,
    jsonl_rows,
    load_stage_recipe,
    load_trainable,
    placed_turns,
    resolved_images,
    train_resuming,
)

__all__ = ["DEFAULT_REWARDS", "GRPORecipe", "GRPORunError", "load_grpo_recipe", "load_grpo_rows", "run_grpo"]

DEFAULT_REWARDS: dict[str, float] = {"format": 1.0, "accuracy": 2.0, "level1": 0.5, "level2": 0.5, "consistency": 0.5}
LABEL_COLUMNS = ("task", "level", "answer", "phase", "tools", "triplets", "cvs", "boxes", "procedure", "action", "step")


class GRPORunError(Exception):
    """A recipe, data set or model GRPO cannot run on; the message says why in one line."""


@dataclass(kw_only=True)
class GRPORecipe(StageRecipe, GRPOConfig):
    """A GRPO stage: trl's ``GRPOConfig`` with the rewards and surgview's defaults (see :class:`StageRecipe`)."""

    name: str = "grpo"
    rewards: dict[str, float] = field(
        default_factory=lambda: dict(DEFAULT_REWARDS), metadata={"help": "reward name → weight"}
    )
    num_generations: int | None = 4
    per_device_train_batch_size: int = 8
    max_completion_length: int | None = 256
    beta: float = 0.0  # no reference model: half the memory and time; the clipped objective keeps steps small
    save_steps: float = 50
    logging_steps: float = 5

    def __post_init__(self) -> None:
        unknown = [n for n in self.rewards if n not in REWARDS]
        if unknown:
            raise ValueError(f"unknown reward(s) {', '.join(unknown)}; known: {', '.join(REWARDS)}")
        if not self.rewards:
            raise ValueError("GRPO needs at least one reward")
        super().__post_init__()
        if self.reward_weights is None:  # set after the settings as given are taken: follows ``rewards``
            self.reward_weights = [float(w) for w in self.rewards.values()]


def load_grpo_recipe(path: Path) -> GRPORecipe:
    """A GRPO recipe from YAML (top level, or under ``grpo:``); paths relative to the file."""
    return load_stage_recipe(Path(path), GRPORecipe, "grpo", GRPORunError)


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
    from trl import GRPOTrainer

    recipe.require_paths(GRPORunError)
    if recipe.use_vllm and not _module_exists("vllm"):
        raise GRPORunError("the recipe asks for vLLM generation (use_vllm: true) but vllm is not installed")
    info = checked_model(recipe.model, GRPORunError)
    rows = load_grpo_rows(Path(recipe.data))
    out = Path(recipe.output_dir)
    model, processor = load_trainable(info, recipe.seed)
    names = list(recipe.rewards)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=_decoding(reward_functions(names)),
        args=recipe.trainer_args(),
        train_dataset=image_dataset(rows),
        processing_class=processor,
    )
    capped = train_resuming(trainer, recipe.checkpoints, resume, recipe.max_minutes)
    history = trainer.state.log_history
    stage = Stage(
        "grpo",
        data=[str(recipe.data)],
        seed=recipe.seed,
        details={
            "steps": int(trainer.state.global_step),
            **capped,
            "rows": len(rows),
            "rewards": dict(recipe.rewards),
            "num_generations": recipe.num_generations,
            "max_completion_length": recipe.max_completion_length,
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
