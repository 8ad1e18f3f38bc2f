"""Measure the viewer's layout under a Qt scale factor, in a process of its own.

    QT_SCALE_FACTOR=1.5 QT_QPA_PLATFORM=offscreen python -m tests.app.hidpi_probe VIDEO --size 1280x720

``QT_SCALE_FACTOR`` is read once, when the QApplication is made, so each scale factor needs its own
process; ``tests/app/test_hidpi_layout.py`` runs this module and asserts on the JSON it prints: the
timeline's row labels as pyqtgraph draws them (their rectangles, in window pixels) and the transport
bar's frame and time read-outs (their text's width against the width their label has).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def _rect(r: Any) -> list[float]:
    return [round(r.x(), 2), round(r.y(), 2), round(r.width(), 2), round(r.height(), 2)]


def timeline_labels(window: Any) -> dict[str, Any]:
    """The row labels pyqtgraph paints on the timeline's left axis, mapped to the window's pixels."""
    from PySide6.QtCore import QRectF
    from PySide6.QtGui import QFontMetricsF, QImage, QPainter

    view = window.timeline
    axis = view._track_axis
    image = QImage(8, 8, QImage.Format.Format_ARGB32)
    painter = QPainter(image)
    try:
        specs = axis.generateDrawSpecs(painter)
    finally:
        painter.end()
    labels = []
    fm = QFontMetricsF(axis.style["tickFont"] or view.font())
    plot = view._plot
    for rect, _flags, text in specs[2] if specs else []:
        scene = axis.mapRectToScene(QRectF(rect))
        in_plot = plot.mapFromScene(scene).boundingRect()
        top_left = plot.mapTo(window, in_plot.topLeft())
        placed = QRectF(top_left.toPointF(), in_plot.size().toSizeF())
        labels.append({"text": text, "rect": _rect(placed), "need": [fm.horizontalAdvance(text), fm.height()]})
    axis_scene = plot.mapFromScene(axis.sceneBoundingRect()).boundingRect()
    axis_box = QRectF(plot.mapTo(window, axis_scene.topLeft()).toPointF(), axis_scene.size().toSizeF())
    return {
        "labels": labels,
        "axis": _rect(axis_box),
        "tracks": [view._tracks[k].title for k in view.track_keys()],
        "scroll": view.track_scroll_state(),
    }


def ink_width(label: Any, ratio: float) -> float:
    """How far right (logical pixels) the label's text paints at the screen's device-pixel ratio, drawn
    on a canvas wide enough for any text: glyphs rendered at a fractional scale can reach past the
    width the logical font metrics give."""
    from PySide6.QtCore import QPointF, Qt
    from PySide6.QtGui import QColor, QImage, QPainter

    text = label.text()
    logical_w = label.fontMetrics().horizontalAdvance(text) * 2 + 20
    logical_h = label.fontMetrics().height() + 4
    image = QImage(round(logical_w * ratio), round(logical_h * ratio), QImage.Format.Format_ARGB32)
    image.setDevicePixelRatio(ratio)
    image.fill(QColor(0, 0, 0, 0))
    painter = QPainter(image)
    painter.setFont(label.font())
    painter.setPen(Qt.GlobalColor.black)
    painter.drawText(QPointF(0, label.fontMetrics().ascent() + 2), text)
    painter.end()
    for x in range(image.width() - 1, -1, -1):  # the rightmost column with ink
        if any(image.pixelColor(x, y).alpha() for y in range(image.height())):
            return (x + 1) / ratio
    return 0.0


def read_out(window: Any, label: Any) -> dict[str, Any]:
    """A transport-bar label: its text's width (metrics, and ink at the screen's scale) against its
    contents' width, and whether it lies inside the window (a label pushed past its edge is cut too)."""
    from PySide6.QtCore import QRect

    inner = label.contentsRect()
    where = QRect(label.mapTo(window, inner.topLeft()), inner.size())
    return {
        "text": label.text(),
        "need": label.fontMetrics().horizontalAdvance(label.text()),
        "ink": ink_width(label, label.devicePixelRatioF()),
        "has": inner.width(),
        "need_h": label.fontMetrics().height(),
        "has_h": inner.height(),
        "visible": label.isVisibleTo(window),
        "inside": window.rect().contains(where),
    }


def measure(window: Any) -> dict[str, Any]:
    """The window's row labels at every page of the tracks' scroll bar (one page when all fit), and
    its read-outs."""
    scroll = window.timeline._scroll
    pages = []
    value = scroll.minimum()
    while True:
        scroll.setValue(value)
        window.grab()  # paint once, as a screen would
        pages.append(timeline_labels(window))
        if value >= scroll.maximum():
            break
        value = min(value + scroll.pageStep(), scroll.maximum())
    scroll.setValue(scroll.minimum())
    return {
        "window": list(window.size().toTuple()),
        "timeline_pages": pages,
        "frame_label": read_out(window, window.frame_label),
        "time_label": read_out(window, window.time_label),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", type=Path)
    parser.add_argument("--size", action="append", help="a window size in logical pixels, WxH (repeatable)")
    parser.add_argument("--settings", type=Path, required=True, help="a settings file of the probe's own")
    parser.add_argument("--model", default="ground-truth@synthetic", help="the model whose stored answers to show")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.size or ["1440x900"]]

    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from app.engine_worker import profile_info
    from app.main_window import SurgviewWindow
    from app.theme import apply_theme
    from app.window_layout import apply_default_layout
    from engine.profiles import get_profile

    app = QApplication(sys.argv[:1])
    apply_theme(app)
    window = SurgviewWindow(settings=QSettings(str(args.settings), QSettings.Format.IniFormat), start_engine=False)
    apply_default_layout(window, *sizes[0])
    window.show()
    window.open_case(args.video)

    def pump(seconds: float, until: Any = None) -> bool:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            app.processEvents()
            if until is not None and until():
                return True
            time.sleep(0.005)
        return until is None

    if not pump(20, lambda: window.store is not None and window.playhead.displayed >= 0):
        raise SystemExit("the case did not open")
    window.engine.ready.emit(args.model, "cpu", profile_info(get_profile(), "profile surgview"))
    window.refresh_timelines()
    last = window.case.frame_count - 1
    window.seek(last)  # the longest frame read-out: "frame 1499 / 1499"
    if not pump(20, lambda: window.playhead.displayed == last):
        raise SystemExit("the last frame was not shown")
    layouts = []
    for width, height in sizes:
        apply_default_layout(window, width, height)
        pump(0.3)  # layouts settle
        layouts.append(measure(window))
    print(json.dumps({"scale": app.primaryScreen().devicePixelRatio(), "layouts": layouts}))
    window.close()


if __name__ == "__main__":
    main()
