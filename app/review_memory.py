"""Where the reviewer was in each case: the frame on screen and the selected range.

Reopening a case puts the reviewer back where they left it, with the range they had selected
for a clip still selected. Kept in the app's settings (not in the case store, so a store on
read-only media or from an older surgview still works), keyed by the video's fingerprint, so a
renamed or moved video is still recognised; only the most recent cases are kept.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from PySide6.QtCore import QSettings

KEY = "cases/review"
MAX_CASES = 200


@dataclass(frozen=True)
class ReviewSpot:
    """The frame on screen and the selected range (first, last), if any."""

    frame: int
    selection: tuple[int, int] | None = None

    def clamped(self, frame_count: int) -> ReviewSpot | None:
        """This spot inside a video of ``frame_count`` frames; None when nothing of it fits."""
        if frame_count <= 0:
            return None
        last = frame_count - 1
        selection = None
        if self.selection is not None:
            first, end = sorted(self.selection)
            if first <= last:
                selection = (max(first, 0), min(end, last))
        return ReviewSpot(min(max(self.frame, 0), last), selection)


class ReviewMemory:
    """Remembers one :class:`ReviewSpot` per case in ``settings``."""

    def __init__(self, settings: QSettings):
        self._settings = settings

    def recall(self, fingerprint: str) -> ReviewSpot | None:
        entry = self._entries().get(fingerprint)
        if not isinstance(entry, dict):
            return None
        frame, selection = entry.get("frame"), entry.get("selection")
        if not isinstance(frame, int) or isinstance(frame, bool):
            return None
        if (
            isinstance(selection, list)
            and len(selection) == 2
            and all(isinstance(f, int) and not isinstance(f, bool) for f in selection)
        ):
            return ReviewSpot(frame, (selection[0], selection[1]))
        return ReviewSpot(frame)

    def remember(self, fingerprint: str, spot: ReviewSpot) -> None:
        entries = self._entries()
        entries.pop(fingerprint, None)
        entries[fingerprint] = {
            "frame": int(spot.frame),
            "selection": list(spot.selection) if spot.selection is not None else None,
            "at": round(time.time()),
        }
        newest = sorted(entries.items(), key=lambda item: item[1].get("at", 0) if isinstance(item[1], dict) else 0)
        self._settings.setValue(KEY, json.dumps(dict(newest[-MAX_CASES:])))

    def _entries(self) -> dict:
        """The stored entries; anything unreadable (a hand-edited or damaged file) counts as none."""
        raw = self._settings.value(KEY, "")
        try:
            entries = json.loads(raw) if isinstance(raw, str) and raw else {}
        except ValueError:
            return {}
        return entries if isinstance(entries, dict) else {}
