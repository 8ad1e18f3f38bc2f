"""Score a results file in the Surg-R1 release's format (one JSON object per line with
``response``, the model's full text, and ``labels``, the reference answer).

Two views side by side:

* ``accuracy``: exactly as the release's scorer counts it — take the ``<answer>`` part, drop an
  ``X.`` option letter and phrases such as "the answer is", lower-case, remove spaces; a
  prediction is right when one string equals or contains the other. Lenient by design (an
  answer listing every option "contains" the right one), so it is what papers report.
* our stricter view: the answer resolved to a canonical label through the chain parser and the
  ontology, with per-class precision, recall, F1 and Jaccard (scikit-learn), and how many
  responses parsed at each level of the chain.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sklearn.metrics import jaccard_score, precision_recall_fscore_support

from engine.chain_fields import parse_answer
from engine.chain_parser import parse_chain
from engine.ontology import load_ontology
from engine.textfiles import read_json_lines

__all__ = ["ResultsFileError", "ScoreReport", "read_results", "release_correct", "release_normalise", "score_rows"]

NO_ANSWER = "(no answer)"
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.IGNORECASE | re.DOTALL)
_OPTION_LETTER = re.compile(r"^\s*\(?[A-Za-z][.)]\s*")
_ANSWER_PHRASE = re.compile(
    r"(?:the\s+)?(?:correct\s+|final\s+)?answer\s+(?:is|would\s+be)\s*:?\s*|^\s*answer\s*:\s*", re.IGNORECASE
)


class ResultsFileError(Exception):
    """A results file is missing, unreadable or has a line that is not a result."""


def release_normalise(text: str) -> str:
    """The release scorer's normal form of a response or a label."""
    text = text if isinstance(text, str) else ""
    m = _ANSWER_BLOCK.search(text)
    if m is not None:
        text = m.group(1)
    text = _ANSWER_PHRASE.sub("", text.strip())
    text = _OPTION_LETTER.sub("", text)
    return re.sub(r"\s+", "", text.lower())


def release_correct(response: str, label: str) -> bool:
    """Right when, normalised, one string equals or contains the other (empty is never right)."""
    pred, gold = release_normalise(response), release_normalise(label)
    return bool(pred) and bool(gold) and (pred == gold or pred in gold or gold in pred)


def _canonical(answer_text: str) -> str:
    """A label for per-class metrics: the canonical phase when the answer names one."""
    answer = parse_answer(answer_text, load_ontology())
    if answer.phase is not None and answer.phase.label:
        return answer.phase.label
    normal = release_normalise(answer_text)
    return normal or NO_ANSWER


@dataclass
class ClassScore:
    precision: float
    recall: float
    f1: float
    jaccard: float
    support: int


@dataclass
class ScoreReport:
    n: int
    accuracy: float  # the release scorer's
    strict_accuracy: float  # canonical label equality
    per_class: dict[str, ClassScore] = field(default_factory=dict)
    macro: dict[str, float] = field(default_factory=dict)
    parsed: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [
            f"rows: {self.n}",
            f"accuracy (Surg-R1 release scorer): {self.accuracy:.4f}",
            f"strict accuracy (canonical labels): {self.strict_accuracy:.4f}",
        ]
        if self.macro:
            out.append("macro: " + ", ".join(f"{k} {v:.4f}" for k, v in self.macro.items()))
        if self.per_class:
            out.append(f"{'class':<28}{'precision':>10}{'recall':>10}{'f1':>10}{'jaccard':>10}{'support':>9}")
            for name, s in self.per_class.items():
                out.append(
                    f"{name:<28}{s.precision:>10.4f}{s.recall:>10.4f}{s.f1:>10.4f}{s.jaccard:>10.4f}{s.support:>9}"
                )
        out.append("parsed: " + ", ".join(f"{k} {v}" for k, v in self.parsed.items()))
        return out


def read_results(path: Path) -> list[dict]:
    """Rows of a results JSONL; every line must be an object with ``response`` and ``labels``."""
    path = Path(path)
    rows = []
    for number, row in read_json_lines(path, ResultsFileError):
        if not isinstance(row, dict) or "response" not in row or "labels" not in row:
            raise ResultsFileError(f"{path}:{number}: expected an object with 'response' and 'labels'")
        rows.append(row)
    if not rows:
        raise ResultsFileError(f"{path}: no results")
    return rows


def score_rows(rows: Iterable[dict]) -> ScoreReport:
    rows = list(rows)
    correct = 0
    gold, pred = [], []
    parsed: Counter[str] = Counter()
    for row in rows:
        response, label = str(row.get("response", "")), str(row.get("labels", ""))
        correct += release_correct(response, label)
        chain = parse_chain(response)
        parsed[chain.status.value] += 1
        for number in (1, 2, 3):
            parsed[f"level{number}"] += chain.level(number) is not None
        parsed["answer"] += chain.answer is not None and bool(chain.answer.text)
        gold.append(_canonical(label))
        pred.append(_canonical(chain.answer.text) if chain.answer is not None else NO_ANSWER)
    n = len(rows)
    report = ScoreReport(
        n=n,
        accuracy=correct / n if n else 0.0,
        strict_accuracy=sum(g == p for g, p in zip(gold, pred, strict=True)) / n if n else 0.0,
    )
    classes = sorted(set(gold))
    if classes:
        p, r, f, support = precision_recall_fscore_support(gold, pred, labels=classes, zero_division=0)
        j = jaccard_score(gold, pred, labels=classes, average=None, zero_division=0)
        report.per_class = {
            c: ClassScore(float(p[i]), float(r[i]), float(f[i]), float(j[i]), int(support[i]))
            for i, c in enumerate(classes)
        }
        report.macro = {
            "precision": float(p.mean()),
            "recall": float(r.mean()),
            "f1": float(f.mean()),
            "jaccard": float(j.mean()),
        }
    order = ["complete", "partial", "malformed", "level1", "level2", "level3", "answer"]
    report.parsed = {k: int(parsed.get(k, 0)) for k in order}
    return report
