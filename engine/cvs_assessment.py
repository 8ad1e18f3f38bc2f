"""The Critical View of Safety as a reviewing surgeon reads it: established on a stable run, before the first clip.

Per-frame answers flicker; a single frame on which a model says "C1, C2 and C3 met" is no reason to clip.
This module turns the analysed frames' answers into *episodes* (runs of consecutive analysed frames on which
all three criteria are met) and says, in one statement, whether CVS was **established** — all three met on a
run lasting at least ``min_duration_s`` over at least ``min_frames`` analysed frames — before the first clip,
whether it held until then, or was lost, or came only after clipping, or never. Shorter runs are *doubtful*:
shown, never a green light. Only what was seen *before* the first clip can establish CVS before it: one "all met"
frame just before clipping, followed by more during it, is a doubtful frame and a run after clipping, never
"established before clipping". Nothing here reads pixels; it reads what the model said, with its times.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.chain import CvsState
from engine.timecode import format_time
from engine.timeline import TimelineRow

__all__ = ["CvsAssessment", "CvsEpisode", "CvsRule", "assess_cvs", "dissection_start"]

ESTABLISHED = "established"
DOUBTFUL = "doubtful"


@dataclass(frozen=True)
class CvsRule:
    """What counts as established; configurable because practice and strides differ."""

    min_duration_s: float = 5.0  # all three met for at least this long
    min_frames: int = 3  # ... on at least this many analysed frames
    max_gap_s: float = 30.0  # analysed frames further apart than this do not make one run
    # The view is the *result* of dissecting the hepatocystic triangle: "all met" before the analysis saw
    # dissection under way (during Preparation, or from the very first frame) is doubtful, however long it lasts.
    after_dissection: bool = True


@dataclass(frozen=True)
class CvsEpisode:
    start_frame: int
    end_frame: int  # the last analysed frame of the run
    start_s: float
    end_s: float
    frames: int  # analysed frames in the run
    status: str  # "established" or "doubtful"

    def to_json(self) -> dict[str, Any]:
        return {
            "start_s": round(self.start_s, 3),
            "end_s": round(self.end_s, 3),
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "frames": self.frames,
            "status": self.status,
        }


@dataclass(frozen=True)
class CvsAssessment:
    established: bool  # established before the first clip (or at all, when no clip was found)
    established_at_s: float | None
    established_frame: int | None
    held_until_clip: bool | None  # None: not established, or no clip found
    lost_at_s: float | None  # established, then a frame said otherwise before the clip
    first_clip_s: float | None
    first_clip_frame: int | None
    episodes: tuple[CvsEpisode, ...] = ()
    statement: str = ""
    rule: CvsRule = field(default_factory=CvsRule)
    # the statement without its list of doubtful frames (for a summary line that points to the episodes instead);
    # the statement itself when it lists none
    verdict: str = ""

    def __post_init__(self) -> None:
        if not self.verdict:
            object.__setattr__(self, "verdict", self.statement)

    def doubt(self, frame: int, cvs: tuple[CvsState | None, ...]) -> str | None:
        """ "doubtful" when ``frame``'s answer says all three met outside an established episode (a badge
        or a picture must not show that as a green light); None otherwise."""
        if not all(state is CvsState.MET for state in cvs):
            return None
        inside = any(e.status == ESTABLISHED and e.start_frame <= frame <= e.end_frame for e in self.episodes)
        return None if inside else "doubtful"

    @property
    def green_light(self) -> bool:
        """Whether the viewer and report may show CVS as established before clipping: only then."""
        return self.established and self.held_until_clip is not False

    def to_json(self) -> dict[str, Any]:
        return {
            "established": self.established,
            "established_at_s": _round(self.established_at_s),
            "established_frame": self.established_frame,
            "held_until_clip": self.held_until_clip,
            "lost_at_s": _round(self.lost_at_s),
            "first_clip_s": _round(self.first_clip_s),
            "first_clip_frame": self.first_clip_frame,
            "episodes": [e.to_json() for e in self.episodes],
            "statement": self.statement,
            "rule": {
                "min_duration_s": self.rule.min_duration_s,
                "min_frames": self.rule.min_frames,
                "max_gap_s": self.rule.max_gap_s,
                "after_dissection": self.rule.after_dissection,
            },
        }


def _round(value: float | None) -> float | None:
    return round(value, 3) if value is not None else None


def _all_met(row: TimelineRow) -> bool:
    return all(state is CvsState.MET for state in row.cvs)


def _said_otherwise(row: TimelineRow) -> bool:
    """A frame that states a criterion is not met (silence, or 'not assessable', is not a contradiction)."""
    return any(state is CvsState.NOT_MET for state in row.cvs)


PREPARATION = "Preparation"


NEVER = 2**62  # phases were stated, none past Preparation: dissection was never seen


def dissection_start(rows: Sequence[TimelineRow]) -> int | None:
    """The first analysed frame whose stated phase is past Preparation: CVS can be established only after it.
    ``NEVER`` when frames state phases but none past Preparation; None when no frame states a phase (answers
    to a CVS-only question: nothing to check against). Callers holding a smoothed phase track may pass its
    first non-Preparation segment instead."""
    ordered = sorted(rows, key=lambda r: r.frame)
    first = next((r.frame for r in ordered if r.phase not in (None, PREPARATION)), None)
    if first is None and any(r.phase is not None for r in ordered):
        return NEVER
    return first


def episodes_of(
    rows: Sequence[TimelineRow],
    time_of: Callable[[int], float],
    rule: CvsRule,
    dissection_frame: int | None = None,
    clip_frame: int | None = None,
) -> list[CvsEpisode]:
    """Runs of consecutive analysed frames on which all three criteria are met. A run can only establish CVS
    when an earlier analysed frame showed dissection under way (``dissection_frame`` < its start): the view is
    the result of dissection, so a run from before it, or from the first frame that shows it, is doubtful
    whatever its length (its part after the clip, if any, is judged apart). ``dissection_frame`` None: no frame
    states a phase, nothing to check. A run that crosses ``clip_frame`` (where clipping begins) is one episode when
    its frames before the clip are a stable view by themselves; otherwise its parts before and after the clip are
    two, the first doubtful: frames seen during clipping cannot make a view before it stable. A frame that says
    nothing of CVS (all three None) is skipped."""
    found: list[CvsEpisode] = []
    run: list[int] = []

    def episode(frames: list[int]) -> CvsEpisode:
        start, end = frames[0], frames[-1]
        start_s, end_s = time_of(start), time_of(end)
        stable = len(frames) >= rule.min_frames and end_s - start_s >= rule.min_duration_s
        early = dissection_frame is not None and start <= dissection_frame
        return CvsEpisode(start, end, start_s, end_s, len(frames), ESTABLISHED if stable and not early else DOUBTFUL)

    def close() -> None:
        if not run:
            return
        before = [f for f in run if clip_frame is None or f < clip_frame]
        if 0 < len(before) < len(run) and episode(before).status != ESTABLISHED:
            # the run crosses the first clip, and what came before it is no stable view: its frames during
            # clipping cannot make it one, so the two parts are judged apart
            found.extend([episode(before), episode(run[len(before) :])])
        else:
            found.append(episode(run))
        run.clear()

    for row in sorted(rows, key=lambda r: r.frame):
        if all(state is None for state in row.cvs):
            continue  # said nothing of CVS (another question, an unfinished chain): neither extends nor breaks a run
        if run and time_of(row.frame) - time_of(run[-1]) > rule.max_gap_s:
            close()
        if _all_met(row):
            run.append(row.frame)
        else:
            close()
    close()
    return found


def assess_cvs(
    rows: Sequence[TimelineRow],
    fps: float,
    first_clip_frame: int | None,
    rule: CvsRule | None = None,
    time_of: Callable[[int], float] | None = None,
    dissection_frame: int | None = None,
) -> CvsAssessment:
    """What the analysed frames say about CVS before the first clip (``first_clip_frame``: where the
    clipping phase begins, None when the analysis found none). ``time_of`` maps a frame to seconds
    (presentation time); by default frame / fps. ``dissection_frame``: where dissection began (default: the
    first analysed frame stating a phase past Preparation, see :func:`dissection_start`)."""
    rule = rule or CvsRule()
    time_of = time_of or (lambda frame: frame / fps)
    if rule.after_dissection and dissection_frame is None:
        dissection_frame = dissection_start(rows)
    if not rule.after_dissection:
        dissection_frame = None
    episodes = episodes_of(rows, time_of, rule, dissection_frame, first_clip_frame)
    clip_s = time_of(first_clip_frame) if first_clip_frame is not None else None

    def at(seconds: float | None, frame: int | None) -> str:
        return f"{format_time(seconds or 0.0, fps)[:8]} (frame {frame})"  # hh:mm:ss: the frame says the rest

    stable = [e for e in episodes if e.status == ESTABLISHED]
    before = [e for e in stable if first_clip_frame is None or e.start_frame < first_clip_frame]
    doubtful = [
        e for e in episodes if e.status == DOUBTFUL and (first_clip_frame is None or e.start_frame < first_clip_frame)
    ]
    clip_text = f"clipping began at {at(clip_s, first_clip_frame)}" if clip_s is not None else ""
    if before:
        first = before[0]
        if first_clip_frame is None:
            statement = (
                f"CVS was established at {at(first.start_s, first.start_frame)} (all three criteria met on "
                f"{first.frames} analysed frames over {first.end_s - first.start_s:.0f} s); "
                "no clipping phase was found."
            )
            return CvsAssessment(
                True, first.start_s, first.start_frame, None, None, None, None, tuple(episodes), statement, rule
            )
        last = before[-1]
        contradicted = [
            r
            for r in rows
            if last.end_frame < r.frame < first_clip_frame
            and (_said_otherwise(r) or not _all_met(r))
            and any(state is not None for state in r.cvs)
        ]
        if contradicted:
            lost = min(r.frame for r in contradicted)
            statement = (
                f"CVS was established at {at(first.start_s, first.start_frame)} but lost at "
                f"{at(time_of(lost), lost)}, before {clip_text}: not held until clipping."
            )
            return CvsAssessment(
                True,
                first.start_s,
                first.start_frame,
                False,
                time_of(lost),
                clip_s,
                first_clip_frame,
                tuple(episodes),
                statement,
                rule,
            )
        statement = f"CVS was established at {at(first.start_s, first.start_frame)} and held until {clip_text}."
        if last is not first:
            statement = (
                f"CVS was established at {at(first.start_s, first.start_frame)}, lost, established again at "
                f"{at(last.start_s, last.start_frame)} and held until {clip_text}."
            )
        return CvsAssessment(
            True,
            first.start_s,
            first.start_frame,
            True,
            None,
            clip_s,
            first_clip_frame,
            tuple(episodes),
            statement,
            rule,
        )
    after = [e for e in stable if first_clip_frame is not None and e.start_frame >= first_clip_frame]
    if first_clip_frame is None:
        statement = "CVS was never established (all three criteria were not met together on a stable run)"
        statement += "; no clipping phase was found."
    else:
        statement = f"CVS was NOT established before {clip_text}."
        if after:
            statement += (
                f" All three criteria were met only after it, from {at(after[0].start_s, after[0].start_frame)}."
            )
    verdict = statement
    early = [e for e in doubtful if dissection_frame is not None and e.start_frame <= dissection_frame]
    brief = [e for e in doubtful if e not in early]
    if early:
        frames = ", ".join(str(e.start_frame) for e in early[:5]) + (" …" if len(early) > 5 else "")
        statement += (
            " Frames before the analysis saw dissection under way said all three were met (doubtful: the view is "
            f"the result of dissection): frame(s) {frames}."
        )
    if brief:
        frames = ", ".join(str(e.start_frame) for e in brief[:5]) + (" …" if len(brief) > 5 else "")
        statement += (
            f" Isolated frames said all three were met (doubtful, shorter than {rule.min_duration_s:g} s or fewer than "
            f"{rule.min_frames} analysed frames): frame(s) {frames}."
        )
    return CvsAssessment(
        False, None, None, None, None, clip_s, first_clip_frame, tuple(episodes), statement, rule, verdict
    )
