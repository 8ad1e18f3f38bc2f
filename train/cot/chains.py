"""Three-level reasoning chains written from the labels of one :class:`~train.data.sample.Sample`.

Every chain is in the contract's text form (DESIGN.md §2)::

    <think>
    This is a Level 2 task.                      (only when the task's level N < 3)
    Level 1 (Perception): ...
    Level 2 (Relation): ...                      (omitted beyond the task's level)
    Level 3 (Context): ...
    </think>
    <answer>...</answer>

Phrasing is drawn from several templates per level (the canonical list form that
:func:`engine.chain.render_perception` & co. write, label variants of it, and prose), but every
variant parses back (:func:`engine.chain_parser.parse_chain`) to exactly the labelled fields.

Grounding rules (nothing is claimed that the labels do not support):

* Instruments: ``truth.tools`` is the complete set present. When it is known the chain lists
  every tool (with its box where ``truth.instruments`` has one; ``Instruments: none`` when the set
  is empty). When it is None, only instruments that carry a labelled box are named, in prose that
  makes no claim of completeness; with neither, Level 1 names no instrument at all.
* Anatomy: ``truth.anatomy`` is named when non-empty; empty means "not said", so nothing is said.
* Triplets: None → Level 2 names no action; ``()`` → "none".
* Phase: None → no phase is named anywhere (safety remarks never name a phase either).
* CVS: rater mean >= 0.5 → met, else not met. A criterion whose mean is NaN or None reads "not
  assessable" (the only source of that state: Endoscapes rater means are always numbers, so real
  labels never produce it). None → no CVS claim at all (no "C1"…).
* Safety remark: one sentence chosen from the phase and the CVS labels (see :func:`_safety`);
  none when both are unknown.
* A level whose labels are all unknown still needs text (an empty level is malformed): it gets a
  neutral sentence that names no label.
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

from engine.action_fields import render_action, render_step
from engine.chain import LEVEL_NAMES, CvsState, format_box
from engine.chain_fields import parse_answer
from engine.ontology import Ontology, load_ontology
from engine.procedures import DEFAULT_PROCEDURE, get_procedure
from engine.prompts import action_options
from engine.tasks import Task
from train.data.sample import Box, Sample, Truth

__all__ = [
    "CotError",
    "action_option",
    "build_chain",
    "cvs_states",
    "perceived_instruments",
    "phase_option",
    "procedure_of",
    "reference_boxes",
    "task_answer",
    "tool_display",
]


class CotError(ValueError):
    """The sample's labels cannot ground a chain for its task (e.g. a TOOLS task without tools)."""


CVS_THRESHOLD = 0.5
_CVS_GLOSS = ("two structures", "hepatocystic triangle cleared", "cystic plate exposed")


_PROCEDURE: ContextVar[str] = ContextVar("chain_procedure", default=DEFAULT_PROCEDURE)


def _onto() -> Ontology:
    """The ontology of the procedure whose sample is being written (cholecystectomy by default)."""
    name = _PROCEDURE.get()
    return load_ontology() if name == DEFAULT_PROCEDURE else get_procedure(name).ontology


@contextmanager
def procedure_of(sample: Sample) -> Iterator[None]:
    """Read ``sample``'s labels in its procedure's vocabularies while a chain or an answer is written."""
    token = _PROCEDURE.set(get_procedure(sample.procedure).name)
    try:
        yield
    finally:
        _PROCEDURE.reset(token)


# ----------------------------------------------------------------------------- label views
def tool_display(tool: str) -> str:
    label = _onto().tool.resolve(tool)
    if label is None:
        raise CotError(f"unknown tool {tool!r}")
    return label.display


def _phase_display(phase: str) -> str:
    label = _onto().phase.resolve(phase)
    if label is None:
        raise CotError(f"unknown phase {phase!r}")
    return label.display


def _display(vocabulary: str, name: str) -> str:
    try:
        vocab = _onto().vocabulary(vocabulary)
    except KeyError:
        raise CotError(f"procedure {_PROCEDURE.get()!r} has no {vocabulary} labels") from None
    label = vocab.resolve(name)
    if label is None:
        raise CotError(f"unknown {vocabulary} {name!r}")
    return label.display


