"""Frame numbers ↔ timecodes (``hh:mm:ss.ff``, ff = frame within the second).

A timecode is a time: in a variable-frame-rate file frame numbers are not ``seconds × fps``, so
callers that know each frame's presentation time (``VideoReader.times``) format that time
(:func:`format_time`) and map typed timecodes through ``index_at`` (:func:`parse_position`).
With a constant rate both give what the frame-number forms give.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from fractions import Fraction

_TIMECODE = re.compile(r"^\s*(?:(\d+):)?(\d{1,2}):(\d{1,2})(?:[.:](\d{1,3}))?\s*$")


def format_timecode(frame: int, fps: float | Fraction) -> str:
    fps = float(fps)
    if fps <= 0:
        return "--:--:--.--"
    seconds = int(frame // fps)
    return _clock(seconds, round(frame - seconds * fps), fps)


def format_time(seconds: float, fps: float | Fraction) -> str:
    """``hh:mm:ss.ff`` of a presentation time, ff counted at ``fps`` (the nominal rate).

    The frame-number form's rounding: ``format_time(i / fps, fps) == format_timecode(i, fps)``.
    """
    fps = float(fps)
    if fps <= 0 or not math.isfinite(seconds):
        return "--:--:--.--"
    whole = max(0, math.floor(seconds + 1e-9))
    return _clock(whole, max(0, round((seconds - whole) * fps)), fps)


def _clock(seconds: int, ff: int, fps: float) -> str:
    """``hh:mm:ss.ff`` of whole ``seconds`` and ``ff`` frames at ``fps`` (a whole second's worth carries)."""
    per_second = max(1, math.ceil(fps - 1e-9))
    if ff >= per_second:
        seconds, ff = seconds + 1, 0
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    width = len(str(per_second - 1))
    return f"{h:02d}:{m:02d}:{s:02d}.{ff:0{max(2, width)}d}"


def parse_position(text: str, fps: float | Fraction, index_at: Callable[[float], int] | None = None) -> int:
    """A frame number (``1234``) or a timecode (``mm:ss``, ``hh:mm:ss.ff``) → frame index.

    With ``index_at`` (seconds → the frame on screen then, e.g. ``VideoReader.index_at``) a
    timecode is a time: the frame it names is the one on screen half a frame (at ``fps``) after
    it, as :func:`format_time` rounds frame times to the nearest ff. Without, frames are counted
    at ``fps``, which is wrong for variable-frame-rate files.
    """
    text = text.strip()
    if text.isdigit():
        return int(text)
    m = _TIMECODE.match(text)
    if m is None:
        raise ValueError(f"not a frame number or timecode: {text!r}")
    h, mnt, s, ff = (int(g) if g else 0 for g in m.groups())
    if mnt >= 60 or s >= 60 or ff >= max(1, math.ceil(float(fps))):
        raise ValueError(f"timecode out of range: {text!r}")
    if index_at is not None and float(fps) > 0:
        return index_at(h * 3600 + mnt * 60 + s + (ff + 0.5) / float(fps))
    return round((h * 3600 + mnt * 60 + s) * float(fps)) + ff
