"""Supervised fine-tuning on chain-of-thought data with trl's SFTTrainer (Surg-R1 stage 1).

A recipe (YAML) names the base model directory, the SFT set written by the CoT builder
(``messages`` with an ``<image>`` placeholder in the user turn, ``images``), and any
``SFTConfig`` fields. Loss is on the assistant's tokens only (the chat template's generation
markers), nothing is truncated (``max_length: null`` keeps every image token), checkpoints make
a run resumable, and the result is a model directory the engine loads, its manifest extended
with this stage's lineage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.modeldir import Stage
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

__all__ = ["SFTRecipe", "SFTRunError", "load_recipe", "load_sft_rows", "run_sft"]


class SFTRunError(Exception):
    """A recipe, data set or model that cannot be trained on; the message says why in one line."""


@dataclass
class SFTRecipe:
    model: str  # base model directory
    data: str  # SFT JSONL (CoT builder output)
    output_dir: str
    seed: int = 0
    name: str = "sft"
    trainer: dict[str, Any] = field(default_factory=dict)  # SFTConfig fields (max_steps, learning_rate, ...)
    lora: dict[str, Any] | None = None  # peft LoraConfig fields; None trains all weights


def load_recipe(path: Path) -> SFTRecipe:
    """An SFT recipe from YAML (top level, or under ``sft:``); paths relative to the file."""
    known = {"model", "data", "output_dir", "seed", "name", "trainer", "lora"}
    return SFTRecipe(**recipe_section(Path(path), "sft", known, ("model", "data", "output_dir"), SFTRunError))


def load_sft_rows(path: Path) -> list[dict]:
    """SFT rows in trl's vision format: user content as text and image parts, images as paths."""
    path = Path(path)
    rows = []
    for number, row in jsonl_rows(path, SFTRunError):
        try:
            messages, images = row["messages"], row.get("images", [])
        except (KeyError, TypeError, AttributeError):
            raise SFTRunError(f"{path}:{number}: expected an object with 'messages' (and 'images')") from None
        turns = placed_turns(messages, len(images))
        rows.append({"messages": turns, "images": resolved_images(path, number, images, SFTRunError)})
    if not rows:
        raise SFTRunError(f"{path}: no rows")
    return rows


def run_sft(recipe: SFTRecipe, resume: bool = True) -> Path:
    """Train; return the model directory written to ``output_dir/model``."""
    from trl import SFTConfig, SFTTrainer

    info = checked_model(recipe.model, SFTRunError)
    rows = load_sft_rows(Path(recipe.data))
    out = Path(recipe.output_dir)
    checkpoints = out / "checkpoints"
    model, processor = load_trainable(info, recipe.seed)
    if recipe.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(**recipe.lora))
    settings = {
        **shared_trainer_settings(checkpoints, recipe.seed),
        "assistant_only_loss": True,
        "max_length": None,  # never cut image tokens
        "save_steps": 200,
        "logging_steps": 10,
        **recipe.trainer,
    }
    try:
        config = SFTConfig(**settings)
    except TypeError as exc:
        raise SFTRunError(f"recipe trainer settings: {exc}") from None
    trainer = SFTTrainer(model=model, args=config, train_dataset=image_dataset(rows), processing_class=processor)
    train_resuming(trainer, checkpoints, resume)
    stage = Stage(
        "sft",
        data=[str(recipe.data)],
        seed=recipe.seed,
        details={
            "steps": int(trainer.state.global_step),
            "rows": len(rows),
            "lora": bool(recipe.lora),
            "final_loss": last_logged(trainer.state.log_history, "loss"),
        },
    )
    return finish_model_dir(trainer, processor, info, out / "model", stage, recipe.name, merge_lora=bool(recipe.lora))
