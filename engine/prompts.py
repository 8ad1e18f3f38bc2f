"""Versioned prompt templates: the system prompt and one user prompt per task.

The texts live in ``resources/prompts/prompts.yaml`` so they can be reviewed and versioned
without touching code; their ``version`` goes into every model manifest, because a model
answers best to the prompts it was trained on. Vocabulary lists in the templates (phases,
tools, triplet parts) are filled from the ontology, so prompts and parser never disagree.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from engine.ontology import SAFE_LOADER, Ontology, load_ontology
from engine.procedures import DEFAULT_PROCEDURE
from engine.resources import resource_path

__all__ = [
    "IMAGE_PLACEHOLDER",
    "ProcedurePrompts",
    "PromptError",
    "PromptTemplate",
    "Prompts",
    "TaskPrompt",
    "action_options",
    "build_prompt",
    "frame_prompt",
    "load_prompts",
    "prompts_version",
    "system_prompt",
    "task_prompt",
    "user_content",
]

IMAGE_PLACEHOLDER = "<image>"
"""Where the frame goes in a user prompt (Surg-R1 / ms-swift convention); absent: before the text."""


def user_content(prompt: str, images: int) -> list[dict[str, Any]]:
    """Chat content parts for a user turn: each image where the prompt says ``<image>``.

    Training (SFT rows) and inference (the backends) both build the user turn here, so a model
    sees at run time exactly the layout it was trained on: a frame moved from the middle of the
    question to its start is, to a small model, a different prompt. Without a placeholder the
    images come first; placeholders beyond ``images`` are dropped, images beyond them appended.
    """
    segments = prompt.split(IMAGE_PLACEHOLDER)
    if images == 0:
        return [{"type": "text", "text": "image".join(segments) if len(segments) > 1 else prompt}]
    if len(segments) == 1:
        return [*([{"type": "image"}] * images), {"type": "text", "text": prompt}]
    parts: list[dict[str, Any]] = []
    placed = 0
    for index, segment in enumerate(segments):
        if segment:
            parts.append({"type": "text", "text": segment})
        if index < len(segments) - 1 and placed < images:
            parts.append({"type": "image"})
            placed += 1
    parts += [{"type": "image"}] * (images - placed)
    return _merge_text(parts)


def _merge_text(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged: list[dict[str, Any]] = []
    for part in parts:
        if part["type"] == "text" and merged and merged[-1]["type"] == "text":
            merged[-1] = {"type": "text", "text": merged[-1]["text"] + part["text"]}
        else:
            merged.append(part)
    return merged


class PromptError(Exception):
    """A prompt file is missing or invalid, or a prompt was asked for with wrong fields."""


@dataclass(frozen=True)
class PromptTemplate:
    task: str
    template: str
    description: str = ""

    @property
    def fields(self) -> tuple[str, ...]:
        """Names of the ``{fields}`` the template uses, in order of first use."""
        names = [name for _, name, _, _ in string.Formatter().parse(self.template) if name]
        return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class TaskPrompt:
    """A prompt ready to send: the user text, the system prompt, and what results are keyed on."""

    task: str
    text: str
    system: str
    version: str  # of the prompt file; the case store keys results on (model, version, task)


@dataclass(frozen=True)
class ProcedurePrompts:
    """Another procedure's system prompt and task templates (the cholecystectomy ones are the default)."""

    system: str
    tasks: dict[str, PromptTemplate]


@dataclass(frozen=True)
class Prompts:
    version: str
    system: str
    tasks: dict[str, PromptTemplate]
    procedures: dict[str, ProcedurePrompts] = field(default_factory=dict)

    def for_procedure(self, procedure: str | None) -> tuple[str, dict[str, PromptTemplate]]:
        """The system prompt and templates of ``procedure`` (canonical name; None: cholecystectomy)."""
        if not procedure or procedure == DEFAULT_PROCEDURE:
            return self.system, self.tasks
        own = self.procedures.get(procedure)
        if own is None:
            raise PromptError(f"no prompts for procedure {procedure!r}; known: {', '.join(self.procedures)}")
        return own.system, own.tasks

    def build(self, task: str, ontology: Ontology | None = None, procedure: str | None = None, **fields: Any) -> str:
        """The user prompt of ``task`` (of ``procedure``); vocabulary fields default to its ontology's lists."""
        _, tasks = self.for_procedure(procedure)
        template = tasks.get(task)
        if template is None:
            where = f" of procedure {procedure!r}" if procedure and procedure != DEFAULT_PROCEDURE else ""
            raise PromptError(f"no prompt for task {task!r}{where}; known: {', '.join(tasks)}")
        if ontology is None and procedure and procedure != DEFAULT_PROCEDURE:
            from engine.procedures import get_procedure

            ontology = get_procedure(procedure).ontology
        unused = sorted(set(fields) - set(template.fields))
        if unused:
            raise PromptError(f"prompt {task!r} has no field(s) {', '.join(unused)}; it uses {template.fields}")
        values = {**vocabulary_fields(ontology or load_ontology()), **fields}
        missing = [name for name in template.fields if name not in values]
        if missing:
            raise PromptError(f"prompt {task!r} needs field(s): {', '.join(missing)}")
        return template.template.format(**values)

    def task_prompt(
        self, task: str, ontology: Ontology | None = None, procedure: str | None = None, **fields: Any
    ) -> TaskPrompt:
        system, _ = self.for_procedure(procedure)
        return TaskPrompt(task, self.build(task, ontology, procedure, **fields), system, self.version)


