"""The SFT and GRPO sets written from samples: JSONL rows in the Surg-R1 / ms-swift convention.

SFT row (ms-swift and trl conversational form)::

    {"messages": [{"role": "system", "content": <engine system prompt>},
                  {"role": "user", "content": "<image>..." (the engine's task prompt)},
                  {"role": "assistant", "content": <chain>}],
     "images": ["path/to/frame.jpg"]}

GRPO row::

    {"prompt": [system turn, user turn], "images": [...], "task": "cvs", "answer": "C1 met, ...",
     "level": 3, "phase": "CalotTriangleDissection" | null, "tools": ["Grasper", ...] | null,
     "triplets": ["grasper,retract,gallbladder", ...] | null, "cvs": [0.67, 0.33, 0.0] | null,
     "boxes": [{"tool": "Grasper", "box": [x1, y1, x2, y2]}, ...], "anatomy": [...],
     "dataset": ..., "case": ...}

User prompts come from :mod:`engine.prompts` (so training prompts equal inference prompts), or
are the dataset's own question (Surg-R1 JSONL) when the sample has one. ``<image>`` marks the frame in the user text;
:func:`structured_messages` turns it into trl's ``{"type": "image"}`` content parts.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from engine.ontology import load_ontology
from engine.prompts import IMAGE_PLACEHOLDER, build_prompt, frame_prompt, system_prompt, user_content
from engine.tasks import Task
from train.cot.chains import CanonicalChoices, CotError, build_chain, localisation_target, task_answer, tool_display
from train.data.sample import Sample

__all__ = [
    "chain_row",
    "grpo_row",
    "label_columns",
    "sample_rng",
    "sft_row",
    "structured_messages",
    "user_prompt",
    "write_grpo_set",
    "write_jsonl",
    "write_sft_set",
]

log = logging.getLogger(__name__)

_ENGINE_TASK = {
    Task.PHASE: "phase",
    Task.PHASE_MCQ: "phase_mcq",
    Task.TOOLS: "tools",
    Task.TRIPLET: "triplet",
    Task.CVS: "cvs",
}


def sample_rng(sample: Sample, seed: int) -> random.Random:
    """The sample's own generator: chains depend on the seed and the sample, not on set order."""
    frame = sample.frame
    return random.Random(f"{seed}|{sample.dataset}|{sample.case}|{frame.path}|{frame.index}|{sample.task.value}")


def _frame_size(sample: Sample, image: Path | None) -> tuple[int, int]:
    if sample.frame.width and sample.frame.height:
        return int(sample.frame.width), int(sample.frame.height)
    if image is not None and Path(image).is_file():
        from PIL import Image

        with Image.open(image) as im:
            return im.size
    raise CotError(f"frame size unknown for {sample.frame.path} (needed by the {sample.task.value} prompt)")


def _with_placeholder(text: str) -> str:
    return text if IMAGE_PLACEHOLDER in text else IMAGE_PLACEHOLDER + text


def user_prompt(sample: Sample, image: Path | None = None) -> str:
    """The user turn of ``sample`` with its ``<image>`` placeholder: the inference prompt of its task."""
    if sample.question:
        return _with_placeholder(sample.question.strip())
    task = sample.task
    if task in _ENGINE_TASK:
        text = build_prompt(_ENGINE_TASK[task])
    elif task is Task.FRAME:
        width, height = _frame_size(sample, image)
        text = frame_prompt("frame_analysis", width, height).text
    elif task is Task.LOCALISATION:
        width, height = _frame_size(sample, image)
        tool, _ = localisation_target(sample)
        text = build_prompt("localisation", width=width, height=height, instrument=tool_display(tool))
    else:
        raise CotError(f"no prompt for the {task.value} task")
    return _with_placeholder(text)


def _turns(sample: Sample, image: Path) -> list[dict[str, str]]:
    return [{"role": "system", "content": system_prompt()}, {"role": "user", "content": user_prompt(sample, image)}]


def sft_row(sample: Sample, image: Path, chain: str) -> dict[str, Any]:
    return {"messages": [*_turns(sample, image), {"role": "assistant", "content": chain}], "images": [str(image)]}


def chain_row(system: str, prompt: str, chain: str, image: Path) -> dict[str, Any]:
    """An SFT row of a chain asked in another's words (a profile's question, a reviewer-accepted answer)."""
    turns = [{"role": "system", "content": system}, {"role": "user", "content": _with_placeholder(prompt.strip())}]
    return {"messages": [*turns, {"role": "assistant", "content": chain}], "images": [str(image)]}


