"""Surgical label ontologies: Cholec80, CholecT50 and Endoscapes2023 vocabularies.

The labels live in ``resources/ontology/*.yaml`` so that they can be reviewed and versioned
without touching code. Every spelling used by the datasets and by the Surg-R1 release
resolves to one canonical label; lookups ignore case, spacing and punctuation.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from engine.resources import resource_path

__all__ = [
    "Label",
    "Ontology",
    "OntologyError",
    "Triplet",
    "UnknownLabelError",
    "Vocabulary",
    "load_ontology",
    "normalise_key",
]


class OntologyError(Exception):
    """The ontology data files are missing or inconsistent."""


class UnknownLabelError(KeyError):
    """A name that no label of a vocabulary answers to."""

    def __init__(self, vocabulary: str, text: str, suggestions: list[str]):
        self.vocabulary = vocabulary
        self.text = text
        self.suggestions = suggestions
        super().__init__(text)

    def __str__(self) -> str:
        hint = f" Did you mean {', '.join(repr(s) for s in self.suggestions)}?" if self.suggestions else ""
        return f"unknown {self.vocabulary} {self.text!r}.{hint}"


def normalise_key(text: str) -> str:
    """Lookup key: Unicode-folded, lower case, letters and digits only ("&" reads "and")."""
    text = unicodedata.normalize("NFKC", text).casefold().replace("&", "and")
    return re.sub(r"[^0-9a-z]+", "", text)


_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def _surface_words(form: str) -> list[str]:
    """Split a spelling into words: CamelCase, snake_case, kebab-case and spaces."""
    form = _CAMEL.sub(" ", form).replace("&", " and ")
    return [w for w in re.split(r"[^0-9A-Za-z]+", form) if w]


@dataclass(frozen=True)
class Label:
    """One label of a vocabulary."""

    vocabulary: str
    id: int
    name: str
    display: str
    aliases: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def spellings(self) -> tuple[str, ...]:
        return (self.name, self.display, *self.aliases)


class Vocabulary:
    """An ordered set of labels with alias-tolerant lookup and mention scanning."""

    def __init__(self, name: str, labels: list[Label], description: str = ""):
        self.name = name
        self.description = description
        self.labels: tuple[Label, ...] = tuple(labels)
        self._by_id = {label.id: label for label in labels}
        self._by_key: dict[str, Label] = {}
        for label in labels:
            for spelling in label.spellings():
                key = normalise_key(spelling)
                if not key:
                    continue
                other = self._by_key.get(key)
                if other is not None and other != label:
                    raise OntologyError(f"{name}: spelling {spelling!r} names both {other.name} and {label.name}")
                self._by_key[key] = label
        self._pattern: re.Pattern[str] | None = None

    def __iter__(self):
        return iter(self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def names(self) -> list[str]:
        return [label.name for label in self.labels]

    def by_id(self, label_id: int) -> Label:
        try:
            return self._by_id[label_id]
        except KeyError:
            raise UnknownLabelError(self.name, str(label_id), []) from None

    def resolve(self, text: str) -> Label | None:
        """The label ``text`` names, or None. Never raises."""
        if not isinstance(text, str):
            return None
        key = normalise_key(text)
        label = self._by_key.get(key)
        if label is None and key.endswith("s"):
            label = self._by_key.get(key[:-1])
        return label

    def require(self, text: str) -> Label:
        """The label ``text`` names; raises UnknownLabelError with close matches otherwise."""
        label = self.resolve(text)
        if label is None:
            close = difflib.get_close_matches(normalise_key(text), list(self._by_key), n=3, cutoff=0.6)
            suggestions = list(dict.fromkeys(self._by_key[k].display for k in close))
            raise UnknownLabelError(self.name, text, suggestions)
        return label

    def pattern(self) -> re.Pattern[str]:
        """A regex finding any spelling of any label in free text (longest spelling first)."""
        if self._pattern is None:
            self._pattern = re.compile(r"(?<![0-9A-Za-z])(?:" + self.alternation() + r")(?![0-9A-Za-z])", re.IGNORECASE)
        return self._pattern

    def alternation(self) -> str:
        if not self.labels:
            return "(?!)"  # an empty vocabulary (another procedure has no triplets) matches nothing
        forms: set[str] = set()
        for label in self.labels:
            for spelling in label.spellings():
                words = _surface_words(spelling)
                if words:
                    forms.add(r"[\s_\-/']*".join(re.escape(w) for w in words) + r"(?:e?s)?")
        return "|".join(sorted(forms, key=len, reverse=True))

    def find(self, text: str) -> list[tuple[Label, int, int]]:
        """Every label mentioned in ``text`` with its span, in order of appearance."""
        found = []
        for match in self.pattern().finditer(text):
            label = self.resolve(match.group(0))
            if label is not None:
                found.append((label, match.start(), match.end()))
        return found


@dataclass(frozen=True)
class Triplet:
    """One CholecT50 triplet class: ids of its instrument, verb and target."""

    id: int
    instrument: int
    verb: int
    target: int


@dataclass(frozen=True)
class Ontology:
    version: str
    phase: Vocabulary
    tool: Vocabulary
    instrument: Vocabulary
    verb: Vocabulary
    target: Vocabulary
    anatomy: Vocabulary
    cvs_criterion: Vocabulary
    endoscapes_class: Vocabulary
    triplets: tuple[Triplet, ...]
    procedure: str = "cholecystectomy"  # whose vocabularies these are (engine.procedures)
    extra: dict[str, Vocabulary] = field(default_factory=dict, compare=False, hash=False)  # e.g. action, step

    def vocabulary(self, name: str) -> Vocabulary:
        vocab = self.extra.get(name) if name not in self.vocabulary_names() else getattr(self, name, None)
        if not isinstance(vocab, Vocabulary):
            known = [*self.vocabulary_names(), *self.extra]
            raise KeyError(f"no vocabulary {name!r}; known: {', '.join(known)}")
        return vocab

    def names(self) -> list[str]:
        """Every vocabulary this ontology holds that has labels (the fixed roles, then the extra ones)."""
        return [n for n in self.vocabulary_names() if len(getattr(self, n))] + list(self.extra)

    @staticmethod
    def vocabulary_names() -> list[str]:
        return ["phase", "tool", "instrument", "verb", "target", "anatomy", "cvs_criterion", "endoscapes_class"]

    def triplet_id(self, instrument: str, verb: str, target: str) -> int | None:
        """The CholecT50 triplet id of ⟨instrument, verb, target⟩, or None if not in the map."""
        i, v, t = self.instrument.resolve(instrument), self.verb.resolve(verb), self.target.resolve(target)
        if i is None or v is None or t is None:
            return None
        return self._triplet_index().get((i.id, v.id, t.id))

    def triplet(self, triplet_id: int) -> tuple[Label, Label, Label]:
        for trip in self.triplets:
            if trip.id == triplet_id:
                return (
                    self.instrument.by_id(trip.instrument),
                    self.verb.by_id(trip.verb),
                    self.target.by_id(trip.target),
                )
        raise UnknownLabelError("triplet", str(triplet_id), [])

    def triplet_name(self, triplet_id: int) -> str:
        """CholecT50's spelling, e.g. ``grasper,retract,gallbladder``."""
        return ",".join(label.name for label in self.triplet(triplet_id))

    def _triplet_index(self) -> dict[tuple[int, int, int], int]:
        return _triplet_index(self.triplets)

    def tool_for_instrument(self, instrument: Label) -> Label:
        return self.tool.require(instrument.extra["tool"])


