"""Evaluation report: generated responses against their samples' truth → per-task metrics, an
arena score, JSON and a Markdown table.

Each row is a response (the model's full text) and the :class:`~train.data.sample.Sample` it
answers. The response is parsed with :func:`engine.chain_parser.parse_chain`; what each task
reads from the chain (the ``predicted_*`` functions below) is:

* phase: ``Answer.phase`` else Level 3 ``Context.phase`` (canonical Cholec80 name; None: none);
* triplets: ``Answer.triplets`` when the answer names any, else Level 2 ``Relations.triplets``;
  CholecT50 ids, an unknown triplet gets its own negative id (a false positive for set-F1); each scored
  by the probability of its tokens when the row carries them (else 1), which AP ranks by;
* CVS: ``Answer.cvs`` when the answer states any criterion, else Level 3 ``Context.cvs``;
  score 1 for "met", 0 for "not met", "not assessable" or unstated;
* boxes: localisation asks for the sample's instrument(s): ``Answer.boxes`` (unlabelled) take
  the gold class when the gold boxes have a single class, else Level 1 sightings of the gold
  classes; frame analysis: every Level 1 sighting with a box, else ``Answer.boxes`` as above.
  A sighting's score is the confidence the chain states, else the probability the model gave the tokens of its
  name and box (:mod:`train.eval.confidence`, when the row carries them), else 1.
* MCQ: the raw response against ``Sample.answer`` with the release scorer.

Another procedure's samples are parsed in its ontology: action and action_mcq → action (accuracy,
macro P/R/Jaccard, segmental edit and F1@{10,25,50} per case in frame order; gold ``truth.action``,
predicted: the answer's action, else Level 2's); a bypass's phase → bypass_phase, step → step
(strict frame metrics in MultiBypass140's vocabularies).

Tasks → metric families: phase and frame analysis → phase (gold ``truth.phase``); phase_mcq →
MCQ (gold ``Sample.answer``; phase when there is none); triplet and frame → triplets (gold
``truth.triplets``); cvs and frame → CVS (``truth.cvs``); localisation and frame → boxes
(instrument boxes). The arena score is the mean of each present family's key metric (phase
accuracy, triplet ivt mAP, CVS mAP, box mAP@50, MCQ accuracy), families whose key metric is
undefined (NaN) left out — as SurgVLM-Bench and Surg-R1 rank models.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.action_fields import chain_action, chain_step
from engine.chain import Chain, CvsState
from engine.chain_parser import parse_chain
from engine.ontology import load_ontology
from engine.procedures import DEFAULT_PROCEDURE, get_procedure
from engine.tasks import Task
from train.data.sample import Sample, Truth
from train.eval.confidence import MentionScores, TokenProbs, mention_scores
from train.eval.metrics import (
    PHASES,
    action_metrics,
    box_metrics,
    cvs_metrics,
    jsonable,
    mcq_accuracy,
    phase_metrics,
    triplet_map,
    triplet_set_f1,
    triplet_sets_to_arrays,
)

__all__ = [
    "KEY_METRICS",
    "EvalRow",
    "evaluate",
    "gold_boxes",
    "gold_triplet_ids",
    "predicted_action",
    "predicted_boxes",
    "predicted_cvs",
    "predicted_phase",
    "predicted_step",
    "predicted_triplets",
    "stages_markdown",
    "to_markdown",
    "write_report",
]

KEY_METRICS = {
    "phase": ("accuracy", "phase accuracy"),
    "triplet": ("mAP_ivt", "triplet ivt mAP"),
    "cvs": ("mAP", "CVS mAP"),
    "boxes": ("mAP50", "box mAP@50"),
    "mcq": ("accuracy", "MCQ accuracy"),
    "action": ("accuracy", "action accuracy"),  # SAR-RARP50 suturing actions
    "bypass_phase": ("accuracy", "bypass phase accuracy"),  # MultiBypass140 phases (strict, no relaxation)
    "step": ("accuracy", "step accuracy"),  # MultiBypass140 steps
}
FAMILIES = tuple(KEY_METRICS)


@dataclass(frozen=True)
class EvalRow:
    response: str
    sample: Sample
    token_probs: TokenProbs | None = None  # each generated token and its probability: scores for AP
    box_scale: tuple[float, float] = (1.0, 1.0)  # the model's boxes → the truth's pixels (train.eval.run.box_scale)


def _row(row: Any) -> EvalRow:
    if isinstance(row, EvalRow):
        return row
    if isinstance(row, Mapping):
        scale = row.get("box_scale") or (1.0, 1.0)
        return EvalRow(str(row.get("response", "")), row["sample"], row.get("token_probs"), tuple(scale))
    response, sample = row
    return EvalRow(str(response), sample)


# ------------------------------------------------------------------------- chain → predictions


def predicted_phase(chain: Chain) -> str | None:
    if chain.answer is not None and chain.answer.phase is not None and chain.answer.phase.label:
        return chain.answer.phase.label
    if chain.context is not None and chain.context.phase is not None:
        return chain.context.phase.label
    return None


def predicted_triplets(chain: Chain) -> set[int]:
    mentions = chain.answer.triplets if chain.answer is not None else ()
    if not mentions and chain.relations is not None:
        mentions = chain.relations.triplets
    ids: set[int] = set()
    unknown = 0
    for t in mentions:
        if t.triplet_id is not None:
            ids.add(t.triplet_id)
        else:
            unknown += 1
            ids.add(-unknown)
    return ids


def predicted_cvs(chain: Chain) -> tuple[float, float, float]:
    states = chain.answer.cvs if chain.answer is not None else (None, None, None)
    if all(s is None for s in states) and chain.context is not None:
        states = chain.context.cvs
    return tuple(1.0 if s == CvsState.MET else 0.0 for s in states)  # type: ignore[return-value]


def gold_boxes(truth: Truth) -> list[tuple[str, tuple[float, float, float, float]]]:
    return [(ins.tool, tuple(ins.box)) for ins in truth.instruments if ins.box is not None]


def predicted_boxes(
    chain: Chain, sample: Sample, scores: Sequence[float | None] = (), scale: tuple[float, float] = (1.0, 1.0)
) -> list[tuple[str, tuple, float]]:
    """``scores``: one per Level 1 sighting (:func:`train.eval.confidence.mention_scores`), for those that state
    no confidence; ``scale``: x and y factors from the model's box units to the truth's pixels."""
    sx, sy = scale

    def px(box: Sequence[float]) -> tuple:
        return tuple(box) if (sx, sy) == (1.0, 1.0) else (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)

    gold = gold_boxes(sample.truth)
    classes = {c for c, _ in gold}
    instruments = chain.perception.instruments if chain.perception is not None else ()

    def score(k: int) -> float:
        stated = instruments[k].confidence
        if stated is None and k < len(scores):
            stated = scores[k]
        return 1.0 if stated is None else float(stated)

    sightings = [
        (s.name.label or s.name.text, px(s.box), score(k)) for k, s in enumerate(instruments) if s.box is not None
    ]
    answer = list(chain.answer.boxes) if chain.answer is not None else []
    answer_cls = next(iter(classes)) if len(classes) == 1 else "(unlabelled)"
    from_answer = [(answer_cls, px(b), 1.0) for b in answer]
    if sample.task == Task.LOCALISATION:
        return from_answer or [s for s in sightings if s[0] in classes]
    return sightings or from_answer


def gold_triplet_ids(truth: Truth) -> set[int]:
    ontology = load_ontology()
    ids: set[int] = set()
    for t in truth.triplets or ():
        tid = t.triplet_id if t.triplet_id is not None else ontology.triplet_id(t.instrument, t.verb, t.target)
        if tid is not None:
            ids.add(tid)
    return ids


# ------------------------------------------------------------------------------------ evaluate


def _procedure(sample: Sample) -> str:
    return get_procedure(getattr(sample, "procedure", None)).name


def _ontology(sample: Sample):
    name = _procedure(sample)
    return load_ontology() if name == DEFAULT_PROCEDURE else get_procedure(name).ontology


def predicted_action(chain: Chain, sample: Sample) -> str | None:
    """The action a chain states (answer, else Level 2), canonical in the sample's procedure; None: none."""
    found = chain_action(chain, _ontology(sample).vocabulary("action"))
    return found.label if found is not None else None


