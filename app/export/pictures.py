"""Pictures for exports: frames with their overlays, blanked areas, the case timeline chart.

Frames are painted with the viewer's own overlay code (:mod:`app.widgets.overlay_painter`), so a
report shows what the reviewer saw. Charts are drawn on white for paper.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence

import numpy as np
from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QGuiApplication, QImage, QPainter, QPen
from PySide6.QtWidgets import QApplication

from app import palette
from app.state import LayerState
from app.widgets.overlay_painter import paint_overlays
from engine.chain import Chain
from engine.report_data import ReportData
from engine.store import BlankArea
from engine.timecode import format_timecode

__all__ = [
    "blank_areas",
    "data_uri",
    "ensure_gui_app",
    "frame_picture",
    "rgb_image",
    "timeline_picture",
]

TOOL_COLOR = palette.REPORT_TOOL
INK = palette.REPORT_INK
GRID = palette.REPORT_GRID


def ensure_gui_app() -> QGuiApplication:
    """A Qt application for painting text (fonts need one); offscreen when there is no display.

    A widgets QApplication, not a bare QGuiApplication: a process that exports first and opens
    a window later (tests, an embedding script) would otherwise abort on its first widget."""
    app = QGuiApplication.instance()
    if app is None:
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        app = QApplication(["surgview"])
    return app  # type: ignore[return-value]


def blank_areas(rgb: np.ndarray, areas: Sequence[BlankArea]) -> np.ndarray:
    """Paint the blank areas black, in place (rectangles are clipped to the frame)."""
    h, w = rgb.shape[:2]
    for a in areas:
        x0, y0 = min(max(a.x, 0), w), min(max(a.y, 0), h)
        rgb[y0 : min(h, a.y + a.height), x0 : min(w, a.x + a.width)] = 0
    return rgb


def rgb_image(rgb: np.ndarray) -> QImage:
    """An RGB888 QImage that owns a copy of the pixels."""
    rgb = np.ascontiguousarray(rgb)
    h, w = rgb.shape[:2]
    return QImage(rgb.data, w, h, w * 3, QImage.Format.Format_RGB888).copy()


def frame_picture(
    rgb: np.ndarray,
    chain: Chain | None,
    index: int,
    fps: float,
    *,
    width: int = 640,
    layers: LayerState | None = None,
    cvs_doubt: str | None = None,
) -> QImage:
    """The frame scaled to ``width`` with the overlays of ``chain`` painted over it."""
    source = rgb_image(rgb)
    height = max(1, round(width * source.height() / source.width()))
    image = QImage(width, height, QImage.Format.Format_RGB32)
    p = QPainter(image)
    p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    target = QRectF(0, 0, width, height)
    p.drawImage(target, source)
    paint_overlays(
        p,
        target,
        source.width(),
        source.height(),
        chain,
        layers or LayerState(),
        index=index,
        fps=fps,
        cvs_doubt=cvs_doubt,
    )
    p.end()
    return image


def data_uri(image: QImage, fmt: str = "PNG", quality: int = -1) -> str:
    """The image as a ``data:`` URI, so an HTML report is one self-contained file."""
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    if not image.save(buffer, fmt, quality):
        raise ValueError(f"cannot encode an image as {fmt}")
    buffer.close()
    mime = "image/jpeg" if fmt.upper() in ("JPG", "JPEG") else "image/png"
    return f"data:{mime};base64," + base64.b64encode(bytes(data)).decode("ascii")


def timeline_picture(data: ReportData, width: int = 1600) -> QImage:
    """Phase, CVS and instrument tracks over the case's time, with bookmarks and CVS first met."""
    s = data.summary
    timelines = data.timelines
    tools = [t for t in data.tools if t.runs]
    rows: list[tuple[str, list[tuple[int, int, str]]]] = [
        ("Phase", [(seg.start, seg.end, palette.phase_color(seg.label)) for seg in timelines.phase])
    ]
    for i, track in enumerate(data.cvs.tracks):
        rows.append(
            (
                f"CVS C{i + 1}",
                [(seg.start, seg.end, palette.CVS_COLORS.get(seg.label, palette.UNKNOWN)) for seg in track],
            )
        )
    for tool in tools:
        rows.append((tool.display, [(seg.start, seg.end, TOOL_COLOR) for seg in timelines.tools[tool.tool]]))

    scale = width / 1600
    font = QFont()
    font.setPixelSize(max(10, round(22 * scale)))
    fm = QFontMetrics(font)
    label_w = max(fm.horizontalAdvance(name) for name, _ in rows) + round(24 * scale)
    row_h, gap = round(34 * scale), round(8 * scale)
    top, axis_h = round(12 * scale), fm.height() + round(16 * scale)
    height = top + len(rows) * (row_h + gap) + axis_h
    image = QImage(width, height, QImage.Format.Format_RGB32)
    image.fill(QColor(palette.REPORT_PAPER))
    p = QPainter(image)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setFont(font)
    x0, x1 = label_w, width - round(16 * scale)
    span = max(1, s.frame_count)

    def x_of(frame: float) -> float:
        return x0 + (x1 - x0) * frame / span

    for r, (name, runs) in enumerate(rows):
        y = top + r * (row_h + gap)
        p.setPen(QColor(INK))
        p.drawText(
            QRectF(0, y, label_w - round(10 * scale), row_h),
            Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
            name,
        )
        p.fillRect(QRectF(x0, y, x1 - x0, row_h), QColor(palette.REPORT_LANE))
        for start, end, colour in runs:
            p.fillRect(QRectF(x_of(start), y, max(1.0, x_of(end) - x_of(start)), row_h), QColor(colour))
    bottom = top + len(rows) * (row_h + gap) - gap
    # Time axis: about eight ticks at a round step.
    duration = s.duration_s
    step = next((t for t in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600) if duration / t <= 8), 7200)
    p.setPen(QPen(QColor(GRID), 1))
    for k in range(int(duration // step) + 1):
        x = x_of(k * step * s.fps)
        p.drawLine(round(x), top, round(x), bottom + round(6 * scale))
        p.setPen(QColor(INK))
        text = format_timecode(round(k * step * s.fps), s.fps)[:8]
        w = fm.horizontalAdvance(text)
        p.drawText(QRectF(min(x - w / 2, x1 - w), bottom + round(8 * scale), w + 2, fm.height()), text)
        p.setPen(QPen(QColor(GRID), 1))
    for mark in data.bookmarks:  # bookmarks: dark ticks through every track
        p.setPen(QPen(QColor(INK), max(1, round(2 * scale)), Qt.PenStyle.DashLine))
        p.drawLine(round(x_of(mark.frame)), top, round(x_of(mark.frame)), bottom)
    if data.cvs.first_all_met is not None:
        p.setPen(QPen(QColor(palette.CVS_COLORS["met"]), max(2, round(4 * scale))))
        x = round(x_of(data.cvs.first_all_met))
        p.drawLine(x, top, x, bottom)
    p.end()
    return image


def format_seconds(seconds: float) -> str:
    """``1:05:03`` / ``5:03`` / ``0:07``: durations for tables."""
    total = round(seconds)
    h, rem = divmod(total, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
