"""Structured fields from the text of one level or of the answer.

Reads both the canonical form written by :mod:`engine.chain` (``Instruments: Grasper [..]``)
and free prose as Surg-R1 writes it ("a grasper retracts the gallbladder"). Labels are
resolved against the ontology; a name in an explicit list that the ontology does not know is
kept as text and flagged (``Mention.label is None``). Nothing here raises on any input.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections.abc import Callable
from functools import cache

from engine.chain import (
    Answer,
    Box,
    Context,
    CvsState,
    InstrumentSighting,
    Mention,
    Perception,
    Relations,
    TripletMention,
)
from engine.ontology import Ontology, Vocabulary

__all__ = ["parse_answer", "parse_context", "parse_perception", "parse_relations"]

_NUM = r"-?\d+(?:\.\d+)?"
_BOX_BRACKET = re.compile(rf"\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]")
_BOX_POINTS = re.compile(rf"\(\s*({_NUM})\s*,\s*({_NUM})\s*\)\s*(?:,|to|-)?\s*\(\s*({_NUM})\s*,\s*({_NUM})\s*\)")
_CONFIDENCE = re.compile(
    r"\(\s*(?:conf(?:idence)?\s*[:=]?\s*)?(0(?:\.\d+)?|1(?:\.0+)?)\s*\)|"
    r"conf(?:idence)?\s*[:=]?\s*(0(?:\.\d+)?|1(?:\.0+)?)",
    re.IGNORECASE,
)
_LIST_END = re.compile(r"\.(?=\s|$)|\n")
_NONE_ITEM = re.compile(r"^(?:none|no\b.*|nothing.*|n/?a|-)$", re.IGNORECASE)
_ARTICLE = re.compile(r"^(?:(?:a|an|the|one|two|some)\s+)+", re.IGNORECASE)

_CVS = re.compile(
    r"(?<![0-9A-Za-z])C\s*([123])\b\s*(?:\([^()]{0,40}\))?\s*(?:[:=\-]|is|was)?\s*"
    r"(not[\s_-]+assessable|non[\s_-]*assessable|unassessable|not[\s_-]+met|unmet|"
    r"not[\s_-]+achieved|not[\s_-]+satisfied|met|achieved|satisfied|yes|no|true|false|1|0|"
    r"n/?a|unclear|uncertain|unknown)\b",
    re.IGNORECASE,
)
_CVS_WORDS = {
    "met": CvsState.MET,
    "achieved": CvsState.MET,
    "satisfied": CvsState.MET,
    "yes": CvsState.MET,
    "true": CvsState.MET,
    "1": CvsState.MET,
    "notmet": CvsState.NOT_MET,
    "unmet": CvsState.NOT_MET,
    "notachieved": CvsState.NOT_MET,
    "notsatisfied": CvsState.NOT_MET,
    "no": CvsState.NOT_MET,
    "false": CvsState.NOT_MET,
    "0": CvsState.NOT_MET,
}
_MCQ = re.compile(r"^\s*\(?([A-H])[.):]\s+(.+?)\s*$", re.DOTALL)
_MCQ_BARE = re.compile(r"^\s*\(?([A-H])[.)]?\s*$")


def _label(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![0-9A-Za-z]){pattern}\s*:", re.IGNORECASE)


_INSTRUMENTS_LABEL = _label(r"(?:instruments?|tools?)(?:\s+(?:present|visible|seen|in\s+view))?")
_ANATOMY_LABEL = _label(r"(?:anatomy|anatomical\s+structures?|structures?)(?:\s+(?:present|visible|seen))?")
_TRIPLETS_LABEL = _label(r"(?:triplets?|actions?|relations?|interactions?)")
_PHASE_LABEL = re.compile(r"(?<![0-9A-Za-z])phase\s*(?::|=|is\b|-)\s*", re.IGNORECASE)
_SAFETY_LABEL = _label(r"safety(?:\s+(?:remark|note|comment))?")


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip(" \t\n.;,:*")


def _split_items(text: str) -> list[tuple[str, int]]:
    """Split a list on commas, semicolons and ' and ', never inside brackets; keep offsets."""
    items, depth, start = [], 0, 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif depth == 0 and (ch in ",;" or text.startswith(" and ", i)):
            items.append((text[start:i], start))
            i += 4 if ch == " " else 0
            start = i + 1
        i += 1
    items.append((text[start:], start))
    return [(t, s) for t, s in items if t.strip()]


def _list_after(label: re.Pattern[str], text: str, stop: re.Pattern[str] | None = None) -> tuple[str, int] | None:
    """The list that follows ``label:`` up to the end of its sentence (or the next label)."""
    m = label.search(text)
    if m is None:
        return None
    start, end = m.end(), len(text)
    if stop is not None:
        other = stop.search(text, start)
        if other:
            end = other.start()
    depth = 0
    for i in range(start, end):
        ch = text[i]
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif depth == 0 and _LIST_END.match(text, i):
            end = i
            break
    return text[start:end], start


def _box_at(text: str, start: int = 0) -> tuple[Box, int, int] | None:
    for pattern in (_BOX_BRACKET, _BOX_POINTS):
        m = pattern.search(text, start)
        if m is not None:
            x1, y1, x2, y2 = (float(g) for g in m.groups())
            return (x1, y1, x2, y2), m.start(), m.end()
    return None


def _mention(vocab: Vocabulary, text: str, offset: int) -> Mention:
    """A name from an explicit list; its span covers the name without articles or padding."""
    lead = len(text) - len(text.lstrip(" \t\n.;,:*"))
    body = text.strip(" \t\n.;,:*")
    article = _ARTICLE.match(body)
    if article:
        lead += article.end()
        body = body[article.end() :]
    name = _clean(body)
    label = vocab.resolve(name)
    return Mention(vocab.name, name, label.name if label else None, (offset + lead, offset + lead + len(body)))


def _blank(text: str, start: int, end: int) -> str:
    return text[:start] + " " * (end - start) + text[end:]


def _sighting_from_item(vocab: Vocabulary, item: str, offset: int) -> InstrumentSighting | None:
    box = confidence = box_span = None
    rest = item
    found = _box_at(item)
    if found:
        box, b0, b1 = found
        box_span = (offset + b0, offset + b1)
        rest = _blank(rest, b0, b1)
    c = _CONFIDENCE.search(rest)
    if c:
        confidence = float(c.group(1) or c.group(2))
        rest = _blank(rest, c.start(), c.end())
    rest = _without_remarks(rest)
    if not _clean(rest) or _NONE_ITEM.match(_clean(rest)):
        return None
    return InstrumentSighting(_mention(vocab, rest, offset), box, confidence, box_span)


_REMARK = re.compile(r"\([^()]*\)")


def _without_remarks(item: str) -> str:
    """The item with parenthesised remarks blanked ("Grasper (the left one, on the fundus)" names a Grasper):
    models add them to a listed name, which is no reason to call the name unknown. Offsets are kept."""
    while True:  # innermost first, so nested remarks go too
        blanked = _REMARK.sub(lambda m: " " * len(m.group(0)), item)
        if blanked == item:
            return item
        item = blanked


_BOX_LEAD = re.compile(r"^\s*(?:at|:|-|=|,)?\s*$")


def parse_perception(text: str, ontology: Ontology) -> Perception:
    """Level 1: instruments (with optional box and confidence) and visible anatomy."""
    text = text if isinstance(text, str) else ""
    instruments: list[InstrumentSighting] = []
    listed = _list_after(_INSTRUMENTS_LABEL, text, _ANATOMY_LABEL)
    if listed is not None:
        body, offset = listed
        for item, start in _split_items(body):
            sighting = _sighting_from_item(ontology.tool, item, offset + start)
            if sighting is not None:
                instruments.append(sighting)
    else:
        for label, s, e in ontology.tool.find(text):
            box = box_span = None
            near = _box_at(text[e : e + 48])
            if near and _BOX_LEAD.match(text[e : e + near[1]]):
                box, box_span = near[0], (e + near[1], e + near[2])
            instruments.append(InstrumentSighting(Mention("tool", text[s:e], label.name, (s, e)), box, None, box_span))
    anatomy: list[Mention] = []
    listed = _list_after(_ANATOMY_LABEL, text, _INSTRUMENTS_LABEL)
    if listed is not None:
        body, offset = listed
        for item, start in _split_items(body):
            item = _without_remarks(item)
            if _clean(item) and not _NONE_ITEM.match(_clean(item)):
                anatomy.append(_mention(ontology.anatomy, item, offset + start))
    else:
        overlaps = _span_index([s.name.span for s in instruments if s.name.span])
        for label, s, e in ontology.anatomy.find(text):
            if not overlaps(s, e):
                anatomy.append(Mention("anatomy", text[s:e], label.name, (s, e)))
    return Perception(tuple(_dedupe_sightings(instruments)), tuple(_dedupe(anatomy)))


def _span_index(spans: list[tuple[int, int]]) -> Callable[[int, int], bool]:
    """Whether ``[s, e)`` overlaps any of ``spans``, in O(log n) a query: scanning every instrument
    for each anatomy mention was quadratic in a long list."""
    spans = sorted(spans)
    starts = [a for a, _ in spans]
    reach = list(itertools.accumulate((b for _, b in spans), max))  # the furthest end among spans so far

    def overlaps(s: int, e: int) -> bool:
        i = bisect.bisect_left(starts, e) - 1  # the last span starting before e
        return i >= 0 and reach[i] > s

    return overlaps


def _dedupe(mentions: list[Mention]) -> list[Mention]:
    seen, out = set(), []
    for m in mentions:
        key = m.label or m.text.casefold()
        if key not in seen:
            seen.add(key)
            out.append(m)
    return out


def _dedupe_sightings(sightings: list[InstrumentSighting]) -> list[InstrumentSighting]:
    """Prose repeats names; keep each tool once unless it carries its own box (two graspers)."""
    seen, out = set(), []
    for s in sightings:
        key = s.name.label or s.name.text.casefold()
        if s.box is None and key in seen:
            continue
        seen.add(key)
        out.append(s)
    return out


@cache
def _ivt_pattern(ontology: Ontology) -> re.Pattern[str]:
    parts = [f"(?P<{name}>{getattr(ontology, name).alternation()})" for name in ("instrument", "verb", "target")]
    return re.compile(r"(?<![0-9A-Za-z])(?:" + "|".join(parts) + r")(?![0-9A-Za-z])", re.IGNORECASE)


_SEGMENT_SPLIT = re.compile(r"[;\n]|(?<=[⟩>\)\]])\s*,|\.(?=\s|$)")
_WORD = re.compile(r"[A-Za-z][A-Za-z_\-/']*")
_STOP_WORDS = {"a", "an", "the", "is", "are", "with", "to", "on", "of", "and", "by", "using", "its", "it"}


def parse_triplets(text: str, ontology: Ontology, offset: int = 0) -> list[TripletMention]:
    """⟨instrument, verb, target⟩ triplets in any written form; unknown 3-word items flagged."""
    text = text if isinstance(text, str) else ""
    found: list[TripletMention] = []
    pattern = _ivt_pattern(ontology)
    start = 0
    segments = []
    for m in _SEGMENT_SPLIT.finditer(text):
        segments.append((start, m.start()))
        start = m.end()
    segments.append((start, len(text)))
    for s0, s1 in segments:
        seg = text[s0:s1]
        # A comma-separated run of several "A B C" items, as Surg-R1 writes answers.
        pieces = [(p, s0 + off) for p, off in _comma_pieces(seg)]
        for piece, p0 in pieces:
            triplets = _triplets_in(piece, p0 + offset, pattern, ontology)
            if triplets:
                found += triplets
            else:
                unknown = _unknown_triplet(piece, p0 + offset, ontology)
                if unknown is not None:
                    found.append(unknown)
    return found


def _comma_pieces(seg: str) -> list[tuple[str, int]]:
    parts, pos = [], 0
    for chunk in seg.split(","):
        parts.append((chunk, pos))
        pos += len(chunk) + 1
    words = [len([w for w in _WORD.findall(c) if w.lower() not in _STOP_WORDS]) for c, _ in parts]
    if len(parts) > 1 and all(n >= 2 for n in words):
        return parts
    return [(seg, 0)]


def _triplets_in(piece: str, base: int, pattern: re.Pattern[str], ontology: Ontology) -> list[TripletMention]:
    out: list[TripletMention] = []
    inst = verb = None
    for m in pattern.finditer(piece):
        kind = m.lastgroup
        mention = Mention(kind, m.group(0), None, (base + m.start(), base + m.end()))
        label = getattr(ontology, kind).resolve(m.group(0))
        mention = Mention(kind, m.group(0), label.name if label else None, mention.span)
        if kind == "instrument":
            inst, verb = mention, None
        elif kind == "verb" and inst is not None:
            verb = mention
        elif kind == "target" and inst is not None and verb is not None:
            tid = ontology.triplet_id(inst.label or "", verb.label or "", mention.label or "")
            out.append(TripletMention(inst, verb, mention, tid))
            verb = None
    return out


def _unknown_triplet(piece: str, base: int, ontology: Ontology) -> TripletMention | None:
    words = [(w.group(0), w.start()) for w in _WORD.finditer(piece) if w.group(0).lower() not in _STOP_WORDS]
    if len(words) != 3 or _NONE_ITEM.match(_clean(piece)):
        return None
    vocabs = (ontology.instrument, ontology.verb, ontology.target)
    mentions = []
    for (word, start), vocab in zip(words, vocabs, strict=False):
        label = vocab.resolve(word)
        mentions.append(
            Mention(vocab.name, word, label.name if label else None, (base + start, base + start + len(word)))
        )
    return TripletMention(*mentions, triplet_id=None)


def parse_relations(text: str, ontology: Ontology) -> Relations:
    """Level 2: the triplets stated (none for a procedure without a triplet vocabulary, whose Level 2
    states an action instead: engine.action_fields)."""
    text = text if isinstance(text, str) else ""
    if not len(ontology.instrument):
        return Relations()
    m = _TRIPLETS_LABEL.search(text)
    offset = m.end() if m else 0
    return Relations(tuple(parse_triplets(text[offset:], ontology, offset)))


def parse_cvs(text: str) -> tuple[CvsState | None, CvsState | None, CvsState | None]:
    states: list[CvsState | None] = [None, None, None]
    for m in _CVS.finditer(text if isinstance(text, str) else ""):
        index = int(m.group(1)) - 1
        word = re.sub(r"[^0-9a-z]", "", m.group(2).lower())
        if states[index] is None:
            states[index] = _CVS_WORDS.get(word, CvsState.NOT_ASSESSABLE)
    return states[0], states[1], states[2]


def parse_context(text: str, ontology: Ontology) -> Context:
    """Level 3: phase, CVS criteria C1-C3 and the safety remark."""
    text = text if isinstance(text, str) else ""
    phase = None
    label = _PHASE_LABEL.search(text)
    mentions = ontology.phase.find(text)
    if label is not None:
        after = [m for m in mentions if m[1] >= label.end() and not text[label.end() : m[1]].strip(" *\"'")]
        if after:
            lab, s, e = after[0]
            phase = Mention("phase", text[s:e], lab.name, (s, e))
        else:
            end = _LIST_END.search(text, label.end())
            written = text[label.end() : end.start() if end else len(text)]
            if _clean(written):
                phase = _mention(ontology.phase, written, label.end())
    if phase is None and mentions:
        lab, s, e = mentions[0]
        phase = Mention("phase", text[s:e], lab.name, (s, e))
    safety = None
    m = _SAFETY_LABEL.search(text)
    if m is not None:
        safety = text[m.end() :].strip() or None
    return Context(phase, parse_cvs(text), safety)


def parse_answer(text: str, ontology: Ontology) -> Answer:
    """The answer in each task's form: MCQ letter and text, phase, triplets, boxes, CVS."""
    text = text if isinstance(text, str) else ""
    stripped = text.strip()
    option = option_text = None
    m = _MCQ.match(stripped)
    if m is not None:
        option, option_text = m.group(1), m.group(2).strip()
    else:
        bare = _MCQ_BARE.match(stripped)
        if bare is not None:
            option = bare.group(1)
    subject = option_text if option_text is not None else stripped
    phase = None
    label = ontology.phase.resolve(_clean(subject))
    if label is not None:
        phase = Mention("phase", _clean(subject), label.name, None)
    else:
        found = ontology.phase.find(subject)
        if found:
            lab, s, e = found[0]
            phase = Mention("phase", subject[s:e], lab.name, None)
    boxes = []
    for pattern in (_BOX_POINTS, _BOX_BRACKET):
        for b in pattern.finditer(stripped):
            boxes.append(tuple(float(g) for g in b.groups()))
        if boxes:
            break
    triplets = tuple(t for t in parse_triplets(subject, ontology) if t.known)
    return Answer(stripped, option, option_text, phase, triplets, tuple(boxes), parse_cvs(stripped))
