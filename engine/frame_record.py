"""One frame's record, merged from the answers of every question its model profile asks.

A profile may ask several questions of a frame (the Surg-R1 release: phase, action, tool boxes);
each answer is stored as its own chain, under its own task. Timelines, overlays, reports and
exports read the merged record: the phase, the CVS criteria, the instruments with their boxes in
pixels of the *source* frame, the triplets, and (another procedure's) the action and the step, all
read in the ontology of the procedure the answers were asked in. A field comes from the question that asks for it
when that one states it (the phase question's phase, the localisation question's boxes), else from
the first other answer that does. Boxes arrive in the pixels of the image the model saw and are
mapped back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from engine.action_fields import chain_action, chain_step
from engine.chain import (
    Chain,
    ChainStatus,
    Context,
    CvsState,
    InstrumentSighting,
    Mention,
    Perception,
    Relations,
    TripletMention,
)
from engine.chain_fields import parse_perception
from engine.ontology import Ontology
from engine.procedures import DEFAULT_PROCEDURE, Procedure, get_procedure, procedure_of_version
from engine.profiles import ModelProfile, Question, get_profile, profile_for_version
from engine.store import Analysis, CaseStore, FrameResult
from engine.tasks import Task
from engine.timeline import TimelineRow

__all__ = [
    "CaseAnalysis",
    "FrameRecord",
    "case_analyses",
    "merge_results",
    "merge_timeline_rows",
]

Cvs = tuple[CvsState | None, CvsState | None, CvsState | None]


@dataclass(frozen=True)
class FrameRecord:
    """What the model said about one frame, all questions together (boxes in source pixels)."""

    frame: int
    phase: Mention | None = None
    cvs: Cvs = (None, None, None)
    instruments: tuple[InstrumentSighting, ...] = ()
    triplets: tuple[TripletMention, ...] = ()
    results: Mapping[str, FrameResult] = field(default_factory=dict)  # by task, in the profile's order
    missing: tuple[str, ...] = ()  # tasks of the profile not analysed yet for this frame
    action: Mention | None = None  # the suturing action (a procedure with actions), from the action question
    step: Mention | None = None  # the surgical step (a procedure with steps), from the step question
    procedure: str = DEFAULT_PROCEDURE  # the procedure the answers were asked in (canonical name)

    @property
    def complete(self) -> bool:
        """Every question answered."""
        return not self.missing

    @property
    def status(self) -> str:
        """The weakest of the answers' chain statuses (malformed < partial < complete)."""
        order = [ChainStatus.MALFORMED.value, ChainStatus.PARTIAL.value, ChainStatus.COMPLETE.value]
        statuses = [r.status for r in self.results.values()] or [ChainStatus.PARTIAL.value]
        return min(statuses, key=lambda s: order.index(s) if s in order else 0)

    def to_chain(self) -> Chain:
        """The merged fields in a chain's shape, for what draws a chain (the canvas overlays)."""
        return Chain(
            status=ChainStatus(self.status),
            perception=Perception(self.instruments) if self.instruments else None,
            relations=Relations(self.triplets) if self.triplets else None,
            context=Context(self.phase, self.cvs) if self.phase is not None or any(self.cvs) else None,
        )

    def to_json(self) -> dict[str, Any]:
        """The merged fields as an export row carries them (labels canonical, boxes in source pixels).
        A row carries only what its procedure labels: ``cvs`` for a cholecystectomy, ``action`` for a
        suturing case, ``step`` for a bypass (a cholecystectomy's rows are as they always were)."""
        proc = get_procedure(self.procedure)
        out: dict[str, Any] = {"phase": self.phase.label if self.phase is not None else None}
        if proc.cvs:
            out["cvs"] = {f"C{i + 1}": state.value if state is not None else None for i, state in enumerate(self.cvs)}
        for role, mention in (("action", self.action), ("step", self.step)):
            if proc.has(role):
                out[role] = mention.label if mention is not None else None
        if proc.name != DEFAULT_PROCEDURE:
            out["procedure"] = proc.name
        return out | {
            "instruments": [
                {
                    "label": s.name.label or s.name.text,
                    "box": [round(v, 1) for v in s.box] if s.box is not None else None,
                }
                for s in self.instruments
            ],
            "triplets": [" ".join(m.label or m.text for m in (t.instrument, t.verb, t.target)) for t in self.triplets],
        }


