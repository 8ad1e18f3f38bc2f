"""Incremental parser of reasoning chains, fed piece by piece as the model streams.

It reports which section is streaming and the text added to it, and each level's structured
fields the moment that level closes, so the viewer can draw boxes before the phase is decided.
Work per piece is proportional to the piece (plus a short held-back tail that might be the
start of a tag or a level header), so endless output costs linear time. It never raises on
model output: any string yields a :class:`~engine.chain.Chain` marked complete, partial or
malformed, with what could be recovered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from engine.chain import (
    Answer,
    Chain,
    ChainStatus,
    Context,
    Level,
    LevelState,
    Perception,
    Relations,
)
from engine.chain_fields import parse_answer, parse_context, parse_perception, parse_relations
from engine.ontology import Ontology, load_ontology

__all__ = [
    "AnswerClosed",
    "ChainEvent",
    "ChainParser",
    "LevelClosed",
    "LevelOpened",
    "ProblemFound",
    "TextAdded",
    "parse_chain",
]

DEFAULT_MAX_CHARS = 200_000

_TAG = r"<\s*(?P<close>/?)\s*(?P<tag>think|answer)\s*>"
_HEADER = (
    r"(?<![0-9A-Za-z])(?:Level\s*(?P<level>[123])(?:\s*\([^()\n]{0,40}\))?|L(?P<short>[123]))"
    r"\s*:"
)
_TAGS_ONLY = re.compile(_TAG, re.IGNORECASE)
_TAGS_AND_HEADERS = re.compile(f"{_TAG}|{_HEADER}", re.IGNORECASE)
# Tails that could still grow into a tag or a header: held back until the next piece decides.
_TAG_PREFIX = re.compile(r"<\s*/?\s*(?:t(?:h(?:i(?:nk?)?)?)?|a(?:n(?:s(?:w(?:er?)?)?)?)?)?\s*\Z", re.IGNORECASE)
_HEADER_PREFIX = re.compile(
    r"(?<![0-9A-Za-z])L(?:e(?:v(?:el?)?)?)?\s*(?:[123]\s*(?:\([^()\n]{0,40}\)?)?\s*)?\Z", re.IGNORECASE
)
_TASK_LEVEL = re.compile(r"\blevel\s*([123])\s+(?:task|question|problem)\b", re.IGNORECASE)
_HOLD_WINDOW = 64

OUTSIDE, PRE, LEVEL, AFTER_THINK, ANSWER, TRAILING = "outside", "preamble", "level", "after_think", "answer", "trailing"


@dataclass(frozen=True)
class TextAdded:
    """Text streamed into a section: ``preamble``, ``level1``..``level3``, ``answer``, ``other``."""

    section: str
    text: str


@dataclass(frozen=True)
class LevelOpened:
    level: int


@dataclass(frozen=True)
class LevelClosed:
    level: int
    fields: Perception | Relations | Context


@dataclass(frozen=True)
class AnswerClosed:
    answer: Answer


@dataclass(frozen=True)
class ProblemFound:
    message: str


ChainEvent = TextAdded | LevelOpened | LevelClosed | AnswerClosed | ProblemFound


@dataclass
class _LevelDraft:
    number: int
    header: str
    parts: list[str] = field(default_factory=list)
    closed: bool = False
    bad: bool = False
    fields: Perception | Relations | Context | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts).strip()


class ChainParser:
    """Feed model text with :meth:`feed`; read :attr:`chain` at any time; finish with :meth:`close`."""

    def __init__(self, ontology: Ontology | None = None, max_chars: int = DEFAULT_MAX_CHARS):
        self.ontology = ontology or load_ontology()
        self.max_chars = max_chars
        self._pieces: list[str] = []
        self._size = 0
        self._pending = ""
        self._last_char = ""
        self._section = OUTSIDE
        self._outside: list[str] = []
        self._preamble: list[str] = []
        self._between: list[str] = []
        self._answer: list[str] = []
        self._trailing: list[str] = []
        self._trailing_text = False  # something other than blanks came after </answer>
        self._levels: list[_LevelDraft] = []
        self._seen_levels: set[int] = set()  # at most {1, 2, 3}: repeated headers stay O(1) each
        self._think_opened = self._think_closed = False
        self._answer_opened = self._answer_closed = False
        self._answer_value: Answer | None = None
        self._problems: list[str] = []
        self._events: list[ChainEvent] = []
        self._closed = False
        self._saw_marker = False
        self._final: Chain | None = None

    # ----------------------------------------------------------------- streaming
    def feed(self, piece: str) -> list[ChainEvent]:
        """Consume one piece of model output; return what it changed."""
        if self._closed or not isinstance(piece, str) or not piece:
            return []
        room = self.max_chars - self._size
        if room <= 0:
            return []
        if len(piece) > room:
            piece = piece[:room]
            self._problem(f"output longer than {self.max_chars} characters; the rest was ignored")
        self._pieces.append(piece)
        self._size += len(piece)
        self._scan(self._pending + piece, final=False)
        return self._take_events()

    def finish(self) -> list[ChainEvent]:
        """End of stream: flush the held-back tail and return what it changed (the last text,
        the last level closing, problems), as :meth:`feed` does; later calls return nothing."""
        if self._closed:
            return []
        self._scan(self._pending, final=True)
        self._closed = True
        self._close_level()
        if self._answer_opened and not self._answer_closed:  # the stream ended the answer
            self._answer_value = parse_answer("".join(self._answer), self.ontology)
            self._events.append(AnswerClosed(self._answer_value))
        return self._take_events()

    def close(self) -> Chain:
        """End of stream: flush held-back text (see :meth:`finish` for its events) and return the
        final chain."""
        if self._final is None:
            self.finish()
            self._final = self._build(final=True)
        return self._final

    @property
    def chain(self) -> Chain:
        """The chain so far (fields only for levels that have closed)."""
        return self._final if self._final is not None else self._build(final=False)

    @property
    def section(self) -> str:
        """Section now streaming: outside, preamble, level1..level3, answer, ..."""
        if self._section == LEVEL and self._levels:
            return f"level{self._levels[-1].number}"
        return self._section

    # ----------------------------------------------------------------- scanning
    def _scan(self, work: str, final: bool) -> None:
        ctx = self._last_char
        text = ctx + work
        base = len(ctx)
        end = len(text) if final else self._hold_start(text, base)
        pos = base
        while True:
            pattern = _TAGS_ONLY if self._section in (ANSWER, TRAILING) else _TAGS_AND_HEADERS
            m = pattern.search(text, pos, end)
            if m is None:
                break
            self._text(text[pos : m.start()])
            self._marker(m)
            pos = m.end()
        self._text(text[pos:end])
        self._pending = text[end:]
        if end > base:
            self._last_char = text[end - 1]

    @staticmethod
    def _hold_start(text: str, base: int) -> int:
        start = max(base, len(text) - _HOLD_WINDOW)
        hold = len(text)
        for prefix in (_TAG_PREFIX, _HEADER_PREFIX):
            m = prefix.search(text, start)
            if m is not None:
                hold = min(hold, m.start())
        return hold

    def _text(self, text: str) -> None:
        if not text:
            return
        section = self._section
        if section == LEVEL:
            self._levels[-1].parts.append(text)
            self._events.append(TextAdded(f"level{self._levels[-1].number}", text))
            return
        target = {
            OUTSIDE: self._outside,
            PRE: self._preamble,
            AFTER_THINK: self._between,
            ANSWER: self._answer,
            TRAILING: self._trailing,
        }[section]
        target.append(text)
        if section == TRAILING and not self._trailing_text and text.strip():  # a flag: O(1) per piece
            self._trailing_text = True
            self._problem("text after </answer>")
        name = {PRE: "preamble", ANSWER: "answer"}.get(section, "other")
        self._events.append(TextAdded(name, text))

    def _marker(self, m: re.Match[str]) -> None:
        self._saw_marker = True
        if m.group("tag"):
            tag, closing = m.group("tag").lower(), bool(m.group("close"))
            getattr(self, f"_{'close' if closing else 'open'}_{tag}")()
        else:
            number = int(m.group("level") or m.group("short"))
            self._open_level(number, m.group(0))

    def _open_think(self) -> None:
        if self._section == OUTSIDE and not self._levels:
            if "".join(self._outside).strip():
                self._problem("text before <think>")
            self._think_opened = True
            self._section = PRE
        elif self._section in (PRE, LEVEL):
            self._problem("nested <think>")
        else:
            self._problem("a second <think> after the reasoning closed")

    def _close_think(self) -> None:
        if self._section in (PRE, LEVEL) or (self._section == OUTSIDE and self._levels):
            if not self._think_opened:
                self._problem("</think> without <think>")
            self._close_level()
            self._think_closed = True
            self._section = AFTER_THINK
        else:
            self._problem("unexpected </think>")

    def _open_answer(self) -> None:
        if self._answer_opened:
            self._problem("a second <answer>")
            self._section = TRAILING
            return
        if self._section in (PRE, LEVEL):
            self._problem("<answer> inside <think> (</think> missing)")
            self._close_level()
        elif self._section == AFTER_THINK and "".join(self._between).strip():
            self._problem("text between </think> and <answer>")
        elif self._section == OUTSIDE and "".join(self._outside).strip():
            self._problem("text before <answer>")
        self._answer_opened = True
        self._section = ANSWER

    def _close_answer(self) -> None:
        if self._section != ANSWER:
            self._problem("unexpected </answer>")
            return
        self._answer_closed = True
        self._answer_value = parse_answer("".join(self._answer), self.ontology)
        self._events.append(AnswerClosed(self._answer_value))
        self._section = TRAILING

    def _open_level(self, number: int, header: str) -> None:
        if self._section == OUTSIDE:
            self._problem("Level header outside <think>")
        self._close_level()
        draft = _LevelDraft(number, header.strip())
        if number in self._seen_levels:
            draft.bad = True
            self._problem(f"Level {number} repeated")
        elif self._seen_levels and number < max(self._seen_levels):
            draft.bad = True
            self._problem(f"Level {number} after Level {max(self._seen_levels)}")
        self._seen_levels.add(number)
        self._levels.append(draft)
        self._section = LEVEL
        self._events.append(LevelOpened(number))

    def _close_level(self) -> None:
        if self._section != LEVEL or not self._levels or self._levels[-1].closed:
            return
        draft = self._levels[-1]
        draft.closed = True
        parser = {1: parse_perception, 2: parse_relations, 3: parse_context}[draft.number]
        draft.fields = parser(draft.text, self.ontology)
        if not draft.text:
            draft.bad = True
            self._problem(f"Level {draft.number} is empty")
        self._events.append(LevelClosed(draft.number, draft.fields))

    def _problem(self, message: str) -> None:
        if message not in self._problems:
            self._problems.append(message)
            self._events.append(ProblemFound(message))

    def _take_events(self) -> list[ChainEvent]:
        events, self._events = self._events, []
        return events

    # ----------------------------------------------------------------- result
    def _task_level(self) -> int | None:
        m = _TASK_LEVEL.search("".join(self._outside) + " " + "".join(self._preamble))
        return int(m.group(1)) if m else None

    def _build(self, final: bool) -> Chain:
        problems = list(self._problems)
        raw = "".join(self._pieces)
        structured = self._saw_marker
        answer = self._answer_value
        if final and not structured and raw.strip():
            problems.append("no <think>/<answer> structure")
            answer = parse_answer(raw, self.ontology)
        elif answer is None and self._answer_opened:
            answer = parse_answer("".join(self._answer), self.ontology)
        task_level = self._task_level()
        seen = {lv.number for lv in self._levels}
        if self._think_closed or (final and self._answer_closed):
            if not self._levels and self._think_opened:
                problems.append("no Level headers in the reasoning")
            elif self._levels:
                missing = [n for n in range(1, (task_level or 3) + 1) if n not in seen]
                problems += [f"Level {n} missing" for n in missing]
        done = self._answer_closed and (self._think_closed or not self._think_opened)
        if problems:
            status = ChainStatus.MALFORMED
        elif done and (not final or not self._pending.strip()):
            status = ChainStatus.COMPLETE
        else:
            status = ChainStatus.PARTIAL
        levels = []
        fields: dict[int, Perception | Relations | Context | None] = {}
        for i, lv in enumerate(self._levels):
            streaming = not lv.closed and i == len(self._levels) - 1
            state = LevelState.MALFORMED if lv.bad else (LevelState.STREAMING if streaming else LevelState.DONE)
            levels.append(Level(lv.number, lv.text, lv.header, state))
            if lv.closed and lv.number not in fields:
                fields[lv.number] = lv.fields
        preamble = ("".join(self._outside) + "".join(self._preamble)).strip()
        return Chain(
            status=status,
            levels=tuple(levels),
            answer=answer,
            perception=fields.get(1),  # type: ignore[arg-type]
            relations=fields.get(2),  # type: ignore[arg-type]
            context=fields.get(3),  # type: ignore[arg-type]
            task_level=task_level,
            preamble=preamble,
            problems=tuple(problems),
            raw=raw,
        )


def parse_chain(text: str, ontology: Ontology | None = None) -> Chain:
    """Parse a whole model output at once (same result as feeding it piece by piece)."""
    parser = ChainParser(ontology)
    parser.feed(text if isinstance(text, str) else "")
    return parser.close()
