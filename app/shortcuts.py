"""Keyboard shortcuts: defaults, user overrides kept in QSettings, and the help overlay's table.

Every key sequence belongs to one action only and names the character a key press delivers: a
shifted symbol is written as its character (``{``, not ``Shift+[``). Qt finds both ``{`` and
``Shift+[`` for one press of Shift+[ ("Ambiguous shortcut overload": neither fires), so
:func:`keymap` folds ``Shift+<symbol>`` into the symbol's character (US layout) and drops a
sequence already taken by another action.
"""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QSettings
from PySide6.QtGui import QKeySequence


@dataclass(frozen=True)
class Shortcut:
    action: str
    keys: tuple[str, ...]
    description: str


DEFAULTS: tuple[Shortcut, ...] = (
    Shortcut("play_pause", ("Space", "K"), "Play / pause"),
    Shortcut("step_back", ("Left", ","), "Previous frame"),
    Shortcut("step_forward", ("Right", "."), "Next frame"),
    Shortcut("second_back", ("Shift+Left",), "One second back"),
    Shortcut("second_forward", ("Shift+Right",), "One second forward"),
    Shortcut("shuttle_back", ("J",), "Shuttle backwards (again: faster)"),
    Shortcut("shuttle_forward", ("L",), "Shuttle forwards (again: faster)"),
    Shortcut("first_frame", ("Home",), "First frame"),
    Shortcut("last_frame", ("End",), "Last frame"),
    Shortcut("go_to", ("Ctrl+G",), "Go to frame or time (hh:mm:ss.ff or a frame number)"),
    Shortcut("prev_phase", ("[",), "Previous phase boundary"),
    Shortcut("next_phase", ("]",), "Next phase boundary"),
    Shortcut("prev_bookmark", ("{",), "Previous bookmark (Shift+[)"),
    Shortcut("next_bookmark", ("}",), "Next bookmark (Shift+])"),
    Shortcut("add_bookmark", ("B",), "Bookmark this frame (with a note)"),
    Shortcut("reask", ("R",), "Ask the model again about this frame"),
    Shortcut("pause_analysis", ("P",), "Pause / resume background analysis"),
    Shortcut("toggle_boxes", ("1",), "Show / hide instrument boxes"),
    Shortcut("toggle_triplets", ("2",), "Show / hide triplet captions"),
    Shortcut("toggle_phase", ("3",), "Show / hide the phase badge"),
    Shortcut("toggle_cvs", ("4",), "Show / hide the CVS badge"),
    Shortcut("review_phase", ("E",), "Reviewer: set the phase from here (or of the selection); then 1–7 picks it"),
    Shortcut("review_boundary", ("M",), "Reviewer: move the nearest reviewed phase boundary to the playhead"),
    Shortcut("review_c1", ("F1",), "Reviewer: toggle CVS C1 at the playhead (met / not met)"),
    Shortcut("review_c2", ("F2",), "Reviewer: toggle CVS C2 at the playhead"),
    Shortcut("review_c3", ("F3",), "Reviewer: toggle CVS C3 at the playhead"),
    Shortcut("next_disagreement", ("D",), "Next frame where the model and the reviewer disagree"),
    Shortcut("prev_disagreement", ("Shift+D",), "Previous frame where the model and the reviewer disagree"),
    Shortcut("open", ("Ctrl+O",), "Open a case"),
    Shortcut("help", ("?",), "Show this list of shortcuts (? is Shift+/; F1–F3 are the reviewer's CVS keys)"),
    Shortcut("quit", ("Ctrl+Q",), "Quit"),
)

SPEEDS = (0.25, 0.5, 1.0, 1.5, 2.0, 4.0)


# Shift + a symbol key gives another character (US layout): the character is what Qt matches.
_SHIFTED = dict(zip("[]/,.;'`\\-=1234567890", '{}?<>:"~|_+!@#$%^&*()', strict=True))


def _fold(key: str) -> str:
    """``Shift+[`` → ``{`` (the character a press of Shift+[ delivers); anything else as written."""
    head, _, last = key.rpartition("+")
    mods = [m for m in head.split("+") if m] if head else []
    if len(last) == 1 and last in _SHIFTED and any(m.lower() == "shift" for m in mods):
        mods = [m for m in mods if m.lower() != "shift"]
        return "+".join([*mods, _SHIFTED[last]])
    return key


def keymap(settings: QSettings | None = None) -> dict[str, tuple[str, ...]]:
    """Action → key sequences: the defaults, with the user's overrides from ``shortcuts/<action>``
    (a comma-free list separated by ``;``, e.g. ``Space;K``). Shifted symbols are folded into their
    character, and a sequence is kept for the first action that names it only (never ambiguous)."""
    keys = {s.action: s.keys for s in DEFAULTS}
    if settings is not None:
        for action in keys:
            value = settings.value(f"shortcuts/{action}")
            if isinstance(value, str) and value.strip():
                keys[action] = tuple(k.strip() for k in value.split(";") if k.strip())
    taken: set[str] = set()
    for action, sequences in keys.items():
        kept = []
        for key in sequences:
            folded = _fold(key)
            portable = QKeySequence(folded).toString(QKeySequence.SequenceFormat.PortableText).lower()
            if portable and portable not in taken:
                taken.add(portable)
                kept.append(folded)
        keys[action] = tuple(kept)
    return keys


def describe(keys: dict[str, tuple[str, ...]]) -> list[tuple[str, str]]:
    """Rows for the help overlay: (keys, what they do)."""
    return [(" / ".join(keys[s.action]), s.description) for s in DEFAULTS]
