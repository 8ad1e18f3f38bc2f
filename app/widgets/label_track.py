"""The timeline rows of a procedure other than cholecystectomy: its own labels, colours and names, no CVS.

The timeline widget (:mod:`app.widgets.timeline_view`) draws a cholecystectomy's rows (phase, raw phase,
CVS C1–C3, the Cholec80 tools). A suturing case has actions instead of phases and no Critical View of
Safety; a gastric bypass has its own phases and steps. :func:`procedure_rows` swaps those rows for the
ones the procedure names (``Procedure.timelines``, in its order): each label track smoothed over the
procedure's vocabulary with its clinical-order prior (:func:`engine.timeline.build_procedure_track`, from
the ``action``/``step``/``phase`` the store's rows carry), the model's raw answers under it, and the
procedure's instruments, coloured from its palette keys (:mod:`app.procedure_view`). The legend and
tooltips name the labels as the procedure displays them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from app import palette
from app.procedure_view import display_of, label_colours, role_title
from app.timeline_model import Runs, display_name
from engine.procedures import DEFAULT_PROCEDURE, Procedure
from engine.timeline import LabelTrack, Timelines, build_procedure_track

__all__ = [
    "describe_row",
    "is_other",
    "label_track",
    "legend_key",
    "procedure_extras",
    "procedure_legend",
    "procedure_rows",
    "tag_key",
    "tag_style",
]

HEIGHTS = {"label": 0.9, "raw": 0.5, "tool": 0.5}
_REPLACED = ("phase", "raw", "cvs1", "cvs2", "cvs3")  # the cholecystectomy rows another procedure does without
_LEGEND_ALL = 12  # a vocabulary up to this long is listed whole in the legend; a longer one only as drawn
_MEANINGS = {"phase": "surgical phase", "step": "surgical step", "action": "suturing action"}


def is_other(proc: Procedure | None) -> bool:
    """Whether ``proc`` draws its own rows (anything but a cholecystectomy, or no procedure known yet)."""
    return proc is not None and proc.name != DEFAULT_PROCEDURE


def label_track(proc: Procedure, role: str, timelines: Timelines) -> LabelTrack:
    """``role``'s smoothed track (``action``, ``step``, a bypass's ``phase``) from the rows' stored labels."""
    rows = [(r.frame, getattr(r, role, None)) for r in timelines.rows]
    return build_procedure_track(rows, proc.name, role, timelines.fps, timelines.frame_count)


def procedure_rows(proc: Procedure | None, timelines: Timelines | None, tracks: list[Any], make: Callable) -> list[Any]:
    """The timeline's rows for ``proc``: ``tracks`` unchanged for a cholecystectomy; for another procedure its
    phase/raw/CVS/tool rows replaced, where the phase row stood, by the procedure's own (``label:<role>``,
    ``raw:<role>``, ``tool:<name>``). ``make(key, title, height, runs, colours)`` builds a row."""
    if not is_other(proc):
        return tracks
    assert proc is not None
    keys = [t.key for t in tracks]
    at = keys.index("phase") if "phase" in keys else 0
    kept = [t for t in tracks if t.key not in _REPLACED and not t.key.startswith("tool:")]
    at = sum(1 for t in tracks[:at] if t in kept)
    mine = []
    for role in proc.timelines:
        if role == "tool":
            mine += _tool_rows(proc, timelines, make)
        elif proc.has(role):
            colours = label_colours(proc, role)
            track = label_track(proc, role, timelines) if timelines is not None else None
            smooth = Runs.of_segments(track.segments) if track is not None else Runs.empty()
            raw = Runs.of_segments(track.raw_segments()) if track is not None else Runs.empty()
            mine.append(make(f"label:{role}", role_title(role), HEIGHTS["label"], smooth, colours))
            mine.append(make(f"raw:{role}", f"Raw {role}", HEIGHTS["raw"], raw, colours))
    return kept[:at] + mine + kept[at:]


def procedure_extras(proc: Procedure | None, extras: Sequence[Any]) -> tuple[Any, ...]:
    """The rows other parts of the viewer add (``ExtraTrack``) that apply to ``proc``: for another procedure
    none placed after a row it does without (the reviewer's cholecystectomy phase and CVS rows)."""
    if not is_other(proc):
        return tuple(extras)
    return tuple(e for e in extras if e.after not in _REPLACED)


