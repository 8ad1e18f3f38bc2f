"""Generate answers with a model for evaluation samples and write the report (JSON + Markdown)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2

from engine.backends.base import GenerationRequest
from engine.chain import ChainStatus
from engine.chain_parser import parse_chain
from engine.modeldir import BOX_PIXELS, BOX_THOUSANDTHS, Manifest, ModelDirError
from engine.procedures import DEFAULT_PROCEDURE, get_procedure
from engine.profiles import thousandths_wording
from engine.prompts import system_prompt
from train.cot.procedure_sets import procedure_user_prompt
from train.data.sample import Sample
from train.eval.report import evaluate, write_report

__all__ = ["answer_samples", "box_scale", "evaluate_model", "model_box_units"]


def _rgb(sample: Sample):
    bgr = cv2.imread(str(sample.frame.path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(f"{sample.frame.path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def model_box_units(model_dir: Path) -> str:
    """How a model writes boxes (its manifest's ``box_units``; pixels when it says nothing or has none)."""
    try:
        units = Manifest.read(model_dir).box_units
    except ModelDirError:
        units = None
    return units or BOX_PIXELS


def box_scale(units: str, sample: Sample) -> tuple[float, float]:
    """Factors from a model's boxes to pixels of ``sample``'s frame, the units its truth is in."""
    if units != BOX_THOUSANDTHS:
        return 1.0, 1.0
    return float(sample.frame.width or 0) / 1000, float(sample.frame.height or 0) / 1000


def _request(sample: Sample, max_new_tokens: int, thousandths: bool) -> GenerationRequest:
    """The question as the sample's procedure asks it; a model trained on thousandths is asked for them, in the words
    it was trained on (system prompt included)."""
    prompt = procedure_user_prompt(sample, sample.frame.path)
    if not thousandths:
        return GenerationRequest(prompt, _rgb(sample), max_new_tokens=max_new_tokens)
    procedure = get_procedure(sample.procedure).name
    system = thousandths_wording(system_prompt(None if procedure == DEFAULT_PROCEDURE else procedure))
    return GenerationRequest(thousandths_wording(prompt), _rgb(sample), system=system, max_new_tokens=max_new_tokens)


def answer_samples(
    model_dir: Path,
    samples: list[Sample],
    max_new_tokens: int = 160,
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
) -> list[tuple[str, Any]]:
    """Each sample's answer (greedy, in batches, asked as the sample's procedure asks it) with the probability of
    every token, in the samples' order (image files: run the frame cache first)."""
    from engine.backends.transformers_backend import TransformersBackend

    answers: list[tuple[str, Any]] = []
    thousandths = model_box_units(model_dir) == BOX_THOUSANDTHS
    with TransformersBackend(model_dir) as backend:
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            requests = [_request(s, max_new_tokens, thousandths) for s in chunk]
            answers.extend(backend.generate_batch_with_probs(requests))
            if progress is not None:
                progress(len(chunk))
    return answers


def evaluate_model(
    model_dir: Path,
    samples: list[Sample],
    out_dir: Path,
    max_new_tokens: int = 160,
    batch_size: int = 16,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Answer every sample (image files: run the frame cache first) greedily, in batches; score the
    answers (instruments and triplets ranked by the probability the model gave them); write
    ``report.json``, ``report.md`` and ``responses.jsonl`` under ``out_dir``."""
    answers = answer_samples(model_dir, samples, max_new_tokens, batch_size, progress)
    responses = [text for text, _ in answers]
    probs = [pieces for _, pieces in answers]  # each response's tokens and their probabilities: what AP ranks by
    units = model_box_units(model_dir)
    report = evaluate(
        [
            {"response": r, "sample": s, "token_probs": p, "box_scale": box_scale(units, s)}
            for s, r, p in zip(samples, responses, probs, strict=True)
        ]
    )
    statuses = [parse_chain(r).status for r in responses]
    report["format_ok"] = sum(s is ChainStatus.COMPLETE for s in statuses) / max(1, len(statuses))
    phases = [s.truth.phase for s in samples if s.truth.phase]
    report["phase_majority_baseline"] = max((phases.count(p) for p in set(phases)), default=0) / max(1, len(phases))
    out_dir = Path(out_dir)
    write_report(report, out_dir / "report.json")
    (out_dir / "responses.jsonl").write_text(
        "\n".join(
            json.dumps({"frame": str(s.frame.path), "task": s.task.value, "phase": s.truth.phase, "response": r})
            for s, r in zip(samples, responses, strict=True)
        )
        + "\n",
        encoding="utf-8",
    )
    return report
