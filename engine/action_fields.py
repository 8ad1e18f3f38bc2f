"""The action a chain states (the ``action`` task family, Level 2 of a suturing case).

The chain contract carries triplets at Level 2; a suturing action (SAR-RARP50) is one label of the
procedure's ``action`` vocabulary, written ``Action: pulling the needle out of the tissue.`` in the
canonical form or named in prose. It is read here, beside the chain, so the contract and its parser
stay as they are: the answer when it names an action, else Level 2's explicit ``Action:`` item, else
the first action named in Level 2's prose. "Other" is only taken from an explicit answer or label,
never from prose, where "the other instrument" is not an action.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from engine.chain import Chain, Mention
from engine.ontology import Vocabulary

__all__ = [
    "ACTION_LABEL",
    "STEP_LABEL",
    "action_rows",
    "chain_action",
    "chain_step",
    "parse_action",
    "parse_step",
    "render_action",
    "render_step",
]

ACTION_LABEL = "Action"
STEP_LABEL = "Step"
_LABELLED = re.compile(r"(?<![0-9A-Za-z])(?:suturing\s+)?actions?\s*:\s*", re.IGNORECASE)
_STEP_LABELLED = re.compile(r"(?<![0-9A-Za-z])(?:surgical\s+)?steps?\s*:\s*", re.IGNORECASE)
_MCQ = re.compile(r"^\s*\(?[A-H][.):]\s+")
_LETTER = re.compile(r"^\s*\(?([A-H])[.)]?\s*$")
_END = re.compile(r"[.;\n]")
_PROSE_ONLY_EXPLICIT = {"other"}


def render_action(display: str) -> str:
    """Canonical Level 2 text of a suturing action: ``Action: Pulling the needle out of the tissue.``"""
    return f"{ACTION_LABEL}: {display}."


def render_step(display: str) -> str:
    """Canonical Level 3 text of a surgical step: ``Step: Vertical stapling.``"""
    return f"{STEP_LABEL}: {display}."


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip(" \t\n.;,:*\"'")


def parse_action(text: str, vocabulary: Vocabulary, *, whole: bool = False) -> Mention | None:
    """The action ``text`` states, or None. ``whole``: the text is an answer (all of it may be the
    label, an MCQ option such as ``E. pulling the needle out of the tissue`` included)."""
    return _parse_labelled(text, vocabulary, _LABELLED, whole)


def parse_step(text: str, vocabulary: Vocabulary, *, whole: bool = False) -> Mention | None:
    """The surgical step ``text`` states (``Step: ...`` or a step named in prose), or None."""
    return _parse_labelled(text, vocabulary, _STEP_LABELLED, whole)


def _parse_labelled(text: str, vocabulary: Vocabulary, labelled: re.Pattern[str], whole: bool) -> Mention | None:
    if not isinstance(text, str) or not text.strip():
        return None
    if whole:
        letter = _LETTER.match(text)
        if letter is not None:  # a bare MCQ letter: the options are the vocabulary in order
            index = ord(letter.group(1)) - ord("A")
            if index < len(vocabulary):
                label = vocabulary.labels[index]
                return Mention(vocabulary.name, letter.group(1), label.name)
            return Mention(vocabulary.name, letter.group(1), None)
        bare = _clean(_MCQ.sub("", text.strip()))
        label = vocabulary.resolve(bare)
        if label is not None:
            return Mention(vocabulary.name, bare, label.name)
    m = labelled.search(text)
    if m is not None:
        end = _END.search(text, m.end())
        written = text[m.end() : end.start() if end else len(text)]
        label = vocabulary.resolve(_clean(written))
        if label is not None:
            return Mention(vocabulary.name, _clean(written), label.name, (m.end(), m.end() + len(written)))
        found = [f for f in vocabulary.find(written)]
        if found:
            lab, s, e = found[0]
            return Mention(vocabulary.name, written[s:e], lab.name, (m.end() + s, m.end() + e))
        if _clean(written):
            return Mention(vocabulary.name, _clean(written), None, (m.end(), m.end() + len(written)))
    for lab, s, e in vocabulary.find(text):
        if lab.name not in _PROSE_ONLY_EXPLICIT:
            return Mention(vocabulary.name, text[s:e], lab.name, (s, e))
    return None


def chain_action(chain: Chain, vocabulary: Vocabulary) -> Mention | None:
    """The action of a parsed chain: its answer's, else its Level 2's (None when neither says one)."""
    if chain.answer is not None:
        found = parse_action(chain.answer.text, vocabulary, whole=True)
        if found is not None and found.known:
            return found
    level = chain.level(2)
    if level is not None:
        return parse_action(level.text, vocabulary)
    return None


def chain_step(chain: Chain, vocabulary: Vocabulary) -> Mention | None:
    """The step of a parsed chain: its answer's, else its Level 3's (None when neither says one)."""
    if chain.answer is not None:
        found = parse_step(chain.answer.text, vocabulary, whole=True)
        if found is not None and found.known:
            return found
    level = chain.level(3)
    return parse_step(level.text, vocabulary) if level is not None else None


def action_rows(results: Iterable[Any], procedure: str = "rarp") -> list[tuple[int, str | None]]:
    """(frame, canonical action or None) per answer: the rows :func:`engine.timeline.build_action_track`
    smooths. A stored row (:class:`engine.timeline.TimelineRow` from ``CaseStore.timeline_rows``) carries
    its action already (the store's ``action`` column); an answer with ``raw_text`` and no ``action``
    (an evaluation's results, a :class:`engine.store.FrameResult`) is parsed in ``procedure``'s ontology."""
    from engine.chain_parser import parse_chain
    from engine.procedures import get_procedure

    proc = get_procedure(procedure)
    vocab = proc.vocabulary("action")
    out = []
    for result in results:
        if hasattr(result, "action"):
            out.append((int(result.frame), result.action))
            continue
        found = chain_action(parse_chain(result.raw_text, proc.ontology), vocab)
        out.append((int(result.frame), found.label if found is not None else None))
    return out
