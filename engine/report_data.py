"""What a case report says, gathered from the case store without Qt (the app renders it).

A report must be readable away from the app and must not leak the patient's identity through
the export: it names the case by its content fingerprint (the file name may hold a patient's
name) and carries no file paths. It reads the merged frame records of one analysis
(:mod:`engine.frame_record`), so a profile that asks several questions per frame reports its
phase from the phase question and its boxes from the localisation question. It follows the case's
procedure (named by the stored prompt version): its timelines (a suturing case's actions, a bypass's
phases and steps) in its own order with display names, its instruments, and CVS only where CVS applies
(a cholecystectomy): another procedure's report has no CVS statement at all. Model text is kept
verbatim here; :func:`visible_text` makes control characters visible so that renderers (HTML
with autoescape, QTextDocument, QPainter) show a hostile output as literal text.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.chain import Chain, ChainStatus
from engine.cvs_assessment import CvsAssessment, CvsRule, assess_cvs
from engine.frame_record import CaseAnalysis, FrameRecord, case_analyses, merge_results
from engine.modeldir import Manifest
from engine.ontology import Vocabulary
from engine.phase_labels import Segment
from engine.procedures import DEFAULT_PROCEDURE, Procedure, get_procedure
from engine.profiles import ModelProfile
from engine.review_agreement import ReviewAgreement, agreement
from engine.review_labels import ReviewLabels
from engine.store import BlankArea, CaseStore, FrameResult, StoreError
from engine.terminal import visible_text
from engine.timecode import format_timecode
from engine.timeline import (
    TimelineConfig,
    TimelineRow,
    Timelines,
    build_case_timelines,
    build_procedure_track,
    covered_frames,
    sweep_step,
)

__all__ = [
    "BookmarkEntry",
    "CaseSummary",
    "CvsSummary",
    "LabelDuration",
    "PhaseDuration",
    "ReportData",
    "ReportError",
    "ToolUsage",
    "choose_analysis",
    "combined_result",
    "default_title",
    "gather_report",
    "label_durations",
    "label_tracks",
    "visible_text",
    "without_boxes",
]

LEVEL_NAMES = {1: "Perception", 2: "Relation", 3: "Context"}
DEFAULT_TITLE = "Laparoscopic cholecystectomy review"
ROLE_TITLES = {"phase": "Phases", "step": "Steps", "action": "Actions"}  # a duration table's heading per timeline
_BOX = re.compile(r"\s*\[\s*-?\d+(?:\.\d+)?\s*(?:,\s*-?\d+(?:\.\d+)?\s*){3}\]")


def default_title(when: float | None = None, procedure: str | None = None) -> str:
    """A report's title when the reviewer gives none: what it is (the procedure) and the day, never a file
    name or hash."""
    day = datetime.date.fromtimestamp(time.time() if when is None else when).isoformat()
    what = (
        DEFAULT_TITLE
        if not procedure or procedure == DEFAULT_PROCEDURE
        else f"{get_procedure(procedure).display} review"
    )
    return f"{what}, {day}"


def without_boxes(text: str) -> str:
    """Model text without its ``[x1, y1, x2, y2]`` pixel boxes (a report's pictures show them)."""
    return _BOX.sub("", text)


class ReportError(Exception):
    """The report cannot be made (no analysis stored, nothing matches); one line."""


# ------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class PhaseDuration:
    phase: str  # canonical name
    display: str
    seconds: float
    share: float  # of the analysed (covered) time
    segments: int


@dataclass(frozen=True)
class LabelDuration:
    """Time under one label of a timeline (an action, a step, a bypass phase)."""

    role: str  # the timeline: "phase", "step", "action"
    label: str  # canonical name
    display: str
    seconds: float
    share: float  # of the smoothed track's time
    segments: int


@dataclass(frozen=True)
class ToolUsage:
    tool: str
    display: str
    seconds: float
    share: float  # of the case's duration
    runs: int
    first_frame: int | None


@dataclass(frozen=True)
class CvsSummary:
    first_all_met: int | None  # smoothed tracks
    first_all_met_raw: int | None  # an analysed frame whose own answer says all three are met
    clipping_start: int | None  # first frame of the first ClippingCutting segment
    statement: str  # what a reviewing surgeon reads first: established before the first clip, and held?
    tracks: tuple[list[Segment], list[Segment], list[Segment]]
    assessment: CvsAssessment | None = None  # the episodes behind the statement


@dataclass(frozen=True)
class CaseSummary:
    case_id: str  # content fingerprint, never the file name
    title: str
    fps: float
    frame_count: int
    duration_s: float
    analysed_frames: int
    covered_frames: int
    coverage: float  # covered / frame_count
    stride_frames: int
    status_counts: dict[str, int]
    model_id: str
    prompt_version: str
    task: str  # the questions asked of each frame, comma-separated
    manifest: dict[str, Any] | None  # name, architecture, versions, lineage stages, evaluation
    profile: str = "surgview"  # the model profile that asked them
    procedure: str = DEFAULT_PROCEDURE  # the procedure they were asked in (canonical name)
    procedure_display: str = "Laparoscopic cholecystectomy"
    reviewer: str = ""  # the reviewer's name for the sign-off (blank: a line to write on)


@dataclass(frozen=True)
class BookmarkEntry:
    frame: int
    title: str
    notes: list[str]
    result: FrameResult | None  # the analysed frame shown (the bookmark's own, else the nearest); several
    # questions: their answers together (weakest status, longest time, raw texts under their titles)
    chain: Chain | None  # one question: its chain; several: the first answer's
    answers: Mapping[str, FrameResult] = field(default_factory=dict)  # the shown frame's answers, by task
    profile: ModelProfile | None = None

    @property
    def shown_frame(self) -> int:
        return self.result.frame if self.result is not None else self.frame

    def record(self, width: int, height: int) -> FrameRecord | None:
        """The shown frame's merged record for a ``width`` x ``height`` frame (boxes in its pixels)."""
        if self.profile is None or not self.answers:
            return None
        return merge_results(self.profile, self.answers, width, height)

    @property
    def levels(self) -> list[tuple[str, str, str]]:
        """(title, state, text) per level and the answer, in order; text made visible. With several
        questions each row names its question, and a question not answered says so."""
        if self.profile is None or len(self.profile.questions) < 2:
            return _level_rows(self.chain, "")
        rows: list[tuple[str, str, str]] = []
        for q in self.profile.questions:
            answer = self.answers.get(q.task)
            if answer is None:
                rows.append((q.title, "not answered", ""))
            else:
                rows += _level_rows(answer.parsed(), f"{q.title} · ") or [
                    (q.title, answer.status, visible_text(answer.raw_text.strip()))
                ]
        return rows


def _level_rows(chain: Chain | None, prefix: str) -> list[tuple[str, str, str]]:
    if chain is None:
        return []
    rows = [
        (
            f"{prefix}Level {lv.number} ({LEVEL_NAMES.get(lv.number, '?')})",
            lv.state.value,
            visible_text(lv.text.strip()),
        )
        for lv in chain.levels
    ]
    if chain.answer is not None:
        rows.append((f"{prefix}Answer", "done", visible_text(chain.answer.text.strip())))
    return rows


@dataclass(frozen=True)
class ReportData:
    summary: CaseSummary
    timelines: Timelines
    phases: list[PhaseDuration]
    cvs: CvsSummary | None  # None: the procedure has no Critical View of Safety (no statement, no rows)
    tools: list[ToolUsage]
    bookmarks: list[BookmarkEntry]
    case_notes: list[str]
    blank_areas: list[BlankArea]
    blanked: bool  # whether exports paint over the blank areas
    created: float = field(default_factory=time.time)
    review: ReviewAgreement = field(default_factory=ReviewAgreement.none)  # the model against the reviewer
    reviewers: tuple[str, ...] = ()  # who labelled the case (the review tables' authors), sorted
    # Each timeline the procedure draws besides instruments, in its order: role -> smoothed segments, and the
    # time per label in the vocabulary's order (a cholecystectomy: its phase; a suturing case: its actions).
    tracks: dict[str, list[Segment]] = field(default_factory=dict)
    durations: dict[str, list[LabelDuration]] = field(default_factory=dict)

    @property
    def procedure(self) -> Procedure:
        return get_procedure(self.summary.procedure)

    def timecode(self, frame: int | None) -> str:
        return "–" if frame is None else format_timecode(frame, self.summary.fps)

    @property
    def removed(self) -> list[str]:
        """What the export leaves out, for the report's de-identification statement."""
        out = [
            "the video's file name and every file path (the case is named by its content fingerprint)",
            "the source container's metadata (creation time, device, location): none is read into the report",
        ]
        if self.blanked and self.blank_areas:
            n = len(self.blank_areas)
            out.append(f"burned-in text in {n} rectangle{'s' if n != 1 else ''} of the picture, painted black")
        return out


# ------------------------------------------------------------------------------------- gathering
def choose_analysis(store: CaseStore, model_id: str | None = None, task: str | None = None) -> CaseAnalysis:
    """The analysis a report shows: the most recent one matching ``model_id`` and asking ``task``
    (the questions of a multi-question profile form one analysis)."""
    analyses = case_analyses(store)
    if model_id:
        analyses = [a for a in analyses if a.model_id == model_id]
    if task:
        analyses = [a for a in analyses if task in a.tasks]
    if not analyses:
        raise ReportError("no stored analysis matches (analyse the case first)")
    return analyses[0]  # most recent first


def manifest_summary(manifest: Manifest | None) -> dict[str, Any] | None:
    """The parts of a manifest a report shows; data entries are reduced to their last path part."""
    if manifest is None:
        return None
    stages = []
    for stage in manifest.lineage:
        data = [str(d).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] for d in stage.data]
        stages.append({"name": stage.name, "data": data, "seed": stage.seed})
    evaluation = {k: v for k, v in manifest.evaluation.items() if isinstance(v, int | float | str)}
    held_out = manifest.evaluation.get("held_out")  # what surgview-train run's export records
    if isinstance(held_out, dict):
        for name, value in (held_out.get("key_metrics") or {}).items():
            if isinstance(value, int | float):
                evaluation[f"held-out {name}"] = round(float(value), 3)
        for name in ("format_ok", "arena_score", "n"):
            if isinstance(held_out.get(name), int | float):
                evaluation[f"held-out {name}"] = round(float(held_out[name]), 3)
    return {
        "name": manifest.name,
        "architecture": manifest.base_architecture,
        "ontology_version": manifest.ontology_version,
        "prompts_version": manifest.prompts_version,
        "format_version": manifest.format_version,
        "lineage": stages,
        "evaluation": evaluation,
    }


