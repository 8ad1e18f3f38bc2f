"""The video frame on screen, with the model's reasoning drawn over it.

The canvas paints one frame scaled to fit (aspect kept, black bars) and, over it, the layers of
the Chain *of that same frame*: instrument boxes with labels, the triplets, a phase badge and a
CVS badge, each switchable through ``LayerState``. A chain is accepted only for the frame on
screen and dropped with it, so a stale frame's boxes are never drawn over a new picture.

Everything a model wrote is drawn with ``QPainter.drawText`` after control characters are
removed: plain text, never rich text, so ``<b>x</b>`` shows as typed. Names the ontology does
not know are drawn as written, dashed and marked "?".

Hovering a box emits ``entityHovered`` with the tool's canonical label and sets
``LayerState.highlighted`` (as the reasoning panel does), so the entity lights up everywhere.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from PySide6.QtCore import QEvent, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetrics, QImage, QMouseEvent, QPainter, QPaintEvent, QPen
from PySide6.QtWidgets import QWidget

from app import palette
from app.playback import safe_emit
from app.state import LayerState
from engine.chain import Chain, CvsState, InstrumentSighting, Mention
from engine.ontology import load_ontology
from engine.timecode import format_timecode

__all__ = ["VideoCanvas", "plain_text"]

_MAX_TEXT = 80  # characters of one model-written name or line drawn on the video
_MAX_TRIPLET_LINES = 4
_CVS_MARKS = {CvsState.MET: "✓", CvsState.NOT_MET: "✗", CvsState.NOT_ASSESSABLE: "?"}


def plain_text(text: str, limit: int = _MAX_TEXT) -> str:
    """Model text made safe to draw: control and format characters out, whitespace folded, capped."""
    cleaned = "".join(" " if unicodedata.category(c)[0] in "CZ" else c for c in str(text))
    cleaned = " ".join(cleaned.split())
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


@functools.lru_cache(maxsize=512)
def _display(vocabulary: str, label: str) -> str:
    """The ontology's display form of a canonical label (``cystic_duct`` → ``cystic duct``)."""
    try:
        found = load_ontology().vocabulary(vocabulary).resolve(label)
    except (KeyError, LookupError, ValueError):
        found = None
    return found.display if found is not None else label


@functools.lru_cache(maxsize=64)
def _tool_of(label: str) -> str | None:
    """The Cholec80 tool a CholecT50 instrument label stands for (``grasper`` → ``Grasper``)."""
    try:
        ontology = load_ontology()
        found = ontology.vocabulary("instrument").resolve(label)
        return ontology.tool_for_instrument(found).name if found is not None else None
    except (KeyError, LookupError, ValueError):
        return None


def _name(mention: Mention) -> str:
    if mention.label is None:
        return plain_text(mention.text, 40) + " ?"
    return _display(mention.vocabulary, mention.label)


