"""Training rows whose boxes are written in 0–1000 coordinates instead of pixels.

Qwen2-VL and Qwen3-VL were pretrained to give boxes as thousandths of the image's width and height; Qwen2.5-VL, the
Surg-R1 release and surgview's own models give pixels. A model fine-tuned here learns whichever units its rows are
written in (recipe key ``box_units``), and its manifest says which (``Manifest.box_units``), so the engine asks it in
the same words and maps its boxes back to pixels (:func:`engine.profiles.resolve_profile`).

Two things change in a row, and nothing else: every box of the sample's truth (so its chain, its GRPO answer and the
box columns the rewards score against are all in thousandths), and the prompts' wording about box units
(:func:`engine.profiles.thousandths_wording`, the words the engine then asks in).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from engine.modeldir import BOX_THOUSANDTHS, BOX_UNITS
from engine.profiles import thousandths_wording
from train.cot.chains import CotError, reference_boxes
from train.data.join import scale_truth
from train.data.sample import Sample

__all__ = ["check_box_units", "in_units", "row_in_thousandths", "sample_in_thousandths"]


def check_box_units(units: str) -> str:
    if units not in BOX_UNITS:
        raise ValueError(f"box_units must be one of {', '.join(BOX_UNITS)}, not {units!r}")
    return units


def sample_in_thousandths(sample: Sample) -> Sample:
    """``sample`` with every box of its truth in thousandths of its frame's width and height (rounded as chains
    round pixels). A sample whose dataset gives its own answer text cannot be rewritten and raises CotError."""
    if reference_boxes(sample):
        raise CotError(f"{sample.case}: the dataset's own answer text gives boxes in pixels")
    width, height = sample.frame.width, sample.frame.height
    if not (width and height):
        raise CotError(f"frame size unknown for {sample.frame.path} (needed for boxes in thousandths)")
    return replace(sample, truth=scale_truth(sample.truth, 1000 / width, 1000 / height))


def row_in_thousandths(row: dict[str, Any]) -> dict[str, Any]:
    """An SFT (``messages``) or GRPO (``prompt``) row with its system and user turns asking for thousandths."""
    key = "messages" if "messages" in row else "prompt"
    turns = [
        {**turn, "content": thousandths_wording(turn["content"])}
        if turn.get("role") in ("system", "user") and isinstance(turn.get("content"), str)
        else turn
        for turn in row[key]
    ]
    return {**row, key: turns}


def in_units(make_row: Any, units: str) -> Any:
    """``make_row(sample) -> row`` writing its boxes in ``units`` (pixels: as it is)."""
    if check_box_units(units) != BOX_THOUSANDTHS:
        return make_row
    return lambda sample: row_in_thousandths(make_row(sample_in_thousandths(sample)))
