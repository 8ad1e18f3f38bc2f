"""Rule-based rewards for GRPO: plain functions ``(completions, **columns) -> list[float]``.

trl calls every reward function with the batch's completions and the dataset's columns as keyword
arguments (the GRPO set written by :func:`train.cot.datasets.write_grpo_set`: ``task``, ``level``,
``answer``, ``phase``, ``tools``, ``triplets``, ``cvs``, ``boxes``) and logs each under its
``__name__``, so the registry names are what TensorBoard shows.

Surg-R1 rewards only the final answer and its format; the weakness it states is a model that
reaches a right answer through a wrong chain. These rewards also score each level of the chain
against the labels (Level 1 instruments, Level 2 triplets) and the chain's agreement with itself
(the answer must say what the levels say). Every reward is in [0, 1]; where a label the reward
needs is unknown, it is 0 for every completion of that row, which gives GRPO's group-relative
advantage nothing to push on (neither reward nor penalty).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any

from engine.action_fields import parse_action, parse_step
from engine.chain import Chain, ChainStatus, CvsState
from engine.chain_fields import parse_answer
from engine.chain_parser import parse_chain
from engine.ontology import Ontology, load_ontology, normalise_key
from engine.procedures import DEFAULT_PROCEDURE, ProcedureError, get_procedure
from engine.scoring import release_correct
from train.eval.metrics import box_iou

__all__ = [
    "REWARDS",
    "RewardFunction",
    "accuracy_reward",
    "completion_text",
    "consistency_reward",
    "format_reward",
    "level1_reward",
    "level2_reward",
    "reward_functions",
    "row_procedure",
]

RewardFunction = Callable[..., list[float]]

CVS_THRESHOLD = 0.5  # rater mean at or above: met (as the CoT builder and Endoscapes' own binarisation)
# Actions that only one phase performs: a chain that clips or cuts in its Level 2 but names another
# phase at Level 3 contradicts itself. (A clipper *absent* from a ClippingCutting frame is not a
# contradiction: labelled ClippingCutting frames often show only a grasper between clips.)
_PHASE_OF_VERB = {"clip": "ClippingCutting", "cut": "ClippingCutting"}


def completion_text(completion: Any) -> str:
    """The assistant text of one completion: trl passes a string (standard data) or a message list."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        parts = []
        for message in completion:
            content = message.get("content", "") if isinstance(message, dict) else message
            if isinstance(content, list):
                parts += [p.get("text", "") for p in content if isinstance(p, dict)]
            else:
                parts.append(str(content))
        return "".join(parts)
    return str(completion or "")


def _column(columns: dict[str, Any], name: str, n: int) -> list[Any]:
    values = columns.get(name)
    if values is None:
        return [None] * n
    return list(values)


@lru_cache(maxsize=4096)
def _parse(text: str, procedure: str = DEFAULT_PROCEDURE) -> Chain:
    # trl calls every reward on the same completions: parse each text once (Chain is frozen).
    return parse_chain(text) if procedure == DEFAULT_PROCEDURE else parse_chain(text, _ontology(procedure))


def _ontology(procedure: str) -> Ontology:
    return load_ontology() if procedure == DEFAULT_PROCEDURE else get_procedure(procedure).ontology


def _parsed(completions: Sequence[Any], procedures: Sequence[str] | None = None) -> list[Chain]:
    procedures = procedures or [DEFAULT_PROCEDURE] * len(completions)
    return [_parse(completion_text(c), p) for c, p in zip(completions, procedures, strict=True)]


# Datasets whose rows carry no procedure column (sets written before procedures existed, other writers).
_DATASET_PROCEDURE = {
    "sar_rarp50": "rarp",
    "synthetic_rarp": "rarp",
    "multibypass140": "bypass",
    "endovis17": "robotic",
}
_TASK_PROCEDURE = {"action": "rarp", "action_mcq": "rarp", "step": "bypass"}


def row_procedure(row: dict[str, Any]) -> str:
    """The procedure of a GRPO row: its ``procedure`` column, else what its task or dataset implies,
    else cholecystectomy (every set written before procedures existed)."""
    for value in (
        row.get("procedure"),
        _TASK_PROCEDURE.get(str(row.get("task"))),
        _DATASET_PROCEDURE.get(str(row.get("dataset"))),
    ):
        if value:
            try:
                return get_procedure(str(value)).name
            except ProcedureError:
                return DEFAULT_PROCEDURE
    return DEFAULT_PROCEDURE


