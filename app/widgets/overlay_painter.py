"""The overlays of one frame's Chain, painted with any QPainter: the viewer's canvas, report
pictures and exported clips all draw them through this one module, so they look the same.

Everything a model wrote is drawn with ``QPainter.drawText`` after control characters are
removed: plain text, never rich text, so ``<b>x</b>`` shows as typed. Names the ontology does
not know are drawn as written, dashed and marked "?".
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPen

from app import palette
from app.state import LayerState
from engine.chain import Chain, CvsState, InstrumentSighting, Mention
from engine.ontology import load_ontology
from engine.procedures import load_procedures
from engine.timecode import format_time, format_timecode

__all__ = ["FrameBox", "chain_boxes", "cvs_badge_parts", "overlay_font_px", "paint_overlays", "plain_text"]

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
    """The ontology's display form of a canonical label (``cystic_duct`` → ``cystic duct``); another
    procedure's label (a suturing case's ``Large_Needle_Driver``) in that procedure's display form."""
    ontologies = [load_ontology(), *(p.ontology for p in load_procedures().values())]
    for ontology in ontologies:
        try:
            found = ontology.vocabulary(vocabulary).resolve(label)
        except (KeyError, LookupError, ValueError):
            found = None
        if found is not None and (ontology is ontologies[0] or found.name == label):
            return found.display
    return label


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
class FrameBox:
    rect: QRectF  # painter coordinates
    sighting: InstrumentSighting

    @property
    def label(self) -> str | None:
        return self.sighting.name.label


def chain_boxes(chain: Chain | None, target: QRectF, frame_width: int, frame_height: int) -> list[FrameBox]:
    """The chain's instrument boxes (pixels of the frame) mapped onto ``target``."""
    if chain is None or chain.perception is None or frame_width <= 0 or frame_height <= 0:
        return []
    sx, sy = target.width() / frame_width, target.height() / frame_height
    boxes = []
    for s in chain.perception.instruments:
        if s.box is None:
            continue
        x1, y1, x2, y2 = s.box
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        boxes.append(FrameBox(QRectF(target.x() + x1 * sx, target.y() + y1 * sy, (x2 - x1) * sx, (y2 - y1) * sy), s))
    return boxes


def overlay_font_px(target_height: float) -> int:
    """Overlay text size for a picture of this height (readable small, not shouting large)."""
    return int(min(18, max(10, target_height / 32)))


def paint_overlays(
    p: QPainter,
    target: QRectF,
    frame_width: int,
    frame_height: int,
    chain: Chain | None,
    layers: LayerState,
    *,
    index: int = -1,
    fps: float = 0.0,
    seconds: float | None = None,
    osd: bool = True,
    base_font: QFont | None = None,
    held: str | None = None,
    cvs_doubt: str | None = None,
) -> None:
    """Paint the overlays of ``chain`` over a frame already drawn into ``target``.

    ``seconds``: the frame's presentation time, for the OSD's timecode (right for variable frame
    rates); without it the timecode is counted from ``index`` at ``fps``. ``held``: the chain is an
    earlier analysed frame's (while the video plays); its layers are drawn fainter, under a label
    saying how old they are. ``cvs_doubt``: why the CVS answer is no green light ("doubtful",
    "neighbours disagree"): the badge is framed in amber, met criteria are amber, the word follows."""
    font = QFont(base_font) if base_font is not None else QFont(p.font())
    font.setPixelSize(overlay_font_px(target.height()))
    p.setFont(font)
    if chain is not None and held:
        _paint_held(p, target, held)
        p.setOpacity(0.7)
    if chain is not None:
        if layers.boxes:
            _paint_boxes(p, target, chain_boxes(chain, target, frame_width, frame_height), layers.highlighted)
        if layers.phase and chain.context is not None and chain.context.phase is not None:
            _paint_phase(p, target, chain.context.phase)
        if layers.cvs and chain.context is not None and any(c is not None for c in chain.context.cvs):
            _paint_cvs(p, target, chain.context.cvs, cvs_doubt)
    p.setOpacity(1.0)
    osd_width = _paint_osd(p, target, index, fps, seconds) if osd else 0.0
    if chain is not None and layers.triplets and chain.relations is not None and chain.relations.triplets:
        p.setOpacity(0.7 if held else 1.0)
        _paint_triplets(p, target, chain, layers.highlighted, osd_width)
        p.setOpacity(1.0)


def _paint_held(p: QPainter, target: QRectF, text: str) -> None:
    """The held overlay's age, top centre: "from 00:01:12 · 0.4 s ago"."""
    fm = QFontMetrics(p.font())
    text = fm.elidedText(plain_text(text), Qt.TextElideMode.ElideRight, int(target.width() / 2))
    w, h = fm.horizontalAdvance(text) + 12, fm.height() + 6
    rect = QRectF(target.center().x() - w / 2, target.top() + 8, w, h)
    _badge(p, rect, QColor(0, 0, 0, 180))
    p.setPen(QColor(palette.HELD_AGE))
    p.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)


