"""Weight interpolation of two fine-tunes of one model (WiSE-FT, Wortsman et al. 2022; "model soups").

A continuation can gain one skill and lose a call it made before: on 80 synthetic cases the demo model's boxes
improved past the frames' noise while one frame of the demo case's CVS window lost its C3 call, and the report's
statement with it (README). Both models descend from one set of weights, so the weights between them are a model
too, often keeping what each does well; this writes that model as a folder the engine loads, its lineage naming
both parents and the weight, its held-out figures left empty until it is evaluated.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.modeldir import BOX_PIXELS, ModelDirError, Stage, inspect_model_dir
from train.derived_model import DerivedModelError, load_tensors, write_derived_model

__all__ = ["SoupError", "interpolate_models"]

# files that must be the same in both parents: the architecture and size, the vocabulary, how frames are read
_SAME_FILES = ("config.json", "tokenizer.json", "preprocessor_config.json")
_VERSION_KEYS = ("transformers_version", "dtype", "torch_dtype")


class SoupError(Exception):
    """Two models that cannot be interpolated, or a destination that cannot take the result; one line says why."""


def _comparable(path: Path) -> object:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SoupError(f"{path}: unreadable ({exc})") from None
    return _strip_versions(data)


def _strip_versions(value: object) -> object:
    """``value`` without the keys, at any depth, naming which library version wrote it or its dtype: they do not
    change the shape."""
    if isinstance(value, dict):
        return {k: _strip_versions(v) for k, v in value.items() if k not in _VERSION_KEYS}
    return value


def interpolate_models(a: Path, b: Path, weight: float, out: Path, name: str | None = None) -> Path:
    """Write ``(1 - weight) * a + weight * b`` to ``out`` (which must not exist, or be empty) and return it.

    Both must be valid model folders of the same architecture, size, tokenizer and frame size; the result takes
    ``b``'s files (config, tokenizer, processor, name unless ``name``) and its manifest, with an ``interpolation``
    stage added and no held-out figures (they were ``b``'s, not this model's) or ONNX graphs (export them again).
    """
    import torch

    if not 0.0 < weight < 1.0:
        raise SoupError(f"the weight on the second model must lie strictly between 0 and 1, not {weight}")
    try:
        first, second = inspect_model_dir(a), inspect_model_dir(b)
    except ModelDirError as exc:
        raise SoupError(str(exc)) from None
    for file in _SAME_FILES:
        if _comparable(first.path / file) != _comparable(second.path / file):
            raise SoupError(f"{first.path} and {second.path} differ in {file}: not two fine-tunes of one model")
    units = [(m.box_units if m is not None else None) or BOX_PIXELS for m in (first.manifest, second.manifest)]
    if units[0] != units[1]:
        # the average of a model that writes pixels and one that writes thousandths writes neither
        raise SoupError(f"{first.path} writes boxes in {units[0]} and {second.path} in {units[1]}")
    weights_a, weights_b = load_tensors(first.weights), load_tensors(second.weights)
    if weights_a.keys() != weights_b.keys():
        missing = sorted(weights_a.keys() ^ weights_b.keys())[0]
        raise SoupError(f"{first.path} and {second.path} hold different tensors (e.g. {missing})")
    for key, tensor in weights_b.items():
        if weights_a[key].shape != tensor.shape:
            raise SoupError(f"{key}: shape {tuple(weights_a[key].shape)} against {tuple(tensor.shape)}")
    mixed = {
        key: torch.lerp(weights_a[key].float(), tensor.float(), weight).to(tensor.dtype).contiguous()
        for key, tensor in weights_b.items()
    }
    stage = Stage("interpolation", details={"from": first.model_id, "to": second.model_id, "weight": weight})
    try:
        return write_derived_model(second, mixed, stage, Path(out), name=name)
    except DerivedModelError as exc:
        raise SoupError(str(exc)) from None
