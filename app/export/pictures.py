"""Pictures for exports: frames with their overlays, blanked areas, the case timeline chart.

The chart colours CVS as the viewer's timeline does (a doubtful "all three met", outside an established
episode, has its own colour, never the met green) and carries a legend of every colour it draws, so a
printed page reads without the viewer.

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
from app.procedure_view import display_of, label_colours, role_title
from app.state import LayerState
from app.timeline_model import Runs, display_name, doubtful_cells, mark_doubtful
from app.widgets.overlay_painter import paint_overlays
from engine.chain import Chain, CvsState
from engine.cvs_assessment import ESTABLISHED
from engine.report_data import ReportData
from engine.store import BlankArea
from engine.timecode import format_timecode

__all__ = [
    "blank_areas",
    "chart_legend",
    "chart_rows",
    "data_uri",
    "ensure_gui_app",
    "established_frame",
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


ChartRuns = list[tuple[int, int, str]]  # (first frame, end frame, colour)


def chart_rows(data: ReportData) -> list[tuple[str, ChartRuns]]:
    """The chart's rows: the procedure's smoothed timelines in its order (a cholecystectomy's phase, a suturing
    case's action, a bypass's phase and step), CVS C1–C3 where the procedure has CVS (an "all three met" outside
    an established episode in the doubtful colour, as the viewer's timeline draws it, never in the met colour),
    instruments in view."""
    timelines, proc = data.timelines, data.procedure
    rows: list[tuple[str, ChartRuns]] = []
    for role, segments in data.tracks.items():
        colours = label_colours(proc, role)
        rows.append(
            (role_title(role), [(seg.start, seg.end, colours.get(seg.label, palette.UNKNOWN)) for seg in segments])
        )
    tracks = data.cvs.tracks if data.cvs is not None else ()
    starts, ends = _doubtful_cells(data)
    for i, track in enumerate(tracks):
        runs = mark_doubtful(Runs.of_segments(track), starts, ends)
        colours = {**palette.CVS_COLORS, "doubtful": palette.CVS_DOUBTFUL}
        rows.append(
            (
                f"CVS C{i + 1}",
                [
                    (a, b, colours.get(label, palette.UNKNOWN))
                    for a, b, label in zip(runs.starts.tolist(), runs.ends.tolist(), runs.labels, strict=True)
                ],
            )
        )
    for tool in (t for t in data.tools if t.runs):
        rows.append((tool.display, [(seg.start, seg.end, TOOL_COLOR) for seg in timelines.tools[tool.tool]]))
    return rows


def _doubtful_cells(data: ReportData) -> tuple[np.ndarray, np.ndarray]:
    """The frames stood for by analysed frames saying all three CVS criteria met outside an established episode."""
    timelines, assessment = data.timelines, data.cvs.assessment if data.cvs is not None else None
    if assessment is None or not timelines.rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    frames = np.array([r.frame for r in timelines.rows], np.int64)
    all_met = [all(c is CvsState.MET for c in r.cvs) for r in timelines.rows]
    established = [(e.start_frame, e.end_frame) for e in assessment.episodes if e.status == ESTABLISHED]
    max_gap = max(1, round(timelines.config.max_gap_s * data.summary.fps))
    return doubtful_cells(frames, all_met, established, max_gap, data.summary.frame_count)


def established_frame(data: ReportData) -> int | None:
    """Where the chart's thick CVS line stands: where CVS was established on a stable run, else nowhere
    (a first "all met" frame that did not last is no green light)."""
    assessment = data.cvs.assessment if data.cvs is not None else None
    return assessment.established_frame if assessment is not None and assessment.established else None


def chart_legend(data: ReportData) -> list[tuple[str, list[tuple[str, str]]]]:
    """What the chart's legend lists: (group, [(colour, name)]), every colour the chart draws: a
    cholecystectomy's seven phases, another procedure's labels seen on its tracks (display names, in the
    vocabulary's order), CVS states only where the procedure has CVS."""
    proc = data.procedure
    groups: list[tuple[str, list[tuple[str, str]]]] = []
    for role, segments in data.tracks.items():
        colours = label_colours(proc, role)
        if role == "phase" and colours == palette.PHASE_COLORS:  # Cholec80: every phase, as the viewer lists them
            groups.append(("Phase", [(colour, display_name(name)) for name, colour in colours.items()]))
            continue
        seen = {seg.label for seg in segments}
        entries = [(colour, display_of(proc, role, name)) for name, colour in colours.items() if name in seen]
        if entries:
            groups.append((role_title(role), entries))
    if data.cvs is not None:
        cvs = [(palette.CVS_COLORS[k], k) for k in ("met", "not met", "not assessable")]
        cvs.append((palette.CVS_DOUBTFUL, "doubtful (all three met, not on a stable run)"))
        groups.append(("CVS", cvs))
    if any(t.runs for t in data.tools):
        groups.append(("Instruments", [(TOOL_COLOR, "in view")]))
    return groups


def timeline_picture(data: ReportData, width: int = 1600) -> QImage:
    """Phase, CVS and instrument tracks over the case's time, with bookmarks, where CVS was established,
    and a legend of every colour under the time axis."""
    s = data.summary
    rows = chart_rows(data)
    scale = width / 1600
    font = QFont()
    font.setPixelSize(max(10, round(22 * scale)))
    fm = QFontMetrics(font)
    bold = QFont(font)
    bold.setBold(True)
    label_w = max(fm.horizontalAdvance(name) for name, _ in rows) + round(24 * scale)
    row_h, gap = round(34 * scale), round(8 * scale)
    top, axis_h = round(12 * scale), fm.height() + round(16 * scale)
    x0, x1 = label_w, width - round(16 * scale)
    legend = _legend_layout(data, fm, QFontMetrics(bold), round(16 * scale), width - round(16 * scale), scale)
    legend_top = top + len(rows) * (row_h + gap) + axis_h
    height = legend_top + max((y + fm.height() for *_, y in legend), default=0) + round(12 * scale)
    image = QImage(width, height, QImage.Format.Format_RGB32)
    image.fill(QColor(palette.REPORT_PAPER))
    p = QPainter(image)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setFont(font)
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
    established = established_frame(data)
    if established is not None:
        p.setPen(QPen(QColor(palette.CVS_MET), max(2, round(4 * scale))))
        x = round(x_of(established))
        p.drawLine(x, top, x, bottom)
    _paint_legend(p, legend, legend_top, font, bold, fm, scale)
    p.end()
    return image


# (kind, colour or "", text, x, y): kind "group" (bold name), "swatch" (a square and its name), "line" (a mark)
_LegendItem = tuple[str, str, str, int, int]


def _legend_layout(
    data: ReportData, fm: QFontMetrics, bold: QFontMetrics, left: int, right: int, scale: float
) -> list[_LegendItem]:
    """Place the legend's groups and entries left to right, wrapping to a new line at ``right``."""
    box, pad, line_h = fm.ascent(), round(10 * scale), fm.height() + round(6 * scale)
    marks: list[tuple[str, str]] = []
    if data.bookmarks:
        marks.append(("dash", "bookmark"))
    if established_frame(data) is not None:
        marks.append(("line", "CVS established"))
    groups: list[tuple[str, list[tuple[str, str, str]]]] = [
        (g, [("swatch", c, n) for c, n in rows]) for g, rows in chart_legend(data)
    ]
    if marks:
        groups.append(("Marks", [(kind, palette.CVS_MET if kind == "line" else INK, n) for kind, n in marks]))
    items: list[_LegendItem] = []
    x, y = left, 0
    for group, entries in groups:
        widths = [bold.horizontalAdvance(group) + pad] + [
            box + pad // 2 + fm.horizontalAdvance(n) + pad for *_, n in entries
        ]
        if x > left and x + widths[0] + widths[1] > right:
            x, y = left, y + line_h
        items.append(("group", "", group, x, y))
        x += widths[0]
        for (kind, colour, name), w in zip(entries, widths[1:], strict=True):
            if x > left and x + w > right:
                x, y = left, y + line_h
            items.append((kind, colour, name, x, y))
            x += w
        x += pad
    return items


def _paint_legend(
    p: QPainter, items: list[_LegendItem], top: int, font: QFont, bold: QFont, fm: QFontMetrics, scale: float
) -> None:
    box = fm.ascent()
    for kind, colour, text, x, y in items:
        base = top + y
        if kind == "group":
            p.setFont(bold)
            p.setPen(QColor(INK))
            p.drawText(x, base + fm.ascent(), text)
            p.setFont(font)
            continue
        square = QRectF(x, base + (fm.height() - box) / 2, box, box)
        if kind == "swatch":
            p.fillRect(square, QColor(colour))
        else:  # a mark: the line as the chart draws it
            style = Qt.PenStyle.DashLine if kind == "dash" else Qt.PenStyle.SolidLine
            p.setPen(QPen(QColor(colour), max(2, round((2 if kind == "dash" else 4) * scale)), style))
            middle = square.center().x()
            p.drawLine(round(middle), round(square.top()), round(middle), round(square.bottom()))
        p.setPen(QColor(INK))
        p.drawText(x + box + round(5 * scale), base + fm.ascent(), text)


def format_seconds(seconds: float) -> str:
    """``1:05:03`` / ``5:03`` / ``0:07``: durations for tables."""
    total = round(seconds)
    h, rem = divmod(total, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"