def _tool_rows(proc: Procedure, timelines: Timelines | None, make: Callable) -> list[Any]:
    if timelines is None or not proc.has("tool"):
        return []
    colours = label_colours(proc, "tool")
    return [
        make(f"tool:{name}", display_of(proc, "tool", name), HEIGHTS["tool"], Runs.of_segments(segs), colours)
        for name in colours
        if (segs := timelines.tools.get(name))
    ]


def procedure_legend(proc: Procedure, tracks: Sequence[Any]) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """The legend of ``proc``'s rows: every label of each of its timelines (display names, the vocabulary's
    order; of a long vocabulary only those drawn), the instruments drawn, and the rows every case has
    (coverage, bookmarks). No CVS."""
    keys = {t.key for t in tracks}
    groups: list[tuple[str, list[tuple[str, str, str]]]] = []
    for role in proc.timelines:
        if role == "tool" or f"label:{role}" not in keys:
            continue
        meaning = _MEANINGS.get(role, role)
        colours = label_colours(proc, role)
        if len(colours) > _LEGEND_ALL:  # a bypass's 46 steps: only those drawn
            drawn = _drawn(role, tracks)
            colours = {n: c for n, c in colours.items() if n in drawn}
        groups.append((role_title(role), [(c, display_of(proc, role, n), meaning) for n, c in colours.items()]))
    tools = label_colours(proc, "tool")
    drawn = [(c, display_of(proc, "tool", n), "instrument in view") for n, c in tools.items() if f"tool:{n}" in keys]
    if drawn:
        groups.append(("Instruments", drawn))
    other = [
        (palette.COVERAGE, "analysed", "the model answered a frame here"),
        (palette.BOOKMARK, "bookmark", "a reviewer's bookmark"),
        (palette.UNKNOWN, "unknown", "a name outside the procedure's vocabulary"),
    ]
    return [*groups, ("Other", other)]


def tag_key(proc: Procedure | None) -> str:
    """The row whose label the playhead's tag names: a cholecystectomy's phase, else the procedure's first
    timeline (a suturing case's action, a bypass's phase)."""
    if not is_other(proc):
        return "phase"
    assert proc is not None
    return next((f"label:{r}" for r in proc.timelines if r != "tool" and proc.has(r)), "phase")


def tag_style(proc: Procedure | None, label: str) -> tuple[str, str]:
    """(colour, name) of the playhead tag's label."""
    key = tag_key(proc)
    if key == "phase":
        return palette.PHASE_COLORS.get(label, palette.UNKNOWN), display_name(label)
    assert proc is not None
    role = key.split(":", 1)[1]
    return label_colours(proc, role).get(label, palette.UNKNOWN), display_of(proc, role, label)


def _drawn(role: str, tracks: Sequence[Any]) -> set[str]:
    return {label for t in tracks if t.key in (f"label:{role}", f"raw:{role}") for label in t.runs.labels}


def legend_key(proc: Procedure | None, tracks: Sequence[Any]) -> tuple[str, ...]:
    """What :func:`procedure_legend` depends on besides the rows present: the labels drawn of a long
    vocabulary (the legend is written again when they change)."""
    if not is_other(proc):
        return ()
    assert proc is not None
    roles = [r for r in proc.timelines if r != "tool" and proc.has(r) and len(proc.vocabulary(r)) > _LEGEND_ALL]
    return tuple(sorted(label for role in roles for label in _drawn(role, tracks)))


def describe_row(proc: Procedure | None, key: str, title: str, value: str) -> str | None:
    """A tooltip for one of ``proc``'s own rows (display names); None for rows it does not draw."""
    if not is_other(proc):
        return None
    assert proc is not None
    kind, _, role = key.partition(":")
    if kind == "label":
        return f"{title}: {display_of(proc, role, value)} (smoothed over neighbouring answers)"
    if kind == "raw":
        return f"{title}: {display_of(proc, role, value)} (the model's own answer)"
    if kind == "tool":
        return f"{display_of(proc, 'tool', value)}: in view"
    return None
