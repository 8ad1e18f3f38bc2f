"""How sure the model was of each instrument and triplet it wrote, from its own token probabilities.

Detection and triplet AP rank predictions by a score. A chain states a confidence only where the model
writes one, and the models trained here write none, so every prediction would tie at 1 and AP would fall
to precision × recall. The score of a mention is instead the probability the model gave the tokens it
wrote for it (Pix2Seq, a sequence-output detector, scores a box by its class token; a box's own tokens
count here too):

* an instrument sighting: the tokens of its name and of its box in Level 1: the name says whether the
  instrument is there at all, the coordinates' digits how sure the model is of where. Measured on the bundled
  demo model's 120 held-out frames, the box's tokens are what tell a good box from a bad one: Spearman's rank
  correlation with the box's IoU is 0.19 for the name's probability and 0.59 for the name's and box's together,
  and box mAP@50 rises from 0.189 to 0.208;
* a triplet: the tokens from its instrument to its target, where the model first wrote it (Level 2,
  else the answer); a triplet written twice keeps its higher score.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.backends.transformers_backend import TokenProbs
from engine.chain import Chain, InstrumentSighting, TripletMention

__all__ = ["MentionScores", "TokenProbs", "mention_scores"]


@dataclass(frozen=True)
class MentionScores:
    sightings: tuple[float | None, ...] = ()  # one per Level 1 instrument sighting, in order
    triplets: dict[int, float] = field(default_factory=dict)  # triplet id → score


class _Spans:
    """Character offsets of the generated tokens, to take the probability of any span of the text."""

    def __init__(self, pieces: TokenProbs):
        self.starts: list[int] = []
        self.probs: list[float] = []
        at = 0
        for text, prob in pieces:
            self.starts.append(at)
            self.probs.append(prob)
            at += len(text)
        self.length = at

    def probability(self, start: int, end: int) -> float | None:
        """The product of the probabilities of the tokens that overlap ``[start, end)``."""
        if not self.starts or start >= end or end > self.length:
            return None
        first = bisect_right(self.starts, start) - 1
        last = bisect_right(self.starts, end - 1) - 1
        return math.prod(self.probs[first : last + 1])


def _sighting_span(s: InstrumentSighting) -> tuple[int, int] | None:
    """From the first to the last character of the sighting's name and box (the name alone when it has none)."""
    if s.name.span is None:
        return None
    if s.box_span is None:
        return s.name.span
    return min(s.name.span[0], s.box_span[0]), max(s.name.span[1], s.box_span[1])


def _triplet_span(t: TripletMention) -> tuple[int, int] | None:
    if t.instrument.span is None or t.target.span is None:
        return None
    return t.instrument.span[0], t.target.span[1]


def mention_scores(text: str, pieces: TokenProbs, chain: Chain) -> MentionScores:
    """Scores for ``chain`` (parsed from ``text``); empty when the pieces do not spell the text."""
    if "".join(p for p, _ in pieces) != text:
        return MentionScores()
    spans = _Spans(pieces)
    offsets: dict[int, int] = {}
    cursor = 0
    for level in chain.levels:  # mention spans are relative to their level's text
        found = text.find(level.text, cursor) if level.text else -1
        if found >= 0:
            offsets[level.number] = found
            cursor = found + len(level.text)

    sightings: list[float | None] = []
    base = offsets.get(1)
    for s in chain.perception.instruments if chain.perception is not None else ():
        span = _sighting_span(s)
        sightings.append(None if base is None or span is None else spans.probability(base + span[0], base + span[1]))

    level2 = _triplet_scores(spans, offsets.get(2), chain.relations.triplets if chain.relations is not None else ())
    answer: dict[int, float] = {}
    if chain.answer is not None and chain.answer.triplets and chain.answer.text:
        found = text.rfind(chain.answer.text)
        answer = _triplet_scores(spans, found if found >= 0 else None, chain.answer.triplets)
    triplets = answer | level2  # where the model first wrote a triplet: Level 2 before its answer
    return MentionScores(tuple(sightings), triplets)


def _triplet_scores(spans: _Spans, base: int | None, mentions: Sequence[TripletMention]) -> dict[int, float]:
    scores: dict[int, float] = {}
    for t in mentions:
        span = _triplet_span(t)
        if base is None or span is None or t.triplet_id is None:
            continue
        score = spans.probability(base + span[0], base + span[1])
        if score is not None:
            scores[t.triplet_id] = max(score, scores.get(t.triplet_id, 0.0))
    return scores
