"""Which rotary frequencies tell a Qwen2-VL / Qwen2.5-VL language model an image token's row and column.

M-RoPE gives each query and key three positions, time, row and column (equal for a text token), and splits each
head's rotary frequency pairs into three contiguous sections, one per position: ``mrope_section`` [6, 9, 9] for the
demo model's 24 pairs. Pair ``i`` turns ``rope_theta ** (-i / 24)`` radians per position, so the sections run from
fast to slow, and columns get the slowest: at ``rope_theta`` 1e4 they turn 0.0032 to 0.00015 rad per column, at most
0.05 rad across the 16 columns of a 448x252 frame's token grid, while rows get 0.1 to 0.005 rad per row. The decoder
can hardly tell one column from another and must read a box's x from what the vision tower put in each token (the
bundled model's box centres sit a median 11 px off in x against 4 px in y). Interleaving the sections one pair at a
time (time, row, column, time, ...; Qwen3-VL's interleaved M-RoPE) gives rows and columns fast and slow pairs alike.
A text token's three positions are equal, so the layout does not change what text tokens see of each other: only
how the decoder sees the image moves, and a continued model learns it from there.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["RopeLayoutError", "interleave_mrope", "mrope_sections"]


class RopeLayoutError(ValueError):
    """A model folder whose rotary layout cannot be interleaved; one line says why."""


def _rope(config: dict, model_dir: Path) -> dict:
    text = config.get("text_config", config)
    rope = text.get("rope_parameters") or text.get("rope_scaling")
    if not isinstance(rope, dict) or "mrope_section" not in rope:
        raise RopeLayoutError(f"{model_dir}: its language model has no M-RoPE sections (mrope_section) to lay out")
    if rope.get("mrope_interleaved"):
        raise RopeLayoutError(f"{model_dir}: its M-RoPE is interleaved already (mrope_interleaved, as Qwen3-VL's)")
    return rope


def mrope_sections(model_dir: Path) -> list[int]:
    """The folder's ``mrope_section``: three numbers for contiguous sections, one per frequency pair interleaved."""
    model_dir = Path(model_dir)
    return list(_rope(json.loads((model_dir / "config.json").read_text(encoding="utf-8")), model_dir)["mrope_section"])


def interleave_mrope(model_dir: Path) -> list[int]:
    """Rewrite the folder's config so that consecutive frequency pairs take time, row and column in turn (transformers
    reads ``mrope_section`` as consecutive chunks, chunk ``k`` taking position ``k % 3``); returns the new sections."""
    model_dir = Path(model_dir)
    path = model_dir / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    rope = _rope(config, model_dir)
    pairs = sum(rope["mrope_section"])
    rope["mrope_section"] = [1] * pairs
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return rope["mrope_section"]