def _procedures(columns: dict[str, Any], n: int) -> list[str]:
    return [row_procedure(r) for r in _rows(columns, n)]


def _f1(gold: set, pred: set) -> float:
    if not gold and not pred:
        return 1.0
    if not gold or not pred:
        return 0.0
    hits = len(gold & pred)
    return 2 * hits / (len(gold) + len(pred))


# ----------------------------------------------------------------------------- label views
def _tool(onto: Ontology, name: str | None) -> str | None:
    label = onto.tool.resolve(name) if name else None
    return label.name if label else None


def _tool_set(onto: Ontology, names: Iterable[str]) -> set[str]:
    return {t for t in (_tool(onto, n) for n in names) if t}


def _gold_triplets(onto: Ontology, rows: Iterable[str]) -> set[tuple[str, str, str]]:
    out = set()
    for row in rows:
        parts = [p.strip() for p in str(row).split(",")]
        if len(parts) != 3:
            continue
        i, v, t = onto.instrument.resolve(parts[0]), onto.verb.resolve(parts[1]), onto.target.resolve(parts[2])
        if i and v and t:
            out.add((i.name, v.name, t.name))
    return out


def _chain_triplets(triplets) -> set[tuple[str, str, str]]:
    return {
        (m.instrument.label, m.verb.label, m.target.label)
        for m in triplets
        if m.instrument.label and m.verb.label and m.target.label
    }


def _gold_cvs(values: Sequence[float | None] | None) -> list[CvsState | None] | None:
    if values is None:
        return None
    out: list[CvsState | None] = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
        else:
            out.append(CvsState.MET if float(v) >= CVS_THRESHOLD else CvsState.NOT_MET)
    return out


def _cvs_score(gold: list[CvsState | None], pred: Sequence[CvsState | None]) -> float | None:
    pairs = [(g, p) for g, p in zip(gold, pred, strict=False) if g is not None]
    if not pairs:
        return None
    return sum(g == p for g, p in pairs) / len(pairs)


def _phase_name(onto: Ontology, name: str | None) -> str | None:
    label = onto.phase.resolve(name) if name else None
    return label.name if label else None


def _box_score(pred_boxes: Sequence, gold_boxes: Sequence) -> float:
    """Mean over reference boxes of the best IoU of a distinct predicted box (greedy, largest first)."""
    if not gold_boxes:
        return 1.0 if not pred_boxes else 0.0
    pairs = sorted(
        ((box_iou(tuple(g), tuple(p)), gi, pi) for gi, g in enumerate(gold_boxes) for pi, p in enumerate(pred_boxes)),
        reverse=True,
    )
    used_g: set[int] = set()
    used_p: set[int] = set()
    total = 0.0
    for iou, gi, pi in pairs:
        if gi in used_g or pi in used_p:
            continue
        used_g.add(gi)
        used_p.add(pi)
        total += iou
    return total / len(gold_boxes)


# ----------------------------------------------------------------------------- rewards
def format_reward(completions: Sequence[Any], **columns: Any) -> list[float]:
    """1 when the chain is complete (tags and levels present, in order, nothing after ``</answer>``)
    and holds exactly the levels 1..N of its task's level N; else 0."""
    levels = _column(columns, "level", len(completions))
    out = []
    for chain, level in zip(_parsed(completions, _procedures(columns, len(completions))), levels, strict=True):
        numbers = [lv.number for lv in chain.levels]
        want = list(range(1, int(level) + 1)) if level else numbers
        out.append(1.0 if chain.status is ChainStatus.COMPLETE and numbers == want and numbers else 0.0)
    return out


def _labelled(onto: Ontology, role: str, row: dict[str, Any], parse) -> str | None:
    """The row's canonical label of ``role``: its own column, else its answer column read as one."""
    try:
        vocab = onto.vocabulary(role)
    except KeyError:
        return None
    label = vocab.resolve(row.get(role)) if row.get(role) else None
    if label is not None:
        return label.name
    found = parse(str(row.get("answer") or ""), vocab, whole=True)
    return found.label if found is not None else None