def _scaled(sighting: InstrumentSighting, sx: float, sy: float) -> InstrumentSighting:
    if sighting.box is None or (sx == 1.0 and sy == 1.0):
        return sighting
    x1, y1, x2, y2 = sighting.box
    return replace(sighting, box=(x1 * sx, y1 * sy, x2 * sx, y2 * sy))


def _instruments_of(chain: Chain, ontology: Ontology) -> tuple[InstrumentSighting, ...]:
    """A chain's instruments: the answer's labelled boxes when it gives boxes (a localisation task's
    final word), else Level 1's sightings."""
    if chain.answer is not None and chain.answer.boxes:
        boxed = parse_perception(chain.answer.text, ontology).instruments
        if any(s.box is not None for s in boxed):
            return boxed
    return chain.perception.instruments if chain.perception is not None else ()


def _triplets_of(chain: Chain) -> tuple[TripletMention, ...]:
    if chain.relations is not None and chain.relations.triplets:
        return chain.relations.triplets
    return chain.answer.triplets if chain.answer is not None else ()


def _phase_of(chain: Chain) -> Mention | None:
    if chain.context is not None and chain.context.phase is not None and chain.context.phase.known:
        return chain.context.phase
    if chain.answer is not None and chain.answer.phase is not None:
        return chain.answer.phase
    return chain.context.phase if chain.context is not None else None


def _cvs_of(chain: Chain) -> Cvs:
    if chain.context is not None and any(chain.context.cvs):
        return chain.context.cvs
    return chain.answer.cvs if chain.answer is not None else (None, None, None)


_FIELD_TASKS = {
    "action": (Task.ACTION, Task.ACTION_MCQ),
    "step": (Task.STEP,),
    "phase": (Task.PHASE, Task.PHASE_MCQ),
    "cvs": (Task.CVS,),
    "triplets": (Task.TRIPLET,),
    "instruments": (Task.LOCALISATION, Task.TOOLS),
}
"""The questions that ask for a field directly: their answer is that field's authority."""


def _by_authority(field_name: str, chains: dict[str, Chain]) -> list[Chain]:
    own = [chains[t] for t in _FIELD_TASKS[field_name] if t in chains]
    return own + [c for t, c in chains.items() if t not in _FIELD_TASKS[field_name]]


def merge_results(
    profile: ModelProfile,
    results: Mapping[str, FrameResult],
    width: int,
    height: int,
    ontology: Ontology | None = None,
) -> FrameRecord:
    """Merge one frame's stored answers (by task) into its record; ``width`` x ``height``: the source frame.

    Each field comes from the first answer that states it, asking first the question that asks for
    that field (the phase question for the phase, the localisation question for boxes, the action
    question for the action), then the others in the profile's order; boxes are mapped from the sent
    image's pixels to the source's. Everything is read in the ontology of the profile's procedure.
    """
    proc = procedure_of_version(profile.version)
    ontology = ontology or proc.ontology
    sx, sy = profile.box_scale(width, height)
    ordered = {task: results[task] for task in profile.tasks if task in results}
    chains = {task: r.parsed() for task, r in ordered.items()}
    phases = [p for c in _by_authority("phase", chains) if (p := _phase_of(c)) is not None]
    phase = next((p for p in phases if p.known), phases[0] if phases else None)
    cvs = next((v for c in _by_authority("cvs", chains) if any(v := _cvs_of(c))), (None, None, None))
    triplets = next((t for c in _by_authority("triplets", chains) if (t := _triplets_of(c))), ())
    sightings = next((s for c in _by_authority("instruments", chains) if (s := _instruments_of(c, ontology))), ())
    action = _label_of("action", chains, proc, chain_action)
    step = _label_of("step", chains, proc, chain_step)
    return FrameRecord(
        frame=next(iter(ordered.values())).frame if ordered else -1,
        phase=phase,
        cvs=cvs,
        instruments=tuple(_scaled(s, sx, sy) for s in sightings),
        triplets=triplets,
        results=ordered,
        missing=tuple(task for task in profile.tasks if task not in results),
        action=action,
        step=step,
        procedure=proc.name,
    )


def _label_of(role: str, chains: dict[str, Chain], proc: Procedure, read: Any) -> Mention | None:
    """The ``role`` label (action, step) the answers state: a known one from the question that asks for
    it first, else from the others; an unknown one only when no answer names a known one."""
    if not proc.has(role):
        return None
    vocab = proc.vocabulary(role)
    found = [m for c in _by_authority(role, chains) if (m := read(c, vocab)) is not None]
    return next((m for m in found if m.known), found[0] if found else None)