def perceived_instruments(truth: Truth) -> list[tuple[str, Box | None]] | None:
    """The instruments Level 1 names, as (canonical tool, box or None), in order; None: say nothing.

    Every boxed instrument first (two graspers stay two), then each tool of ``truth.tools`` not
    yet named, without a box. None when neither tools nor boxes are labelled.
    """
    out: list[tuple[str, Box | None]] = []
    named: set[str] = set()
    for inst in truth.instruments:
        if inst.box is None:
            continue
        tool = _onto().tool.require(inst.tool).name
        # whole pixels: a label's sub-pixel digits are noise no model can read off a frame, and cost tokens
        out.append((tool, tuple(float(round(v)) for v in inst.box)))  # type: ignore[arg-type]
        named.add(tool)
    if truth.tools is None:
        return out or None
    for tool in truth.tools:
        name = _onto().tool.require(tool).name
        if name not in named:
            out.append((name, None))
            named.add(name)
    return out


def cvs_states(truth: Truth) -> tuple[CvsState, CvsState, CvsState] | None:
    """C1..C3 from rater means: >= 0.5 met, else not met; NaN/None → not assessable; None if unknown."""
    if truth.cvs is None:
        return None
    states = []
    for value in truth.cvs:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            states.append(CvsState.NOT_ASSESSABLE)
        else:
            states.append(CvsState.MET if float(value) >= CVS_THRESHOLD else CvsState.NOT_MET)
    return states[0], states[1], states[2]


def phase_option(phase: str) -> str:
    """The MCQ answer of ``phase`` in the prompt's option order, e.g. ``B. Calot Triangle Dissection``."""
    label = _onto().phase.resolve(phase)
    if label is None:
        raise CotError(f"unknown phase {phase!r}")
    index = [lab.name for lab in _onto().phase].index(label.name)
    return f"{string.ascii_uppercase[index]}. {label.display}"


def _triplet_words(truth: Truth) -> list[tuple[str, str, str, str]] | None:
    """(instrument, verb, target display names, verb canonical name) per labelled triplet."""
    if truth.triplets is None:
        return None
    return [
        (
            _display("instrument", t.instrument),
            _display("verb", t.verb),
            _display("target", t.target),
            _onto().verb.require(t.verb).name,
        )
        for t in truth.triplets
    ]


def localisation_target(sample: Sample) -> tuple[str, list[Box]]:
    """The tool a LOCALISATION sample asks about and its labelled box(es).

    ``sample.extra["instrument"]`` names the tool when the adapter sets it; otherwise the first
    instrument with a box.
    """
    boxed = [(i.tool, i.box) for i in sample.truth.instruments if i.box is not None]
    if not boxed:
        raise CotError("a localisation sample needs an instrument box")
    wanted = sample.extra.get("instrument")
    tool = _onto().tool.require(wanted).name if wanted else _onto().tool.require(boxed[0][0]).name
    boxes = [tuple(float(v) for v in b) for t, b in boxed if _onto().tool.require(t).name == tool]
    if not boxes:
        raise CotError(f"no labelled box for {tool}")
    return tool, boxes  # type: ignore[return-value]


def reference_boxes(sample: Sample) -> list[Box]:
    """The boxes of ``sample.answer`` when the dataset gives a localisation answer, else []."""
    if sample.task is not Task.LOCALISATION or not sample.answer:
        return []
    return list(parse_answer(sample.answer, _onto()).boxes)


# ----------------------------------------------------------------------------- answers
def _triplet_list(words: Sequence[tuple[str, str, str, str]], surg_r1: bool) -> str:
    if not words:
        return "none"
    if surg_r1:
        return ", ".join(" ".join(w.title() for w in (i, v, t)) for i, v, t, _ in words)
    return "; ".join(f"{i} {v} {t}" for i, v, t, _ in words)


def _cvs_text(states: Sequence[CvsState]) -> str:
    return ", ".join(f"C{k + 1} {s.value}" for k, s in enumerate(states))


def _points(box: Box) -> str:
    x1, y1, x2, y2 = format_box(box)[1:-1].split(", ")
    return f"({x1},{y1}), ({x2},{y2})"


def task_answer(sample: Sample, rng: random.Random | None = None) -> str:
    """The answer text of ``sample``'s task, from its labels.

    ``rng`` picks among equivalent forms (Surg-R1's title-case triplets, ``(x1,y1), (x2,y2)`` boxes);
    without it the canonical form is written.
    """
    with procedure_of(sample):
        return _task_answer(sample, rng)


def action_option(action: str) -> str:
    """The action MCQ answer in the release's option order and wording (``E. pulling the needle out of the tissue``)."""
    vocab = _onto().vocabulary("action")
    label = vocab.resolve(action)
    if label is None:
        raise CotError(f"unknown action {action!r}")
    index = [lab.name for lab in vocab].index(label.name)
    return action_options(_onto()).splitlines()[index]


def _action_display(action: str) -> str:
    return _display("action", action)


