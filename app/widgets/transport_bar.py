"""The transport bar under the video: play/pause, first/previous/next/last, frame and time read-outs,
speed. It follows the session's ``Playhead`` (its displayed frame and whether it plays).

The read-outs keep the width of the widest text the open case can show ("frame 8888 / 8888", with a
little room for glyphs rendered at a fractional scale factor), so they are never cut and never shift the
controls beside them while the video plays.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QStyle, QToolButton, QWidget

from app.session import CaseSession
from app.shortcuts import SPEEDS

__all__ = ["TransportBar"]

_INK_SLACK_PX = 3  # glyphs hinted at a fractional device-pixel ratio can paint a pixel or two past their advance


class TransportBar(QWidget):
    """``trigger(name)`` runs the window's action of that name (first_frame, step_back, …)."""

    def __init__(self, session: CaseSession, trigger: Callable[[str], Any], parent: QWidget | None = None):
        super().__init__(parent)
        self.session = session
        row = QHBoxLayout(self)
        row.setContentsMargins(8, 4, 8, 4)
        style = self.style()
        self._icons = {
            name: style.standardIcon(getattr(QStyle.StandardPixmap, f"SP_Media{name}"))
            for name in ("Play", "Pause", "SkipBackward", "SeekBackward", "SeekForward", "SkipForward")
        }
        self.play_button = QToolButton(toolTip="Play / pause (Space)")
        self.play_button.setIcon(self._icons["Play"])
        self.play_button.clicked.connect(lambda: trigger("play_pause"))
        self.frame_label = QLabel("frame –")
        self.frame_label.setObjectName("frameLabel")
        self.time_label = QLabel("--:--:--.--")
        self.time_label.setObjectName("timeLabel")
        self.speed_box = QComboBox()
        self.speed_box.addItems([f"{s:g}×" for s in SPEEDS])
        self.speed_box.setCurrentIndex(SPEEDS.index(1.0))
        buttons = [
            ("SkipBackward", "first_frame", "First frame (Home)"),
            ("SeekBackward", "step_back", "Previous frame (←)"),
            ("SeekForward", "step_forward", "Next frame (→)"),
            ("SkipForward", "last_frame", "Last frame (End)"),
        ]
        row.addWidget(self.play_button)
        for icon, action, tip in buttons:
            b = QToolButton(toolTip=tip)
            b.setIcon(self._icons[icon])
            b.clicked.connect(lambda _=False, a=action: trigger(a))
            row.addWidget(b)
        row.addSpacing(12)
        row.addWidget(self.frame_label)
        row.addWidget(self.time_label)
        row.addStretch(1)
        row.addWidget(QLabel("speed"))
        row.addWidget(self.speed_box)
        self._widths_for: tuple[int, str] | None = None  # (frame count, timecode form) the widths were set for
        session.playhead.subscribe(self._on_playhead)

    @property
    def speed(self) -> float:
        return SPEEDS[self.speed_box.currentIndex()]

    def _on_playhead(self, name: str, value: Any) -> None:
        if name == "displayed" and value >= 0:
            last = self.session.case.frame_count - 1
            time_text = self.session.timecode(value)  # presentation time: right for variable rates
            self._reserve_widths(last, time_text)
            self.frame_label.setText(f"frame {value} / {last}")
            self.time_label.setText(time_text)
        elif name == "playing":
            self.play_button.setIcon(self._icons["Pause" if value else "Play"])

    def _reserve_widths(self, last: int, time_text: str) -> None:
        """Give each read-out the width of the widest text this case can show (digits at their widest)."""
        form = re.sub(r"\d", "0", time_text)
        if self._widths_for == (last, form):
            return
        self._widths_for = (last, form)
        for label, text in ((self.frame_label, f"frame {last} / {last}"), (self.time_label, form)):
            metrics = label.fontMetrics()
            widest = max("0123456789", key=metrics.horizontalAdvance)
            sample = re.sub(r"\d", widest, text)
            margins = label.contentsMargins()
            width = metrics.horizontalAdvance(sample) + _INK_SLACK_PX + margins.left() + margins.right()
            label.setMinimumWidth(math.ceil(width))
