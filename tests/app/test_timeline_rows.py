"""Rows that keep room for their names: a timeline too short for every row's label scrolls its tracks
(the names never squeeze together), one tall enough shows them all; the transport read-outs keep the
width of the widest text of the case, so they are never cut and never move while stepping."""

from __future__ import annotations

import itertools

import pytest
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QFontMetricsF

from engine.timeline import build_timelines
from tests.app.conftest import TIMELINE_FPS, TIMELINE_FRAMES
from tests.app.test_timeline_view import synthetic_rows


@pytest.fixture(scope="module")
def small_timelines():
    return build_timelines(synthetic_rows(TIMELINE_FRAMES, 25), TIMELINE_FPS, frame_count=TIMELINE_FRAMES)


def label_gaps(view) -> list[float]:
    """Pixels between the centres of neighbouring row names in view."""
    state = view.track_scroll_state()
    top, bottom = state["offset"], state["offset"] + state["span"]
    ys = []
    for key in view.track_keys():
        track = view._tracks[key]
        centre = track.y0 + track.height / 2
        if top <= centre <= bottom:
            ys.append(view._plot.mapFromScene(view._vb.mapViewToScene(QPointF(0.0, centre))).y())
    assert len(ys) >= 2
    return [b - a for a, b in itertools.pairwise(ys)]


def test_a_short_timeline_scrolls_its_tracks_and_a_tall_one_shows_all(view, qtbot, small_timelines):
    view.set_timelines(small_timelines)
    line = QFontMetricsF(view._track_axis.style["tickFont"]).height()
    view.resize(1200, 190)
    qtbot.waitUntil(lambda: view.track_scroll_state()["span"] < view.track_scroll_state()["total"], timeout=3000)
    assert view._scroll.isVisible()
    assert min(label_gaps(view)) >= line  # the names in view never overlap
    view.scroll_to_track("bookmarks")  # the last row can be reached
    state = view.track_scroll_state()
    track = view._tracks["bookmarks"]
    assert state["offset"] <= track.y0 and track.y0 + track.height <= state["offset"] + state["span"] + 1e-9
    assert min(label_gaps(view)) >= line
    view.resize(1200, 900)
    qtbot.waitUntil(lambda: not view._scroll.isVisible(), timeout=3000)
    state = view.track_scroll_state()
    assert state["offset"] == 0.0 and state["span"] == state["total"]
    assert min(label_gaps(view)) >= line


def test_a_click_on_a_scrolled_track_still_seeks_to_its_frame(view, qtbot, small_timelines):
    view.set_timelines(small_timelines)
    view.resize(1200, 190)
    qtbot.waitUntil(lambda: view._scroll.isVisible(), timeout=3000)
    seen: list[int] = []
    view.seekRequested.connect(seen.append)
    pos = view.viewport_point(250.5 / TIMELINE_FPS, "bookmarks")  # scrolled into view first
    assert view.viewport().rect().contains(pos)
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert seen == [250]


def test_the_frame_read_out_keeps_its_width_from_the_first_frame_to_the_last(open_viewer, video, qtbot):
    window = open_viewer(video)
    window.seek(0)
    qtbot.waitUntil(lambda: window.playhead.displayed == 0, timeout=5000)
    widths = (window.frame_label.width(), window.time_label.width())
    last = window.case.frame_count - 1
    window.seek(last)
    qtbot.waitUntil(lambda: window.playhead.displayed == last, timeout=5000)
    qtbot.wait(20)
    assert (window.frame_label.width(), window.time_label.width()) == widths
    metrics = window.frame_label.fontMetrics()
    assert metrics.horizontalAdvance(window.frame_label.text()) < window.frame_label.contentsRect().width()


def test_the_wheel_over_the_row_names_scrolls_the_rows_not_the_time(view, qtbot, small_timelines):
    from tests.app.test_timeline_view import wheel

    view.set_timelines(small_timelines)
    view.resize(1200, 190)
    qtbot.waitUntil(lambda: view._scroll.isVisible(), timeout=3000)
    names = view._plot.mapFromScene(view._track_axis.sceneBoundingRect().center())
    seconds = view.visible_seconds()
    wheel(view, names, -2)  # down
    assert view.track_scroll_state()["offset"] > 0 and view.visible_seconds() == seconds
    wheel(view, names, 5)  # back up to the first row
    assert view.track_scroll_state()["offset"] == 0
