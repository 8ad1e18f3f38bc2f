"""SFT and GRPO rows for samples of any procedure (a suturing action, a bypass phase or step).

:mod:`train.cot.datasets` writes the cholecystectomy rows: the engine's cholecystectomy system
prompt and task prompts, label columns in Cholec80/CholecT50 names. A sample of another procedure
must be asked exactly as the engine asks it (:func:`engine.profiles.get_profile` with the
procedure: that procedure's system prompt and task template) and its labels are names of that
procedure's vocabularies. These writers do that, and delegate cholecystectomy samples unchanged to
:mod:`train.cot.datasets`, so one call writes a mixed set.

GRPO rows carry ``procedure``, ``action`` and ``step`` columns beside the usual ones (the rewards
read the procedure from them; see :func:`train.grpo.rewards.row_procedure`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from engine.modeldir import BOX_PIXELS
from engine.procedures import DEFAULT_PROCEDURE, get_procedure
from engine.prompts import IMAGE_PLACEHOLDER, build_prompt, frame_prompt, system_prompt
from engine.tasks import Task
from train.cot import datasets
from train.cot.box_units import in_units
from train.cot.chains import CanonicalChoices, CotError, build_chain, localisation_target, procedure_of, task_answer
from train.data.sample import Sample

__all__ = [
    "procedure_grpo_row",
    "procedure_label_columns",
    "procedure_sft_row",
    "procedure_user_prompt",
    "write_procedure_grpo_set",
    "write_procedure_sft_set",
]

log = logging.getLogger(__name__)


def _own(sample: Sample) -> str | None:
    """The sample's procedure when it is not the default (None: datasets.py's rows apply)."""
    name = get_procedure(sample.procedure).name
    return None if name == DEFAULT_PROCEDURE else name


def procedure_user_prompt(sample: Sample, image: Path | None = None) -> str:
    """The user turn the engine sends for ``sample``'s task in its procedure's prompts."""
    procedure = _own(sample)
    if procedure is None:
        return datasets.user_prompt(sample, image)
    if sample.question:
        text = sample.question.strip()
    elif sample.task is Task.LOCALISATION:
        width, height = _size(sample, image)
        tool, _ = localisation_target(sample)
        display = get_procedure(procedure).vocabulary("tool").require(tool).display
        text = build_prompt("localisation", procedure, width=width, height=height, instrument=display)
    elif sample.task is Task.FRAME:
        width, height = _size(sample, image)
        text = frame_prompt(sample.task.value, width, height, procedure).text
    else:
        text = build_prompt(sample.task.value, procedure)
    return text if IMAGE_PLACEHOLDER in text else IMAGE_PLACEHOLDER + text


def _size(sample: Sample, image: Path | None) -> tuple[int, int]:
    if sample.frame.width and sample.frame.height:
        return int(sample.frame.width), int(sample.frame.height)
    if image is not None and Path(image).is_file():
        from PIL import Image

        with Image.open(image) as im:
            return im.size
    raise CotError(f"frame size unknown for {sample.frame.path} (needed by the {sample.task.value} prompt)")


def _turns(sample: Sample, image: Path) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system_prompt(_own(sample))},
        {"role": "user", "content": procedure_user_prompt(sample, image)},
    ]


def procedure_sft_row(sample: Sample, image: Path, chain: str) -> dict[str, Any]:
    if _own(sample) is None:
        return datasets.sft_row(sample, image, chain)
    return {"messages": [*_turns(sample, image), {"role": "assistant", "content": chain}], "images": [str(image)]}


def procedure_label_columns(sample: Sample) -> dict[str, Any]:
    """The label columns of a sample of any procedure, in its vocabularies' canonical names."""
    procedure = _own(sample)
    if procedure is None:
        return {**datasets.label_columns(sample), "procedure": DEFAULT_PROCEDURE, "action": None, "step": None}
    proc = get_procedure(procedure)
    truth = sample.truth

    def canonical(role: str, name: str | None) -> str | None:
        if name is None:
            return None
        try:
            return proc.vocabulary(role).require(name).name
        except (KeyError, LookupError) as exc:
            raise CotError(f"{sample.case}: {exc}") from None

    return {
        "level": sample.level,
        "procedure": proc.name,
        "phase": canonical("phase", truth.phase),
        "action": canonical("action", truth.action),
        "step": canonical("step", truth.step),
        "tools": None if truth.tools is None else [canonical("tool", t) for t in truth.tools],
        "triplets": None,
        "cvs": None,
        "boxes": [
            {"tool": canonical("tool", i.tool), "box": [float(v) for v in i.box]}
            for i in truth.instruments
            if i.box is not None
        ],
        "anatomy": list(truth.anatomy),
        "dataset": sample.dataset,
        "case": sample.case,
    }


def procedure_grpo_row(sample: Sample, image: Path) -> dict[str, Any]:
    """The prompt turns, images, the task's answer (canonical form) and the label columns (a
    cholecystectomy sample's row exactly as :func:`train.cot.datasets.grpo_row` writes it)."""
    if _own(sample) is None:
        return datasets.grpo_row(sample, image)
    with procedure_of(sample):
        answer = task_answer(sample)
    return {
        "prompt": _turns(sample, image),
        "images": [str(image)],
        "task": sample.task.value,
        "answer": answer,
        **procedure_label_columns(sample),
    }


def _rows(samples: Iterable[Sample], make: Callable[[Sample], dict[str, Any]], what: str) -> Iterator[dict[str, Any]]:
    skipped = 0
    for sample in samples:
        try:
            yield make(sample)
        except CotError as exc:
            skipped += 1
            log.debug("skipped %s/%s (%s): %s", sample.case, sample.frame.index, sample.task.value, exc)
    if skipped:
        log.warning("%s set: %d sample(s) skipped because their labels cannot ground their task", what, skipped)


def write_procedure_sft_set(
    samples: Iterable[Sample],
    images: Callable[[Sample], Path],
    out_jsonl: Path,
    seed: int = 0,
    canonical: bool = False,
    direct: bool = False,
    box_units: str = BOX_PIXELS,
) -> int:
    """As :func:`train.cot.datasets.write_sft_set`, for samples of any procedure; ``box_units``: how the chains
    write boxes and the prompts ask for them (:mod:`train.cot.box_units`)."""

    def make(sample: Sample) -> dict[str, Any]:
        if direct:
            return procedure_sft_row(sample, images(sample), datasets.direct_answer(sample))
        rng = CanonicalChoices() if canonical else datasets.sample_rng(sample, seed)
        return procedure_sft_row(sample, images(sample), build_chain(sample, rng))

    return datasets.write_jsonl(_rows(samples, in_units(make, box_units), "SFT"), out_jsonl)


def write_procedure_grpo_set(
    samples: Iterable[Sample], images: Callable[[Sample], Path], out_jsonl: Path, box_units: str = BOX_PIXELS
) -> int:
    """As :func:`train.cot.datasets.write_grpo_set`, for samples of any procedure (``box_units``: as the SFT set's)."""
    make = in_units(lambda s: procedure_grpo_row(s, images(s)), box_units)
    return datasets.write_jsonl(_rows(samples, make, "GRPO"), out_jsonl)