def _answer_score(chain: Chain, task: str, row: dict[str, Any], onto: Ontology) -> float:
    answer = chain.answer
    if answer is None:
        return 0.0
    if task in ("action", "action_mcq"):
        found = parse_action(answer.text, onto.vocabulary("action"), whole=True) if "action" in onto.extra else None
        gold = _labelled(onto, "action", row, parse_action)
        return float(gold is not None and found is not None and found.label == gold)
    if task == "step":
        found = parse_step(answer.text, onto.vocabulary("step"), whole=True) if "step" in onto.extra else None
        gold = _labelled(onto, "step", row, parse_step)
        return float(gold is not None and found is not None and found.label == gold)
    gold_phase = _phase_name(onto, row.get("phase"))
    phase_ok = None
    if gold_phase is not None:
        phase_ok = float(answer.phase is not None and answer.phase.label == gold_phase)
    if task in ("phase", "phase_mcq"):
        if phase_ok is not None and answer.phase is not None:
            return phase_ok
        reference = row.get("answer")
        return float(bool(reference) and release_correct(answer.text, str(reference)))
    if task == "tools":
        if row.get("tools") is None:
            return 0.0
        named = _tool_set(onto, (label.name for label, _, _ in onto.tool.find(answer.text)))
        none_said = "none" in answer.text.lower() and not named
        gold = _tool_set(onto, row["tools"])
        return 1.0 if (none_said and not gold) else _f1(gold, named)
    if task == "triplet":
        if row.get("triplets") is None:
            return 0.0
        return _f1(_gold_triplets(onto, row["triplets"]), _chain_triplets(answer.triplets))
    if task == "cvs":
        gold = _gold_cvs(row.get("cvs"))
        score = _cvs_score(gold, answer.cvs) if gold else None
        return score or 0.0
    if task == "localisation":
        reference = parse_answer(str(row.get("answer") or ""), onto).boxes
        return _box_score(answer.boxes, reference)
    if task == "frame_analysis":
        parts = []
        if phase_ok is not None:
            parts.append(phase_ok)
        if row.get("triplets") is not None:
            parts.append(_f1(_gold_triplets(onto, row["triplets"]), _chain_triplets(answer.triplets)))
        gold_cvs = _gold_cvs(row.get("cvs"))
        cvs = _cvs_score(gold_cvs, answer.cvs) if gold_cvs else None
        if cvs is not None:
            parts.append(cvs)
        return sum(parts) / len(parts) if parts else 0.0
    return 0.0


def _rows(columns: dict[str, Any], n: int) -> list[dict[str, Any]]:
    names = ("task", "level", "answer", "phase", "tools", "triplets", "cvs", "boxes", "procedure", "action", "step")
    names += ("dataset",)
    values = {name: _column(columns, name, n) for name in names}
    return [{name: values[name][k] for name in names} for k in range(n)]


def accuracy_reward(completions: Sequence[Any], **columns: Any) -> list[float]:
    """The task's answer against its label: phase exact; tools and triplets F1; CVS per criterion;
    boxes mean IoU; the frame-analysis answer as the mean of its labelled parts; an action or a
    step exact (in the row's procedure's vocabulary)."""
    rows = _rows(columns, len(completions))
    procedures = [row_procedure(r) for r in rows]
    return [
        _answer_score(c, str(r["task"] or ""), r, _ontology(p))
        for c, r, p in zip(_parsed(completions, procedures), rows, procedures, strict=True)
    ]


def level1_reward(completions: Sequence[Any], **columns: Any) -> list[float]:
    """Level 1's instruments against the labelled tool set (F1; "none" right when none are present)."""
    rows = _rows(columns, len(completions))
    procedures = [row_procedure(r) for r in rows]
    out = []
    for chain, row, procedure in zip(_parsed(completions, procedures), rows, procedures, strict=True):
        onto = _ontology(procedure)
        if row["tools"] is None or chain.perception is None or not any(lv.number == 1 for lv in chain.levels):
            out.append(0.0)
            continue
        named = _tool_set(onto, (s.name.label for s in chain.perception.instruments if s.name.label))
        out.append(_f1(_tool_set(onto, row["tools"]), named))
    return out


