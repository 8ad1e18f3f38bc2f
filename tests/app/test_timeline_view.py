from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QWheelEvent
from PySide6.QtWidgets import QApplication

from app.widgets.timeline_view import TimelineView
from engine.chain import CvsState
from engine.phase_labels import read_cholec80_phases
from engine.timeline import TimelineRow, build_timelines

PHASES = [
    "Preparation",
    "CalotTriangleDissection",
    "ClippingCutting",
    "GallbladderDissection",
    "GallbladderPackaging",
    "CleaningCoagulation",
    "GallbladderRetraction",
]
FPS = 25.0
MET, NOT_MET, NA = CvsState.MET, CvsState.NOT_MET, CvsState.NOT_ASSESSABLE


def synthetic_rows(frame_count: int, stride: int, shares=(1, 3, 1, 3, 1, 2, 1)) -> list[TimelineRow]:
    """Seven phases in order, CVS met once the dissection ends, tools by phase."""
    frames = np.arange(0, frame_count, stride)
    bounds = np.cumsum(shares) / sum(shares) * frame_count
    rows = []
    for f in frames.tolist():
        p = int(np.searchsorted(bounds, f, side="right"))
        cvs = (NA, NA, NA) if p == 0 else (NOT_MET, NOT_MET, NOT_MET) if p == 1 else (MET, MET, MET)
        tools = ("Grasper", "Hook") if p in (1, 3) else ("Grasper", "Clipper") if p == 2 else ("Grasper",)
        rows.append(TimelineRow(f, PHASES[p], cvs, tools))
    return rows


@pytest.fixture(scope="module")
def small_timelines():
    return build_timelines(synthetic_rows(1500, 25), FPS, frame_count=1500)


def test_timelines_draw_one_rectangle_per_segment(view, small_timelines):
    tl = small_timelines
    view.set_timelines(tl)

    assert [s.label for s in tl.phase] == PHASES
    assert view.rect_count("phase") == len(tl.phase) == 7
    assert [label for *_, label in view.track_runs("phase")] == PHASES
    assert view.rect_count("raw") == len(tl.raw_phase_segments())
    for i in range(3):
        assert view.rect_count(f"cvs{i + 1}") == len(tl.cvs[i].segments) == 3
    # Only tools that appear, in Cholec80 order, between CVS and confidence.
    keys = view.track_keys()
    tools = ["tool:Grasper", "tool:Hook", "tool:Clipper"]
    assert keys == ["phase", "raw", "cvs1", "cvs2", "cvs3", *tools, "confidence", "coverage", "bookmarks"]
    assert view.rect_count("tool:Grasper") == 1
    assert view.track_runs("coverage") == [(0, 1500, "analysed")]

    view.set_timelines(None)
    assert view.rect_count("phase") == 0 and not any(k.startswith("tool:") for k in view.track_keys())


def test_ground_truth_from_the_synthetic_case_draws_seven_runs(view, synth_case):
    folder, _ = synth_case
    truth = read_cholec80_phases(folder / "cholec80" / "phase_annotations" / "video01-phase.txt")
    view.set_case(FPS, len(truth))
    view.set_ground_truth(truth)

    assert view.track_keys()[0] == "truth"
    runs = view.track_runs("truth")
    assert [label for *_, label in runs] == PHASES
    assert view.rect_count("truth") == 7
    assert runs[0][0] == 0 and runs[-1][1] == len(truth)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(runs))

    view.set_ground_truth(None)
    assert "truth" not in view.track_keys()


def test_click_emits_the_frame_under_the_cursor(view, qtbot, small_timelines):
    view.set_timelines(small_timelines)
    for frame in (0, 337, 1000, 1499):
        pos = view.viewport_point((frame + 0.5) / FPS, "phase")
        with qtbot.waitSignal(view.seekRequested, timeout=10000) as sig:
            qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=pos)
        # One pixel is 1500/~1100 frames here: the resolution of a click at this zoom.
        assert abs(sig.args[0] - frame) <= 2, (sig.args[0], frame)

    # Zoomed in far enough, a click lands on the exact frame (± 1).
    view.set_visible_seconds(30.0, 32.0)
    pos = view.viewport_point((777 + 0.5) / FPS, "cvs2")
    with qtbot.waitSignal(view.seekRequested, timeout=10000) as sig:
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert abs(sig.args[0] - 777) <= 1

    # The time ruler under the tracks seeks too.
    ruler = view._time_axis.sceneBoundingRect().center()
    pos = view._plot.mapFromScene(ruler)
    with qtbot.waitSignal(view.seekRequested, timeout=10000) as sig:
        qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    assert abs(sig.args[0] - 31 * FPS) <= 2