@cache
def _triplet_index(triplets: tuple[Triplet, ...]) -> dict[tuple[int, int, int], int]:
    return {(t.instrument, t.verb, t.target): t.id for t in triplets}


# libyaml's safe loader where PyYAML was built with it (10x faster: the procedures' vocabularies are read
# while a case opens); the same documents and the same refusal of arbitrary tags either way.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.load(fh, Loader=SAFE_LOADER)
    except OSError as exc:
        raise OntologyError(f"cannot read ontology file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise OntologyError(f"ontology file {path} is not valid YAML: {exc}") from exc


def _vocabulary(name: str, spec: dict[str, Any]) -> Vocabulary:
    labels = []
    for row in spec.get("labels", []):
        extra = {k: v for k, v in row.items() if k not in {"id", "name", "display", "aliases"}}
        labels.append(
            Label(
                name,
                int(row["id"]),
                str(row["name"]),
                str(row.get("display", row["name"])),
                tuple(str(a) for a in row.get("aliases", []) or []),
                extra,
            )
        )
    return Vocabulary(name, labels, spec.get("description", ""))


@cache
def load_ontology(directory: Path | None = None) -> Ontology:
    """Load (once) the ontology shipped in ``resources/ontology``."""
    directory = directory or resource_path("ontology")
    main = _read_yaml(directory / "ontology.yaml")
    trip = _read_yaml(directory / "cholect50_triplets.yaml")
    try:
        vocabs = {name: _vocabulary(name, spec) for name, spec in main["vocabularies"].items()}
        triplets = tuple(Triplet(int(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in trip["triplets"])
        ontology = Ontology(
            version=str(main["version"]),
            triplets=triplets,
            **{name: vocabs[name] for name in Ontology.vocabulary_names()},
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise OntologyError(f"ontology files in {directory} are incomplete: {exc!r}") from exc
    for t in ontology.triplets:
        try:
            ontology.triplet(t.id)
        except UnknownLabelError as exc:
            raise OntologyError(f"triplet {t.id} refers to an unknown {exc.vocabulary} id") from exc
    return ontology
