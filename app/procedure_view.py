"""How the viewer and the exports draw a procedure's labels: colours from the palette keys, names people read.

:mod:`engine.procedures` names a colour *key* (palette + slot) per label and keeps hex values out of the
engine; :mod:`app.palette` holds the palettes. This module joins the two, so the timeline, its legend,
the report's chart and its tables colour an action or a bypass step the same way.
"""

from __future__ import annotations

from app import palette
from engine.procedures import Procedure

__all__ = ["ROLE_TITLES", "display_of", "label_colours", "role_title"]

ROLE_TITLES = {"phase": "Phase", "step": "Step", "action": "Action", "tool": "Instruments", "cvs": "CVS"}


def role_title(role: str) -> str:
    """A track's title (``Action``), for row labels and legend groups."""
    return ROLE_TITLES.get(role, role.replace("_", " ").capitalize())


def label_colours(proc: Procedure, role: str) -> dict[str, str]:
    """Canonical label → colour for every label of ``role`` in ``proc``, in the vocabulary's order."""
    if not proc.has(role):
        return {}
    return {name: palette.key_colour(key.palette, key.slot) for name, key in proc.colour_keys(role).items()}


def display_of(proc: Procedure, role: str, label: str | None) -> str:
    """A label as people read it (``Pulling the needle out of the tissue``); the label itself when unknown."""
    if not label:
        return "—"
    found = proc.vocabulary(role).resolve(label) if proc.has(role) else None
    return found.display if found is not None else label
