"""The case timeline: stacked tracks under one time axis, one playhead, click and drag to seek.

Every track is drawn as *runs* (equal consecutive values merged into one rectangle), so a
90-minute case costs as much as its number of changes, not its number of frames. One item per
track paints its rectangles with one brush per colour and only those that intersect the area Qt
asks it to repaint: moving the playhead repaints a strip one line wide, touching a handful of
rectangles. Runs narrower than a pixel are widened to one pixel when zoomed out (so a single
flicker of the raw phase stays visible) from a list cached per zoom level.

All tracks share one ViewBox (x in seconds, y in stacked track units, inverted so the first
track is on top), so they cannot fall out of step and a single ``InfiniteLine`` is the playhead.
Track names are the left axis's tick labels. Left presses are taken from pyqtgraph before its
scene sees them (an event filter on the viewport): a press seeks at once, a drag seeks while it
moves (throttled, the release position always sent); the wheel, middle drag (pan) and right drag
(scale) stay pyqtgraph's, restricted to x. Shift+drag selects a frame range instead (one translucent
``LinearRegionItem`` over all tracks, e.g. the default of a clip export); a plain click or Esc clears
it, and a right click without a drag opens the context menu of the widget's actions.
"""

from __future__ import annotations

import html
import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QPoint, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import (
    QBrush,
    QColor,
    QFont,
    QFontMetricsF,
    QHelpEvent,
    QKeySequence,
    QMouseEvent,
    QPainter,
    QShortcut,
    QTextDocumentFragment,
)
from PySide6.QtWidgets import (
    QApplication,
    QGraphicsItem,
    QHBoxLayout,
    QLabel,
    QMenu,
    QScrollBar,
    QStyleOptionGraphicsItem,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from app import palette
from app.session import CaseSession
from app.timeline_model import (
    CVS_MEANINGS,
    ExtraTrack,
    agreement_confidence,
    display_name,
    doubtful_cells,
    legend,
    mark_doubtful,
)
from app.timeline_model import Runs as _Runs
from app.timeline_model import confidence_color as _confidence_color
from app.timeline_model import confidence_runs as _confidence_runs
from app.timeline_model import coverage_runs as _coverage_runs
from app.timeline_model import label_runs as _label_runs
from app.widgets.label_track import (
    describe_row,
    is_other,
    legend_key,
    procedure_extras,
    procedure_legend,
    procedure_rows,
    tag_key,
    tag_style,
)
from engine.chain import CvsState
from engine.cvs_assessment import ESTABLISHED, assess_cvs
from engine.procedures import Procedure
from engine.timecode import format_time
from engine.timeline import Timelines

__all__ = ["CHAIN_STATUS_CONFIDENCE", "CVS_COLORS", "PHASE_COLORS", "TOOL_COLORS", "TimelineView"]

PHASE_COLORS, CVS_COLORS, UNKNOWN = palette.PHASE_COLORS, palette.CVS_COLORS, palette.UNKNOWN
BACKGROUND, LANE, TEXT = palette.TIMELINE_BACKGROUND, palette.TIMELINE_LANE, palette.TIMELINE_TEXT
TOOL_COLORS: dict[str, str] = palette.TOOL_COLORS
TOOL_ORDER: tuple[str, ...] = tuple(TOOL_COLORS)
COVERAGE_COLOR, BOOKMARK_COLOR, PLAYHEAD_COLOR = palette.COVERAGE, palette.BOOKMARK, palette.PLAYHEAD
SELECTION_FILL, SELECTION_EDGE = palette.SELECTION_FILL, palette.SELECTION_EDGE
EDGE_GRAB_PX = 5  # how near (pixels) an edge of the selection the mouse must be to move it
CHAIN_STATUS_CONFIDENCE: dict[str, float] = {"complete": 1.0, "partial": 0.5, "malformed": 0.0}

_CVS_TRACK_COLORS = {**CVS_COLORS, "doubtful": palette.CVS_DOUBTFUL}
_CVS_CRITERIA = ("C1: two structures", "C2: hepatocystic triangle cleared", "C3: cystic plate exposed")
_GAP = 0.14  # between tracks, in track units
# Track heights in track units. Neighbouring row labels are at least 0.64 units apart (a tool row and its gap),
# so the tracks are scrolled rather than squeezed when 0.64 units would be shorter than a line of label text.
_HEIGHTS = {"truth": 0.7, "phase": 0.9, "raw": 0.5, "cvs": 0.5, "tool": 0.5, "confidence": 0.6}
_HEIGHTS.update(coverage=0.4, bookmarks=0.6)
_LABEL_PAD_PX = 12.0  # around the widest row label, in the label column
_SCROLL_STEPS = 1000  # scroll bar steps per track unit
_MAX_GAP_S = 30.0  # analysed frames farther apart than this leave the time between them uncovered
_MIN_BAR = 0.08  # a zero confidence still shows as a sliver
_BOOKMARK_HIT_PX = 7.0
_TIME_STEPS_S = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)


class _ColourGroup:
    """The rectangles of one colour in one track, sorted by time (runs of a track never overlap)."""

    def __init__(self, brush: QBrush, x0: np.ndarray, x1: np.ndarray, y0: np.ndarray, y1: np.ndarray):
        self.brush = brush
        self.x0, self.x1, self.y0, self.h = x0, x1, y0, y1 - y0
        self.min_width = float((x1 - x0).min()) if x0.size else math.inf
        self.exact = self._rects(x1)
        self._cached_px = -1.0
        self._cached: tuple[np.ndarray, list[QRectF]] = (x1, self.exact)

    def _rects(self, x1: np.ndarray) -> list[QRectF]:
        return [
            QRectF(a, b, w, h)
            for a, b, w, h in zip(
                self.x0.tolist(), self.y0.tolist(), (x1 - self.x0).tolist(), self.h.tolist(), strict=True
            )
        ]

    def for_pixel(self, px: float) -> tuple[np.ndarray, list[QRectF]]:
        """Ends and rectangles with every run at least ``px`` wide (cached for one zoom level)."""
        if self.min_width >= px:
            return self.x1, self.exact
        if px != self._cached_px:
            x1 = np.maximum(self.x1, self.x0 + px)
            self._cached_px, self._cached = px, (x1, self._rects(x1))
        return self._cached


