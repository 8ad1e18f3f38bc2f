"""The reviewer's labels as a Qt-free model beside the case session: the keyboard's phase edit (from the
playhead, of a selection, over the model's segment), the nearest boundary, CVS toggles from the model's
state, the agreement and the disagreements kept up to date, events, and the refusals."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.engine_worker import profile_info
from app.review_session import ReviewSession, library_agreement
from app.session import CaseSession
from engine.profiles import get_profile
from engine.review_labels import ReviewError
from tests.app.test_viewer_profiles import MODEL, NOTE, fill_surg_r1

CALOT, CLIPPING, PREP = "CalotTriangleDissection", "ClippingCutting", "Preparation"


@pytest.fixture
def review(video, data_home):
    fill_surg_r1(video)
    session = CaseSession()
    session.open_store(video, {"fps": 25.0, "frame_count": 1500, "width": 320, "height": 180})
    session.set_engine(MODEL, profile_info(get_profile("surg-r1"), NOTE))
    model = ReviewSession(session, reviewer="Dr Grey")
    model.events = []
    model.subscribe(lambda name, value: model.events.append(name))
    yield model
    session.close_store()


def spans(review: ReviewSession) -> list[tuple[int, int, str]]:
    return [(s.start, s.end, s.phase) for s in review.labels.snapshot().segments]


def test_the_review_model_imports_no_qt():
    code = "import sys, app.review_session; sys.exit(any(m.startswith('PySide6') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_the_phase_key_edits_from_the_playhead_the_selection_or_the_models_segment(review):
    model_end = next(s.end for s in review.session.timelines.phase if s.label == CALOT)
    review.set_phase_from(100, CALOT)  # nothing reviewed here: the model's segment under the playhead
    assert spans(review) == [(0, model_end, CALOT)]
    assert review.labels.snapshot().segments[0].model.task == "phase" and review.events[-2:] == ["labels", "agreement"]
    review.set_phase_from(400, PREP)  # inside a reviewed segment: the new phase starts here
    assert spans(review) == [(0, 400, CALOT), (400, model_end, PREP)]
    review.set_phase_from(400, CLIPPING)  # at a segment's start: relabelled
    assert spans(review) == [(0, 400, CALOT), (400, model_end, CLIPPING)]
    review.set_phase_from(0, PREP, selection=(1000, 1099))
    assert spans(review)[-1] == (1000, 1100, PREP)
    review.set_phase_from(model_end + 10, CLIPPING)  # a gap: the model's segment, cut where mine begin
    assert spans(review)[1:3] == [(400, 1000, CLIPPING), (1000, 1100, PREP)]
    review.session.timelines = None  # no model timeline: from the playhead to the end of the case
    review.set_phase_from(1300, PREP)
    assert spans(review)[-1] == (1300, 1500, PREP)


def test_the_nearest_boundary_comes_to_the_playhead(review):
    with pytest.raises(ReviewError, match="set a phase first"):
        review.move_nearest_boundary(100)
    review.edit(lambda labels: labels.set_phases([(0, 300, CALOT), (300, 600, CLIPPING)]))
    assert review.boundaries() == [0, 300, 600] and review.nearest_boundary(280, within=10) is None
    review.move_nearest_boundary(280)
    assert spans(review) == [(0, 280, CALOT), (280, 600, CLIPPING)]


def test_cvs_toggles_agreement_and_disagreements_follow_the_labels(review, video):
    review.toggle_cvs(2, 500)
    assert [(r.start, r.end, r.state.value) for r in review.labels.snapshot().cvs[1]] == [(500, 501, "met")]
    assert review.agreement is None or review.agreement.phase_accuracy is None
    review.edit(lambda labels: labels.set_phase(100, 200, CLIPPING))  # the model says Calot there
    assert review.agreement.phase_accuracy == 0.0 and review.agreement.phase_frames == 4
    assert review.agreement.frames_reviewed == 5  # and frame 500, C2
    assert review.status_text() == review.agreement.text()
    assert [d.frame for d in review.found] == [100, 125, 150, 175]
    assert review.next_disagreement(0).frame == 100 and review.next_disagreement(175, forward=False).frame == 150
    assert review.next_disagreement(175) is None
    assert library_agreement(video) == review.agreement.text()  # what the library of cases shows


def test_without_a_store_every_edit_is_refused_in_words(review):
    review.session.close_store()
    review._on_session("store", None)
    assert review.status_text() == ""
    with pytest.raises(ReviewError, match="no case is open"):
        review.toggle_cvs(1, 0)
