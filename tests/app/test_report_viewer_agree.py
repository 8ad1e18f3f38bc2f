"""The report and the viewer say the same about a case: frames the reviewer asked for on demand near the first
clip (a wavering model answering "clipping" early there) move neither the viewer's phase timeline nor the
report's, so both judge CVS against the same first clip and print the same statement."""

from __future__ import annotations

import pytest

from app.session import CaseSession
from engine.cvs_assessment import assess_cvs
from engine.report_data import choose_analysis, gather_report
from engine.store import CaseStore, FrameResult
from engine.timeline import build_timelines
from tests.engine.test_store import KEY, chain_text

pytestmark = pytest.mark.usefixtures("data_home")

FPS, COUNT = 25.0, 1500
MET, NEVER = ("met", "met", "met"), ("not met", "not met", "not met")
CALOT, CLIP = "Calot Triangle Dissection", "Clipping Cutting"


def put(store: CaseStore, frame: int, phase: str, cvs: tuple[str, str, str]) -> None:
    store.put_result(FrameResult.from_text(frame, *KEY, chain_text(frame, phase=phase, cvs=cvs)))


def test_frames_asked_for_near_the_clip_change_neither_the_report_nor_the_viewer(tmp_path):
    with CaseStore.open(tmp_path / "case.sqlite") as store:
        for frame in range(0, COUNT, 25):  # the sweep, one frame a second
            phase = CALOT if frame < 1000 else CLIP
            put(store, frame, phase, NEVER if frame < 700 else MET)
        for frame in range(880, 1000, 10):  # stepped through just before the clip: off the stride, "clipping"
            if frame % 25:
                put(store, frame, CLIP, MET)
        analysis = choose_analysis(store)
        rows = analysis.timeline_rows(store)
        report = gather_report(store, fps=FPS, frame_count=COUNT, stride_s=1.0)

        session = CaseSession()
        session.case.update(fps=FPS, frame_count=COUNT, width=64, height=48)
        session.stride_s = 1.0
        session.store = store
        session.analysis = lambda: analysis  # type: ignore[method-assign]
        assert session.refresh_timelines() is None
        viewer = session.timelines
        session.store = None

    # Smoothing every answer alike would have moved the first clip well before the sweep's 1000.
    every_answer = build_timelines(rows, FPS, COUNT).first_clip_frame()
    assert every_answer is not None and every_answer < 975
    clip = viewer.first_clip_frame()
    assert clip is not None and 975 < clip <= 1000
    assert report.cvs.clipping_start == clip
    assert [(s.start, s.end, s.label) for s in report.timelines.phase] == [
        (s.start, s.end, s.label) for s in viewer.phase
    ]
    shown = assess_cvs(viewer.rows, FPS, clip, time_of=session.time_of)  # the viewer's CVS line, under the tracks
    assert report.cvs.statement == shown.statement
    assert report.cvs.statement.startswith("CVS was established at 00:00:28 (frame 700) and held until clipping")
    assert report.cvs.assessment.episodes == tuple(session.cvs_episodes)
    assert len(report.timelines.rows) == len(rows)  # the raw answers keep every frame asked for