def gather_report(
    store: CaseStore,
    *,
    model_id: str | None = None,
    task: str | None = None,
    manifest: Manifest | None = None,
    title: str | None = None,
    reviewer: str | None = None,
    blank: bool = True,
    fps: float | None = None,
    frame_count: int | None = None,
    config: TimelineConfig | None = None,
    analysis: CaseAnalysis | None = None,
    stride_s: float = 1.0,
) -> ReportData:
    """Everything a report shows, from the store (``fps``/``frame_count`` override the store's);
    ``analysis`` (else the most recent matching ``model_id`` and ``task``) is the one reported. ``stride_s``:
    the sweep's stride; its frames alone are smoothed, as the viewer smooths them, so the report's phases,
    first clip and CVS statement are the viewer's whatever frames the reviewer asked for on demand."""
    try:
        analysis = analysis or choose_analysis(store, model_id, task)
        info = store.case_info()
        fps = fps or (info.fps if info else None)
        frame_count = frame_count or (info.frame_count if info else None)
        if not fps or not frame_count:
            raise ReportError("the case store does not record the video's frame rate and length; open the case once")
        rows = analysis.timeline_rows(store)  # merged: each field from the question that states it
        statuses = analysis.statuses(store)  # the weakest chain of each frame
        marks = store.bookmarks()
        notes = store.notes()
        areas = store.blank_areas()
        labels = ReviewLabels(store).snapshot()
        review = agreement(labels, rows)
        authors = (*labels.segments, *(r for rs in labels.cvs for r in rs), *labels.items, *labels.chains)
        reviewers = tuple(sorted({row.reviewer for row in authors if row.reviewer}))
        analysed = np.array([f for f, _ in statuses], dtype=np.int64)
        bookmarks = []
        for mark in marks:
            mine = [n.text for n in notes if n.frame == mark.frame]
            bookmarks.append(_bookmark(store, analysis, analysed, fps, mark.frame, mark.title, mine))
    except StoreError as exc:
        raise ReportError(str(exc)) from None
    config = config or TimelineConfig()
    proc = analysis.procedure
    timelines = build_case_timelines(
        rows, fps, frame_count, sweep_step(stride_s, fps), config, tools=proc.vocabulary("tool")
    )
    covered = covered_frames(timelines.frames, max(1, round(config.max_gap_s * fps)), frame_count, timelines.step)
    tracks = label_tracks(proc, timelines, rows, fps, frame_count)
    durations = {role: label_durations(role, segs, proc.vocabulary(role), fps) for role, segs in tracks.items()}
    counts: dict[str, int] = {}
    for _, status in statuses:
        counts[status or "malformed"] = counts.get(status or "malformed", 0) + 1
    summary = CaseSummary(
        case_id=(info.fingerprint if info else store.path.stem)[:16],
        title=(title or "").strip() or default_title(procedure=proc.name),
        fps=float(fps),
        frame_count=int(frame_count),
        duration_s=frame_count / fps,
        analysed_frames=len(statuses),
        covered_frames=covered,
        coverage=covered / frame_count,
        stride_frames=timelines.step,
        status_counts=counts,
        model_id=analysis.model_id,
        prompt_version=analysis.prompt_version,
        task=", ".join(analysis.tasks),
        manifest=manifest_summary(manifest),
        profile=analysis.profile.name,
        reviewer=(reviewer or "").strip(),
        procedure=proc.name,
        procedure_display=proc.display,
    )
    phases = [PhaseDuration(d.label, d.display, d.seconds, d.share, d.segments) for d in durations.get("phase", [])]
    return ReportData(
        summary=summary,
        timelines=timelines,
        phases=phases,
        cvs=cvs_summary(timelines, fps) if proc.cvs else None,
        tools=tool_usage(timelines.tools, fps, frame_count, proc.vocabulary("tool")),
        bookmarks=bookmarks,
        case_notes=[n.text for n in notes if n.frame is None],
        blank_areas=areas,
        blanked=blank,
        review=review,
        reviewers=reviewers,
        tracks=tracks,
        durations=durations,
    )