def _paint_boxes(p: QPainter, target: QRectF, boxes: list[FrameBox], highlighted: str | None) -> None:
    boxes = sorted(boxes, key=lambda b: highlighted is not None and b.label == highlighted)
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
        p.setPen(QColor(palette.BACKGROUND) if lit else colour)
        p.drawText(tag, Qt.AlignmentFlag.AlignCenter, text)


def _badge(p: QPainter, rect: QRectF, fill: QColor) -> None:
    p.setPen(Qt.PenStyle.NoPen)
    p.setBrush(fill)
    p.drawRoundedRect(rect, 4, 4)


def _paint_phase(p: QPainter, target: QRectF, phase: Mention) -> None:
    fm = QFontMetrics(p.font())
    text = fm.elidedText(_name(phase), Qt.TextElideMode.ElideRight, int(target.width() / 2))
    rect = QRectF(target.left() + 8, target.top() + 8, fm.horizontalAdvance(text) + 16, fm.height() + 8)
    fill = QColor(palette.phase_color(phase.label))
    _badge(p, rect, fill)
    p.setPen(QColor(palette.BACKGROUND) if fill.lightnessF() > 0.5 else QColor(palette.WHITE))
    p.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)


def cvs_badge_parts(cvs: tuple[CvsState | None, ...], doubt: str | None = None) -> list[tuple[str, str]]:
    """The CVS badge's words and colours: ``CVS C1✓ C2✗ C3–``; with ``doubt`` a met criterion is
    amber, never the plain green light, and the word ("doubtful", "neighbours disagree") follows."""
    parts = [("CVS", palette.TEXT)]
    for i, state in enumerate(cvs):
        mark = _CVS_MARKS.get(state, "–") if state is not None else "–"
        colour = palette.CVS_COLORS.get(state, palette.TEXT_DIM) if state is not None else palette.TEXT_DIM
        if doubt and state is CvsState.MET:
            colour = palette.CVS_DOUBT
        parts.append((f"C{i + 1}{mark}", colour))
    if doubt:
        parts.append((plain_text(doubt, 40), palette.CVS_DOUBT))
    return parts


def _paint_cvs(p: QPainter, target: QRectF, cvs: tuple[CvsState | None, ...], doubt: str | None = None) -> None:
    fm = QFontMetrics(p.font())
    parts = [(text, QColor(colour)) for text, colour in cvs_badge_parts(cvs, doubt)]
    gap = fm.horizontalAdvance("  ")
    width = sum(fm.horizontalAdvance(t) for t, _ in parts) + gap * (len(parts) - 1) + 16
    rect = QRectF(target.right() - 8 - width, target.top() + 8, width, fm.height() + 8)
    _badge(p, rect, QColor(0, 0, 0, 180))
    if doubt:  # a distinct marking: a dashed amber frame around the badge
        pen = QPen(QColor(palette.CVS_DOUBT), 2)
        pen.setStyle(Qt.PenStyle.DashLine)
        p.setPen(pen)
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawRoundedRect(rect, 4, 4)
    x = rect.left() + 8
    for text, colour in parts:
        p.setPen(colour)
        w = fm.horizontalAdvance(text)
        p.drawText(QRectF(x, rect.top(), w + 1, rect.height()), Qt.AlignmentFlag.AlignVCenter, text)
        x += w + gap


def _paint_triplets(p: QPainter, target: QRectF, chain: Chain, highlighted: str | None, reserved: float) -> None:
    assert chain.relations is not None
    triplets = chain.relations.triplets
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
    _badge(p, strip, QColor(0, 0, 0, 160))
    for i, (text, colour) in enumerate(lines):
        p.setPen(QColor(colour))
        row = QRectF(strip.left() + 8, strip.top() + 4 + i * line_h, strip.width() - 16, line_h)
        p.drawText(row, Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft, text)


def _paint_osd(p: QPainter, target: QRectF, index: int, fps: float, seconds: float | None = None) -> float:
    """Frame number and timecode (of ``seconds``, the presentation time, when given), bottom right;
    returns the width used."""
    text = f"{index}"
    if fps > 0:
        text += f"  {format_time(seconds, fps) if seconds is not None else format_timecode(index, fps)}"
    fm = QFontMetrics(p.font())
    w, h = fm.horizontalAdvance(text) + 12, fm.height() + 6
    rect = QRectF(target.right() - 8 - w, target.bottom() - 8 - h, w, h)
    _badge(p, rect, QColor(0, 0, 0, 160))
    p.setPen(QColor(palette.TEXT))
    p.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
    return w + 8