def test_drag_emits_while_moving_and_the_release_position_last(view, qtbot):
    seen: list[int] = []
    view.seekRequested.connect(seen.append)
    view.drag_interval_ms = 0
    vp = view.viewport()
    start, stops = view.viewport_point(10.0, "phase"), [20.0, 25.0, 30.0, 35.0]
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=start)
    for s in stops:
        qtbot.mouseMove(vp, view.viewport_point(s, "raw"))
        qtbot.wait(5)
    end = view.viewport_point(41.0, "confidence")
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=end)

    assert len(seen) >= 4
    assert seen == sorted(seen)  # moving right only
    assert seen[-1] == view.frame_at(end)
    assert abs(seen[-1] - 41 * FPS) <= 2


def test_drag_is_throttled_but_the_last_position_is_sent(view, qtbot):
    seen: list[int] = []
    view.seekRequested.connect(seen.append)
    view.drag_interval_ms = 10_000  # nothing but the press and the release get through
    vp = view.viewport()
    qtbot.mousePress(vp, Qt.MouseButton.LeftButton, pos=view.viewport_point(5.0))
    for s in range(6, 30):
        qtbot.mouseMove(vp, view.viewport_point(float(s)))
    end = view.viewport_point(30.0)
    qtbot.mouseRelease(vp, Qt.MouseButton.LeftButton, pos=end)
    qtbot.wait(20)
    assert seen == [view.frame_at(view.viewport_point(5.0)), view.frame_at(end)]