def label_columns(sample: Sample) -> dict[str, Any]:
    """The labels GRPO rewards need, JSON-ready (None where the dataset does not say)."""
    truth = sample.truth
    onto = load_ontology()
    return {
        "level": sample.level,
        "phase": onto.phase.require(truth.phase).name if truth.phase is not None else None,
        "tools": [onto.tool.require(t).name for t in truth.tools] if truth.tools is not None else None,
        "triplets": None if truth.triplets is None else [f"{t.instrument},{t.verb},{t.target}" for t in truth.triplets],
        "cvs": None if truth.cvs is None else [None if v is None else float(v) for v in truth.cvs],
        "boxes": [
            {"tool": onto.tool.require(i.tool).name, "box": [float(v) for v in i.box]}
            for i in truth.instruments
            if i.box is not None
        ],
        "anatomy": list(truth.anatomy),
        "dataset": sample.dataset,
        "case": sample.case,
    }


def grpo_row(sample: Sample, image: Path) -> dict[str, Any]:
    """The prompt turns, images, the task's answer (canonical form) and the label columns."""
    return {
        "prompt": _turns(sample, image),
        "images": [str(image)],
        "task": sample.task.value,
        "answer": task_answer(sample),
        **label_columns(sample),
    }


def structured_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """trl's multimodal form: each ``<image>`` in a string turn becomes an ``{"type": "image"}`` part
    (the engine's own layout, :func:`engine.prompts.user_content`)."""
    out = []
    for message in messages:
        content = message.get("content")
        if not isinstance(content, str):
            out.append(message)
            continue
        parts = user_content(content, content.count(IMAGE_PLACEHOLDER)) if content else []
        out.append({**message, "content": parts})
    return out


def write_jsonl(rows: Iterable[dict[str, Any]], out_jsonl: Path) -> int:
    """Write rows atomically (``<name>.part``, then renamed); returns the number written."""
    out_jsonl = Path(out_jsonl)
    out_jsonl.parent.mkdir(parents=True, exist_ok=True)
    part = out_jsonl.with_name(out_jsonl.name + ".part")
    count = 0
    try:
        with part.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(part, out_jsonl)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return count


def _rows(samples: Iterable[Sample], make: Callable[[Sample], dict[str, Any]], what: str):
    skipped = 0
    for sample in samples:
        try:
            yield make(sample)
        except CotError as exc:
            skipped += 1
            log.debug("skipped %s/%s (%s): %s", sample.case, sample.frame.index, sample.task.value, exc)
    if skipped:
        log.warning("%s set: %d sample(s) skipped because their labels cannot ground their task", what, skipped)


def direct_answer(sample: Sample) -> str:
    """The answer alone, with no reasoning: the target of the "without the hierarchy" ablation."""
    return f"<answer>{task_answer(sample)}</answer>"


def write_sft_set(
    samples: Iterable[Sample],
    images: Callable[[Sample], Path],
    out_jsonl: Path,
    seed: int = 0,
    canonical: bool = False,
    direct: bool = False,
) -> int:
    """One SFT row per sample (chain from its labels); samples that cannot be grounded are skipped.

    ``canonical`` writes every chain in one fixed phrasing (for very small models); ``direct``
    writes the answer alone (same prompts), for the ablation that answers without a chain."""

    def make(sample: Sample) -> dict[str, Any]:
        if direct:
            return sft_row(sample, images(sample), direct_answer(sample))
        rng = CanonicalChoices() if canonical else sample_rng(sample, seed)
        return sft_row(sample, images(sample), build_chain(sample, rng))

    return write_jsonl(_rows(samples, make, "SFT"), out_jsonl)


def write_grpo_set(samples: Iterable[Sample], images: Callable[[Sample], Path], out_jsonl: Path, seed: int = 0) -> int:
    """One GRPO row per sample: prompt turns, images, the task's answer and the label columns.

    Rows hold no random choice; ``seed`` is accepted for symmetry with :func:`write_sft_set`.
    """
    del seed

    def make(sample: Sample) -> dict[str, Any]:
        return grpo_row(sample, images(sample))

    return write_jsonl(_rows(samples, make, "GRPO"), out_jsonl)