def label_tracks(
    proc: Procedure, timelines: Timelines, rows: list[TimelineRow], fps: float, frame_count: int | None
) -> dict[str, list[Segment]]:
    """The smoothed segments of every timeline ``proc`` draws besides instruments, in its order: a
    cholecystectomy's phase is the Cholec80 HMM's (``timelines.phase``); another procedure's phase,
    step or action track is smoothed over its own vocabulary with its own prior."""
    out: dict[str, list[Segment]] = {}
    for role in proc.timelines:
        if role == "tool" or not proc.has(role):
            continue
        if role == "phase" and proc.name == DEFAULT_PROCEDURE:
            out[role] = timelines.phase
            continue
        answers = [(r.frame, getattr(r, role)) for r in rows]
        out[role] = build_procedure_track(answers, proc.name, role, fps, frame_count).segments
    return out


def label_durations(role: str, segments: list[Segment], vocabulary: Vocabulary, fps: float) -> list[LabelDuration]:
    """Time per label of one timeline, in the vocabulary's (clinical) order; labels never seen are left out."""
    total = sum(s.length for s in segments) or 1
    out = []
    for label in vocabulary:
        mine = [s for s in segments if s.label == label.name]
        if mine:
            frames = sum(s.length for s in mine)
            out.append(LabelDuration(role, label.name, label.display, frames / fps, frames / total, len(mine)))
    return out


