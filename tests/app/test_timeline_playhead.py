"""The timelines' playhead carries the phase: a tag beside the line names the smoothed phase under it (display
name, in the phase's colour), follows the playhead and stays inside the tracks in view, and moving the playhead
rebuilds nothing."""

from __future__ import annotations

import pytest

from app.timeline_model import display_name
from engine.timeline import build_timelines
from tests.app.conftest import TIMELINE_FPS, TIMELINE_FRAMES
from tests.app.test_timeline_view import synthetic_rows


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
