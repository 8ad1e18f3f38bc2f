"""Supervised fine-tuning on chain-of-thought data with trl's SFTTrainer (Surg-R1 stage 1).

A recipe (YAML) is trl's ``SFTConfig`` plus surgview's fields (:class:`SFTRecipe`): the base model
directory, the SFT set written by the CoT builder (``messages`` with an ``<image>`` placeholder in
the user turn, ``images``), optional LoRA, beside any ``SFTConfig`` field. Loss is on the
assistant's tokens only (the chat template's generation markers), nothing is truncated
(``max_length: null`` keeps every image token), checkpoints make a run resumable, and the result is
a model directory the engine loads, its manifest extended with this stage's lineage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import SFTConfig

from engine.modeldir import Stage
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

__all__ = ["SFTRecipe", "SFTRunError", "load_recipe", "load_sft_rows", "run_sft"]


class SFTRunError(Exception):
    """A recipe, data set or model that cannot be trained on; the message says why in one line."""


@dataclass(kw_only=True)
class SFTRecipe(StageRecipe, SFTConfig):
    """An SFT stage: trl's ``SFTConfig`` with surgview's fields and defaults (see :class:`StageRecipe`)."""

    name: str = "sft"
    lora: dict[str, Any] | None = field(default=None, metadata={"help": "peft LoraConfig fields; none: all weights"})
    assistant_only_loss: bool = True
    max_length: int | None = None  # never cut image tokens
    save_steps: float = 200
    logging_steps: float = 10


def load_recipe(path: Path) -> SFTRecipe:
    """An SFT recipe from YAML (top level, or under ``sft:``); paths relative to the file."""
    return load_stage_recipe(Path(path), SFTRecipe, "sft", SFTRunError)


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
    from trl import SFTTrainer

    recipe.require_paths(SFTRunError)
    info = checked_model(recipe.model, SFTRunError)
    rows = load_sft_rows(Path(recipe.data))
    out = Path(recipe.output_dir)
    model, processor = load_trainable(info, recipe.seed)
    if recipe.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(**recipe.lora))
    args, dataset = recipe.trainer_args(), image_dataset(rows)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=processor)
    capped = train_resuming(trainer, recipe.checkpoints, resume, recipe.max_minutes)
    stage = Stage(
        "sft",
        data=[str(recipe.data)],
        seed=recipe.seed,
        details={
            "steps": int(trainer.state.global_step),
            **capped,
            "rows": len(rows),
            "lora": bool(recipe.lora),
            "final_loss": last_logged(trainer.state.log_history, "loss"),
        },
    )
    return finish_model_dir(trainer, processor, info, out / "model", stage, recipe.name, merge_lora=bool(recipe.lora))