def phase_durations(segments: list[Segment], fps: float, vocabulary: Vocabulary | None = None) -> list[PhaseDuration]:
    """Time per phase in clinical order (phases never seen are left out); Cholec80's phases by default."""
    vocabulary = vocabulary if vocabulary is not None else get_procedure().vocabulary("phase")
    return [
        PhaseDuration(d.label, d.display, d.seconds, d.share, d.segments)
        for d in label_durations("phase", segments, vocabulary, fps)
    ]


def tool_usage(
    tracks: dict[str, list[Segment]], fps: float, frame_count: int, vocabulary: Vocabulary | None = None
) -> list[ToolUsage]:
    """Presence time per tool of the procedure (Cholec80's by default; every tool listed, unused ones at zero)."""
    vocabulary = vocabulary if vocabulary is not None else get_procedure().vocabulary("tool")
    out = []
    for label in vocabulary:
        runs = tracks.get(label.name, [])
        frames = sum(s.length for s in runs)
        first = runs[0].start if runs else None
        out.append(ToolUsage(label.name, label.display, frames / fps, frames / frame_count, len(runs), first))
    return out


def cvs_summary(timelines: Timelines, fps: float, rule: CvsRule | None = None) -> CvsSummary:
    """Whether the critical view of safety was established on a stable run before the first clip, and held
    (:mod:`engine.cvs_assessment`); the first frames answering all three met are kept beside it."""
    first = timelines.first_all_met()
    raw = timelines.first_all_met(raw=True)
    clipping = timelines.first_clip_frame()
    assessment = assess_cvs(timelines.rows, fps, clipping, rule)
    tracks = tuple(t.segments for t in timelines.cvs)
    return CvsSummary(first, raw, clipping, assessment.statement, tracks, assessment)  # type: ignore[arg-type]


