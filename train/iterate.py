"""Iterative self-improvement (Surg-R1 stage 3): the model writes chains; the good ones become data.

For each GRPO row (the prompt, the frame and the labels) the current model samples ``k`` chains.
A chain is kept when its rewards pass the thresholds (by default: well formed, right answer,
consistent levels), duplicates are dropped, and the kept chains are mixed with the original CoT
set into a new SFT set, beside the model's own chains that a reviewer accepted (human-verified, from
reviewed cases: the stronger signal, kept whatever the rules say). The next round fine-tunes on it and runs GRPO again
(:mod:`train.pipeline`). Keeping only chains the rules accept means the model learns from its own
phrasing without learning its own mistakes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from engine.backends.base import GenerationRequest
from engine.prompts import IMAGE_PLACEHOLDER
from engine.textfiles import read_json_lines
from train.cot.datasets import write_jsonl
from train.grpo.rewards import REWARDS
from train.stage_inputs import evenly_spaced

__all__ = ["IterationConfig", "SelfSample", "sample_chains", "write_iteration_set"]

LABEL_NAMES = ("task", "level", "answer", "phase", "tools", "triplets", "cvs", "boxes")


@dataclass(frozen=True)
class IterationConfig:
    samples_per_row: int = 4  # k chains sampled per training row
    temperature: float = 1.0
    max_new_tokens: int = 256
    max_rows: int | None = None  # sample from at most this many rows (evenly spread); None: all
    thresholds: dict[str, float] = field(default_factory=lambda: {"format": 1.0, "accuracy": 1.0, "consistency": 1.0})
    batch_rows: int = 4  # rows per generation batch (each row gives k sequences)
    seed: int = 0


@dataclass(frozen=True)
class SelfSample:
    row: int  # index in the GRPO set
    text: str
    rewards: dict[str, float]
    kept: bool


def _rgb(path: str):
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _turn(prompt: list[dict[str, Any]], role: str) -> str | None:
    for message in prompt:
        if message.get("role") == role and isinstance(message.get("content"), str):
            return message["content"]
    return None


def _key(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def read_grpo_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file (the GRPO set, or an SFT set)."""
    return [row for _, row in read_json_lines(path, ValueError)]


def sample_chains(
    model_dir: Path,
    grpo_set: Path,
    config: IterationConfig,
    progress: Callable[[int], None] | None = None,
) -> list[SelfSample]:
    """Sample ``k`` chains per row from the model and score each with every thresholded reward."""
    from engine.backends.transformers_backend import TransformersBackend

    rows = read_grpo_rows(grpo_set)
    chosen = evenly_spaced(len(rows), config.max_rows)
    unknown = [n for n in config.thresholds if n not in REWARDS]
    if unknown:
        raise KeyError(f"unknown reward(s) in thresholds: {', '.join(unknown)}")
    out: list[SelfSample] = []
    with TransformersBackend(model_dir) as backend:
        for start in range(0, len(chosen), config.batch_rows):
            indices = chosen[start : start + config.batch_rows]
            requests = []
            for index in indices:
                row = rows[index]
                prompt = _turn(row["prompt"], "user") or ""
                image = _rgb(row["images"][0]) if row.get("images") else None
                request = GenerationRequest(
                    prompt,
                    image,
                    system=_turn(row["prompt"], "system"),
                    max_new_tokens=config.max_new_tokens,
                    temperature=config.temperature,
                    seed=config.seed + start,
                )
                requests += [request] * config.samples_per_row
            texts = backend.generate_batch(requests)
            for k, text in enumerate(texts):
                index = indices[k // config.samples_per_row]
                row = rows[index]
                columns = {name: [row.get(name)] for name in LABEL_NAMES}
                scores = {name: REWARDS[name]([text], **columns)[0] for name in config.thresholds}
                kept = all(scores[name] >= threshold for name, threshold in config.thresholds.items())
                out.append(SelfSample(index, text, scores, kept))
            if progress is not None:
                progress(len(indices))
    return out


def write_iteration_set(
    samples: list[SelfSample],
    grpo_set: Path,
    original_sft: Path,
    out_jsonl: Path,
    human_verified: Path | None = None,
) -> dict[str, Any]:
    """The kept chains (each distinct text once per row) plus the original CoT rows, as one SFT
    set; returns the counts the run records. ``human_verified``: SFT rows of the model's own chains that
    a reviewer accepted (:mod:`train.data.reviewed`), added beside the rule-verified ones (each once)."""
    rows = read_grpo_rows(grpo_set)
    original = read_grpo_rows(original_sft)  # any JSONL
    seen: set[tuple[int, str]] = set()
    new_rows = []
    for sample in samples:
        if not sample.kept:
            continue
        key = (sample.row, _key(sample.text))
        if key in seen:
            continue
        seen.add(key)
        row = rows[sample.row]
        prompt = [dict(m) for m in row["prompt"]]
        if row.get("images") and not any(IMAGE_PLACEHOLDER in str(m.get("content", "")) for m in prompt):
            raise ValueError(f"GRPO row {sample.row} has images but no {IMAGE_PLACEHOLDER} in its prompt")
        new_rows.append(
            {"messages": [*prompt, {"role": "assistant", "content": sample.text}], "images": list(row["images"])}
        )
    verified = _new_rows(read_grpo_rows(human_verified), [*original, *new_rows]) if human_verified else []
    written = write_jsonl([*original, *new_rows, *verified], out_jsonl)
    sampled = len(samples)
    kept = sum(s.kept for s in samples)
    stats = {
        "sampled": sampled,
        "kept": kept,
        "kept_unique": len(new_rows),
        "pass_rate": kept / sampled if sampled else 0.0,
        "rows_written": written,
        "original_rows": len(original),
    }
    if human_verified:
        stats["human_verified"] = len(verified)
    return stats


def _row_key(row: dict[str, Any]) -> tuple[str, ...]:
    texts = [_key(str(m.get("content", ""))) for m in row.get("messages", [])]
    return (*texts, *map(str, row.get("images", [])))


def _new_rows(rows: list[dict[str, Any]], present: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` not already in ``present`` (same turns and images), each once."""
    seen = {_row_key(r) for r in present}
    out = []
    for row in rows:
        if _row_key(row) not in seen:
            seen.add(_row_key(row))
            out.append(row)
    return out
