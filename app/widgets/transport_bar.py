"""The transport bar under the video: play/pause, first/previous/next/last, frame and time read-outs,
speed. It follows the session's ``Playhead`` (its displayed frame and whether it plays)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QStyle, QToolButton, QWidget

from app.session import CaseSession
from app.shortcuts import SPEEDS

__all__ = ["TransportBar"]


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
        session.playhead.subscribe(self._on_playhead)

    @property
    def speed(self) -> float:
        return SPEEDS[self.speed_box.currentIndex()]

    def _on_playhead(self, name: str, value: Any) -> None:
        if name == "displayed" and value >= 0:
            self.frame_label.setText(f"frame {value} / {self.session.case.frame_count - 1}")
            self.time_label.setText(self.session.timecode(value))  # presentation time: right for variable rates
        elif name == "playing":
            self.play_button.setIcon(self._icons["Pause" if value else "Play"])
