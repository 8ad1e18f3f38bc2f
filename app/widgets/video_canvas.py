"""The video frame on screen, with the model's reasoning drawn over it.

The canvas paints one frame scaled to fit (aspect kept, black bars) and, over it, the layers of
the Chain *of that same frame*: instrument boxes with labels, the triplets, a phase badge and a
CVS badge, each switchable through ``LayerState``. A chain is accepted only for the frame on
screen and dropped with it, so a stale frame's boxes are never drawn over a new picture. While
the video plays, a frame that was not analysed itself shows the latest analysed frame's overlay
before it (within the session's ``hold_s``), held until the next analysed frame and marked with
its age ("from 00:01:12 · 0.4 s ago"): never presented as the frame on screen.

The layers are painted by :mod:`app.widgets.overlay_painter` (shared with report pictures and
exported clips): model text as plain text, never rich text.

While a seek is decoding, ``set_preview`` shows the small keyframe picture nearest the target
(:mod:`app.previews`) scaled into the frame's place, marked "preview" and with no overlay; the
next ``set_frame`` replaces it with the exact frame.

Hovering a box emits ``entityHovered`` with the tool's canonical label and sets
``LayerState.highlighted`` (as the reasoning panel does), so the entity lights up everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import QEvent, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QMouseEvent, QPainter, QPaintEvent
from PySide6.QtWidgets import QWidget

from app import palette
from app.playback import safe_emit
from app.session import CaseSession
from app.state import LayerState
from app.widgets.overlay_painter import FrameBox, chain_boxes, paint_overlays, plain_text
from engine.chain import Chain, InstrumentSighting

__all__ = ["VideoCanvas", "plain_text"]


class VideoCanvas(QWidget):
    """Paints the displayed frame and the overlays of its Chain; reports the box under the mouse.

    Feed it with ``set_frame(index, image)`` (from ``PlaybackController.frameReady``) and
    ``set_chain(index, chain)``; ``set_layers`` shares the layer toggles and the highlighted
    entity with the rest of the window; ``set_fps`` makes the OSD show a timecode.
    """

    entityHovered = Signal(object)  # str | None: the canonical tool label under the mouse

    def __init__(self, parent: QWidget | None = None, layers: LayerState | None = None):
        super().__init__(parent)
        self._image: QImage | None = None  # kept in the painter's native format
        self._index = -1
        self._chain: Chain | None = None
        self._chain_index = -1
        self._held: str | None = None  # the overlay is an earlier analysed frame's: how old it is
        self._cvs_doubt: str | None = None  # why its CVS answer is no green light ("doubtful", ...)
        self._fps = 0.0
        self._time_of: Callable[[int], float] | None = None  # presentation time of a frame, for the OSD
        self._osd = True
        self._smooth = True
        self._hovered: str | None = None
        self._mouse: QPointF | None = None
        self._preview: QImage | None = None  # a keyframe's small picture while the exact frame decodes
        self._preview_frame = -1  # the frame it stands for
        self._preview_key = -1  # the keyframe it is
        self.paints = 0  # paint events so far, and what the last one showed: (frame, is a preview)
        self.last_painted: tuple[int, bool] = (-1, False)  # for benchmarks: "on screen" means painted
        self._layers = LayerState()
        self._unsubscribe: Callable[[], None] | None = None
        self.setMouseTracking(True)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent)  # every pixel is painted
        self.setMinimumSize(160, 90)
        self.set_layers(layers or self._layers)

    # -- inputs ---------------------------------------------------------------------------------

    def set_frame(self, index: int, image: QImage | None) -> None:
        """Show frame ``index``; its overlay stays only if the chain belongs to this index."""
        if image is None or image.isNull():
            self._image, self._index = None, -1
        else:
            # Scaled drawing from RGB32 is ~4x faster than from RGB888; convert once, not per paint.
            self._image = image.convertToFormat(QImage.Format.Format_RGB32)
            self._index = index
        self._preview, self._preview_frame, self._preview_key = None, -1, -1  # the exact frame replaces it
        if self._chain is not None and self._chain_index != self._index:
            self._chain, self._held = None, None
        self._frame_changed()

    def set_chain(self, index: int, chain: Chain | None, held: str | None = None, cvs_doubt: str | None = None) -> bool:
        """Draw ``chain`` over the frame on screen; ignored (False) unless ``index`` is that frame.
        ``held``: the chain is an earlier analysed frame's, and this says how old (drawn on the video).
        ``cvs_doubt``: why its CVS answer is no green light (drawn in the CVS badge)."""
        if index != self._index or self._image is None:
            return False
        self._chain, self._chain_index = chain, index
        self._held = held if chain is not None else None
        self._cvs_doubt = cvs_doubt if chain is not None else None
        self._frame_changed()
        return True

    def set_preview(self, frame: int, keyframe: int, image: QImage | None) -> None:
        """Stand-in for ``frame`` until its exact picture arrives: ``image`` (keyframe ``keyframe``'s
        small picture) scaled into the canvas, marked as a preview, no overlay. None: drop it."""
        if image is None or image.isNull():
            self._preview, self._preview_frame, self._preview_key = None, -1, -1
        else:
            self._preview, self._preview_frame, self._preview_key = image, int(frame), int(keyframe)
        self._frame_changed()

    @property
    def previewing(self) -> bool:
        """A preview stands in for the frame asked for (nothing of the overlay is drawn)."""
        return self._preview is not None

    @property
    def preview_frame(self) -> int:
        """The frame the preview stands for (-1: none)."""
        return self._preview_frame

    @property
    def preview_keyframe(self) -> int:
        """The keyframe whose picture is shown as the preview (-1: none)."""
        return self._preview_key

    @property
    def preview_image(self) -> QImage | None:
        return self._preview

    @property
    def drawn_chain(self) -> Chain | None:
        """The chain actually painted: none over a preview."""
        return None if self._preview is not None else self._chain

    def clear(self) -> None:
        """Nothing on screen (a closed or failed video)."""
        self.set_frame(-1, None)

    def set_layers(self, layers: LayerState) -> None:
        """Follow ``layers`` (toggles and the highlighted entity); the canvas writes back hovers only."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._layers = layers

        def changed(_name: str, _value: object) -> None:
            try:
                self._refresh_hover()
                self.update()
            except RuntimeError:  # the widget is gone: stop listening
                unsubscribe()

        unsubscribe = layers.subscribe(changed)
        self._unsubscribe = unsubscribe
        self.update()

    def set_fps(self, fps: float) -> None:
        """Frame rate of the video, for the OSD's timecode."""
        self._fps = float(fps)
        self.update()

    def set_time_source(self, time_of: Callable[[int], float] | None) -> None:
        """Presentation time (seconds) of a frame index: the OSD's timecode, right for variable rates."""
        self._time_of = time_of
        self.update()

    def follow(self, session: CaseSession) -> Callable[[], None]:
        """Subscribe to ``session``: the playhead's displayed frame and that frame's record (served
        from the session's cache) decide the overlay; the OSD shows the session's presentation times."""
        self.set_time_source(session.time_of)

        held: list = [None, None]  # the held record and its chain: converted once per analysed frame

        def show(frame: int) -> None:
            record = session.record(frame) if frame >= 0 else None
            if record is not None or frame < 0 or not session.playhead.playing:
                doubt = session.cvs_doubt(frame, record.cvs) if record is not None else None
                self.set_chain(frame, record.to_chain() if record is not None else None, cvs_doubt=doubt)
                return
            latest = session.latest_record_at(frame)  # a bisect over the cached frames
            if latest is None:
                self.set_chain(frame, None)
                return
            source, record = latest
            if held[0] is not record:
                held[:] = [record, record.to_chain()]
            doubt = session.cvs_doubt(source, record.cvs)
            self.set_chain(frame, held[1], held=session.age_text(source, frame), cvs_doubt=doubt)

        def on_playhead(name: str, value: object) -> None:
            if name == "displayed" and isinstance(value, int):
                show(value)
            elif name == "playing":
                show(session.playhead.displayed)

        def on_session(name: str, value: object) -> None:
            here = session.playhead.displayed
            if (name == "results" and (value is None or (isinstance(value, int) and value <= here))) or name in (
                "analysis",
                "timelines",
            ):
                show(here)

        unsubscribe = [session.playhead.subscribe(on_playhead), session.subscribe(on_session)]
        return lambda: [u() for u in unsubscribe]

    def set_osd_visible(self, visible: bool) -> None:
        self._osd = bool(visible)
        self.update()

    def set_smooth(self, smooth: bool) -> None:
        """Bilinear scaling (default) or nearest pixel (to inspect pixels when zoomed)."""
        self._smooth = bool(smooth)
        self.update()

    # -- state ----------------------------------------------------------------------------------

    @property
    def index(self) -> int:
        """The frame on screen (-1: none)."""
        return self._index

    @property
    def image(self) -> QImage | None:
        """The frame on screen, without overlays (None: none)."""
        return self._image

    @property
    def chain(self) -> Chain | None:
        """The chain drawn over the frame on screen, if any."""
        return self._chain

    @property
    def held_label(self) -> str | None:
        """How old the overlay is when it is an earlier analysed frame's (None: it is this frame's, or none)."""
        return self._held

    @property
    def cvs_doubt(self) -> str | None:
        """Why the CVS badge is no green light ("doubtful", "neighbours disagree"), None otherwise."""
        return self._cvs_doubt

    @property
    def layers(self) -> LayerState:
        return self._layers

    @property
    def osd_visible(self) -> bool:
        return self._osd

    def sizeHint(self) -> QSize:
        return QSize(640, 360)

    # -- geometry -------------------------------------------------------------------------------

    def image_rect(self) -> QRectF:
        """Where the frame lands in the widget: scaled to fit, aspect kept, centred."""
        shown = self._preview if self._preview is not None and self._image is None else self._image
        if shown is None:
            return QRectF()
        iw, ih = shown.width(), shown.height()
        scale = min(self.width() / iw, self.height() / ih)
        w, h = iw * scale, ih * scale
        return QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)

    def map_from_frame(self, x: float, y: float) -> QPointF:
        """A point in pixels of the original frame → widget coordinates (the origin with no frame)."""
        if self._image is None:
            return QPointF()
        r = self.image_rect()
        return QPointF(r.x() + x * r.width() / self._image.width(), r.y() + y * r.height() / self._image.height())

    def _boxes(self) -> list[FrameBox]:
        if self._image is None or self._preview is not None:
            return []
        return chain_boxes(self._chain, self.image_rect(), self._image.width(), self._image.height())

    def box_at(self, pos: QPointF) -> InstrumentSighting | None:
        """The (smallest) visible box under ``pos``, in widget coordinates."""
        if not self._layers.boxes:
            return None
        hits = [b for b in self._boxes() if b.rect.contains(pos)]
        if not hits:
            return None
        return min(hits, key=lambda b: b.rect.width() * b.rect.height()).sighting

    # -- hover ----------------------------------------------------------------------------------

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        self._mouse = event.position()
        self._refresh_hover()
        super().mouseMoveEvent(event)

    def leaveEvent(self, event: QEvent) -> None:
        self._mouse = None
        self._refresh_hover()
        super().leaveEvent(event)

    def _refresh_hover(self) -> None:
        """Re-read what is under the mouse (boxes come and go under a still mouse too)."""
        hit = self.box_at(self._mouse) if self._mouse is not None else None
        self.setCursor(Qt.CursorShape.PointingHandCursor if hit is not None else Qt.CursorShape.ArrowCursor)
        label = hit.name.label if hit is not None else None  # an unknown tool has no entity to share
        if label == self._hovered:
            return
        self._hovered = label
        safe_emit(self.entityHovered, label)
        self._layers.highlighted = label  # the reasoning panel follows; so does this canvas

    def _frame_changed(self) -> None:
        self._refresh_hover()
        self.update()

    # -- painting -------------------------------------------------------------------------------

    def paintEvent(self, event: QPaintEvent) -> None:
        self.paints += 1
        previewing = self._preview is not None
        self.last_painted = (self._preview_frame if previewing else self._index, previewing)
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(palette.BACKGROUND))
        if self._preview is not None:
            self._paint_preview(p)
            return
        if self._image is None:
            return
        target = self.image_rect()
        if self._smooth:
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        p.drawImage(target, self._image)
        paint_overlays(
            p,
            target,
            self._image.width(),
            self._image.height(),
            self._chain,
            self._layers,
            index=self._index,
            fps=self._fps,
            seconds=self._time_of(self._index) if self._time_of is not None and self._index >= 0 else None,
            osd=self._osd,
            base_font=self.font(),
            held=self._held,
            cvs_doubt=self._cvs_doubt,
        )
        p.end()

    def _paint_preview(self, p: QPainter) -> None:
        """The keyframe's small picture in the frame's place, a "preview" label, no overlay."""
        assert self._preview is not None
        target = self.image_rect()
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        p.drawImage(target, self._preview)
        font = QFont(self.font())
        font.setBold(True)
        p.setFont(font)
        seconds = self._time_of(self._preview_frame) if self._time_of is not None else None
        when = f" ({seconds:.2f} s)" if seconds is not None else ""
        text = f"preview (keyframe {self._preview_key}) · frame {self._preview_frame}{when} — decoding…"
        metrics = p.fontMetrics()
        box = QRectF(target.x() + 8, target.y() + 8, metrics.horizontalAdvance(text) + 16, metrics.height() + 8)
        p.fillRect(box, QColor(0, 0, 0, 170))
        p.setPen(QColor(palette.HELD_AGE))  # amber, as the held overlay's age
        p.drawText(box, Qt.AlignmentFlag.AlignCenter, text)
        p.end()
