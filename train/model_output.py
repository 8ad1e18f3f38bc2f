"""Writing a trained model directory: whole safetensors weights, processor, template, manifest.

Every training stage (SFT, GRPO, self-iteration) ends here, so each writes the same complete,
engine-loadable folder and extends the manifest's lineage by exactly one stage.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from engine.modeldir import Manifest, ModelInfo, Stage
from engine.ontology import load_ontology
from engine.prompts import prompts_version

__all__ = ["copy_template", "finish_model_dir", "has_tensorboard", "last_logged", "replace_tree", "save_trained_model"]


def save_trained_model(trainer, final: Path, merge_lora: bool = False) -> None:
    """Write the trained weights as safetensors, whole, whatever the distribution strategy.

    Must run on every rank: under FSDP or DeepSpeed ZeRO-3 each rank holds a shard, and
    ``accelerator.get_state_dict`` is the collective that gathers the full weights (ZeRO-3 needs
    ``zero3_save_16bit_model``, set in ``train/accelerate/zero3.yaml``); under DDP or one process it
    is a plain state dict. LoRA adapters are merged into the base weights first, so the folder
    loads without peft.
    """
    model = trainer.accelerator.unwrap_model(trainer.model)
    if merge_lora:
        model.merge_and_unload().save_pretrained(final, safe_serialization=True)
        return
    state = trainer.accelerator.get_state_dict(trainer.model)
    model.save_pretrained(final, state_dict=state, safe_serialization=True)


def copy_template(src: Path, dst: Path) -> None:
    """The chat template file, when the processor's save did not write one."""
    for name in ("chat_template.jinja",):
        if (src / name).exists() and not (dst / name).exists():
            (dst / name).write_text((src / name).read_text(encoding="utf-8"), encoding="utf-8")


def finish_model_dir(
    trainer, processor, base: ModelInfo, final: Path, stage: Stage, name: str, merge_lora: bool = False
) -> Path:
    """Weights, processor, chat template and the manifest (the base's lineage plus ``stage``)."""
    final = Path(final)
    final.mkdir(parents=True, exist_ok=True)
    save_trained_model(trainer, final, merge_lora=merge_lora)
    processor.save_pretrained(final)
    copy_template(base.path, final)
    manifest = base.manifest
    # A plain Hugging Face base has no manifest: the model is now trained on this release's
    # ontology and prompts, so those are its versions.
    Manifest(
        name=name,
        base_architecture=base.architecture,
        ontology_version=manifest.ontology_version if manifest else load_ontology().version,
        prompts_version=manifest.prompts_version if manifest else prompts_version(),
        lineage=[*(manifest.lineage if manifest else []), stage],
        evaluation={},
        profile="surgview",  # trained on surgview's own prompts
        box_units=manifest.box_units if manifest else None,  # the pipeline records the units it trained on
    ).write(final)
    return final


def last_logged(history: list[dict[str, Any]], key: str, mean: bool = False) -> float | None:
    """The last value of ``key`` in a trainer's log history (or the mean of all of them)."""
    values = [float(entry[key]) for entry in history if key in entry]
    if not values:
        return None
    return sum(values) / len(values) if mean else values[-1]


def has_tensorboard() -> bool:
    """TensorBoard logging unless it is missing or turned off (``SURGVIEW_NO_TENSORBOARD``)."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return os.environ.get("SURGVIEW_NO_TENSORBOARD") is None


def replace_tree(source: Path, target: Path, ignore: tuple[str, ...] = ("__pycache__",)) -> None:
    """Copy a model folder into place whole: staged beside the target, then renamed, so a stopped copy never
    leaves a half folder where a model is expected."""
    import shutil

    staging = target.with_name(target.name + ".part")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns(*ignore))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
