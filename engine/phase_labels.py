"""Read Cholec80 phase annotations and turn per-frame phases into segments."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.ontology import load_ontology
from engine.textfiles import read_lines


class LabelFileError(Exception):
    """An annotation file is missing, unreadable or not in the expected format."""


@dataclass(frozen=True)
class Segment:
    label: str
    start: int  # first frame
    end: int  # one past the last frame

    @property
    def length(self) -> int:
        return self.end - self.start


def read_cholec80_phases(path: Path) -> list[str]:
    """Canonical phase name per frame from ``videoNN-phase.txt`` (``Frame<TAB>Phase``)."""
    path = Path(path)
    lines = read_lines(path, LabelFileError)
    if not lines or lines[0].split("\t")[:2] != ["Frame", "Phase"]:
        raise LabelFileError(f"{path}: expected a 'Frame<TAB>Phase' header")
    vocab = load_ontology().phase
    phases: list[str] = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip().isdigit():
            raise LabelFileError(f"{path}:{number}: expected 'frame<TAB>phase', got {line[:60]!r}")
        if int(parts[0]) != len(phases):
            raise LabelFileError(f"{path}:{number}: frame {parts[0]} out of sequence (expected {len(phases)})")
        label = vocab.resolve(parts[1])
        if label is None:
            raise LabelFileError(f"{path}:{number}: unknown phase {parts[1]!r}")
        phases.append(label.name)
    return phases


def segments(labels: list[str]) -> list[Segment]:
    """Runs of equal consecutive labels."""
    out: list[Segment] = []
    for i, label in enumerate(labels):
        if out and out[-1].label == label:
            out[-1] = Segment(label, out[-1].start, i + 1)
        else:
            out.append(Segment(label, i, i + 1))
    return out
