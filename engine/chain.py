"""The reasoning-chain contract: one frame's three-level answer as data and as text.

A :class:`Chain` is what the model, the engine, the viewer and the trainer exchange. Its text
form (DESIGN.md §2) is::

    <think>
    Level 1 (Perception): ...
    Level 2 (Relation): ...
    Level 3 (Context): ...
    </think>
    <answer>...</answer>

Chains are built from model text by :mod:`engine.chain_parser` (which never raises) or from
labels by :func:`render_perception` & co. (the CoT builder). ``to_text`` writes the canonical
form, so text → Chain → text is stable.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from enum import Enum, StrEnum
from typing import Any

__all__ = [
    "LEVEL_NAMES",
    "Answer",
    "Box",
    "Chain",
    "ChainStatus",
    "Context",
    "CvsState",
    "InstrumentSighting",
    "Level",
    "LevelState",
    "Mention",
    "Perception",
    "Relations",
    "TripletMention",
    "format_box",
    "neutralize_structure",
    "render_context",
    "render_perception",
    "render_relations",
]

LEVEL_NAMES = {1: "Perception", 2: "Relation", 3: "Context"}

Box = tuple[float, float, float, float]
"""``(x1, y1, x2, y2)`` in pixels of the original frame."""


class ChainStatus(StrEnum):
    COMPLETE = "complete"  # every expected level and the answer, closed, nothing after
    PARTIAL = "partial"  # a clean prefix of a chain (still streaming, or cut off)
    MALFORMED = "malformed"  # not a prefix of any valid chain; fields are best effort


class LevelState(StrEnum):
    STREAMING = "streaming"
    DONE = "done"
    MALFORMED = "malformed"


class CvsState(StrEnum):
    MET = "met"
    NOT_MET = "not met"
    NOT_ASSESSABLE = "not assessable"


@dataclass(frozen=True)
class Mention:
    """A label named in model text: as written, and the canonical name it resolves to.

    ``label`` is None when the name is not in the ontology: the text is kept and flagged.
    ``span`` is the character range in the text it was read from (level or answer text).
    """

    vocabulary: str
    text: str
    label: str | None
    span: tuple[int, int] | None = field(default=None, compare=False)

    @property
    def known(self) -> bool:
        return self.label is not None


@dataclass(frozen=True)
class InstrumentSighting:
    name: Mention
    box: Box | None = None
    confidence: float | None = None
    box_span: tuple[int, int] | None = field(default=None, compare=False)  # where the box is written, as name.span


@dataclass(frozen=True)
class Perception:
    instruments: tuple[InstrumentSighting, ...] = ()
    anatomy: tuple[Mention, ...] = ()


@dataclass(frozen=True)
class TripletMention:
    instrument: Mention
    verb: Mention
    target: Mention
    triplet_id: int | None = None  # CholecT50 id; None when unknown or not in the 100-triplet map

    @property
    def known(self) -> bool:
        return self.triplet_id is not None


@dataclass(frozen=True)
class Relations:
    triplets: tuple[TripletMention, ...] = ()


@dataclass(frozen=True)
class Context:
    phase: Mention | None = None
    cvs: tuple[CvsState | None, CvsState | None, CvsState | None] = (None, None, None)
    safety: str | None = None


@dataclass(frozen=True)
class Answer:
    """The final answer, read in every form the tasks use (phase, MCQ, triplets, boxes, CVS)."""

    text: str
    option: str | None = None  # MCQ letter, e.g. "B"
    option_text: str | None = None
    phase: Mention | None = None
    triplets: tuple[TripletMention, ...] = ()
    boxes: tuple[Box, ...] = ()
    cvs: tuple[CvsState | None, CvsState | None, CvsState | None] = (None, None, None)


@dataclass(frozen=True)
class Level:
    number: int
    text: str
    header: str = field(default="", compare=False)  # as written: "L1:", "Level 1 (Perception):"
    state: LevelState = LevelState.DONE


@dataclass(frozen=True)
class Chain:
    status: ChainStatus
    levels: tuple[Level, ...] = ()
    answer: Answer | None = None
    perception: Perception | None = None
    relations: Relations | None = None
    context: Context | None = None
    task_level: int | None = None  # "This is a Level N task": the chain stops at level N
    preamble: str = ""
    problems: tuple[str, ...] = ()
    raw: str = field(default="", compare=False, repr=False)

    def level(self, number: int) -> Level | None:
        return next((lv for lv in self.levels if lv.number == number), None)

    @property
    def unknown_mentions(self) -> list[Mention]:
        """Names the model used that are not in the ontology (shown flagged in the viewer)."""
        found: list[Mention] = []
        if self.perception:
            found += [s.name for s in self.perception.instruments] + list(self.perception.anatomy)
        triplets = list(self.relations.triplets) if self.relations else []
        triplets += list(self.answer.triplets) if self.answer else []
        for t in triplets:
            found += [t.instrument, t.verb, t.target]
        if self.context and self.context.phase:
            found.append(self.context.phase)
        return [m for m in found if not m.known]

    def to_text(self) -> str:
        """The canonical text form of this chain."""
        parts = ["<think>"]
        if self.preamble:
            parts.append(self.preamble)
        for lv in self.levels:
            parts.append(f"Level {lv.number} ({LEVEL_NAMES[lv.number]}): {lv.text}")
        parts.append("</think>")
        if self.answer is not None:
            parts.append(f"<answer>{self.answer.text}</answer>")
        return "\n".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the case store and the CLI)."""
        data = asdict(self)
        data.pop("raw", None)
        return _jsonable(data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def format_box(box: Box) -> str:
    return "[" + ", ".join(_number(v) for v in box) + "]"


def render_perception(perception: Perception, display: dict[str, str] | None = None) -> str:
    """Canonical Level 1 text: ``Instruments: Grasper [x1, y1, x2, y2] (0.93), Hook. Anatomy: liver.``"""
    display = display or {}
    items = []
    for s in perception.instruments:
        item = display.get(s.name.label or "", s.name.text)
        if s.box is not None:
            item += " " + format_box(s.box)
        if s.confidence is not None:
            item += f" ({s.confidence:.2f})"
        items.append(item)
    anatomy = [display.get(m.label or "", m.text) for m in perception.anatomy]
    return f"Instruments: {', '.join(items) or 'none'}. Anatomy: {', '.join(anatomy) or 'none'}."


def render_relations(relations: Relations, display: dict[str, str] | None = None) -> str:
    """Canonical Level 2 text: ``Triplets: grasper retract gallbladder; hook dissect cystic duct.``"""
    display = display or {}

    def name(m: Mention) -> str:
        return display.get(m.label or "", m.text)

    items = [f"{name(t.instrument)} {name(t.verb)} {name(t.target)}" for t in relations.triplets]
    return f"Triplets: {'; '.join(items) or 'none'}."


def render_context(context: Context, display: dict[str, str] | None = None) -> str:
    """Canonical Level 3 text: ``Phase: Calot Triangle Dissection. CVS: C1 met, C2 not met, ...``"""
    display = display or {}
    parts = []
    if context.phase is not None:
        parts.append(f"Phase: {display.get(context.phase.label or '', context.phase.text)}.")
    cvs = [f"C{i + 1} {state.value}" for i, state in enumerate(context.cvs) if state is not None]
    if cvs:
        parts.append(f"CVS: {', '.join(cvs)}.")
    if context.safety:
        parts.append(f"Safety: {neutralize_structure(context.safety)}")
    return " ".join(parts)


_STRUCTURE = re.compile(
    r"<\s*/?\s*(?:think|answer)\s*>|(?<![0-9A-Za-z])(?:Level\s*[123](?:\s*\([^()\n]{0,40}\))?|L[123])\s*:",
    re.IGNORECASE,
)


def neutralize_structure(text: str) -> str:
    """Free text written into a chain (a safety remark), with what the parser would read as structure
    made inert: ``<think>``/``<answer>`` tags get angle quotes (‹think›), a "Level 2:" header a ratio
    sign (Level 2∶), so a chain built from labels parses back as written, never as another level."""

    def inert(match: re.Match[str]) -> str:
        found = match.group(0)
        if found.lstrip().startswith("<"):
            return found.replace("<", "\u2039").replace(">", "\u203a")
        return found[:-1] + "\u2236"

    return _STRUCTURE.sub(inert, text)