def merge_timeline_rows(rows_by_task: Iterable[list[TimelineRow]]) -> list[TimelineRow]:
    """One timeline row per frame from each question's rows (in the profile's order): the phase, CVS,
    action and step of the first question that states them, the tools of every question together."""
    merged: dict[int, TimelineRow] = {}
    for rows in rows_by_task:
        for row in rows:
            seen = merged.get(row.frame)
            if seen is None:
                merged[row.frame] = row
                continue
            tools = seen.tools
            if row.tools is not None:
                tools = tuple(dict.fromkeys((*(tools or ()), *row.tools)))
            merged[row.frame] = TimelineRow(
                row.frame,
                seen.phase if seen.phase is not None else row.phase,
                seen.cvs if any(seen.cvs) else row.cvs,
                tools,
                seen.phase_probs if seen.phase_probs is not None else row.phase_probs,
                seen.action if seen.action is not None else row.action,
                seen.step if seen.step is not None else row.step,
            )
    return [merged[frame] for frame in sorted(merged)]


@dataclass(frozen=True)
class CaseAnalysis:
    """One model's analysis of a case under one profile: what a viewer, report or export shows."""

    model_id: str
    prompt_version: str
    profile: ModelProfile
    frames: int  # frames with at least one answer
    last_created: float

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.profile.tasks

    @property
    def procedure(self) -> Procedure:
        """The procedure the questions were asked in (named by the stored prompt version)."""
        return procedure_of_version(self.prompt_version)

    def timeline_rows(self, store: CaseStore) -> list[TimelineRow]:
        return merge_timeline_rows(store.timeline_rows(self.model_id, self.prompt_version, t) for t in self.tasks)

    def frame_results(self, store: CaseStore, frame: int) -> dict[str, FrameResult]:
        found = {t: store.get_result(frame, self.model_id, self.prompt_version, t) for t in self.tasks}
        return {t: r for t, r in found.items() if r is not None}

    def results(self, store: CaseStore) -> dict[int, dict[str, FrameResult]]:
        """Every stored answer, by frame then task."""
        by_frame: dict[int, dict[str, FrameResult]] = {}
        for task in self.tasks:
            for result in store.results(self.model_id, self.prompt_version, task):
                by_frame.setdefault(result.frame, {})[task] = result
        return dict(sorted(by_frame.items()))

    def statuses(self, store: CaseStore) -> list[tuple[int, str]]:
        """(frame, weakest chain status over the questions), in frame order."""
        order = {ChainStatus.MALFORMED.value: 0, ChainStatus.PARTIAL.value: 1, ChainStatus.COMPLETE.value: 2}
        worst: dict[int, str] = {}
        for task in self.tasks:
            for frame, status in store.statuses(self.model_id, self.prompt_version, task):
                if frame not in worst or order.get(status, 0) < order.get(worst[frame], 0):
                    worst[frame] = status
        return sorted(worst.items())


def case_analyses(store: CaseStore) -> list[CaseAnalysis]:
    """The analyses in a store, most recent first: the tasks of a multi-question profile form one
    analysis; each task asked with surgview's own prompts is one of its own; a task this surgview has
    no prompt for is still listed, so nothing stored is left out of a report or an export."""
    grouped: dict[tuple[str, str, str], list[Analysis]] = {}
    for a in store.analyses():
        name = profile_for_version(a.prompt_version)
        key = (a.model_id, a.prompt_version, a.task if name == "surgview" else "")
        grouped.setdefault(key, []).append(a)
    out = []
    for (model_id, version, task), parts in grouped.items():
        name = profile_for_version(version)
        try:
            profile = get_profile(name, task or None, procedure_of_version(version).name)
        except ValueError:  # a task this surgview has no prompt for (older prompts, another tool): shown as it is
            tasks = [p.task for p in parts]
            questions = tuple(Question(t, t.replace("_", " ").capitalize(), "") for t in tasks)
            profile = ModelProfile(name, "", version, "", questions)
        out.append(
            CaseAnalysis(
                model_id,
                version,
                profile,
                frames=max(p.frames for p in parts),
                last_created=max(p.last_created or 0.0 for p in parts),
            )
        )
    return sorted(out, key=lambda a: a.last_created, reverse=True)
