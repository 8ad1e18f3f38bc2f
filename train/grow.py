"""A deeper copy of a model that computes what it did: block expansion (LLaMA Pro, Wu et al. 2024).

The demo model is small (a 4-block vision encoder 96 wide, a 3-layer language model 192 wide) and its boxes stop
improving with more cases of the same pictures (README: 80 and 160 cases gain the same), which may mean a model
short of capacity rather than of data (the README has what a grown copy did). Training a larger one from random
weights throws away every skill the small one has and takes hours of CPU to win them back. Instead, each block
chosen is followed by a copy of itself whose output projections (attention's and the MLP's) are zero, so the copy
adds nothing to the residual stream: the grown model's logits equal its parent's, and training starts from the
parent's skills with the new blocks' gradients already meaningful (their inputs are the parent's features, their
other weights the parent's block).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from engine.modeldir import ModelDirError, Stage, inspect_model_dir
from train.derived_model import DerivedModelError, load_tensors, write_derived_model

__all__ = ["GrowError", "grow_model", "spread_copies"]

# the tensors whose output is added to the residual stream, by architecture: zero in a copy, the block is the identity
_RESIDUAL_OUTPUTS = {
    "Qwen2_5_VLForConditionalGeneration": {
        "vision": ("attn.proj.", "mlp.down_proj."),
        "text": ("self_attn.o_proj.", "mlp.down_proj."),
    },
    "Qwen2VLForConditionalGeneration": {
        "vision": ("attn.proj.", "mlp.fc2."),
        "text": ("self_attn.o_proj.", "mlp.down_proj."),
    },
}
_VISION_BLOCK = re.compile(r"^((?:model\.)?visual\.blocks\.)(\d+)\.(.+)$")
_TEXT_LAYER = re.compile(r"^((?:model\.)?(?:language_model\.)?layers\.)(\d+)\.(.+)$")


class GrowError(Exception):
    """A model that cannot be grown as asked; one line says why."""


def spread_copies(blocks: int, target: int) -> list[tuple[int, bool]]:
    """The grown stack as (source block, is a copy), its ``target - blocks`` copies spread evenly over the blocks,
    each right after the block it copies (LLaMA Pro interleaves them the same way)."""
    if target < blocks:
        raise GrowError(f"cannot grow {blocks} blocks to {target}: growing only adds blocks")
    extra = target - blocks
    order: list[tuple[int, bool]] = []
    for i in range(blocks):
        order.append((i, False))
        copies = (i + 1) * extra // blocks - i * extra // blocks
        order += [(i, True)] * copies
    return order


def _expand(tensors: dict, pattern: re.Pattern[str], order: list[tuple[int, bool]], zeroed: tuple[str, ...]) -> dict:
    """``tensors`` with the blocks ``pattern`` matches laid out as ``order``, copies' ``zeroed`` tensors zero."""
    by_block: dict[int, list[tuple[str, str, Any]]] = {}
    grown = {}
    for key, tensor in tensors.items():
        match = pattern.match(key)
        if match is None:
            grown[key] = tensor
        else:
            by_block.setdefault(int(match[2]), []).append((match[1], match[3], tensor))
    for index, (source, is_copy) in enumerate(order):
        for prefix, rest, tensor in by_block.get(source, ()):
            new = tensor.clone()
            if is_copy and rest.startswith(zeroed):
                new.zero_()
            grown[f"{prefix}{index}.{rest}"] = new
    return grown


def grow_model(
    model: Path, out: Path, *, vision_depth: int | None = None, text_layers: int | None = None, name: str | None = None
) -> Path:
    """Write ``model`` grown to ``vision_depth`` vision blocks and ``text_layers`` language-model layers (either
    left as it is when None) to ``out``, a new or empty folder, and return it."""
    try:
        parent = inspect_model_dir(model)
    except ModelDirError as exc:
        raise GrowError(str(exc)) from None
    outputs = _RESIDUAL_OUTPUTS.get(parent.architecture)
    if outputs is None:
        known = ", ".join(sorted(_RESIDUAL_OUTPUTS))
        raise GrowError(f"{parent.path}: cannot grow a {parent.architecture} (known: {known})")
    grown_config = json.loads((parent.path / "config.json").read_text(encoding="utf-8"))
    vision = grown_config["vision_config"]
    text = grown_config.get("text_config", grown_config)
    tensors = load_tensors(parent.weights)
    details: dict[str, Any] = {"from": parent.model_id}
    if vision_depth is not None and vision_depth != vision["depth"]:
        order = spread_copies(vision["depth"], vision_depth)
        tensors = _expand(tensors, _VISION_BLOCK, order, outputs["vision"])
        if "fullatt_block_indexes" in vision:  # a copy attends as its source does
            full = set(vision["fullatt_block_indexes"])
            vision["fullatt_block_indexes"] = [k for k, (source, _) in enumerate(order) if source in full]
        details["vision_depth"] = [vision["depth"], vision_depth]
        vision["depth"] = vision_depth
    if text_layers is not None and text_layers != text["num_hidden_layers"]:
        order = spread_copies(text["num_hidden_layers"], text_layers)
        tensors = _expand(tensors, _TEXT_LAYER, order, outputs["text"])
        if "layer_types" in text:
            text["layer_types"] = [text["layer_types"][source] for source, _ in order]
        details["text_layers"] = [text["num_hidden_layers"], text_layers]
        text["num_hidden_layers"] = text_layers
    if len(details) == 1:
        raise GrowError(
            f"{parent.path} already has {vision['depth']} vision blocks and {text['num_hidden_layers']} "
            "language-model layers: nothing to grow"
        )
    details["parameters"] = sum(t.numel() for t in tensors.values())
    try:
        return write_derived_model(
            parent, tensors, Stage("expansion", details=details), Path(out), name=name, config=grown_config
        )
    except DerivedModelError as exc:
        raise GrowError(str(exc)) from None
