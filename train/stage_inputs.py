"""What the training stages read: recipe files, chat rows with their frames, the model to train,
the trainer settings they share, and which of many rows (:func:`evenly_spaced`).

SFT and GRPO (and the pipeline's own recipe) read the same kinds of input with the same rules, so
the rules live once: a recipe is a YAML mapping whose paths are relative to the file; a user turn is
laid out exactly as the engine lays it out at run time (:func:`engine.prompts.user_content`); frame
paths are relative to the JSONL file and must exist; a model folder is checked by the engine's
contract and loaded from safetensors only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from engine.modeldir import ModelDirError, ModelInfo, inspect_model_dir
from engine.prompts import IMAGE_PLACEHOLDER, user_content
from train.model_output import has_tensorboard

__all__ = [
    "checked_model",
    "evenly_spaced",
    "image_dataset",
    "jsonl_rows",
    "load_trainable",
    "placed_turns",
    "read_mapping",
    "recipe_section",
    "resolve_path",
    "resolved_images",
]

ErrorType = Callable[[str], Exception]


def evenly_spaced(n: int, limit: int | None) -> list[int]:
    """Indices of at most ``limit`` of ``n`` items, spread evenly from the first (all when no limit)."""
    if limit is None or limit >= n:
        return list(range(n))
    step = n / limit
    return [int(k * step) for k in range(limit)]


def resolve_path(base: Path, value: str | Path) -> Path:
    """``value`` (``~`` expanded) made absolute against ``base``, the folder of the file naming it."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def read_mapping(path: Path, error: ErrorType) -> dict[str, Any]:
    """A recipe file's YAML mapping; unreadable, invalid or non-mapping files raise ``error``."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"cannot read recipe {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise error(f"recipe {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"recipe {path} must be a mapping")
    return data


def recipe_section(
    path: Path, name: str, known: set[str], required: tuple[str, ...], error: ErrorType
) -> dict[str, Any]:
    """The stage's settings (top level, or under ``name:``), with unknown and missing keys refused
    and the ``required`` paths resolved against the recipe's folder."""
    path = Path(path)
    data = read_mapping(path, error)
    section = dict(data.get(name, data))
    unknown = sorted(set(section) - known)
    if unknown:
        raise error(f"recipe {path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    missing = [k for k in required if k not in section]
    if missing:
        raise error(f"recipe {path}: missing {', '.join(missing)}")
    for key in required:
        section[key] = str(resolve_path(path.parent, section[key]))
    return section


def jsonl_rows(path: Path, error: ErrorType) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line; unreadable files and bad JSON raise ``error``."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        yield number, row


def placed_turns(messages: list[dict[str, Any]], images: int) -> list[dict[str, Any]]:
    """Chat turns in trl's vision form, the frames where the user turns say ``<image>``.

    The engine's own layout, so a model is trained on exactly the prompt it will be asked at run
    time. Without placeholders, the first user turn takes every frame.
    """
    turns, unplaced = [], images
    for message in messages:
        content = message.get("content", "")
        if message.get("role") == "user" and isinstance(content, str) and unplaced:
            count = min(content.count(IMAGE_PLACEHOLDER) or unplaced, unplaced)
            turns.append({"role": "user", "content": user_content(content, count)})
            unplaced -= count
        else:
            text = content if isinstance(content, str) else "".join(p.get("text", "") for p in content)
            turns.append({"role": message["role"], "content": [{"type": "text", "text": text}]})
    return turns


def resolved_images(path: Path, number: int, images: list[str], error: ErrorType) -> list[str]:
    """A row's frame paths made absolute against the JSONL file's folder; a missing frame raises."""
    resolved = [str(resolve_path(Path(path).parent, p)) for p in images]
    for image in resolved:
        if not Path(image).is_file():
            raise error(f"{path}:{number}: image {image} not found")
    return resolved


def image_dataset(rows: list[dict[str, Any]]):
    """A datasets.Dataset whose ``images`` column holds decoded images (what trl's collators take)."""
    from datasets import Dataset, Image, Sequence

    return Dataset.from_list(rows).cast_column("images", Sequence(Image()))


def checked_model(model_dir: str | Path, error: ErrorType) -> ModelInfo:
    """The model folder checked by the engine's contract (before any data or weights are read)."""
    try:
        return inspect_model_dir(model_dir)
    except ModelDirError as exc:
        raise error(str(exc)) from exc


def load_trainable(info: ModelInfo, seed: int) -> tuple[Any, Any]:
    """The folder's model in float32 (safetensors only, no remote code) and its processor."""
    import torch
    import transformers

    from engine.vlm_processor import load_processor

    transformers.set_seed(seed)
    model = getattr(transformers, info.architecture).from_pretrained(
        info.path, use_safetensors=True, trust_remote_code=False, local_files_only=True, dtype=torch.float32
    )
    return model, load_processor(info.path)


def shared_trainer_settings(checkpoints: Path, seed: int) -> dict[str, Any]:
    """The trl config fields SFT and GRPO both set; each stage adds its own, then the recipe's."""
    import torch

    on_gpu = torch.cuda.is_available()
    return {
        "output_dir": str(checkpoints),
        "seed": seed,
        "bf16": on_gpu,  # trl defaults bf16 to True, which fails on CPU
        "use_cpu": not on_gpu,
        "save_strategy": "steps",
        "save_total_limit": 2,
        "report_to": ["tensorboard"] if has_tensorboard() else [],
        "dataloader_num_workers": 0,
    }


def train_resuming(trainer: Any, checkpoints: Path, resume: bool) -> None:
    """Run ``trainer``, from the last checkpoint under ``checkpoints`` when ``resume`` and one exists."""
    import transformers

    last = transformers.trainer_utils.get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    trainer.train(resume_from_checkpoint=last if (resume and last) else None)