def predicted_step(chain: Chain, sample: Sample) -> str | None:
    found = chain_step(chain, _ontology(sample).vocabulary("step"))
    return found.label if found is not None else None


def _families(sample: Sample) -> list[str]:
    task, truth = sample.task, sample.truth
    if _procedure(sample) != DEFAULT_PROCEDURE:
        out = []
        if task in (Task.ACTION, Task.ACTION_MCQ) and truth.action is not None:
            out.append("action")
        if task in (Task.PHASE, Task.PHASE_MCQ) and truth.phase is not None:
            out.append("bypass_phase")
        if task == Task.STEP and truth.step is not None:
            out.append("step")
        return out
    frame = task == Task.FRAME
    out = []
    if task == Task.PHASE_MCQ and sample.answer:
        out.append("mcq")
    elif (task in (Task.PHASE, Task.PHASE_MCQ) or frame) and truth.phase is not None:
        out.append("phase")
    if (task == Task.TRIPLET or frame) and truth.triplets is not None:
        out.append("triplet")
    if (task == Task.CVS or frame) and truth.cvs is not None:
        out.append("cvs")
    if (task == Task.LOCALISATION or frame) and gold_boxes(truth):
        out.append("boxes")
    return out


def _frame_key(item: tuple[int, EvalRow, Chain]) -> tuple:
    position, row, _ = item
    index = row.sample.frame.index
    return (row.sample.case, index if index is not None else position, position)


