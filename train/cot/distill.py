"""Optional distillation: a teacher model writes chains, kept only when their answer matches the label.

The teacher is any :class:`engine.backends.base.Backend` (e.g. the OpenAI-compatible client in
front of a large VLM), asked with the same system and user prompts as training and inference.
A chain is kept when it parses as a complete chain (:func:`engine.chain_parser.parse_chain`)
and :func:`answer_matches` says its answer equals the sample's label.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.backends.base import Backend, BackendError, GenerationRequest
from engine.chain import ChainStatus
from engine.chain_parser import parse_chain
from engine.ontology import load_ontology
from engine.prompts import system_prompt
from engine.tasks import Task
from train.cot.chains import CotError, cvs_states, localisation_target, phase_option, reference_boxes
from train.cot.datasets import sft_row, user_prompt, write_jsonl
from train.data.sample import Sample

__all__ = ["Distilled", "answer_matches", "box_iou", "distill", "write_distilled_set"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Distilled:
    sample: Sample
    chain: str
    attempt: int  # which of the k generations it was


def box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def answer_matches(sample: Sample, text: str, min_iou: float = 0.5) -> bool:
    """Whether ``text`` (a whole chain) is complete and its answer equals ``sample``'s label."""
    chain = parse_chain(text)
    answer = chain.answer
    if chain.status is not ChainStatus.COMPLETE or answer is None:
        return False
    truth, task, onto = sample.truth, sample.task, load_ontology()
    phase = onto.phase.require(truth.phase).name if truth.phase is not None else None
    triplets = None if truth.triplets is None else sorted((t.instrument, t.verb, t.target) for t in truth.triplets)

    def phase_ok() -> bool:
        return phase is not None and answer.phase is not None and answer.phase.label == phase

    def triplets_ok() -> bool:
        got = sorted((t.instrument.label, t.verb.label, t.target.label) for t in answer.triplets)
        return triplets is not None and got == triplets

    def cvs_ok() -> bool:
        states = cvs_states(truth)
        return states is not None and tuple(answer.cvs) == states

    if task is Task.PHASE:
        return phase_ok()
    if task is Task.PHASE_MCQ:
        expected = (sample.answer or (phase_option(truth.phase) if truth.phase else "")).strip()
        letter = expected[:1].upper() if expected else None
        return answer.option is not None and answer.option == letter
    if task is Task.TOOLS:
        if truth.tools is None:
            return False
        got = {label.name for label, _, _ in onto.tool.find(answer.text)}
        return got == {onto.tool.require(t).name for t in truth.tools}
    if task is Task.TRIPLET:
        return triplets_ok()
    if task is Task.CVS:
        return cvs_ok()
    if task is Task.LOCALISATION:
        boxes = reference_boxes(sample)
        if boxes:  # the dataset's answer: every box, in order
            return len(answer.boxes) == len(boxes) and all(
                box_iou(a, b) >= min_iou for a, b in zip(answer.boxes, boxes, strict=True)
            )
        try:
            _, boxes = localisation_target(sample)
        except CotError:
            return False
        return bool(answer.boxes) and any(box_iou(answer.boxes[0], b) >= min_iou for b in boxes)
    if task is Task.FRAME:
        checks = []
        if truth.phase is not None:
            checks.append(phase_ok())
        if truth.triplets is not None:
            checks.append(triplets_ok())
        if truth.cvs is not None:
            checks.append(cvs_ok())
        return bool(checks) and all(checks)
    return False


def distill(
    samples: Iterable[Sample],
    backend: Backend,
    k: int = 4,
    *,
    image: Callable[[Sample], np.ndarray | None] | None = None,
    image_path: Callable[[Sample], Path] | None = None,
    keep: Callable[[Sample, str], bool] = answer_matches,
    temperature: float = 0.7,
    max_new_tokens: int = 768,
    seed: int = 0,
    per_sample: int = 1,
) -> list[Distilled]:
    """Ask ``backend`` for up to ``k`` chains per sample; keep the first ``per_sample`` that pass ``keep``.

    ``image(sample)`` gives the RGB frame sent to the teacher; ``image_path(sample)`` the file the
    prompt's frame size is read from when the sample does not carry it. Backend errors skip the
    attempt (logged), never the whole run.
    """
    kept: list[Distilled] = []
    system = system_prompt()
    for sample in samples:
        try:
            prompt = user_prompt(sample, image_path(sample) if image_path else None)
        except CotError as exc:
            log.debug("no prompt for %s: %s", sample.case, exc)
            continue
        pixels = image(sample) if image else None
        good = 0
        for attempt in range(k):
            request = GenerationRequest(
                prompt=prompt,
                image=pixels,
                system=system,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                seed=seed + attempt,
            )
            try:
                text = backend.generate(request)
            except BackendError as exc:
                log.warning("teacher failed on %s (attempt %d): %s", sample.case, attempt, exc)
                continue
            if keep(sample, text):
                kept.append(Distilled(sample, text.strip(), attempt))
                good += 1
                if good >= per_sample:
                    break
    return kept


def write_distilled_set(distilled: Iterable[Distilled], images: Callable[[Sample], Path], out_jsonl: Path) -> int:
    """Distilled chains as SFT rows (same form as :func:`train.cot.datasets.write_sft_set`)."""
    return write_jsonl((sft_row(d.sample, images(d.sample), d.chain) for d in distilled), out_jsonl)