def vocabulary_fields(ontology: Ontology) -> dict[str, str]:
    """Template fields filled from the ontology (display names, dataset order)."""

    def names(vocab) -> str:
        return ", ".join(label.display for label in vocab)

    letters = string.ascii_uppercase
    fields = {
        "phase_options": "\n".join(f"{letters[i]}. {label.display}" for i, label in enumerate(ontology.phase)),
        "phases": names(ontology.phase),
        "tools": names(ontology.tool),
        "instruments": names(ontology.instrument),
        "verbs": names(ontology.verb),
        "targets": names(ontology.target),
    }
    if "action" in ontology.extra:
        fields["actions"] = names(ontology.extra["action"])
        fields["action_options"] = action_options(ontology)
    if "step" in ontology.extra:
        fields["steps"] = names(ontology.extra["step"])
    return fields


def action_options(ontology: Ontology) -> str:
    """The action MCQ's options as the Surg-R1 release writes them: ``A. other``, ``B. picking-up the needle``, ..."""
    letters = string.ascii_uppercase
    labels = ontology.extra["action"].labels
    options = [label.extra.get("release", label.display.lower()) for label in labels]
    return "\n".join(f"{letters[i]}. {text}" for i, text in enumerate(options))


@cache
def load_prompts(path: Path | None = None) -> Prompts:
    """Load (once) the prompt file; the shipped ``resources/prompts/prompts.yaml`` by default."""
    path = Path(path) if path is not None else resource_path("prompts", "prompts.yaml")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)
    except OSError as exc:
        raise PromptError(f"cannot read prompt file {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise PromptError(f"prompt file {path} is not valid YAML: {exc}") from exc
    try:
        tasks = {
            str(name): PromptTemplate(str(name), str(spec["template"]), str(spec.get("description", "")))
            for name, spec in data["tasks"].items()
        }
        procedures = {
            str(name): ProcedurePrompts(
                str(spec["system"]),
                {
                    str(task): PromptTemplate(str(task), str(t["template"]), str(t.get("description", "")))
                    for task, t in spec["tasks"].items()
                },
            )
            for name, spec in (data.get("procedures") or {}).items()
        }
        prompts = Prompts(str(data["version"]), str(data["system"]), tasks, procedures)
    except (KeyError, TypeError, AttributeError) as exc:
        raise PromptError(f"prompt file {path} is incomplete: {exc!r}") from exc
    for template in [*tasks.values(), *(t for own in procedures.values() for t in own.tasks.values())]:
        try:
            template.fields  # noqa: B018 - validates the format string once, at load
        except ValueError as exc:
            raise PromptError(f"prompt {template.task!r} in {path} is not a valid template: {exc}") from exc
    return prompts


def build_prompt(task: str, procedure: str | None = None, **fields: Any) -> str:
    """The user prompt of ``task`` from the shipped templates (see :meth:`Prompts.build`)."""
    return load_prompts().build(task, procedure=procedure, **fields)


def task_prompt(task: str, procedure: str | None = None, **fields: Any) -> TaskPrompt:
    """``task``'s prompt from the shipped templates, with the system prompt and the version."""
    return load_prompts().task_prompt(task, procedure=procedure, **fields)


def frame_prompt(task: str, width: int, height: int, procedure: str | None = None) -> TaskPrompt:
    """``task``'s prompt for a frame of ``width`` x ``height`` pixels (the size is given to the
    templates that ask for boxes in pixels of the original frame)."""
    prompts = load_prompts()
    template = prompts.for_procedure(procedure)[1].get(task)
    size = {"width": width, "height": height}
    fields = {k: v for k, v in size.items() if template is not None and k in template.fields}
    return prompts.task_prompt(task, procedure=procedure, **fields)


def prompts_version() -> str:
    """Version of the shipped prompt templates (recorded in model manifests)."""
    return load_prompts().version


def system_prompt(procedure: str | None = None) -> str:
    return load_prompts().for_procedure(procedure)[0]