def _task_answer(sample: Sample, rng: random.Random | None) -> str:
    truth, task = sample.truth, sample.task
    if task is Task.PHASE:
        if truth.phase is None:
            raise CotError("a phase sample needs a phase label")
        return _phase_display(truth.phase)
    if task is Task.PHASE_MCQ:
        if sample.answer:
            return sample.answer.strip()
        if truth.phase is None:
            raise CotError("a phase MCQ sample needs a phase label or an answer")
        return phase_option(truth.phase)
    if task is Task.TOOLS:
        if truth.tools is None:
            raise CotError("a tools sample needs tool presence labels")
        names = list(dict.fromkeys(tool_display(t) for t in truth.tools))
        return ", ".join(names) or "none"
    if task is Task.TRIPLET:
        words = _triplet_words(truth)
        if words is None:
            raise CotError("a triplet sample needs triplet labels")
        return _triplet_list(words, surg_r1=rng is not None and rng.random() < 0.3)
    if task is Task.CVS:
        states = cvs_states(truth)
        if states is None:
            raise CotError("a CVS sample needs CVS rater means")
        return _cvs_text(states)
    if task is Task.LOCALISATION:
        given = reference_boxes(sample)
        if given:  # the dataset's own answer (Surg-R1 rows may ask for several objects)
            return sample.answer.strip()  # type: ignore[union-attr]
        _, boxes = localisation_target(sample)
        points = rng is not None and rng.random() < 0.3
        return ", ".join(_points(b) if points else format_box(b) for b in boxes)
    if task is Task.ACTION:
        if truth.action is None:
            raise CotError("an action sample needs an action label")
        return _action_display(truth.action)
    if task is Task.ACTION_MCQ:
        if sample.answer:
            return sample.answer.strip()
        if truth.action is None:
            raise CotError("an action MCQ sample needs an action label or an answer")
        return action_option(truth.action)
    if task is Task.STEP:
        if truth.step is None:
            raise CotError("a step sample needs a step label")
        return _display("step", truth.step)
    if task is Task.FRAME:
        parts = []
        if truth.phase is not None:
            parts.append(f"Phase: {_phase_display(truth.phase)}.")
        words = _triplet_words(truth)
        if words is not None:
            parts.append(f"Triplets: {_triplet_list(words, surg_r1=False)}.")
        states = cvs_states(truth)
        if states is not None:
            parts.append(f"CVS: {_cvs_text(states)}.")
        if not parts:
            raise CotError("a frame-analysis sample needs a phase, triplet or CVS label")
        return " ".join(parts)
    raise CotError(f"unknown task {task!r}")