class _RunsItem(pg.GraphicsObject):
    """Filled rectangles in view coordinates, one brush per colour, painted only where exposed."""

    def __init__(self) -> None:
        super().__init__()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption)
        self._groups: list[_ColourGroup] = []
        self._bounds = QRectF()
        self.rect_count = 0

    def set_rects(
        self,
        x0: np.ndarray,
        x1: np.ndarray,
        y0: np.ndarray,
        y1: np.ndarray,
        colours: Sequence[str],
        colour_of: np.ndarray,
    ) -> None:
        self.prepareGeometryChange()
        self._groups = []
        for k, colour in enumerate(colours):
            pick = colour_of == k
            if pick.any():
                brush = QBrush(QColor(colour))
                self._groups.append(_ColourGroup(brush, x0[pick], x1[pick], y0[pick], y1[pick]))
        self.rect_count = int(x0.size)
        if x0.size:
            left, right = float(x0.min()), float(x1.max())
            pad = (right - left) * 0.005  # runs widened to a pixel reach past the last end when zoomed out
            self._bounds = QRectF(QPointF(left, float(y0.min())), QPointF(right + pad, float(y1.max())))
        else:
            self._bounds = QRectF()
        self.update()

    def boundingRect(self) -> QRectF:
        return self._bounds

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget: QWidget | None = None) -> None:
        scale = abs(painter.worldTransform().m11())
        if not self._groups or scale <= 0:
            return
        px = 1.0 / scale
        exposed = option.exposedRect
        left, right = exposed.left(), exposed.right()
        painter.setPen(Qt.PenStyle.NoPen)
        for group in self._groups:
            ends, rects = group.for_pixel(px)
            i0 = int(np.searchsorted(ends, left, side="right"))
            i1 = int(np.searchsorted(group.x0, right, side="left"))
            if i1 > i0:
                painter.setBrush(group.brush)
                painter.drawRects(rects[i0:i1])


class _TimeAxis(pg.AxisItem):
    """Seconds as hh:mm:ss (hh:mm:ss.ff below one second), at steps a clock reader expects."""

    def __init__(self) -> None:
        super().__init__("bottom")
        self.fps = 25.0
        self.times: Any = None  # engine.video.FrameTimes: presentation times of variable-rate videos

    def seconds(self, x: float) -> float:
        """The presentation time at axis position ``x`` (the axis is laid out at the nominal rate)."""
        times = self.times
        if times is None or len(times) == 0:
            return x
        frame = min(max(0, round(x * self.fps)), len(times) - 1)
        return float(times.time_of(frame)) + (x - frame / self.fps)

    def tickSpacing(self, minVal: float, maxVal: float, size: float) -> list[tuple[float, float]]:
        span = maxVal - minVal
        if span <= 0 or size <= 0:
            return [(1.0, 0.0)]
        wanted = span * 95.0 / size  # a label every ~95 px
        major_i = next((i for i, s in enumerate(_TIME_STEPS_S) if s >= wanted), len(_TIME_STEPS_S) - 1)
        major = float(_TIME_STEPS_S[major_i])
        minor = float(_TIME_STEPS_S[major_i - 1]) if major_i > 0 else major / 2
        return [(major, 0.0), (minor, 0.0)]

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:
        if spacing < 1:
            return [format_time(self.seconds(v), self.fps) for v in values]
        return [_clock(self.seconds(v)) for v in values]


def _clock(seconds: float) -> str:
    total = max(0, round(seconds))
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{s:02d}"


@dataclass
class _Track:
    key: str
    title: str
    height: float
    runs: _Runs
    colours: Mapping[str, str] | None  # label → colour; None: colour by confidence level
    y0: float = 0.0
    band: str | None = None  # a colour along the top of every run (an extra track's owner)