@dataclass(frozen=True)
class _Box:
    rect: QRectF  # widget coordinates
    sighting: InstrumentSighting

    @property
    def label(self) -> str | None:
        return self.sighting.name.label


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
        self._fps = 0.0
        self._osd = True
        self._smooth = True
        self._hovered: str | None = None
        self._mouse: QPointF | None = None
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
        if self._chain is not None and self._chain_index != self._index:
            self._chain = None
        self._frame_changed()

    def set_chain(self, index: int, chain: Chain | None) -> bool:
        """Draw ``chain`` over the frame on screen; ignored (False) unless ``index`` is that frame."""
        if index != self._index or self._image is None:
            return False
        self._chain, self._chain_index = chain, index
        self._frame_changed()
        return True

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
    def chain(self) -> Chain | None:
        """The chain drawn over the frame on screen, if any."""
        return self._chain

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
        if self._image is None:
            return QRectF()
        iw, ih = self._image.width(), self._image.height()
        scale = min(self.width() / iw, self.height() / ih)
        w, h = iw * scale, ih * scale
        return QRectF((self.width() - w) / 2, (self.height() - h) / 2, w, h)

    def map_from_frame(self, x: float, y: float) -> QPointF:
        """A point in pixels of the original frame → widget coordinates (the origin with no frame)."""
        if self._image is None:
            return QPointF()
        r = self.image_rect()
        return QPointF(r.x() + x * r.width() / self._image.width(), r.y() + y * r.height() / self._image.height())

    def _boxes(self) -> list[_Box]:
        chain = self._chain
        if self._image is None or chain is None or chain.perception is None:
            return []
        r = self.image_rect()
        sx, sy = r.width() / self._image.width(), r.height() / self._image.height()
        boxes = []
        for s in chain.perception.instruments:
            if s.box is None:
                continue
            x1, y1, x2, y2 = s.box
            x1, x2 = sorted((x1, x2))
            y1, y2 = sorted((y1, y2))
            boxes.append(_Box(QRectF(r.x() + x1 * sx, r.y() + y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy), s))
        return boxes

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
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(palette.BACKGROUND))
        if self._image is None:
            return
        target = self.image_rect()
        if self._smooth:
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        p.drawImage(target, self._image)
        font = QFont(self.font())
        font.setPixelSize(int(min(18, max(10, target.height() / 32))))
        p.setFont(font)
        layers, chain = self._layers, self._chain
        if chain is not None:
            if layers.boxes:
                self._paint_boxes(p, target)
            if layers.phase and chain.context is not None and chain.context.phase is not None:
                self._paint_phase(p, target, chain.context.phase)
            if layers.cvs and chain.context is not None and any(c is not None for c in chain.context.cvs):
                self._paint_cvs(p, target, chain.context.cvs)
        osd_width = self._paint_osd(p, target) if self._osd else 0.0
        if chain is not None and layers.triplets and chain.relations is not None and chain.relations.triplets:
            self._paint_triplets(p, target, osd_width)
        p.end()

    def _paint_boxes(self, p: QPainter, target: QRectF) -> None:
        highlighted = self._layers.highlighted
        boxes = sorted(self._boxes(), key=lambda b: highlighted is not None and b.label == highlighted)
        fm = QFontMetrics(p.font())
        for box in boxes:
            known = box.label is not None
            lit = known and box.label == highlighted
            colour = QColor(palette.BOX_HIGHLIGHT if lit else palette.BOX if known else palette.BOX_UNKNOWN)
            pen = QPen(colour, 4 if lit else 2)
            if not known:
                pen.setStyle(Qt.PenStyle.DashLine)
            p.setPen(pen)
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.drawRect(box.rect)
            text = _name(box.sighting.name)
            if box.sighting.confidence is not None:
                text += f" {box.sighting.confidence:.2f}"
            text = fm.elidedText(text, Qt.TextElideMode.ElideRight, int(max(target.width() / 2, 60)))
            w, h = fm.horizontalAdvance(text) + 8, fm.height() + 2
            y = box.rect.top() - h if box.rect.top() - h >= target.top() else box.rect.top()
            x = min(max(box.rect.left(), target.left()), target.right() - w)
            tag = QRectF(x, y, w, h)
            p.fillRect(tag, colour if lit else QColor(0, 0, 0, 170))
            p.setPen(QColor("#000000") if lit else colour)
            p.drawText(tag, Qt.AlignmentFlag.AlignCenter, text)

    def _badge(self, p: QPainter, rect: QRectF, fill: QColor) -> None:
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(fill)
        p.drawRoundedRect(rect, 4, 4)

    def _paint_phase(self, p: QPainter, target: QRectF, phase: Mention) -> None:
        fm = QFontMetrics(p.font())
        text = fm.elidedText(_name(phase), Qt.TextElideMode.ElideRight, int(target.width() / 2))
        rect = QRectF(target.left() + 8, target.top() + 8, fm.horizontalAdvance(text) + 16, fm.height() + 8)
        fill = QColor(palette.phase_color(phase.label))
        self._badge(p, rect, fill)
        p.setPen(QColor("#000000") if fill.lightnessF() > 0.5 else QColor("#FFFFFF"))
        p.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)

    def _paint_cvs(self, p: QPainter, target: QRectF, cvs: tuple[CvsState | None, ...]) -> None:
        fm = QFontMetrics(p.font())
        parts = [("CVS", QColor(palette.TEXT))]
        for i, state in enumerate(cvs):
            mark = _CVS_MARKS.get(state, "–") if state is not None else "–"
            colour = palette.CVS_COLORS.get(state, palette.TEXT_DIM) if state is not None else palette.TEXT_DIM
            parts.append((f"C{i + 1}{mark}", QColor(colour)))
        gap = fm.horizontalAdvance("  ")
        width = sum(fm.horizontalAdvance(t) for t, _ in parts) + gap * (len(parts) - 1) + 16
        rect = QRectF(target.right() - 8 - width, target.top() + 8, width, fm.height() + 8)
        self._badge(p, rect, QColor(0, 0, 0, 180))
        x = rect.left() + 8
        for text, colour in parts:
            p.setPen(colour)
            w = fm.horizontalAdvance(text)
            p.drawText(QRectF(x, rect.top(), w + 1, rect.height()), Qt.AlignmentFlag.AlignVCenter, text)
            x += w + gap

    def _paint_triplets(self, p: QPainter, target: QRectF, reserved: float) -> None:
        assert self._chain is not None and self._chain.relations is not None
        triplets = self._chain.relations.triplets
        highlighted = self._layers.highlighted
        fm = QFontMetrics(p.font())
        width = max(60.0, target.width() - reserved - 24)
        lines: list[tuple[str, str]] = []
        for t in triplets[:_MAX_TRIPLET_LINES]:
            text = " ".join(_name(m) for m in (t.instrument, t.verb, t.target))
            known = all(m.known for m in (t.instrument, t.verb, t.target))
            lit = highlighted is not None and highlighted in (t.instrument.label, _tool_of(t.instrument.label or ""))
            colour = palette.BOX_HIGHLIGHT if lit else palette.TEXT if known else palette.BOX_UNKNOWN
            lines.append((fm.elidedText(plain_text(text), Qt.TextElideMode.ElideRight, int(width) - 16), colour))
        if len(triplets) > _MAX_TRIPLET_LINES:
            lines.append((f"+{len(triplets) - _MAX_TRIPLET_LINES} more", palette.TEXT_DIM))
        line_h = fm.height() + 2
        strip_w = min(width, max(fm.horizontalAdvance(t) for t, _ in lines) + 16)
        strip_h = line_h * len(lines) + 8
        strip = QRectF(target.left() + 8, target.bottom() - 8 - strip_h, strip_w, strip_h)
        self._badge(p, strip, QColor(0, 0, 0, 160))
        for i, (text, colour) in enumerate(lines):
            p.setPen(QColor(colour))
            row = QRectF(strip.left() + 8, strip.top() + 4 + i * line_h, strip.width() - 16, line_h)
            p.drawText(row, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, text)

    def _paint_osd(self, p: QPainter, target: QRectF) -> float:
        """Frame number and timecode of the frame on screen, bottom right; returns the width used."""
        text = f"{self._index}"
        if self._fps > 0:
            text += f"  {format_timecode(self._index, self._fps)}"
        fm = QFontMetrics(p.font())
        w, h = fm.horizontalAdvance(text) + 12, fm.height() + 6
        rect = QRectF(target.right() - 8 - w, target.bottom() - 8 - h, w, h)
        self._badge(p, rect, QColor(0, 0, 0, 160))
        p.setPen(QColor(palette.TEXT))
        p.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
        return w + 8