# ----------------------------------------------------------------------------- Level 1
def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _and(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _level1(truth: Truth, rng: random.Random) -> str:
    instruments = perceived_instruments(truth)
    complete = truth.tools is not None
    anatomy = [_display("anatomy", a) for a in dict.fromkeys(truth.anatomy)]
    listed = complete and rng.random() < 0.5  # the canonical list form (and its label variants)
    parts = []
    if instruments is not None:
        if listed:
            head = rng.choice(
                ["Instruments", "Instruments", "Instruments visible", "Tools present", "Instruments in view"]
            )
            items = [tool_display(t) + (f" {format_box(b)}" if b else "") for t, b in instruments]
            parts.append(f"{head}: {', '.join(items) or 'none'}.")
        elif not instruments:
            parts.append(rng.choice(["No instrument is in view.", "There are no instruments in the field of view."]))
        else:
            seen: dict[str, int] = {}
            phrases = []
            for tool, box in instruments:
                word = tool_display(tool).lower()
                seen[word] = seen.get(word, 0) + 1
                det = "another" if seen[word] > 1 else _article(word)
                where = "" if box is None else rng.choice([" at ", " "]) + format_box(box)
                phrases.append(f"{det} {word}{where}")
            text = _and(phrases)
            plural = len(phrases) > 1
            form = rng.randrange(3)
            if form == 0:
                parts.append(f"{text[0].upper()}{text[1:]} {'are' if plural else 'is'} in view.")
            elif form == 1:
                parts.append(f"I can see {text}.")
            else:
                parts.append(f"The field of view shows {text}.")
    if anatomy:
        if listed or (instruments is None and rng.random() < 0.5):
            head = rng.choice(["Anatomy", "Anatomy", "Anatomy visible", "Anatomical structures"])
            parts.append(f"{head}: {', '.join(anatomy)}.")
        else:
            names = _and([a if a[:1].isupper() else f"the {a}" for a in anatomy])
            form = rng.randrange(2)
            if form == 0:
                parts.append(f"{names[0].upper()}{names[1:]} {'are' if len(anatomy) > 1 else 'is'} visible.")
            else:
                parts.append(f"Visible anatomy includes {names}.")
    if not parts:
        subject = get_procedure(_PROCEDURE.get()).subject
        view = "laparoscopic" if _PROCEDURE.get() in (DEFAULT_PROCEDURE, "bypass") else "robotic"
        parts.append(
            rng.choice(
                [
                    f"The frame shows the operative field of {_article(subject)} {subject}.",
                    f"This is {_article(view)} {view} view of the operative field.",
                ]
            )
        )
    return " ".join(parts)


# ----------------------------------------------------------------------------- Level 2
_PRESENT = {"null_verb": "is idle", "grasp": "grasps", "retract": "retracts", "dissect": "dissects",
            "coagulate": "coagulates", "clip": "clips", "cut": "cuts", "aspirate": "aspirates",
            "irrigate": "irrigates", "pack": "packs"}  # fmt: skip
_GERUND = {"null_verb": "is idle", "grasp": "is grasping", "retract": "is retracting", "dissect": "is dissecting",
           "coagulate": "is coagulating", "clip": "is clipping", "cut": "is cutting", "aspirate": "is aspirating",
           "irrigate": "is irrigating", "pack": "is packing"}  # fmt: skip


def _prose_triplet(i: str, verb_name: str, t: str, target_name: str, forms: dict[str, str]) -> str:
    verb = forms[verb_name]
    if target_name == "null_target":
        return f"the {i} {verb} with no target"
    if verb_name == "null_verb":
        return f"the {i} {verb} near the {t}"
    return f"the {i} {verb} the {t}"


def _action_level2(action: str, rng: random.Random) -> str:
    """Level 2 of a suturing frame: the action, in the canonical form or prose ("Other" only canonically)."""
    display = _action_display(action)
    name = _onto().vocabulary("action").require(action).name
    form = 0 if name == "other" else rng.randrange(3)
    if form == 0:
        return render_action(display)
    lower = display[0].lower() + display[1:]
    if form == 1:
        return f"The surgeon is {lower}."
    return f"The current suturing action is {lower}."


def _level2(truth: Truth, rng: random.Random) -> str:
    if truth.action is not None and truth.triplets is None:
        return _action_level2(truth.action, rng)
    words = _triplet_words(truth)
    if words is None:
        return rng.choice(
            [
                "The question does not turn on instrument actions.",
                "Instrument actions are not needed for this question.",
            ]
        )
    if not words:
        return rng.choice(
            [
                "Triplets: none.",
                "No instrument is acting on tissue in this frame.",
                "No instrument-tissue interaction is under way.",
            ]
        )
    form = rng.randrange(5)
    if form == 0:
        head = rng.choice(["Triplets", "Triplets", "Actions", "Interactions"])
        return f"{head}: {_triplet_list(words, surg_r1=False)}."
    if form == 1:
        return f"Triplets: {_triplet_list(words, surg_r1=True)}."
    if form == 2:
        return "Triplets: " + ", ".join(f"⟨{i}, {v}, {t}⟩" for i, v, t, _ in words) + "."
    forms = _PRESENT if form == 3 else _GERUND
    targets = [t.target for t in truth.triplets or ()]
    clauses = [
        _prose_triplet(i, vn, t, _onto().target.require(tn).name, forms)
        for (i, _, t, vn), tn in zip(words, targets, strict=True)
    ]
    joiner = rng.choice(["; ", ". ", ", and "])
    text = joiner.join(clauses) if joiner != ". " else ". ".join(c[0].upper() + c[1:] for c in clauses)
    return text[0].upper() + text[1:] + "."


# ----------------------------------------------------------------------------- Level 3
def _safety(phase: str | None, states: Sequence[CvsState] | None, rng: random.Random) -> str | None:
    """A short remark grounded in the phase and CVS labels; it never names a phase."""
    name = _onto().phase.require(phase).name if phase is not None else None
    if states is not None:
        all_met = all(s is CvsState.MET for s in states)
        if name == "ClippingCutting":
            options = (
                ["The critical view of safety is established before clipping.",
                 "All three criteria are met, so the structures may be clipped."]
                if all_met else
                ["Clipping without the critical view of safety risks a bile duct injury.",
                 "Clips should not be applied until all three criteria are met."]
            )  # fmt: skip
        elif name == "CalotTriangleDissection":
            options = (
                ["The critical view of safety is established, so clipping can proceed.",
                 "All three criteria are met; the structures may now be clipped."]
                if all_met else
                ["Dissection should continue before any clipping.",
                 "The critical view is not yet established, so nothing should be clipped."]
            )  # fmt: skip
        else:
            options = (
                ["All three criteria of the critical view of safety are met.",
                 "The critical view of safety is established in this view."]
                if all_met else
                ["The critical view of safety is not established in this view.",
                 "Not every criterion of the critical view of safety is met here."]
            )  # fmt: skip
        return rng.choice(options)
    remarks = {
        "Preparation": "Exposure of the operative field comes before any dissection.",
        "CalotTriangleDissection": "The cystic duct and artery must be identified before anything is clipped.",
        "ClippingCutting": "Clips go only on structures identified with the critical view of safety.",
        "GallbladderDissection": "Dissection should stay close to the gallbladder wall to spare the liver bed.",
        "GallbladderPackaging": "The specimen bag should hold the whole specimen to avoid spillage.",
        "CleaningCoagulation": "The liver bed should be checked for bleeding and bile leaks.",
        "GallbladderRetraction": "The specimen should leave the abdomen inside the bag.",
    }
    return remarks.get(name) if name else None


def _level3(truth: Truth, rng: random.Random) -> str:
    text = _level3_phase_cvs(truth, rng)
    if truth.step is None:
        return text
    step = render_step(_display("step", truth.step))
    if truth.phase is None and cvs_states(truth) is None:
        return step
    return f"{text} {step}"


def _level3_phase_cvs(truth: Truth, rng: random.Random) -> str:
    states = cvs_states(truth)
    safety = _safety(truth.phase, states, rng)
    if truth.phase is None and states is None:
        return rng.choice(
            [
                "The question does not turn on the surgical context.",
                "The surgical context is not needed for this question.",
            ]
        )
    if rng.random() < 0.5:  # the canonical form of render_context
        parts = []
        if truth.phase is not None:
            parts.append(f"Phase: {_phase_display(truth.phase)}.")
        if states is not None:
            parts.append(f"CVS: {_cvs_text(states)}.")
        if safety:
            parts.append(f"Safety: {safety}")
        return " ".join(parts)
    parts = []
    if truth.phase is not None:
        phase = _phase_display(truth.phase)
        parts.append(
            rng.choice(
                [
                    f"The procedure is in the {phase} phase.",
                    f"The surgical phase is {phase}.",
                    f"This frame belongs to the {phase} phase.",
                ]
            )
        )
    if states is not None:
        gloss = rng.random() < 0.5
        items = [
            f"C{k + 1}" + (f" ({_CVS_GLOSS[k]})" if gloss else "") + f" is {s.value}" for k, s in enumerate(states)
        ]
        lead = rng.choice(["For the critical view of safety, ", "", "Regarding the critical view of safety, "])
        sentence = lead + ", ".join(items[:2]) + " and " + items[2] + "."
        parts.append(sentence[0].upper() + sentence[1:])
    if safety:
        parts.append(rng.choice([safety, f"Safety: {safety}"]))
    return " ".join(parts)


# ----------------------------------------------------------------------------- chains
_PREAMBLES = {
    1: ["This is a Level 1 task.", "This is a Level 1 task, so the reasoning stops at perception."],
    2: ["This is a Level 2 task.", "This is a Level 2 task, so the reasoning stops at the relations."],
}


class CanonicalChoices(random.Random):
    """A "random" source that always takes the first template: one fixed phrasing per level.

    Varied phrasing is right for real VLMs (Surg-R1); a model of a few hundred thousand
    parameters learns the structure far better from one consistent form.
    """

    def random(self) -> float:
        return 0.0

    def choice(self, seq):
        return seq[0]

    def randrange(self, start, stop=None, step=1):
        return start if stop is not None else 0


def build_chain(sample: Sample, rng: random.Random) -> str:
    """The chain of ``sample`` in the contract's text form, stopping at its task's level.

    Raises :class:`CotError` when the labels cannot ground the task's answer.
    """
    with procedure_of(sample):
        return _build_chain(sample, rng)


def _build_chain(sample: Sample, rng: random.Random) -> str:
    answer = _task_answer(sample, rng)
    level = sample.level
    lines = ["<think>"]
    if level < 3:
        lines.append(rng.choice(_PREAMBLES[level]))
    writers = {1: _level1, 2: _level2, 3: _level3}
    for n in range(1, level + 1):
        lines.append(f"Level {n} ({LEVEL_NAMES[n]}): {writers[n](sample.truth, rng)}")
    lines += ["</think>", f"<answer>{answer}</answer>"]
    return "\n".join(lines)
