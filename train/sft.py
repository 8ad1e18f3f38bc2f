"""Supervised fine-tuning on chain-of-thought data with trl's SFTTrainer (Surg-R1 stage 1).

A recipe (YAML) names the base model directory, the SFT set written by the CoT builder
(``messages`` with an ``<image>`` placeholder in the user turn, ``images``), and any
``SFTConfig`` fields. Loss is on the assistant's tokens only (the chat template's generation
markers), nothing is truncated (``max_length: null`` keeps every image token), checkpoints make
a run resumable, and the result is a model directory the engine loads, its manifest extended
with this stage's lineage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.modeldir import ModelDirError, Stage, inspect_model_dir
from engine.prompts import IMAGE_PLACEHOLDER, user_content
from train.model_output import finish_model_dir, has_tensorboard, last_logged

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

    def resolve(self, base: Path) -> SFTRecipe:
        """Paths in a recipe are relative to the recipe file."""

        def abs_(p: str) -> str:
            return str(p if Path(p).is_absolute() else (base / p).resolve())

        return SFTRecipe(
            abs_(self.model),
            abs_(self.data),
            abs_(self.output_dir),
            self.seed,
            self.name,
            dict(self.trainer),
            dict(self.lora) if self.lora else None,
        )


def load_recipe(path: Path) -> SFTRecipe:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SFTRunError(f"cannot read recipe {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise SFTRunError(f"recipe {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SFTRunError(f"recipe {path} must be a mapping")
    section = data.get("sft", data)
    known = {"model", "data", "output_dir", "seed", "name", "trainer", "lora"}
    unknown = sorted(set(section) - known)
    if unknown:
        raise SFTRunError(f"recipe {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    missing = [k for k in ("model", "data", "output_dir") if k not in section]
    if missing:
        raise SFTRunError(f"recipe {path}: missing {', '.join(missing)}")
    return SFTRecipe(**section).resolve(path.parent)


def load_sft_rows(path: Path) -> list[dict]:
    """SFT rows in trl's vision format: user content as text and image parts, images as paths."""
    path = Path(path)
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SFTRunError(f"cannot read {path}: {exc.strerror or exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            messages, images = row["messages"], row.get("images", [])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise SFTRunError(f"{path}:{number}: expected an object with 'messages' (and 'images')") from None
        converted = []
        unplaced = len(images)
        for message in messages:
            content = message.get("content", "")
            if message.get("role") == "user" and isinstance(content, str) and unplaced:
                # The engine's own layout (frames where the prompt says <image>), so the
                # model is trained on exactly the prompt it will be asked at run time.
                count = min(content.count(IMAGE_PLACEHOLDER) or unplaced, unplaced)
                converted.append({"role": "user", "content": user_content(content, count)})
                unplaced -= count
            else:
                text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
                converted.append({"role": message["role"], "content": [{"type": "text", "text": text}]})
        resolved = [str(p if Path(p).is_absolute() else path.parent / p) for p in images]
        for image in resolved:
            if not Path(image).is_file():
                raise SFTRunError(f"{path}:{number}: image {image} not found")
        rows.append({"messages": converted, "images": resolved})
    if not rows:
        raise SFTRunError(f"{path}: no rows")
    return rows


def _dataset(rows: list[dict]):
    from datasets import Dataset, Image, Sequence

    return Dataset.from_list(rows).cast_column("images", Sequence(Image()))


def run_sft(recipe: SFTRecipe, resume: bool = True) -> Path:
    """Train; return the model directory written to ``output_dir/model``."""
    import torch
    import transformers
    from trl import SFTConfig, SFTTrainer

    from engine.vlm_processor import load_processor

    try:
        info = inspect_model_dir(recipe.model)
    except ModelDirError as exc:
        raise SFTRunError(str(exc)) from exc
    rows = load_sft_rows(Path(recipe.data))
    out = Path(recipe.output_dir)
    checkpoints = out / "checkpoints"
    transformers.set_seed(recipe.seed)
    model = getattr(transformers, info.architecture).from_pretrained(
        info.path, use_safetensors=True, trust_remote_code=False, local_files_only=True, dtype=torch.float32
    )
    if recipe.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(**recipe.lora))
    processor = load_processor(info.path)
    on_gpu = torch.cuda.is_available()
    settings = {
        "output_dir": str(checkpoints),
        "seed": recipe.seed,
        "bf16": on_gpu,  # trl defaults bf16 to True, which fails on CPU
        "use_cpu": not on_gpu,
        "assistant_only_loss": True,
        "max_length": None,  # never cut image tokens
        "save_strategy": "steps",
        "save_steps": 200,
        "save_total_limit": 2,
        "logging_steps": 10,
        "report_to": ["tensorboard"] if has_tensorboard() else [],
        "dataloader_num_workers": 0,
        **recipe.trainer,
    }
    try:
        config = SFTConfig(**settings)
    except TypeError as exc:
        raise SFTRunError(f"recipe trainer settings: {exc}") from None
    trainer = SFTTrainer(model=model, args=config, train_dataset=_dataset(rows), processing_class=processor)
    last = transformers.trainer_utils.get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    trainer.train(resume_from_checkpoint=last if (resume and last) else None)
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