def level2_reward(completions: Sequence[Any], **columns: Any) -> list[float]:
    """Level 2's triplets against the labelled triplets (F1), for tasks whose chain reaches Level 2;
    for a suturing row, Level 2's action against the labelled action (exact)."""
    rows = _rows(columns, len(completions))
    procedures = [row_procedure(r) for r in rows]
    out = []
    for chain, row, procedure in zip(_parsed(completions, procedures), rows, procedures, strict=True):
        onto = _ontology(procedure)
        has_level = any(lv.number == 2 for lv in chain.levels)
        if "action" in onto.extra and row["triplets"] is None:
            level = chain.level(2)
            gold = _labelled(onto, "action", row, parse_action)
            said = parse_action(level.text, onto.vocabulary("action")) if level is not None else None
            out.append(float(gold is not None and said is not None and said.label == gold))
            continue
        if row["triplets"] is None or chain.relations is None or not has_level:
            out.append(0.0)
            continue
        out.append(_f1(_gold_triplets(onto, row["triplets"]), _chain_triplets(chain.relations.triplets)))
    return out


def _instrument_key(name: str | None) -> str:
    return normalise_key(name or "")


def consistency_checks(chain: Chain, procedure: str = DEFAULT_PROCEDURE) -> list[bool]:
    """Each check the chain can be held to (True: it agrees with itself). Unparsable chains: [False].

    * the answer's phase is the phase Level 3 names; the answer's CVS is Level 3's;
    * the answer's triplets are among Level 2's;
    * every instrument acting at Level 2 is seen at Level 1;
    * a Level 2 triplet is one of the dataset's valid instrument-verb-target combinations;
    * a clipping or cutting action at Level 2 goes with the ClippingCutting phase at Level 3;
    * a suturing answer's action is the action Level 2 names (another procedure's chain).
    """
    if chain.status is ChainStatus.MALFORMED or chain.answer is None:
        return [False]
    checks: list[bool] = []
    onto = _ontology(procedure)
    if "action" in onto.extra and chain.level(2) is not None:
        vocab = onto.vocabulary("action")
        said = parse_action(chain.answer.text, vocab, whole=True)
        level2 = parse_action(chain.level(2).text, vocab)  # type: ignore[union-attr]
        if said is not None and said.known and level2 is not None:
            checks.append(said.label == level2.label)
    answer, context = chain.answer, chain.context
    if answer.phase is not None and context is not None and context.phase is not None:
        checks.append(answer.phase.label == context.phase.label)
    if context is not None and any(answer.cvs) and any(context.cvs):
        checks.append(tuple(answer.cvs) == tuple(context.cvs))
    level2 = _chain_triplets(chain.relations.triplets) if chain.relations else set()
    if answer.triplets and chain.relations is not None:
        checks.append(_chain_triplets(answer.triplets) <= level2)
    if chain.relations is not None and chain.perception is not None and any(lv.number == 1 for lv in chain.levels):
        seen = {_instrument_key(s.name.label) for s in chain.perception.instruments if s.name.label}
        for triplet in chain.relations.triplets:
            if triplet.instrument.label:
                checks.append(_instrument_key(triplet.instrument.label) in seen)
            if triplet.instrument.label and triplet.verb.label and triplet.target.label:
                checks.append(triplet.triplet_id is not None)
    if chain.relations is not None and context is not None and context.phase is not None:
        for triplet in chain.relations.triplets:
            phase = _PHASE_OF_VERB.get(triplet.verb.label or "")
            if phase is not None:
                checks.append(context.phase.label == phase)
    return checks


def consistency_reward(completions: Sequence[Any], **columns: Any) -> list[float]:
    """The share of :func:`consistency_checks` a chain passes; 1 when none applies to a parsed chain."""
    procedures = _procedures(columns, len(completions))
    out = []
    for chain, procedure in zip(_parsed(completions, procedures), procedures, strict=True):
        checks = consistency_checks(chain, procedure)
        out.append(sum(checks) / len(checks) if checks else 1.0)
    return out


REWARDS: dict[str, RewardFunction] = {
    "format": format_reward,
    "accuracy": accuracy_reward,
    "level1": level1_reward,
    "level2": level2_reward,
    "consistency": consistency_reward,
}


def reward_functions(names: Sequence[str]) -> list[RewardFunction]:
    """The registered rewards, by name, each renamed so trl logs it under that name."""
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise KeyError(f"unknown reward(s) {', '.join(unknown)}; known: {', '.join(REWARDS)}")
    out = []
    for name in names:
        fn = REWARDS[name]

        def named(completions, _fn=fn, **columns):
            return _fn(completions, **columns)

        named.__name__ = name
        named.__doc__ = fn.__doc__
        out.append(named)
    return out
