"""Procedure profiles: which operation a case shows, and so which labels, tasks and checks apply.

Everything surgview asks, parses, smooths and reports was written for laparoscopic cholecystectomy.
A prostatectomy's suturing or a gastric bypass has other phases, other instruments and no Critical
View of Safety. A :class:`Procedure` (``resources/ontology/procedures.yaml``) holds, for one operation:
its vocabularies (an :class:`~engine.ontology.Ontology` whose roles are filled with that procedure's
labels, so the chain parser and the timelines read it unchanged; extra ones such as ``action`` or
``step`` in ``Ontology.extra``), the tasks that apply, whether CVS and clipping apply, the words the
prompts use for the operation, colour *keys* (palette + slot; the hex values live in the app), and
the transition prior of each timeline. ``cholecystectomy`` is the default and is exactly
:func:`engine.ontology.load_ontology`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from engine.ontology import (
    Label,
    Ontology,
    OntologyError,
    Vocabulary,
    _read_yaml,
    _vocabulary,
    load_ontology,
    normalise_key,
)
from engine.resources import resource_path

__all__ = [
    "DEFAULT_PROCEDURE",
    "ColourKey",
    "Procedure",
    "ProcedureError",
    "get_procedure",
    "load_procedures",
    "procedure_for_version",
    "procedure_names",
    "procedure_of_version",
]

DEFAULT_PROCEDURE = "cholecystectomy"
PROCEDURES_FILE = "procedures.yaml"
_ROLES = Ontology.vocabulary_names()


class ProcedureError(OntologyError):
    """An unknown procedure name, or a procedures file that is incomplete."""


@dataclass(frozen=True)
class ColourKey:
    """Where a label's colour comes from: slot ``slot`` of the app's palette ``palette``."""

    palette: str
    slot: int

    def __str__(self) -> str:
        return f"{self.palette}/{self.slot}"


@dataclass(frozen=True)
class Procedure:
    name: str
    display: str
    subject: str  # how prompts name the operation: "Given the <subject> image <image>, ..."
    aliases: tuple[str, ...]
    ontology: Ontology
    tasks: tuple[str, ...]  # engine.tasks.Task values that make sense for this procedure
    default_task: str  # the one question surgview's own profile asks of every frame
    timelines: tuple[str, ...]  # tracks a viewer draws, in order (e.g. action, tool)
    cvs: bool  # the Critical View of Safety applies (cholecystectomy only)
    clipping: bool  # clip-before-cut checks apply (cholecystectomy only)
    palettes: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    transitions: dict[str, tuple[tuple[str, str, float], ...]] = field(default_factory=dict, compare=False, hash=False)

    def vocabulary(self, role: str) -> Vocabulary:
        """The procedure's vocabulary for ``role`` (``phase``, ``tool``, ``action``, ``step``, ...)."""
        return self.ontology.vocabulary(role)

    def has(self, role: str) -> bool:
        """Whether this procedure labels ``role`` at all (a bypass has no actions, a suturing case no phases)."""
        try:
            return len(self.vocabulary(role)) > 0
        except KeyError:
            return False

    def colour_key(self, role: str, label: str | Label) -> ColourKey | None:
        """The colour key of a label of ``role`` (any spelling), or None when unknown."""
        found = label if isinstance(label, Label) else self.vocabulary(role).resolve(label)
        if found is None:
            return None
        palette = self.palettes.get(role, role)
        return ColourKey(palette, int(found.extra.get("colour", self.vocabulary(role).labels.index(found))))

    def colour_keys(self, role: str) -> dict[str, ColourKey]:
        """Canonical name → colour key for every label of ``role``, in the vocabulary's order."""
        return {label.name: self.colour_key(role, label) for label in self.vocabulary(role)}  # type: ignore[misc]

    def transition_prior(self, role: str) -> tuple[tuple[str, str, float], ...]:
        """(from, to, weight) per frame of a state change for ``role``'s timeline; () = no order known."""
        return self.transitions.get(role, ())


def _empty(name: str) -> Vocabulary:
    return Vocabulary(name, [], "not used by this procedure")