# ------------------------------------------------------------------------------------------ widget
class TimelineView(QWidget):
    """Phase, CVS, instrument, confidence, coverage and bookmark tracks of one case.

    ``seekRequested(frame)`` is emitted on a left press, while dragging (at most every
    ``drag_interval_ms``) and on release; the widget never moves its own playhead — the owner
    answers with ``set_playhead``. ``selectionChanged((first, last) | None)`` is emitted when the user
    selects a range (Shift+drag), drags one of its edges, or clears it (click, Esc, context menu);
    ``set_selection`` does not emit.
    """

    seekRequested = Signal(int)
    selectionChanged = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.drag_interval_ms = 30
        self.build_count = 0  # layouts and track renders done (tests check the playhead does none)
        self._fps: float | None = None
        self._frame_count = 0
        self._playhead: int | None = None
        self._timelines: Timelines | None = None
        self._truth: _Runs | None = None
        self._cvs_episodes: tuple[Any, ...] | None = None  # engine.cvs_assessment's; None: not assessed
        self._confidence_frames = np.zeros(0, np.int64)
        self._confidence = _Runs.empty()
        self._confidence_values: dict[int, float] = {}
        self._confidence_notes: dict[int, str] = {}  # why an analysed frame has its confidence
        self._bookmarks: list[tuple[int, str]] = []
        self._tracks: dict[str, _Track] = {}
        self._items: dict[str, _RunsItem] = {}
        self._extra: tuple[ExtraTrack, ...] = ()  # tracks others add (the reviewer's rows)
        self._procedure: Procedure | None = None  # the case's; another than cholecystectomy draws its own rows

        self._time_axis = _TimeAxis()
        self._plot = pg.PlotWidget(background=BACKGROUND, axisItems={"bottom": self._time_axis})
        self._plot.setMinimumHeight(96)  # the time axis and a few rows; more rows scroll
        item = self._plot.getPlotItem()
        item.hideButtons()
        item.setMenuEnabled(False)
        self._vb: pg.ViewBox = item.getViewBox()
        self._vb.invertY(True)
        self._vb.setMouseEnabled(x=True, y=False)
        self._vb.disableAutoRange()
        self._vb.setDefaultPadding(0.0)
        font = QFont()
        font.setPointSizeF(8.0)
        for name in ("left", "bottom"):
            axis = item.getAxis(name)
            axis.setPen(pg.mkPen(TEXT))
            axis.setTextPen(pg.mkPen(TEXT))
            axis.setTickFont(font)
        self._track_axis = item.getAxis("left")
        self._track_axis.setStyle(tickLength=0, autoExpandTextSpace=False, hideOverlappingLabels=False)
        self._label_metrics = QFontMetricsF(font)
        self._y_offset = 0.0  # the first track unit in view (tracks scroll when the rows do not fit)
        self._y_span = 1.0
        self._scroll = QScrollBar(Qt.Orientation.Vertical, self)
        self._scroll.setObjectName("timelineTrackScroll")
        self._scroll.setToolTip("More tracks: scroll (the rows keep room for their names)")
        self._scroll.valueChanged.connect(self._on_scroll)
        self._scroll.setVisible(False)
        self._vb.sigResized.connect(lambda *_: self._fit_rows())

        self._lanes = _RunsItem()
        self._lanes.setZValue(-10)
        self._vb.addItem(self._lanes)
        self._bookmark_dots = pg.ScatterPlotItem(size=11, symbol="t", pen=pg.mkPen(BACKGROUND), brush=BOOKMARK_COLOR)
        self._bookmark_dots.setZValue(5)
        self._vb.addItem(self._bookmark_dots)
        self._line = pg.InfiniteLine(pos=0.0, angle=90, movable=False, pen=pg.mkPen(PLAYHEAD_COLOR, width=1.5))
        self._line.setZValue(10)
        self._line.setVisible(False)
        self._vb.addItem(self._line)
        self._phase_tag = pg.TextItem(anchor=(0, 0), fill=pg.mkBrush(BACKGROUND))  # the phase at the playhead
        self._phase_tag.setZValue(11)
        self._phase_tag.setVisible(False)
        self._vb.addItem(self._phase_tag, ignoreBounds=True)
        self._phase_tag_label: str | None = None
        self._phase_tag_anchor = (0, 0)
        self._selection: tuple[int, int] | None = None
        self._select_anchor: int | None = None  # the frame a Shift+drag started on
        self._adjusting = False  # the drag moves an edge of the selection (its other edge is the anchor)
        self._press_pos = QPointF()
        self._region = pg.LinearRegionItem(
            movable=False, brush=pg.mkBrush(SELECTION_FILL), pen=pg.mkPen(SELECTION_EDGE, width=1)
        )
        self._region.setZValue(8)
        self._region.setVisible(False)
        self._vb.addItem(self._region, ignoreBounds=True)
        self.menu: QMenu | None = None  # the last context menu shown
        escape = QShortcut(QKeySequence(Qt.Key.Key_Escape), self, context=Qt.ShortcutContext.WidgetWithChildrenShortcut)
        escape.activated.connect(self.clear_selection)

        self._scrubbing = False
        # (frame, caption) -> rich text with the keyframe preview (app.previews), or None: plain text
        self.preview_source: Callable[[int, str], str | None] | None = None
        self._last_emitted: int | None = None
        self._last_emit_t = 0.0
        self._pending: int | None = None
        self._throttle = QTimer(self)
        self._throttle.setSingleShot(True)
        self._throttle.timeout.connect(self._emit_pending)
        self._plot.viewport().installEventFilter(self)
        self._plot.viewport().setMouseTracking(True)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        row.addWidget(self._plot, 1)
        row.addWidget(self._scroll)
        layout.addLayout(row, 1)
        self._cvs_line = QLabel(self)  # what the answers say about CVS before the first clip, in one statement
        self._cvs_line.setObjectName("timelineCvsStatement")
        self._cvs_line.setWordWrap(True)
        self._cvs_line.setTextFormat(Qt.TextFormat.RichText)
        self._cvs_line.setStyleSheet(f"QLabel {{ color: {TEXT}; font-size: 8pt; padding: 2px 6px 0px 6px; }}")
        self._cvs_line.setVisible(False)
        layout.addWidget(self._cvs_line)
        self._cvs_statement: str | None = None
        self._legend = QLabel(self)  # every colour the tracks draw, with its display name
        self._legend.setObjectName("timelineLegend")
        self._legend.setWordWrap(True)
        self._legend.setTextFormat(Qt.TextFormat.RichText)
        self._legend.setStyleSheet(f"QLabel {{ color: {TEXT}; font-size: 8pt; padding: 2px 6px; }}")
        layout.addWidget(self._legend)
        self._legend_tools: tuple[str, ...] | None = None
        self._relayout()

    # ----------------------------------------------------------------------------- public API
    def follow(self, session: CaseSession) -> None:
        """Subscribe to ``session``: its timelines and statuses, bookmarks, ground truth, selection
        and the playhead's displayed frame (the time axis shows its presentation times)."""

        def on_session(name: str, value: Any) -> None:
            if name == "timelines":
                self._cvs_episodes = tuple(session.cvs_episodes)  # computed before "timelines" is sent
                self.set_timelines(value)
                self._follow_confidence(value, session.statuses)
            elif name == "bookmarks":
                self.set_bookmarks([(b.frame, b.title) for b in value])
            elif name == "ground_truth":
                self.set_ground_truth(value)

        session.subscribe(on_session)
        session.playhead.subscribe(lambda name, value: self.set_playhead(value) if name == "displayed" else None)
        session.case.subscribe(lambda name, value: self.set_selection(value) if name == "selection" else None)

    def set_case(self, fps: float, frame_count: int, times: Any = None) -> None:
        """A new case: clears every track and shows the whole case. ``times`` (``FrameTimes``): the
        frames' presentation times, shown by the time axis and tooltips (variable frame rates)."""
        if not fps or fps <= 0 or not math.isfinite(fps):
            raise ValueError(f"fps must be positive, got {fps!r}")
        self._fps, self._frame_count = float(fps), max(0, int(frame_count))
        self._time_axis.fps, self._time_axis.times = self._fps, times
        self._timelines, self._truth, self._bookmarks = None, None, []
        self._confidence_frames, self._confidence = np.zeros(0, np.int64), _Runs.empty()
        self.set_selection(None)
        self._apply_limits()
        self._relayout()
        self._state_cvs()
        self.fit_all()
        self._place_playhead()

    def set_timelines(self, timelines: Timelines | None) -> None:
        """Phase (smoothed and raw), CVS, instrument and coverage tracks from the engine's timelines."""
        self._timelines = timelines
        if timelines is not None and self._fps is None:  # no case yet: take its clock
            span = max(
                [timelines.frame_count or 0]
                + [s.end for s in timelines.phase]
                + [int(timelines.frames.max(initial=0)) + 1]
            )
            self.set_case(timelines.fps, span)
            self._timelines = timelines
        self._relayout()
        self._state_cvs()

    def _state_cvs(self) -> None:
        """Say, under the tracks, whether CVS was established on a stable run before the first clip (and held),
        lost (when), only after clipping, or never: the report's statement, from the same answers."""
        t = self._timelines
        if t is None or self._fps is None or not any(any(c is not None for c in r.cvs) for r in t.rows):
            self._cvs_statement = None
            self._cvs_line.setVisible(False)
            return
        clip = t.first_clip_frame()
        fps = self._fps
        assessment = assess_cvs(t.rows, fps, clip, time_of=lambda frame: self._time_axis.seconds(frame / fps))
        self._cvs_statement = assessment.statement
        colour = palette.CVS_MET if assessment.green_light else palette.CVS_DOUBT
        self._cvs_line.setText(
            f'<span style="color:{colour}">&#9632;</span>&nbsp;<b>CVS</b>&nbsp; {html.escape(assessment.statement)}'
        )
        self._cvs_line.setToolTip(
            "All three criteria met on a stable run (at least "
            f"{assessment.rule.min_duration_s:g} s over {assessment.rule.min_frames} analysed frames) before the "
            "first clip, and held until it, is the only green light; shorter runs are doubtful."
        )
        self._cvs_line.setVisible(True)

    def cvs_statement(self) -> str | None:
        """The CVS statement shown under the tracks (None when the answers say nothing about CVS)."""
        return self._cvs_statement if self._cvs_line.isVisibleTo(self) else None

    def set_ground_truth(self, phases: Sequence[str | None] | None) -> None:
        """Reference phase per frame (canonical Cholec80 names), drawn as runs above the model's."""
        self._truth = None if phases is None else _label_runs(phases)
        self._relayout()

    def set_confidence(
        self,
        frames: Sequence[int] | np.ndarray,
        values: Sequence[float | str | None],
        notes: Sequence[str] | None = None,
    ) -> None:
        """Confidence per analysed frame: numbers in 0..1, or a chain status (complete, partial,
        malformed) as a proxy. ``None`` values are skipped. ``notes``: why, per frame (tooltips)."""
        if len(frames) != len(values):
            raise ValueError(f"{len(frames)} frames but {len(values)} values")
        if notes is not None:
            self._confidence_notes = {int(f): str(n) for f, n in zip(frames, notes, strict=True)}
        else:
            self._confidence_notes = {
                int(f): f"chain {v}" if isinstance(v, str) else f"{float(v):.2f}"
                for f, v in zip(frames, values, strict=True)
                if v is not None
            }
        given = {int(f): _confidence_value(v) for f, v in zip(frames, values, strict=True) if v is not None and f >= 0}
        order = sorted(given)  # a frame given twice keeps its last value
        self._confidence_frames = np.array(order, dtype=np.int64)
        conf = np.array([given[f] for f in order], dtype=np.float64)
        self._confidence_values = given
        self._confidence = _confidence_runs(self._confidence_frames, conf, self._max_gap(), self._count_or_none())
        self._render_or_relayout("confidence", "coverage")

    def _follow_confidence(self, timelines: Timelines | None, statuses: Sequence[tuple[int, str]]) -> None:
        """Confidence of each analysed frame: its phase against its analysed neighbours', and its
        chain status (``agreement_confidence``); without timelines, the statuses alone."""
        if timelines is None:
            self.set_confidence([f for f, _ in statuses], [s or None for _, s in statuses])
            return
        frames = timelines.frames.tolist()
        values, notes = agreement_confidence(frames, timelines.raw_phase, {int(f): s for f, s in statuses if s})
        self.set_confidence(frames, values.tolist(), notes)

    def confidence_at(self, frame: int) -> float | None:
        """The confidence given for an analysed frame (0..1), or None."""
        return self._confidence_values.get(int(frame))

    def legend_entries(self) -> list[tuple[str, list[tuple[str, str, str]]]]:
        """What the legend under the tracks lists: (group, [(colour, name, meaning)])."""
        extras = procedure_extras(self._procedure, self._extra)  # another procedure: no reviewer CVS rows
        extra = [(t.legend_group, list(t.legend)) for t in extras if t.legend_group and t.legend]
        own = procedure_legend(self._procedure, list(self._tracks.values())) if is_other(self._procedure) else None
        return (own or legend(self._tool_names())) + extra

    def set_procedure(self, procedure: Procedure | None) -> None:
        """The case's procedure: another than cholecystectomy draws its own rows (a suturing case's actions,
        a bypass's phases and steps) and its instruments, with no phase, raw phase or CVS rows."""
        if procedure != self._procedure:
            self._procedure, self._legend_tools = procedure, None
            self._relayout()

    def set_extra_tracks(self, tracks: list[ExtraTrack]) -> None:
        """Tracks another part of the viewer draws here (each after the track it names), replacing the last.
        The same tracks with new runs (a boundary dragged) re-render only those tracks, without a layout."""
        old, self._extra = self._extra, tuple(tracks)
        if [(t.key, t.after, t.height) for t in old] != [(t.key, t.after, t.height) for t in self._extra]:
            self._relayout()
            return
        for before, extra in zip(old, self._extra, strict=True):
            if extra.runs is not before.runs and extra.key in self._tracks:
                self._tracks[extra.key].runs = extra.runs
                self._render(extra.key)

    def track_at(self, pos: QPoint | QPointF) -> str | None:
        """The key of the track under a viewport position, or None."""
        view = self._vb.mapSceneToView(self._plot.mapToScene(QPointF(pos).toPoint()))
        return next((t.key for t in self._tracks.values() if t.y0 <= view.y() < t.y0 + t.height), None)

    def legend_text(self) -> str:
        """The legend as plain text (what a reader sees)."""
        return QTextDocumentFragment.fromHtml(self._legend.text()).toPlainText().replace("\xa0", " ")

    def _tool_names(self) -> list[str]:
        return [key.split(":", 1)[1] for key in self._tracks if key.startswith("tool:")]

    def _render_legend(self) -> None:
        tools = (
            *self._tool_names(),
            *(t.legend_group for t in self._extra),
            *legend_key(self._procedure, self._tracks.values()),
        )
        if tools == self._legend_tools:
            return
        self._legend_tools = tools
        parts, tips = [], []
        for group, rows in self.legend_entries():
            swatches = " ".join(
                f'<span style="color:{colour}">&#9632;</span>&nbsp;{_unbroken(name)}' for colour, name, _ in rows
            )  # a name never wraps inside itself ("Specimen / Bag")
            parts.append(f"<b>{group}</b>&nbsp; {swatches}")
            tips.extend(f"{group} · {name}: {meaning}" for _, name, meaning in rows)
        self._legend.setText(" &nbsp;&nbsp; ".join(parts))
        self._legend.setToolTip("\n".join(tips))

    def set_bookmarks(self, bookmarks: Sequence[tuple[int, str]]) -> None:
        """Markers on the bookmark track; hovering one shows its title."""
        self._bookmarks = sorted((int(f), str(t)) for f, t in bookmarks)
        self._render_bookmarks()

    def set_playhead(self, frame: int | None) -> None:
        """Move the playhead line (nothing else is touched: cheap at video rate)."""
        if frame == self._playhead:
            return
        self._playhead = frame
        self._place_playhead()

    def _place_playhead(self) -> None:
        frame = self._playhead
        if frame is None or self._fps is None:
            self._line.setVisible(False)
            self._phase_tag.setVisible(False)
            return
        x = (frame + 0.5) / self._fps  # the middle of the frame's cell in every track
        self._line.setPos(x)
        if not self._line.isVisible():
            self._line.setVisible(True)
        self._place_phase_tag(frame, x)

    def _place_phase_tag(self, frame: int, x: float) -> None:
        """The smoothed phase under the playhead, written beside the line at the top of the tracks in view
        (its text is set only when the phase changes: cheap at video rate)."""
        track = self._tracks.get(tag_key(self._procedure))  # another procedure: its first row (the action)
        i = track.runs.at(frame) if track is not None else None
        label = track.runs.labels[i] if track is not None and i is not None else None
        if label != self._phase_tag_label:
            self._phase_tag_label = label
            if label is not None:
                colour, name = tag_style(self._procedure, label)
                self._phase_tag.setHtml(
                    f'<span style="color:{colour}">&#9632;</span>'
                    f'<span style="color:{TEXT}; font-size:8pt"> {name}</span>'
                )
        if label is None:
            self._phase_tag.setVisible(False)
            return
        left, right = self.visible_seconds()
        anchor = (1, 0) if x > left + 0.75 * (right - left) else (0, 0)  # to the line's left near the right edge
        if anchor != self._phase_tag_anchor:
            self._phase_tag_anchor = anchor
            self._phase_tag.setAnchor(anchor)
        self._phase_tag.setPos(x, self._y_offset)
        if not self._phase_tag.isVisible():
            self._phase_tag.setVisible(True)

    def playhead_phase(self) -> str | None:
        """The phase the playhead's tag names (display name), or None when it shows none."""
        if not self._phase_tag.isVisible() or self._phase_tag_label is None:
            return None
        return tag_style(self._procedure, self._phase_tag_label)[1]

    def set_selection(self, frames: tuple[int, int] | None) -> None:
        """Show a frame range (first, last; ordered and clamped to the case) or none."""
        if frames is not None and self._fps is not None:
            last = max(self._frame_count - 1, 0)
            a, b = (min(max(int(f), 0), last) for f in frames)
            frames = (min(a, b), max(a, b))
        else:
            frames = None
        self._selection = frames
        self._show_region(frames)

    def clear_selection(self) -> None:
        """Drop the selection (announced when there was one)."""
        self._select_anchor = None
        if self._selection is not None:
            self.set_selection(None)
            self.selectionChanged.emit(None)
        else:
            self._show_region(None)

    def context_menu(self) -> QMenu:
        """The right-click menu: the actions the owner added to this widget, then Clear selection."""
        menu = QMenu(self)
        menu.addActions(self.actions())
        if self._selection is not None:
            if self.actions():
                menu.addSeparator()
            menu.addAction("Clear selection", self.clear_selection)
        return menu

    def _show_region(self, frames: tuple[int, int] | None) -> None:
        if frames is None or self._fps is None:
            self._region.setVisible(False)
            return
        self._region.setRegion((frames[0] / self._fps, (frames[1] + 1) / self._fps))  # whole cells
        self._region.setVisible(True)

    def fit_all(self) -> None:
        """Show the whole case."""
        self._vb.setXRange(0.0, self._duration(), padding=0.0)

    def set_visible_seconds(self, start: float, end: float) -> None:
        """Show a time range (kept inside the case and above the smallest zoom)."""
        self._vb.setXRange(float(start), float(end), padding=0.0)

    # ----------------------------------------------------------------------------- queries
    @property
    def playhead(self) -> int | None:
        return self._playhead

    @property
    def selection(self) -> tuple[int, int] | None:
        """The selected frames (first, last), or None."""
        return self._selection

    def selection_seconds(self) -> tuple[float, float] | None:
        """Where the selection is drawn (seconds), or None when it is hidden."""
        if not self._region.isVisible():
            return None
        a, b = self._region.getRegion()
        return float(a), float(b)

    def track_keys(self) -> list[str]:
        """Tracks shown, top to bottom: truth, phase, raw, cvs1..3, tool:<name>…, confidence, coverage, bookmarks."""
        return list(self._tracks)

    def track_runs(self, key: str) -> list[tuple[int, int, str]]:
        """The runs of a track as (first frame, end frame, label)."""
        runs = self._tracks[key].runs
        return list(zip(runs.starts.tolist(), runs.ends.tolist(), runs.labels, strict=True))

    def colour_of(self, key: str, label: str) -> str | None:
        """The colour a track draws ``label`` in (None for the confidence row, coloured by level)."""
        colours = self._tracks[key].colours
        return None if colours is None else colours.get(label, UNKNOWN)

    def rect_count(self, key: str) -> int:
        """Rectangles the track's item draws (one per run)."""
        return self._items[key].rect_count if key in self._items else 0

    def bookmark_count(self) -> int:
        return len(self._bookmark_dots.data)

    def visible_seconds(self) -> tuple[float, float]:
        (x0, x1), _ = self._vb.viewRange()
        return float(x0), float(x1)

    def viewport(self) -> QWidget:
        """The widget that receives the mouse (for tests and for event filters)."""
        return self._plot.viewport()

    def viewport_point(self, seconds: float, key: str | None = None) -> QPoint:
        """Where a time on a track (default: the middle of the tracks in view) is drawn, in viewport pixels;
        a track scrolled out of view is scrolled into it first."""
        if key is not None:
            self.scroll_to_track(key)
            track = self._tracks[key]
            y = track.y0 + track.height / 2
        else:
            y = self._y_offset + self._y_span / 2
        scene = self._vb.mapViewToScene(QPointF(seconds, y))
        return self._plot.mapFromScene(scene)

    def frame_at(self, pos: QPoint | QPointF) -> int | None:
        """The frame under a viewport position (clamped to the case), or None without a case."""
        if self._fps is None:
            return None
        x = self._vb.mapSceneToView(self._plot.mapToScene(QPointF(pos).toPoint())).x()
        return int(min(max(math.floor(x * self._fps), 0), max(self._frame_count - 1, 0)))

    def tooltip_at(self, pos: QPoint | QPointF) -> str | None:
        """The tooltip at a viewport position: :meth:`describe_at`'s text, under the keyframe preview
        of the frame there when ``preview_source`` gives one (rich text), else plain."""
        text = self.describe_at(pos)
        frame = self.frame_at(pos) if text and self.preview_source is not None else None
        rich = self.preview_source(frame, text) if frame is not None and self.preview_source is not None else None
        return rich or text

    def describe_at(self, pos: QPoint | QPointF) -> str | None:
        """Tooltip text for a viewport position: the track's value (or bookmark title) and the time."""
        if self._fps is None:
            return None
        view = self._vb.mapSceneToView(self._plot.mapToScene(QPointF(pos).toPoint()))
        track = next((t for t in self._tracks.values() if t.y0 <= view.y() < t.y0 + t.height), None)
        if track is None or view.x() < 0:
            return None
        if track.key == "bookmarks":
            return self._bookmark_near(view.x())
        frame = math.floor(view.x() * self._fps)
        i = track.runs.at(frame)
        value = track.runs.labels[i] if i is not None else None
        return f"{self._describe(track, value, frame)}\n{self._timecode(frame)}"

    def _describe(self, track: _Track, value: str | None, frame: int) -> str:
        """A track's value under the mouse in words: display names, and what a colour means."""
        if value is None:
            if track.band is not None:
                return f"{track.title}: not reviewed here (right click to label)"
            return f"{track.title}: nothing here (not analysed, or too far from an analysed frame)"
        if (own := describe_row(self._procedure, track.key, track.title, value)) is not None:
            return own
        if track.key in ("phase", "raw", "truth") or track.colours is PHASE_COLORS:
            how = {"phase": "smoothed over neighbouring answers", "raw": "the model's own answer"}
            extra = f" ({how[track.key]})" if track.key in how else ""
            return f"{track.title}: {display_name(value)}{extra}"
        if track.key.startswith("cvs"):
            criterion = _CVS_CRITERIA[int(track.key[3:]) - 1]
            if value == "doubtful":
                return f"CVS {criterion}: {CVS_MEANINGS['doubtful']}"
            return f"CVS {criterion}: {value} — {CVS_MEANINGS.get(value, value)}"
        if track.key.startswith("tool:"):
            return f"{display_name(value)}: in view"
        if track.key == "confidence":
            near = np.array(sorted(self._confidence_notes), dtype=np.int64)
            note = ""
            if near.size:
                k = int(np.searchsorted(near, frame))
                k = min(range(max(k - 1, 0), min(k + 1, near.size)), key=lambda j: abs(int(near[j]) - frame))
                note = f" — frame {int(near[k])}: {self._confidence_notes[int(near[k])]}"
            return f"Confidence {value}{note}"
        if track.key == "coverage":
            return "Analysed: the model answered a frame here"
        return f"{track.title}: {value}"

    # ----------------------------------------------------------------------------- layout
    def _timecode(self, frame: int) -> str:
        return format_time(self._time_axis.seconds(frame / self._fps), self._fps)

    def _relayout(self) -> None:
        """Recompute which tracks exist and where, and render them all."""
        self.build_count += 1
        tracks: list[_Track] = []
        h = _HEIGHTS
        if self._truth is not None:
            tracks.append(_Track("truth", "Ground truth", h["truth"], self._truth, PHASE_COLORS))
        t = self._timelines
        phase = _Runs.of_segments(t.phase) if t else _Runs.empty()
        tracks.append(_Track("phase", "Phase", h["phase"], phase, PHASE_COLORS))
        raw = _Runs.of_segments(t.raw_phase_segments()) if t else _Runs.empty()
        tracks.append(_Track("raw", "Raw phase", h["raw"], raw, PHASE_COLORS))
        doubtful = self._doubtful_cells()
        for i in range(3):
            runs = mark_doubtful(_Runs.of_segments(t.cvs[i].segments), *doubtful) if t else _Runs.empty()
            tracks.append(_Track(f"cvs{i + 1}", f"CVS C{i + 1}", h["cvs"], runs, _CVS_TRACK_COLORS))
        if t is not None:
            names = [n for n in TOOL_ORDER if t.tools.get(n)] + sorted(
                n for n in t.tools if n not in TOOL_COLORS and t.tools[n]
            )
            for name in names:
                runs = _Runs.of_segments(t.tools[name])
                tracks.append(_Track(f"tool:{name}", display_name(name), h["tool"], runs, TOOL_COLORS))
        tracks.append(_Track("confidence", "Confidence", h["confidence"], self._confidence, None))
        coverage = self._coverage()
        tracks.append(_Track("coverage", "Analysed", h["coverage"], coverage, {"analysed": COVERAGE_COLOR}))
        tracks.append(_Track("bookmarks", "Bookmarks", h["bookmarks"], _Runs.empty(), {}))
        tracks = procedure_rows(self._procedure, t, tracks, _Track)  # another procedure: its own rows, no CVS
        for extra in procedure_extras(self._procedure, self._extra):
            keys = [t.key for t in tracks]
            at = keys.index(extra.after) + 1 if extra.after in keys else len(tracks) - 3
            tracks.insert(at, _Track(extra.key, extra.title, extra.height, extra.runs, extra.colours, band=extra.band))
        y = _GAP
        for track in tracks:
            track.y0 = y
            y += track.height + _GAP
        self._tracks = {track.key: track for track in tracks}

        for key in [k for k in self._items if k not in self._tracks]:
            self._vb.removeItem(self._items.pop(key))
        for key in self._tracks:
            if key not in self._items:
                self._items[key] = _RunsItem()
                self._vb.addItem(self._items[key])
            self._render(key)
        self._render_lanes()
        self._render_bookmarks()
        self._track_axis.setTicks([[(tr.y0 + tr.height / 2, tr.title) for tr in tracks], []])
        widest = max(self._label_metrics.horizontalAdvance(tr.title) for tr in tracks)
        self._track_axis.setWidth(math.ceil(widest + _LABEL_PAD_PX))  # a longer name is never dropped
        self._render_legend()
        self._phase_tag_label = ""  # the phase runs changed: write the tag again
        self._apply_limits()

    def _render_or_relayout(self, *keys: str) -> None:
        if all(key in self._tracks for key in keys):
            for key in keys:
                self._tracks[key].runs = self._confidence if key == "confidence" else self._coverage()
                self._render(key)
        else:
            self._relayout()

    def _render(self, key: str) -> None:
        self.build_count += 1
        track, item = self._tracks[key], self._items[key]
        fps = self._fps or 25.0
        runs = track.runs
        x0, x1 = runs.starts / fps, runs.ends / fps
        if runs.levels is None:
            y0 = np.full(len(runs), track.y0)
        else:
            y0 = track.y0 + track.height * (1.0 - np.maximum(runs.levels, _MIN_BAR))
        y1 = np.full(len(runs), track.y0 + track.height)
        labels = np.array(runs.labels, dtype=object) if len(runs) else np.zeros(0, dtype=object)
        names, colour_of = np.unique(labels, return_inverse=True) if len(runs) else (np.zeros(0), np.zeros(0, int))
        if track.colours is None:
            levels = runs.levels if runs.levels is not None else np.ones(len(runs))
            colours = [_confidence_color(float(levels[np.flatnonzero(colour_of == k)[0]])) for k in range(len(names))]
        else:
            colours = [track.colours.get(str(name), UNKNOWN) for name in names]
        colour_of = np.asarray(colour_of).reshape(-1)
        if track.band is not None and len(runs):  # whose runs these are: a band along their top
            band_y1 = y0 + track.height * 0.22
            x0, x1, y0, y1 = (np.concatenate((a, b)) for a, b in ((x0, x0), (x1, x1), (y0, y0), (y1, band_y1)))
            colour_of = np.concatenate((colour_of, np.full(len(runs), len(colours))))
            colours = [*colours, track.band]
        item.set_rects(x0, x1, y0, y1, colours, colour_of)

    def _render_lanes(self) -> None:
        tracks = list(self._tracks.values())
        n = len(tracks)
        y0 = np.array([t.y0 for t in tracks])
        self._lanes.set_rects(
            np.zeros(n), np.full(n, self._duration()), y0, y0 + [t.height for t in tracks], [LANE], np.zeros(n, int)
        )

    def _render_bookmarks(self) -> None:
        track = self._tracks.get("bookmarks")
        if track is None or self._fps is None or not self._bookmarks:
            self._bookmark_dots.setData(x=[], y=[], data=[])
            return
        xs = [(f + 0.5) / self._fps for f, _ in self._bookmarks]
        self._bookmark_dots.setData(
            x=xs, y=[track.y0 + track.height / 2] * len(xs), data=[title for _, title in self._bookmarks]
        )

    def _bookmark_near(self, x: float) -> str | None:
        if not self._bookmarks or self._fps is None:
            return None
        px = self._vb.viewPixelSize()[0]
        best = min(self._bookmarks, key=lambda b: abs((b[0] + 0.5) / self._fps - x))
        if abs((best[0] + 0.5) / self._fps - x) > _BOOKMARK_HIT_PX * px:
            return None
        return f"{best[1]}\n{self._timecode(best[0])}"

    def set_cvs_episodes(self, episodes: Sequence[Any]) -> None:
        """CVS episodes (``engine.cvs_assessment``: start/end frame, established or doubtful): an
        analysed frame's "all three met" outside an established one is drawn doubtful on the CVS rows."""
        self._cvs_episodes = tuple(episodes)
        self._relayout()

    def _doubtful_cells(self) -> tuple[np.ndarray, np.ndarray]:
        t = self._timelines
        if t is None or not t.rows or self._cvs_episodes is None:  # not assessed: drawn as answered
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        frames = np.array([r.frame for r in t.rows], np.int64)
        all_met = [all(c is CvsState.MET for c in r.cvs) for r in t.rows]
        established = [(e.start_frame, e.end_frame) for e in self._cvs_episodes if e.status == ESTABLISHED]
        return doubtful_cells(frames, all_met, established, self._max_gap(), self._count_or_none())

    def _coverage(self) -> _Runs:
        frames = self._confidence_frames
        if self._timelines is not None:
            frames = np.union1d(self._timelines.frames.astype(np.int64), frames)
        return _coverage_runs(frames, self._max_gap(), self._count_or_none())

    def _apply_limits(self) -> None:
        duration = self._duration()
        min_range = min(duration, max(10.0 / (self._fps or 25.0), 0.2))
        self._vb.setLimits(xMin=0.0, xMax=duration, minXRange=min_range, maxXRange=duration)
        self._fit_rows()

    def _row_pitch(self) -> float:
        """The least distance (track units) between two neighbouring rows' label centres."""
        centres = [t.y0 + t.height / 2 for t in self._tracks.values()]
        pitches = [b - a for a, b in itertools.pairwise(centres)]
        return min(pitches, default=self._total_height())

    def _fit_rows(self) -> None:
        """Show as many track units as leave every row label a full line of text: all of them when the
        view is tall enough, else a window onto them with the scroll bar beside (names never overlap,
        whatever the screen's scale factor or the dock's height)."""
        total = self._total_height()
        pixels = float(self._vb.height())
        line = self._label_metrics.height() + 1.0
        span = total
        if pixels > 0 and self._row_pitch() * pixels / total < line:
            span = max(pixels * self._row_pitch() / line, min(total, 2 * _GAP + max(_HEIGHTS.values())))
        self._y_span = span
        self._y_offset = min(max(self._y_offset, 0.0), total - span)
        steps = round((total - span) * _SCROLL_STEPS)
        self._scroll.blockSignals(True)
        self._scroll.setRange(0, steps)
        self._scroll.setPageStep(max(1, round(span * _SCROLL_STEPS)))
        self._scroll.setSingleStep(max(1, round(0.64 * _SCROLL_STEPS)))
        self._scroll.setValue(round(self._y_offset * _SCROLL_STEPS))
        self._scroll.blockSignals(False)
        self._scroll.setVisible(steps > 0)
        self._vb.setLimits(yMin=0.0, yMax=total, minYRange=span, maxYRange=span)
        self._vb.setYRange(self._y_offset, self._y_offset + span, padding=0.0)
        self._place_playhead()

    def _on_scroll(self, value: int) -> None:
        self._y_offset = value / _SCROLL_STEPS
        self._vb.setYRange(self._y_offset, self._y_offset + self._y_span, padding=0.0)
        self._place_playhead()

    def scroll_to_track(self, key: str) -> None:
        """Scroll the tracks (when they do not all fit) so that ``key``'s row is in view."""
        track = self._tracks[key]
        top, bottom = track.y0 - _GAP, track.y0 + track.height + _GAP
        if top < self._y_offset:
            self._scroll.setValue(round(max(top, 0.0) * _SCROLL_STEPS))
        elif bottom > self._y_offset + self._y_span:
            self._scroll.setValue(round((bottom - self._y_span) * _SCROLL_STEPS))

    def track_scroll_state(self) -> dict[str, float]:
        """Which track units are in view (``offset``, ``span``) of how many (``total``)."""
        return {"offset": self._y_offset, "span": self._y_span, "total": self._total_height()}

    def _total_height(self) -> float:
        last = list(self._tracks.values())[-1] if self._tracks else None
        return last.y0 + last.height + _GAP if last else 1.0

    def _duration(self) -> float:
        fps = self._fps or 25.0
        return max(self._frame_count, 1) / fps

    def _max_gap(self) -> int:
        fps = self._fps or 25.0
        gap_s = self._timelines.config.max_gap_s if self._timelines is not None else _MAX_GAP_S
        return max(1, round(gap_s * fps))

    def _count_or_none(self) -> int | None:
        return self._frame_count if self._fps is not None else None

    # ----------------------------------------------------------------------------- mouse
    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        kind = event.type()
        if kind in (QEvent.Type.MouseButtonPress, QEvent.Type.MouseButtonDblClick):
            mouse = event
            assert isinstance(mouse, QMouseEvent)
            if mouse.button() == Qt.MouseButton.RightButton:
                self._press_pos = mouse.position()
            if mouse.button() == Qt.MouseButton.LeftButton and self._on_tracks(mouse.position()):
                if mouse.modifiers() & Qt.KeyboardModifier.ShiftModifier:
                    self._select_anchor = self.frame_at(mouse.position())
                    self._press_pos = mouse.position()
                    return True
                anchor = self._edge_anchor(mouse.position())
                if anchor is not None:  # grab an edge of the selection to move it
                    self._select_anchor, self._adjusting = anchor, True
                    self._press_pos = mouse.position()
                    return True
                self.clear_selection()
                self._scrubbing = True
                frame = self.frame_at(mouse.position())
                if frame is not None:
                    self._throttle.stop()
                    self._pending = None
                    self._emit(frame)
                return True
        elif kind == QEvent.Type.MouseMove and self._select_anchor is not None:
            frame = self.frame_at(event.position())  # type: ignore[attr-defined]
            if frame is not None:
                self._show_region((min(self._select_anchor, frame), max(self._select_anchor, frame)))
            return True
        elif kind == QEvent.Type.MouseButtonRelease and self._select_anchor is not None:
            assert isinstance(event, QMouseEvent)
            if event.button() == Qt.MouseButton.LeftButton:
                self._finish_selection(event.position())
            return True
        elif kind == QEvent.Type.MouseButtonRelease and event.button() == Qt.MouseButton.RightButton:  # type: ignore[attr-defined]
            assert isinstance(event, QMouseEvent)
            if self._is_click(event.position()) and self._on_tracks(event.position()):
                self.menu = self.context_menu()
                self.menu.popup(event.globalPosition().toPoint())
        elif kind == QEvent.Type.MouseMove and self._scrubbing:
            frame = self.frame_at(event.position())  # type: ignore[attr-defined]
            if frame is not None:
                self._scrub_to(frame)
            return True
        elif kind == QEvent.Type.MouseButtonRelease and self._scrubbing:
            assert isinstance(event, QMouseEvent)
            if event.button() == Qt.MouseButton.LeftButton:
                self._scrubbing = False
                frame = self.frame_at(event.position())
                self._throttle.stop()
                if frame is not None and (frame != self._last_emitted or self._pending is not None):
                    self._emit(frame)
                self._pending = None
            return True
        elif kind == QEvent.Type.MouseMove:
            near_edge = self._edge_anchor(event.position()) is not None  # type: ignore[attr-defined]
            if near_edge:
                self._plot.viewport().setCursor(Qt.CursorShape.SizeHorCursor)
            else:
                self._plot.viewport().unsetCursor()
        elif kind == QEvent.Type.Wheel and self._scroll.isVisible() and self._on_labels(event.position()):  # type: ignore[attr-defined]
            QApplication.sendEvent(self._scroll, event)  # the wheel over the row names scrolls the rows
            return True
        elif kind == QEvent.Type.ToolTip:
            assert isinstance(event, QHelpEvent)
            text = self.tooltip_at(event.pos())
            if text:
                QToolTip.showText(event.globalPos(), text, self._plot.viewport())
            else:
                QToolTip.hideText()
            return True
        return super().eventFilter(watched, event)

    def _is_click(self, pos: QPointF) -> bool:
        return (pos - self._press_pos).manhattanLength() < QApplication.startDragDistance()

    def _edge_anchor(self, pos: QPointF) -> int | None:
        """Over an edge of the selection (within a few pixels): the frame of its *other* edge."""
        if self._selection is None or self._fps is None or not self._on_tracks(pos):
            return None
        first, last = self._selection
        left = self.viewport_point(first / self._fps).x()
        right = self.viewport_point((last + 1) / self._fps).x()
        x = pos.x()
        if abs(x - left) <= abs(x - right):  # a selection narrower than the grab zone: the nearer edge
            return last if abs(x - left) <= EDGE_GRAB_PX else None
        return first if abs(x - right) <= EDGE_GRAB_PX else None

    def _finish_selection(self, pos: QPointF) -> None:
        """End a Shift+drag or an edge drag; a Shift+click (no drag) selects from the playhead to the
        clicked frame, a click on an edge changes nothing."""
        anchor, frame = self._select_anchor, self.frame_at(pos)
        adjusting, self._select_anchor, self._adjusting = self._adjusting, None, False
        if anchor is None or frame is None:
            return
        if self._is_click(pos):
            if adjusting:
                self._show_region(self._selection)
                return
            if self._playhead is None:
                self._show_region(self._selection)
                return
            anchor = self._playhead
        before = self._selection
        self.set_selection((anchor, frame))
        if self._selection != before:
            self.selectionChanged.emit(self._selection)

    def _on_labels(self, pos: QPointF) -> bool:
        """Over the row names (the left axis)."""
        return self._track_axis.sceneBoundingRect().contains(self._plot.mapToScene(pos.toPoint()))

    def _on_tracks(self, pos: QPointF) -> bool:
        """Inside the tracks or on the time ruler under them."""
        if self._fps is None:
            return False
        scene = self._plot.mapToScene(pos.toPoint())
        return self._vb.sceneBoundingRect().contains(scene) or self._time_axis.sceneBoundingRect().contains(scene)

    def _scrub_to(self, frame: int) -> None:
        """Emit now if the last emission is old enough, else once the interval has passed."""
        if frame == self._last_emitted:
            self._pending = None
            self._throttle.stop()
            return
        wait_s = self._last_emit_t + self.drag_interval_ms / 1000 - time.monotonic()
        if wait_s <= 0:
            self._throttle.stop()
            self._pending = None
            self._emit(frame)
        else:
            self._pending = frame
            if not self._throttle.isActive():
                self._throttle.start(max(1, math.ceil(wait_s * 1000)))

    def _emit_pending(self) -> None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            self._emit(frame)

    def _emit(self, frame: int) -> None:
        self._last_emitted = frame
        self._last_emit_t = time.monotonic()
        self.seekRequested.emit(frame)


def _unbroken(text: str) -> str:
    """Rich text of ``text`` whose spaces do not break a line."""
    return html.escape(text).replace(" ", "&nbsp;")


def _confidence_value(value: float | str) -> float:
    if isinstance(value, str):
        try:
            return CHAIN_STATUS_CONFIDENCE[value.strip().lower()]
        except KeyError:
            raise ValueError(
                f"unknown chain status {value!r} (expected one of {sorted(CHAIN_STATUS_CONFIDENCE)})"
            ) from None
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"confidence must be finite, got {value!r}")
    return min(max(number, 0.0), 1.0)
