"""Instant scrubbing: keyframe previews on the canvas and in the timeline's tooltip.

When a case opens, the session loads or builds its keyframe strip (:mod:`engine.thumbnails`) in a
background thread; ``Previews`` hands the strip to the UI thread through a queued signal and the
session keeps it (cancelled when the case closes or another opens). On every seek (a timeline
click or drag, a jump, Go to) to another group of pictures than the one on screen, the canvas at
once shows the small picture of the keyframe at or before the target (``nearest``: a binary
search, no decoding on the UI thread), marked "preview" and with no overlay, until the exact frame
arrives through ``frameReady``. Hovering the timeline shows the same picture in its tooltip.

While the strip is built, ``progress(share)`` follows it; when it cannot be built, ``failed(line)``
says why (the status bar shows both: :class:`app.status_bar.VideoStatus`). Seeks then show no
preview, only exact frames.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QObject, Qt, Signal
from PySide6.QtGui import QImage

from app.playback import safe_emit
from app.session import CaseSession
from app.widgets.timeline_view import TimelineView
from app.widgets.video_canvas import VideoCanvas
from engine.thumbnails import ThumbnailStrip

__all__ = ["Previews", "preview_html", "to_qimage"]


def to_qimage(picture: np.ndarray) -> QImage:
    """A QImage owning a copy of a small h x w x 3 uint8 RGB picture (a few tens of kB)."""
    h, w = picture.shape[:2]
    return QImage(picture.tobytes(), w, h, 3 * w, QImage.Format.Format_RGB888).copy()


def preview_html(picture: np.ndarray, caption: str = "") -> str:
    """Rich text for a tooltip: the picture inline (a PNG data URL), then ``caption`` (escaped)."""
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    to_qimage(picture).save(buffer, "PNG")
    buffer.close()
    encoded = base64.b64encode(bytes(data.data())).decode("ascii")
    text = caption.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br>")
    return f'<img src="data:image/png;base64,{encoded}"><br>{text}'


class Previews(QObject):
    """Wires the session's preview strip to the canvas (on seeks) and the timeline (its tooltip)."""

    stripReady = Signal(object, object)  # (video path, ThumbnailStrip | None): builder thread → UI thread
    progress = Signal(float)  # share of the open case's strip built (UI thread)
    failed = Signal(str)  # one line: why the open case has no previews (UI thread)
    _progress = Signal(object, float)  # builder thread → UI thread

    def __init__(
        self,
        session: CaseSession,
        canvas: VideoCanvas,
        timeline: TimelineView,
        cached: Callable[[int], bool],
        parent: QObject | None = None,
    ):
        super().__init__(parent)
        self.session, self.canvas, self.timeline = session, canvas, timeline
        self.cached = cached  # frame -> the decoder's cache holds it (the playback controller's ``holds``)
        self.shown = 0  # previews put on the canvas (for tests and the curious)
        self.enabled = True  # False: seeks show no preview (benchmarks compare against exact frames only)
        self.stripReady.connect(self._on_strip, Qt.ConnectionType.QueuedConnection)
        self._progress.connect(self._on_progress, Qt.ConnectionType.QueuedConnection)
        session.thumbnails_ready = self._from_builder
        session.thumbnails_progress = lambda video, share: safe_emit(self._progress, video, share)
        timeline.preview_source = self.tooltip_html
        session.playhead.subscribe(self._on_playhead)

    @property
    def strip(self) -> ThumbnailStrip | None:
        return self.session.thumbnails

    def _from_builder(self, video: Path, strip: ThumbnailStrip | None) -> None:
        safe_emit(self.stripReady, video, strip)  # queued: the session is touched on the UI thread only

    def _on_strip(self, video: Path, strip: ThumbnailStrip | None) -> None:
        if self.session.set_thumbnails(video, strip):
            safe_emit(self.progress, 1.0)
        elif strip is None and (error := self.session.thumbnails_error(video)) is not None:
            safe_emit(self.failed, error)

    def _on_progress(self, video: Path, share: float) -> None:
        if self.session.case.video is not None and Path(self.session.case.video) == Path(video):
            safe_emit(self.progress, float(share))

    def _on_playhead(self, name: str, value: object) -> None:
        if name == "requested" and isinstance(value, int):
            self.show(value)

    def show(self, frame: int) -> bool:
        """Put the preview of ``frame`` on the canvas unless the exact frame comes at once from the
        decoder's cache (``cached``). A frame of the group of pictures on screen is no exception: ahead of
        what was decoded it can take most of a group's decode. True when shown."""
        strip = self.session.thumbnails
        if strip is None or frame < 0 or not self.enabled:
            return False
        keyframe, picture = strip.nearest(frame)
        if frame == self.canvas.index or self.cached(frame):
            if self.canvas.previewing:
                self.canvas.set_preview(-1, -1, None)
            return False
        if self.canvas.previewing and self.canvas.preview_keyframe == keyframe:
            self.canvas.set_preview(frame, keyframe, self.canvas.preview_image)  # same picture, new target
        else:
            self.canvas.set_preview(frame, keyframe, to_qimage(picture))
        self.shown += 1
        return True

    def tooltip_html(self, frame: int, caption: str) -> str | None:
        """The timeline's tooltip at ``frame``: the preview above ``caption``; None without a strip."""
        strip = self.session.thumbnails
        if strip is None or frame < 0:
            return None
        return preview_html(strip.nearest(frame)[1], caption)