def _procedure(name: str, spec: dict[str, Any], tools: dict[str, tuple[Vocabulary, str]], version: str) -> Procedure:
    common = {
        "name": name,
        "display": str(spec["display"]),
        "subject": str(spec["subject"]),
        "aliases": tuple(str(a) for a in spec.get("aliases", []) or []),
        "tasks": tuple(str(t) for t in spec["tasks"]),
        "default_task": str(spec["default_task"]),
        "timelines": tuple(str(t) for t in spec.get("timelines", []) or []),
        "cvs": bool(spec.get("cvs", False)),
        "clipping": bool(spec.get("clipping", False)),
    }
    if spec.get("builtin"):
        return Procedure(ontology=load_ontology(), palettes=dict(spec.get("palettes", {})), **common)
    vocabs = {role: _vocabulary(role, vspec) for role, vspec in (spec.get("vocabularies") or {}).items()}
    palettes = {role: str(vspec.get("palette", role)) for role, vspec in (spec.get("vocabularies") or {}).items()}
    if spec.get("tool"):
        key = str(spec["tool"])
        if key not in tools:
            raise ProcedureError(f"procedure {name!r} names tool vocabulary {key!r}, which is not defined")
        vocabs["tool"], palettes["tool"] = tools[key]
    roles = {role: vocabs.pop(role, _empty(role)) for role in _ROLES}
    ontology = Ontology(version=version, triplets=(), procedure=name, extra=vocabs, **roles)
    transitions = {}
    for role, rows in (spec.get("transitions") or {}).items():
        vocab = ontology.vocabulary(role)
        checked = []
        for src, dst, weight in rows:
            for end in (src, dst):
                if vocab.resolve(str(end)) is None:
                    raise ProcedureError(f"procedure {name!r}: transition names unknown {role} {end!r}")
            checked.append((vocab.require(str(src)).name, vocab.require(str(dst)).name, float(weight)))
        transitions[role] = tuple(checked)
    return Procedure(ontology=ontology, palettes=palettes, transitions=transitions, **common)


@cache
def load_procedures(directory: Path | None = None) -> dict[str, Procedure]:
    """Every procedure of ``resources/ontology/procedures.yaml`` (loaded once), by canonical name."""
    directory = directory or resource_path("ontology")
    data = _read_yaml(directory / PROCEDURES_FILE)
    try:
        version = str(data["version"])
        tools = {
            str(key): (_vocabulary("tool", spec), str(spec.get("palette", "tool")))
            for key, spec in (data.get("tool_vocabularies") or {}).items()
        }
        out = {str(n): _procedure(str(n), spec, tools, version) for n, spec in data["procedures"].items()}
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ProcedureError(f"{directory / PROCEDURES_FILE} is incomplete: {exc!r}") from exc
    if DEFAULT_PROCEDURE not in out:
        raise ProcedureError(f"{directory / PROCEDURES_FILE} has no {DEFAULT_PROCEDURE!r} procedure")
    spellings: dict[str, str] = {}
    for proc in out.values():
        for spelling in (proc.name, proc.display, *proc.aliases):
            key = normalise_key(spelling)
            if spellings.setdefault(key, proc.name) != proc.name:
                raise ProcedureError(f"procedure spelling {spelling!r} names both {spellings[key]} and {proc.name}")
    return out


def procedure_names() -> list[str]:
    return list(load_procedures())


def get_procedure(name: str | None = None) -> Procedure:
    """The procedure ``name`` names in any spelling (``RARP``, ``gastric bypass``, ``lap chole``);
    the default (cholecystectomy) for None or ""."""
    procedures = load_procedures()
    if not name:
        return procedures[DEFAULT_PROCEDURE]
    key = normalise_key(name)
    for proc in procedures.values():
        if key in {normalise_key(s) for s in (proc.name, proc.display, *proc.aliases)}:
            return proc
    raise ProcedureError(f"unknown procedure {name!r}; known: {', '.join(procedures)}")


def procedure_for_version(prompt_version: str) -> str:
    """Which procedure stored results of ``prompt_version`` were asked in (cholecystectomy when unmarked):
    another procedure's prompts are versioned ``<version>+<procedure>``, so the store's key says it."""
    return prompt_version.split("+", 1)[1] if "+" in prompt_version else DEFAULT_PROCEDURE


@cache
def procedure_of_version(prompt_version: str) -> Procedure:
    """The :class:`Procedure` whose ontology reads answers of ``prompt_version``; the default for a
    procedure this surgview does not know (a newer one's answers are then read as cholecystectomy's)."""
    try:
        return get_procedure(procedure_for_version(prompt_version))
    except ProcedureError:
        return get_procedure(DEFAULT_PROCEDURE)