def evaluate(rows: Iterable[Any], phase_fps: float = 1.0) -> dict[str, Any]:
    """Per-task metrics and the arena score of generated responses against their samples.

    ``rows``: :class:`EvalRow`, ``{"response", "sample"}`` dicts or ``(response, sample)`` pairs.
    The relaxed phase metrics take each case's phase rows in frame order as consecutive frames
    at ``phase_fps`` frames per second (Cholec80 is evaluated at 1 fps).
    """
    rows = [_row(r) for r in rows]
    chains = [
        parse_chain(r.response)
        if _procedure(r.sample) == DEFAULT_PROCEDURE
        else parse_chain(r.response, _ontology(r.sample))
        for r in rows
    ]
    mentions = [
        mention_scores(r.response, r.token_probs, c) if r.token_probs else MentionScores()
        for r, c in zip(rows, chains, strict=True)
    ]
    by_family: dict[str, list[tuple[int, EvalRow, Chain]]] = {f: [] for f in FAMILIES}
    parsed = {"complete": 0, "partial": 0, "malformed": 0}
    for position, (row, chain) in enumerate(zip(rows, chains, strict=True)):
        parsed[chain.status.value] += 1
        for family in _families(row.sample):
            by_family[family].append((position, row, chain))

    tasks: dict[str, dict[str, Any]] = {}
    items = sorted(by_family["phase"], key=_frame_key)
    if items:
        m = phase_metrics(
            [r.sample.truth.phase for _, r, _ in items],
            [predicted_phase(c) for _, _, c in items],
            labels=PHASES,
            video_ids=[r.sample.case for _, r, _ in items],
            relaxed=True,
            fps=phase_fps,
        ).to_dict()
        tasks["phase"] = m
    items = by_family["triplet"]
    if items:
        gold_sets = [gold_triplet_ids(r.sample.truth) for _, r, _ in items]
        pred_sets = [predicted_triplets(c) for _, _, c in items]
        gold, scores = triplet_sets_to_arrays(gold_sets, pred_sets, [mentions[p].triplets for p, _, _ in items])
        m = triplet_map(gold, scores)
        m.set_f1 = triplet_set_f1(gold_sets, pred_sets)
        d = m.to_dict()
        tasks["triplet"] = (
            {"n": d["n"], "backend": d["backend"], "set_f1": d["set_f1"]}
            | {f"mAP_{k}": v for k, v in d["mAP"].items()}
            | {"AP": d["AP"]}
        )
    items = by_family["cvs"]
    if items:
        groups = [(r.sample.case, r.sample.truth.phase) for _, r, _ in items]
        tasks["cvs"] = cvs_metrics(
            [r.sample.truth.cvs for _, r, _ in items],
            [predicted_cvs(c) for _, _, c in items],
            phase_groups=groups if all(phase for _, phase in groups) else None,  # none without a phase per row
        ).to_dict()
    items = by_family["boxes"]
    if items:
        tasks["boxes"] = box_metrics(
            [gold_boxes(r.sample.truth) for _, r, _ in items],
            [predicted_boxes(c, r.sample, mentions[p].sightings, r.box_scale) for p, r, c in items],
        ).to_dict()
    items = by_family["mcq"]
    if items:
        tasks["mcq"] = mcq_accuracy([r.response for _, r, _ in items], [r.sample.answer for _, r, _ in items]).to_dict()

    items = sorted(by_family["action"], key=_frame_key)
    if items:
        labels = [lab.name for lab in _ontology(items[0][1].sample).vocabulary("action")]
        tasks["action"] = action_metrics(
            [r.sample.truth.action for _, r, _ in items],
            [predicted_action(c, r.sample) for _, r, c in items],
            labels=labels,
            video_ids=[r.sample.case for _, r, _ in items],
        ).to_dict()
    for family, role, read in (("bypass_phase", "phase", predicted_phase), ("step", "step", None)):
        items = sorted(by_family[family], key=_frame_key)
        if not items:
            continue
        vocab = _ontology(items[0][1].sample).vocabulary(role)
        gold = [vocab.require(getattr(r.sample.truth, role)).name for _, r, _ in items]
        pred = [read(c) if read else predicted_step(c, r.sample) for _, r, c in items]
        tasks[family] = phase_metrics(gold, pred, labels=vocab.names).to_dict()

    keys = {}
    for family, (metric, _) in KEY_METRICS.items():
        if family in tasks:
            keys[family] = tasks[family].get(metric)
    defined = [v for v in keys.values() if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return jsonable(
        {
            "n": len(rows),
            "parsed": parsed,
            "tasks": tasks,
            "key_metrics": keys,
            "arena_score": sum(defined) / len(defined) if defined else None,
        }
    )


def headline(report: Mapping[str, Any]) -> dict[str, Any]:
    """The figures a reader of a model's manifest looks for first: phase accuracy, CVS accuracy and false "met"
    calls per criterion (per frame, and in phases whose gold never has the criterion met), triplet ivt mAP,
    box mAP@50 and the share of complete chains (None where not asked)."""
    tasks = report.get("tasks", {})
    phase, cvs = tasks.get("phase") or {}, tasks.get("cvs") or {}
    return {
        "phase_accuracy": phase.get("accuracy"),
        "cvs_accuracy": cvs.get("accuracy"),
        "cvs_false_met": cvs.get("false_met"),
        "cvs_met_outside_gold_phases": cvs.get("met_outside_gold_phases"),
        "triplet_mAP_ivt": (tasks.get("triplet") or {}).get("mAP_ivt"),
        "boxes_mAP50": (tasks.get("boxes") or {}).get("mAP50"),
        "complete_chains": report.get("format_ok"),
    }


# ------------------------------------------------------------------------------------- outputs


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{100 * value:.2f}"
    return str(value)


def _details(family: str, m: dict[str, Any]) -> str:
    if family == "phase":
        rel = m.get("relaxed") or {}
        return (
            f"P {_fmt(m['precision'])} · R {_fmt(m['recall'])} · J {_fmt(m['jaccard'])}; relaxed: "
            f"acc {_fmt(rel.get('accuracy'))} · P {_fmt(rel.get('precision'))} · R {_fmt(rel.get('recall'))} · "
            f"J {_fmt(rel.get('jaccard'))}"
        )
    if family == "triplet":
        comps = " · ".join(f"{c} {_fmt(m[f'mAP_{c}'])}" for c in ("i", "v", "t", "iv", "it"))
        return f"{comps}; set-F1 {_fmt(m['set_f1']['f1'])}"
    if family == "cvs":
        ap = " · ".join(f"C{i + 1} {_fmt(v)}" for i, v in enumerate(m["AP"]))
        return f"AP {ap}; balanced acc {_fmt(m['mean_balanced_accuracy'])}"
    if family == "boxes":
        return f"mIoU {_fmt(m['mIoU'])}; {m['n_gold']} gold / {m['n_pred']} predicted boxes"
    if family == "mcq":
        return f"{m['correct']} / {m['n']} (Surg-R1 release scorer)"
    if family == "action":
        f1 = " · ".join(f"{k} {_fmt(v)}" for k, v in m["f1"].items())
        return (
            f"P {_fmt(m['precision'])} · R {_fmt(m['recall'])} · J {_fmt(m['jaccard'])}; edit {_fmt(m['edit'])} · {f1}"
        )
    if family in ("bypass_phase", "step"):
        return f"P {_fmt(m['precision'])} · R {_fmt(m['recall'])} · J {_fmt(m['jaccard'])}"
    return ""


def to_markdown(report: Mapping[str, Any]) -> str:
    """One row per task family (key metric and the others, in %) and the arena score."""
    lines = ["| task | n | key metric | value | other metrics |", "| --- | ---: | --- | ---: | --- |"]
    for family, (metric, title) in KEY_METRICS.items():
        m = report["tasks"].get(family)
        if m is None:
            continue
        n = m.get("n", m.get("n_images"))
        lines.append(f"| {family} | {n} | {title} | {_fmt(m.get(metric))} | {_details(family, m)} |")
    lines.append(f"| **arena** | {report['n']} | mean of key metrics | **{_fmt(report.get('arena_score'))}** | |")
    return "\n".join(lines) + "\n"


def stages_markdown(reports: Mapping[str, Mapping[str, Any]]) -> str:
    """Ablation-style table: one row per stage (e.g. base, SFT, GRPO), key metrics and arena."""
    present = [f for f in FAMILIES if any(f in r["tasks"] for r in reports.values())]
    head = ["stage"] + [KEY_METRICS[f][1] for f in present] + ["arena"]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for stage, r in reports.items():
        cells = [_fmt(r["key_metrics"].get(f)) for f in present] + [_fmt(r.get("arena_score"))]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(report: Mapping[str, Any], path: Path | str, markdown: bool = True) -> Path:
    """Write ``report`` as JSON at ``path`` (and its Markdown table beside it, ``.md``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(dict(report)), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    if markdown:
        path.with_suffix(".md").write_text(to_markdown(report), encoding="utf-8")
    return path
