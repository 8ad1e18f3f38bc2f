"""The timelines' playhead carries the phase: a tag beside the line names the smoothed phase under it (display
name, in the phase's colour), follows the playhead and stays inside the tracks in view, and moving the playhead
rebuilds nothing. Under the tracks the viewer states CVS as the report does (established before the first clip
and held, lost, or never)."""

from __future__ import annotations

import pytest

from app import palette
from app.timeline_model import display_name
from engine.chain import CvsState
from engine.timeline import TimelineRow, build_timelines
from tests.app.conftest import TIMELINE_FPS, TIMELINE_FRAMES
from tests.app.test_timeline_view import synthetic_rows

MET, NOT_MET = CvsState.MET, CvsState.NOT_MET


@pytest.fixture(scope="module")
def small_timelines():
    return build_timelines(synthetic_rows(TIMELINE_FRAMES, 25), TIMELINE_FPS, frame_count=TIMELINE_FRAMES)


def test_the_playhead_names_the_phase_under_it(view, qtbot, small_timelines):
    view.set_timelines(small_timelines)
    assert view.playhead_phase() is None  # no playhead yet
    builds = view.build_count
    for segment in small_timelines.phase:
        for frame in (segment.start, (segment.start + segment.end) // 2, segment.end - 1):
            view.set_playhead(frame)
            assert view.playhead_phase() == display_name(segment.label), frame
            tag = view._phase_tag
            assert display_name(segment.label) in tag.textItem.toPlainText()
            inside = view._vb.sceneBoundingRect().adjusted(-1, -1, 1, 1)
            assert inside.contains(tag.sceneBoundingRect()), f"frame {frame}: the tag leaves the tracks"
    assert view.build_count == builds  # the tag is moved, nothing is rebuilt
    view.set_timelines(None)
    assert view.playhead_phase() is None  # no phase under the playhead: no tag


def rows_with_cvs(runs: list[tuple[int, int, str, tuple]], stride: int = 25) -> list[TimelineRow]:
    return [TimelineRow(f, phase, cvs, ("Grasper",)) for a, b, phase, cvs in runs for f in range(a, b, stride)]


def test_the_timelines_state_cvs_as_the_report_does(view, qtbot):
    met, never = (MET, MET, MET), (NOT_MET, NOT_MET, NOT_MET)
    doubtful = rows_with_cvs(
        [
            (0, 50, "Preparation", met),
            (50, 750, "CalotTriangleDissection", never),
            (750, 1500, "ClippingCutting", never),
        ]
    )
    view.set_timelines(build_timelines(doubtful, TIMELINE_FPS, frame_count=TIMELINE_FRAMES))
    text = view.cvs_statement()
    assert text is not None and text.startswith("CVS was NOT established before clipping began") and "doubtful" in text
    assert palette.CVS_DOUBT in view._cvs_line.text()  # amber: no green light
    calot = "CalotTriangleDissection"
    held = rows_with_cvs([(0, 400, calot, never), (400, 750, calot, met), (750, 1500, "ClippingCutting", met)])
    view.set_timelines(build_timelines(held, TIMELINE_FPS, frame_count=TIMELINE_FRAMES))
    text = view.cvs_statement()
    assert text.startswith("CVS was established at 00:00:16 (frame 400) and held until clipping began")
    assert palette.CVS_MET in view._cvs_line.text()
    view.set_timelines(None)
    assert view.cvs_statement() is None