def _shown_frame(analysed: np.ndarray, frame: int, fps: float) -> int | None:
    """The bookmark's own frame when analysed, else the nearest analysed frame within two seconds."""
    if analysed.size == 0:
        return None
    i = int(np.searchsorted(analysed, frame))
    near = [int(analysed[j]) for j in (i - 1, i) if 0 <= j < analysed.size]
    best = min(near, key=lambda f: (abs(f - frame), f))
    return best if abs(best - frame) <= 2 * fps else None


def _bookmark(
    store: CaseStore,
    analysis: CaseAnalysis,
    analysed: np.ndarray,
    fps: float,
    frame: int,
    title: str,
    notes: list[str],
) -> BookmarkEntry:
    """A bookmark with the answers of the frame it shows (its own, else the nearest analysed one)."""
    shown = _shown_frame(analysed, frame, fps)
    answers = analysis.frame_results(store, shown) if shown is not None else {}
    if not answers:
        return BookmarkEntry(frame, title, notes, None, None, {}, analysis.profile)
    first = next(iter(answers.values()))
    result = first if len(analysis.tasks) == 1 else combined_result(analysis, answers)
    return BookmarkEntry(frame, title, notes, result, first.parsed(), answers, analysis.profile)


def combined_result(analysis: CaseAnalysis, answers: Mapping[str, FrameResult]) -> FrameResult:
    """Several questions' answers of one frame read as one result: the weakest status, the longest
    generation (they run side by side), and the raw texts under their questions' titles."""
    order = [ChainStatus.MALFORMED.value, ChainStatus.PARTIAL.value, ChainStatus.COMPLETE.value]
    status = min((a.status for a in answers.values()), key=lambda s: order.index(s) if s in order else 0)
    titles = {q.task: q.title for q in analysis.profile.questions}
    raw = "\n\n".join(f"{titles.get(task, task)}:\n{a.raw_text}" for task, a in answers.items())
    times = [a.total_s for a in answers.values() if a.total_s]
    first = next(iter(answers.values()))
    return FrameResult(
        first.frame,
        analysis.model_id,
        analysis.prompt_version,
        ",".join(answers),
        raw,
        {"status": status},
        status,
        total_s=max(times) if times else None,
        tokens=sum(a.tokens or 0 for a in answers.values()) or None,
    )


def report_json(data: ReportData) -> dict[str, Any]:
    """The report's data for registries and tests (``surgview report CASE --json OUT``): what page 1 says,
    times in seconds with their frame numbers, CVS with its episodes (only where the procedure has CVS),
    another procedure's ``actions``/``steps`` durations in its order, and ``review``: the model's agreement with
    the reviewer's labels (:mod:`engine.review_agreement`). Model text is not included."""
    s, fps = data.summary, data.summary.fps

    def seconds(frame: int | None) -> float | None:
        return round(frame / fps, 3) if frame is not None else None

    out: dict[str, Any] = {}
    if data.cvs is not None:  # a procedure without CVS has no "cvs" key at all
        assessment = data.cvs.assessment
        out = assessment.to_json() if assessment is not None else {}
        out.update(
            first_all_met_frame=data.cvs.first_all_met,
            first_all_met_raw_frame=data.cvs.first_all_met_raw,
            first_all_met_raw_s=seconds(data.cvs.first_all_met_raw),
        )
    labels = {
        f"{role}s": [
            {role: d.label, "display": d.display, "seconds": round(d.seconds, 3), "share": round(d.share, 4)}
            for d in found
        ]
        for role, found in data.durations.items()
        if role != "phase"
    }
    report = {
        "case": {
            "id": s.case_id,
            "title": s.title,
            "reviewer": s.reviewer,
            "fps": fps,
            "frames": s.frame_count,
            "duration_s": round(s.duration_s, 3),
            "analysed_frames": s.analysed_frames,
            "coverage": round(s.coverage, 4),
            "model": s.model_id,
            "profile": s.profile,
            "procedure": s.procedure,
            "questions": s.task.split(","),
        },
        "phases": [
            {"phase": p.phase, "display": p.display, "seconds": round(p.seconds, 3), "share": round(p.share, 4)}
            for p in data.phases
        ],
        **labels,
        **({"cvs": out} if data.cvs is not None else {}),
        "instruments": [
            {"tool": t.tool, "seconds": round(t.seconds, 3), "first_s": seconds(t.first_frame)} for t in data.tools
        ],
        "bookmarks": [
            {"frame": b.frame, "time_s": seconds(b.frame), "title": b.title, "notes": list(b.notes)}
            for b in data.bookmarks
        ],
        "review": data.review.to_json(),
    }
    return report
