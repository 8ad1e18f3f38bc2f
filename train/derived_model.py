"""Writing a model made from another model's weights (an interpolation, a grown copy) as a folder the engine loads.

The new folder takes its parent's files (tokenizer, processor, chat template), its own weights and, where its shape
changed, its own config. Its manifest keeps the parent's lineage with one stage added; the parent's held-out figures
and ONNX graphs were the parent's, so the new model claims neither until it is evaluated and exported. It is written
beside ``out`` and renamed into place, so a failure (a full disk, a bad tensor) leaves no half-written model.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from engine.modeldir import Manifest, ModelInfo, Stage, inspect_model_dir

__all__ = ["DerivedModelError", "load_tensors", "write_derived_model"]


class DerivedModelError(Exception):
    """A destination that cannot take the new model; one line says why."""


def load_tensors(weights: tuple[Path, ...]) -> dict:
    """Every tensor of a model's safetensors files, by name."""
    from safetensors.torch import load_file

    tensors: dict = {}
    for path in weights:
        tensors.update(load_file(str(path)))
    return tensors


def write_derived_model(
    parent: ModelInfo,
    tensors: dict,
    stage: Stage,
    out: Path,
    *,
    name: str | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    """Write ``tensors`` as a model folder at ``out`` (which must not exist, or be empty) and return it."""
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DerivedModelError(f"{out} exists and is not an empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        shutil.copytree(parent.path, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns("onnx", "__pycache__"))
        for path in parent.weights:
            (staging / path.relative_to(parent.path)).unlink()
        for index in staging.glob("*.safetensors.index.json"):
            index.unlink()
        if config is not None:
            (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        contiguous = {key: tensor.contiguous() for key, tensor in tensors.items()}
        save_file(contiguous, str(staging / "model.safetensors"), metadata={"format": "pt"})
        manifest = parent.manifest or Manifest(parent.name, parent.architecture, "", "")
        manifest.lineage = [*manifest.lineage, stage]
        manifest.evaluation = {}
        manifest.extra.pop("onnx", None)
        if name:
            manifest.name = name
        manifest.write(staging)
        inspect_model_dir(staging)  # the engine's own check of what was written
        if out.exists():
            out.rmdir()
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
