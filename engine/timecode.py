"""Frame numbers ↔ timecodes (``hh:mm:ss.ff``, ff = frame within the second)."""

from __future__ import annotations

import math
import re
from fractions import Fraction

_TIMECODE = re.compile(r"^\s*(?:(\d+):)?(\d{1,2}):(\d{1,2})(?:[.:](\d{1,3}))?\s*$")


def format_timecode(frame: int, fps: float | Fraction) -> str:
    fps = float(fps)
    if fps <= 0:
        return "--:--:--.--"
    per_second = max(1, math.ceil(fps - 1e-9))
    seconds = int(frame // fps)
    ff = round(frame - seconds * fps)
    if ff >= per_second:
        seconds, ff = seconds + 1, 0
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    width = len(str(per_second - 1))
    return f"{h:02d}:{m:02d}:{s:02d}.{ff:0{max(2, width)}d}"


def parse_position(text: str, fps: float | Fraction) -> int:
    """A frame number (``1234``) or a timecode (``mm:ss``, ``hh:mm:ss.ff``) → frame index."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    m = _TIMECODE.match(text)
    if m is None:
        raise ValueError(f"not a frame number or timecode: {text!r}")
    h, mnt, s, ff = (int(g) if g else 0 for g in m.groups())
    if mnt >= 60 or s >= 60 or ff >= max(1, math.ceil(float(fps))):
        raise ValueError(f"timecode out of range: {text!r}")
    return round((h * 3600 + mnt * 60 + s) * float(fps)) + ff