def wheel(view: TimelineView, pos: QPoint, steps: int) -> None:
    vp = view.viewport()
    event = QWheelEvent(
        QPointF(pos),
        QPointF(vp.mapToGlobal(pos)),
        QPoint(0, 0),
        QPoint(0, 120 * steps),
        Qt.MouseButton.NoButton,
        Qt.KeyboardModifier.NoModifier,
        Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    QApplication.sendEvent(vp, event)


def test_wheel_zooms_time_around_the_cursor_and_fit_all_restores(view, qtbot):
    assert view.visible_seconds() == pytest.approx((0.0, 60.0), abs=1e-6)
    pos = view.viewport_point(42.0, "cvs1")
    before = view._vb.mapSceneToView(view._plot.mapToScene(pos)).x()
    y_before = view._vb.viewRange()[1]

    wheel(view, pos, 3)
    x0, x1 = view.visible_seconds()
    assert x1 - x0 < 45.0  # zoomed in
    after = view._vb.mapSceneToView(view._plot.mapToScene(pos)).x()
    assert after == pytest.approx(before, abs=0.1)  # the time under the cursor stays put
    assert view._vb.viewRange()[1] == pytest.approx(y_before)  # y never zooms

    wheel(view, pos, -10)  # zooming out stops at the whole case
    x0, x1 = view.visible_seconds()
    assert x0 >= -1e-6 and x1 <= 60.0 + 1e-6

    view.set_visible_seconds(10.0, 12.0)
    view.fit_all()
    assert view.visible_seconds() == pytest.approx((0.0, 60.0), abs=1e-6)


def test_time_axis_reads_as_a_clock(view):
    axis = view._time_axis
    assert axis.tickStrings([0.0, 90.0, 3725.0], 1.0, 30.0) == ["00:00:00", "00:01:30", "01:02:05"]
    assert axis.tickStrings([1.2], 1.0, 0.1) == ["00:00:01.05"]
    (major, _), (minor, _) = axis.tickSpacing(0.0, 5400.0, 1000.0)
    assert major in (600.0, 900.0) and minor < major


def test_a_ninety_minute_case_sets_its_timelines_and_confidence_in_under_two_seconds_each(qtbot):
    frames, stride = 135_000, 25
    rows = synthetic_rows(frames, stride)
    rng = np.random.default_rng(1)
    flicker = rng.random(len(rows)) < 0.15  # a noisy model: the raw track has ~1,500 runs
    rows = [
        TimelineRow(r.frame, PHASES[int(rng.integers(7))], r.cvs, r.tools) if f else r
        for r, f in zip(rows, flicker, strict=True)
    ]
    tl = build_timelines(rows, FPS, frame_count=frames)
    statuses = rng.choice(["complete", "partial", "malformed"], size=len(rows), p=[0.8, 0.15, 0.05]).tolist()

    w = TimelineView()
    qtbot.addWidget(w)
    w.resize(1200, 300)
    w.show()
    qtbot.waitExposed(w)
    w.set_case(FPS, frames)
    t0 = time.perf_counter()
    w.set_timelines(tl)
    elapsed = time.perf_counter() - t0
    t0 = time.perf_counter()
    w.set_confidence(tl.frames, statuses)
    conf_elapsed = time.perf_counter() - t0

    assert len(tl.frames) == 5400
    assert w.rect_count("raw") > 1000
    assert w.rect_count("phase") == len(tl.phase)
    assert elapsed < 2.0, f"set_timelines took {elapsed * 1000:.0f} ms"
    assert conf_elapsed < 2.0, f"set_confidence took {conf_elapsed * 1000:.0f} ms"
    image = w.grab().toImage()
    assert not image.isNull() and image.width() == 1200


def test_a_thousand_playhead_moves_take_under_three_seconds_and_rebuild_nothing(view, qtbot, small_timelines):
    view.set_timelines(small_timelines)
    builds = view.build_count
    items = list(view._vb.addedItems)
    t0 = time.perf_counter()
    for frame in range(1000):
        view.set_playhead(frame)
    QApplication.processEvents()
    elapsed = time.perf_counter() - t0

    assert elapsed < 3.0, f"1,000 playhead moves took {elapsed * 1000:.0f} ms"
    assert view.build_count == builds and view._vb.addedItems == items
    assert view.playhead == 999
    assert view._line.value() == pytest.approx(999.5 / FPS)
    assert view._line.isVisible()


def test_bookmarks_show_as_markers_with_their_titles(view):
    view.set_bookmarks([(1000, "clip placed"), (250, "first look")])
    assert view.bookmark_count() == 2
    text = view.describe_at(view.viewport_point(1000.5 / FPS, "bookmarks"))
    assert text is not None and text.startswith("clip placed")
    assert view.describe_at(view.viewport_point(20.0, "bookmarks")) is None  # nothing near 20 s
    view.set_bookmarks([])
    assert view.bookmark_count() == 0


def test_confidence_from_chain_status_and_numbers(view):
    view.set_confidence([0, 25, 50, 75, 100], ["complete", "complete", "partial", "malformed", None])
    runs = view.track_runs("confidence")
    assert [label for *_, label in runs] == ["1", "0.5", "0"]
    assert runs[0][:2] == (0, 38) and runs[-1][1] == 100  # cells reach half-way to the next frame
    view.set_confidence(np.array([0, 25]), [0.9, 0.91])
    assert len(view.track_runs("confidence")) == 1  # equal at the track's resolution: one run
    view.set_confidence([50, 0, 50], [1.0, 0.0, 0.5])  # unsorted; a repeated frame keeps its last value
    assert [label for *_, label in view.track_runs("confidence")] == ["0", "0.5"]
    with pytest.raises(ValueError):
        view.set_confidence([0], ["bogus"])


def test_tooltip_describes_the_track_under_the_cursor(view, small_timelines):
    view.set_timelines(small_timelines)
    text = view.describe_at(view.viewport_point(1.0, "phase"))
    assert text is not None and text.startswith("Phase: Preparation")


@pytest.mark.parametrize("size", [(1200, 300), (400, 160), (1920, 500)])
def test_grabs_to_an_image_at_any_size(qtbot, small_timelines, synth_case, size):
    folder, _ = synth_case
    w = TimelineView()
    qtbot.addWidget(w)
    w.resize(*size)
    w.show()
    qtbot.waitExposed(w)
    w.set_case(FPS, 1500)
    w.set_timelines(small_timelines)
    w.set_ground_truth(read_cholec80_phases(folder / "cholec80" / "phase_annotations" / "video01-phase.txt"))
    w.set_confidence(small_timelines.frames, ["complete"] * len(small_timelines.frames))
    w.set_bookmarks([(700, "look here")])
    w.set_playhead(700)
    image = w.grab().toImage()
    assert (image.width(), image.height()) == size
    # Something other than the background was painted: the phase colours.
    colours = {image.pixel(x, y) for x in range(0, size[0], 7) for y in range(0, size[1], 7)}
    assert len(colours) > 8


def test_an_empty_view_and_a_view_without_a_case_are_harmless(qtbot, small_timelines):
    w = TimelineView()
    qtbot.addWidget(w)
    w.resize(600, 200)
    w.set_playhead(10)  # before any case: remembered, nothing drawn
    w.set_bookmarks([(5, "x")])
    assert not w.grab().toImage().isNull()
    w.set_timelines(small_timelines)  # takes the clock from the timelines
    assert w.visible_seconds() == pytest.approx((0.0, 60.0), abs=1e-6)
    assert w.rect_count("phase") == 7
    assert w._line.isVisible() and w._line.value() == pytest.approx(10.5 / FPS)


def test_the_legend_names_every_colour_by_its_display_name(view, small_timelines):
    from app import palette

    view.set_timelines(small_timelines)
    text = view.legend_text()
    assert "Calot Triangle Dissection" in text and "CalotTriangleDissection" not in text
    for word in ("met", "not met", "not assessable", "Grasper", "Clipper", "analysed", "bookmark", "agrees"):
        assert word in text
    drawn = {c for _, rows in view.legend_entries() for c, _, _ in rows}
    assert set(palette.CVS_COLORS.values()) <= drawn and set(palette.PHASE_COLORS.values()) <= drawn
    assert not set(palette.CVS_COLORS.values()) & set(palette.PHASE_COLORS.values())
    assert palette.CVS_DOUBTFUL not in palette.PHASE_COLORS.values()
    assert all(meaning for _, rows in view.legend_entries() for *_, meaning in rows)


def test_tooltips_say_what_a_colour_means(view, small_timelines):
    view.set_timelines(small_timelines)
    x = 300 / FPS  # the Calot phase: Grasper and Hook in view, CVS not met
    assert view.describe_at(view.viewport_point(x, "phase")).startswith("Phase: Calot Triangle Dissection")
    assert view.describe_at(view.viewport_point(x, "tool:Grasper")).startswith("Grasper: in view")
    assert "not met — " in view.describe_at(view.viewport_point(x, "cvs1"))
    coverage = view.describe_at(view.viewport_point(x, "coverage"))
    assert coverage.startswith("Analysed: the model answered") and "analysed: analysed" not in coverage.lower()


def test_confidence_follows_agreement_with_neighbours_and_chain_status(view):
    from app.session import CaseSession

    rows = synthetic_rows(500, 25)
    rows[10] = TimelineRow(rows[10].frame, "GallbladderRetraction", rows[10].cvs, rows[10].tools)  # an outlier
    tl = build_timelines(rows, FPS, frame_count=500)
    session = CaseSession()
    session.statuses = [(r.frame, "partial" if r.frame == 125 else "complete") for r in rows]
    view.follow(session)
    session.timelines = tl
    session._emit("timelines", tl)
    by_frame = {f: view.confidence_at(f) for f in (0, 125, 250, 275)}
    assert by_frame[0] == 1.0 and by_frame[250] == 0.5  # the outlier disagrees with both neighbours
    assert by_frame[275] == 0.75 and by_frame[125] == 0.75  # one neighbour disagrees; a partial chain
    assert len({label for *_, label in view.track_runs("confidence")}) > 1  # no longer one solid colour
    text = view.describe_at(view.viewport_point(250.5 / FPS, "confidence"))
    assert "agrees with 0 of 2 analysed neighbours" in text and "chain complete" in text


def test_all_met_outside_an_established_episode_is_drawn_doubtful(view):
    """All three met on 5 analysed frames (4 s: a doubtful episode, long enough to survive smoothing)
    and on 11 (10 s: established): the CVS rows draw the first run in CVS_DOUBTFUL with its tooltip,
    the second in the met colour."""
    from app import palette
    from app.session import CaseSession
    from engine.cvs_assessment import ESTABLISHED, assess_cvs

    def cvs(frame: int) -> tuple[CvsState, CvsState, CvsState]:
        return (MET, MET, MET) if 250 <= frame <= 350 or 750 <= frame <= 1000 else (MET, NOT_MET, NOT_MET)

    rows = [TimelineRow(f, "CalotTriangleDissection", cvs(f), ("Grasper",)) for f in range(0, 1500, 25)]
    tl = build_timelines(rows, FPS, frame_count=1500)
    session = CaseSession()
    view.follow(session)
    session.timelines, session.cvs_episodes = tl, assess_cvs(rows, FPS, None).episodes
    assert [(e.start_frame, e.end_frame, e.status) for e in session.cvs_episodes] == [
        (250, 350, "doubtful"),
        (750, 1000, ESTABLISHED),
    ]
    session._emit("timelines", tl)

    def label_at(key: str, frame: int) -> str | None:
        return next((label for a, b, label in view.track_runs(key) if a <= frame < b), None)

    for frame in (250, 300, 350):
        assert label_at("cvs2", frame) == "doubtful", frame
        assert label_at("cvs1", frame) == "doubtful", frame  # C1 met all along: only the doubtful run changes
    for frame in (750, 875, 1000):
        assert label_at("cvs2", frame) == "met" and label_at("cvs1", frame) == "met"
    assert label_at("cvs1", 100) == "met" and label_at("cvs2", 100) == "not met"  # not all three met
    assert label_at("cvs1", 500) == "met"
    assert view.colour_of("cvs2", "doubtful") == palette.CVS_DOUBTFUL
    assert view.colour_of("cvs2", "met") == palette.CVS_MET
    tip = view.describe_at(view.viewport_point(300 / FPS, "cvs3"))
    assert "all three met, but not on a stable run: doubtful" in tip
    assert "doubtful" not in view.describe_at(view.viewport_point(875 / FPS, "cvs3"))
    assert palette.CVS_DOUBTFUL in {c for _, rows in view.legend_entries() for c, _, _ in rows}
    assert not view.grab().isNull()
