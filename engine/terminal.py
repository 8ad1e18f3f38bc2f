"""Model and server text made harmless for a terminal, a report or a painted panel.

A model, or a server that is not ours, can answer with escape sequences: clear the screen, set
the window title, write the clipboard (OSC 52), ring the bell, or reorder what a reader sees
with bidirectional overrides (U+202E makes ``evil\\u202etxt.exe`` read as ``evilexe.txt``). Every
place where such text reaches a terminal, or a renderer that would draw it, goes through
:func:`visible_text` (alias :func:`safe_for_terminal`), which shows each of these characters as
its escape. The mapping works one character at a time, so a stream escaped piece by piece is
escaped exactly as the whole text would be: a sequence split across pieces stays harmless.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

__all__ = ["BIDI_CONTROLS", "safe_for_terminal", "safe_json", "visible_text"]

BIDI_CONTROLS = frozenset(range(0x202A, 0x202F)) | frozenset(range(0x2066, 0x206A)) | {0x200E, 0x200F, 0x061C}
_JSON_UNSAFE = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def visible_text(text: str, *, keep_newlines: bool = True) -> str:
    """Model or user text with every control character made visible as its escape.

    Control characters (C0, DEL, C1), bidirectional controls (which can reorder what a reader
    sees) and lone surrogates become ``\\xNN`` / ``\\uNNNN`` text, which every font can draw.
    Newlines and tabs stay when ``keep_newlines``; ``\\r`` goes (it would let text overwrite the
    line before it). HTML markup is left as typed: escaping is the renderer's job (jinja2
    autoescape, QPainter plain text).
    """
    out = []
    for c in str(text):
        code = ord(c)
        if c in "\n\t" and keep_newlines:
            out.append(c)
        elif c == "\r":
            out.append("" if keep_newlines else " ")
        elif code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif code in BIDI_CONTROLS or unicodedata.category(c) == "Cs":
            out.append(f"\\u{code:04x}")
        else:
            out.append(c)
    return "".join(out)


safe_for_terminal = visible_text


def safe_json(value: Any, **dumps_options: Any) -> str:
    """``json.dumps(value, ensure_ascii=False)`` that a terminal can show: still valid JSON.

    JSON escapes C0 controls itself but not DEL, C1 or bidirectional controls; outside strings
    ``json.dumps`` writes none of them, so each is replaced by its ``\\uNNNN`` JSON escape.
    """
    text = json.dumps(value, ensure_ascii=False, **dumps_options)
    return _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def one_line(value: object, *, limit: int | None = None, empty: str = "") -> str:
    """``value`` as one line for a status bar or an error message: runs of whitespace (newlines
    included) become one space; ``empty`` when nothing is left; cut to ``limit`` characters, the last
    one an ellipsis. An exception reads ``Type: message`` (just ``Type`` when it has no message)."""
    if isinstance(value, BaseException):
        name = type(value).__name__
        text = " ".join(str(value).split()) or name
        text = text if text.startswith(name) else f"{name}: {text}"
    else:
        text = " ".join(str(value).split()) or empty
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text
