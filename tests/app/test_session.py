"""The Qt-free case session: clamped seeks, answers read in bulk and served from the cache (no query
per displayed frame), a frame's record merged once and dropped when a new answer arrives, bookmarks
through the store with events, presentation-time timecodes."""

from __future__ import annotations

import time

import pytest

from app.engine_worker import profile_info
from app.session import CaseSession
from engine.profiles import SURG_R1_VERSION, get_profile
from engine.store import CaseStore, FrameResult
from tests.app.test_viewer_profiles import MODEL, NOTE, PARTIAL_FRAME, TOOLS, fill_surg_r1, phase_answer, put

pytestmark = pytest.mark.usefixtures("data_home")

FACTS = {"fps": 25.0, "frame_count": 1500, "width": 320, "height": 180}


@pytest.fixture
def session(video) -> CaseSession:
    fill_surg_r1(video)
    s = CaseSession()
    s.open_store(video, FACTS)
    s.set_engine(MODEL, profile_info(get_profile("surg-r1"), NOTE))
    yield s
    s.close_store()


def test_the_session_imports_no_qt():
    import ast
    from pathlib import Path

    tree = ast.parse(Path("app/session.py").read_text(encoding="utf-8"))
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(n.startswith(("PySide6", "pyqtgraph", "app.widgets")) for n in names)


def test_seeks_are_clamped_once_and_need_a_case():
    s = CaseSession()
    assert s.seek(10) is None
    s.case.frame_count = 100
    assert s.seek(-5) == 0 and s.seek(500) == 99 and s.playhead.requested == 99


def test_records_come_from_the_cache_without_a_query(session, monkeypatch):
    assert session.prompt_version == SURG_R1_VERSION and session.timelines is not None
    assert session.profile.tasks == ("phase", "triplet", "localisation")
    monkeypatch.setattr(CaseStore, "results", lambda *a, **k: pytest.fail("a query per displayed frame"))
    monkeypatch.setattr(CaseStore, "get_result", lambda *a, **k: pytest.fail("a query per displayed frame"))
    record = session.record(0)
    assert record is not None and record.phase.label == "CalotTriangleDissection"
    assert session.record(0) is record  # merged once
    assert session.record(1) is None and session.needs_answer(1)
    assert session.needs_answer(PARTIAL_FRAME) and not session.needs_answer(50)
    assert (24, "complete") not in session.nearby(25) and session.nearby(25)[0][0] == 0


def test_the_warm_up_merges_every_frame_off_the_calling_thread(session):
    deadline = time.monotonic() + 10
    while len(session._records) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(session._records) == 60


def test_a_new_answer_drops_the_frames_record(session, video):
    events: list[tuple[str, object]] = []
    session.subscribe(lambda name, value: events.append((name, value)))
    assert session.answered(PARTIAL_FRAME) == 2
    before = session.record(PARTIAL_FRAME)
    with CaseStore.for_video(video) as store:
        put(store, PARTIAL_FRAME, "localisation", TOOLS)
    session.answer_arrived(PARTIAL_FRAME)
    assert ("results", PARTIAL_FRAME) in events
    after = session.record(PARTIAL_FRAME)
    assert after is not before and session.answered(PARTIAL_FRAME) == 3 and after.instruments
    with CaseStore.for_video(video) as store:
        store.put_result(FrameResult.from_text(110, MODEL, SURG_R1_VERSION, "phase", phase_answer("Preparation")))
    session.answer_arrived(110)
    assert session.record(110).phase.label == "Preparation"


def test_bookmarks_go_through_the_store_and_announce_themselves(session):
    seen = []
    session.subscribe(lambda name, value: seen.append(value) if name == "bookmarks" else None)
    session.playhead.displayed = 100
    session.add_bookmark(300, "C1", "duct and artery")
    session.add_bookmark(900, "")
    assert [(b.frame, b.title, b.note) for b in session.bookmarks] == [
        (300, "C1", "duct and artery"),
        (900, "frame 900", ""),
    ]
    assert session.bookmark_target(1) == 300 and session.bookmark_target(-1) is None
    session.rename_bookmark(session.bookmarks[1].id, "clip")
    session.delete_bookmark(session.bookmarks[0].id)
    assert [(b.frame, b.title) for b in session.bookmarks] == [(900, "clip")] and len(seen) == 4


def test_timecodes_use_presentation_times():
    class Times:  # a variable-rate file: frame 1 shows at 0.52 s
        def __len__(self) -> int:
            return 3

        def time_of(self, i: int) -> float:
            return [0.0, 0.52, 0.56][i]

    s = CaseSession()
    s.case.update(fps=25.0, frame_count=3)
    assert s.timecode(1) == "00:00:00.01"
    s.times = Times()
    assert s.time_of(1) == 0.52 and s.timecode(1) == "00:00:00.13"


def test_answers_asked_for_on_demand_do_not_move_phase_boundaries():
    from engine.timeline import TimelineRow

    phases = ["Preparation", "CalotTriangleDissection", "ClippingCutting", "GallbladderDissection"]
    sweep = [TimelineRow(f, phases[min(f // 500, 3)], tools=("Grasper",)) for f in range(0, 2000, 25)]
    # The reviewer browsed: frames off the stride, some answering the next phase early.
    browsed = [TimelineRow(f, phases[min(f // 500 + 1, 3)], tools=("Hook",)) for f in (488, 1063, 1413, 1438, 1469)]

    class Analysis:
        rows: tuple = ()

        def timeline_rows(self, store):
            return sorted(self.rows, key=lambda r: r.frame)

        def statuses(self, store):
            return [(r.frame, "complete") for r in self.timeline_rows(store)]

    analysis = Analysis()
    s = CaseSession()
    s.case.update(fps=25.0, frame_count=2000, width=64, height=48)
    s.stride_s = 1.0
    s.analysis = lambda: analysis  # type: ignore[method-assign]
    analysis.rows = sweep
    s.refresh_timelines()
    before = s.timelines
    bounds_before = [(seg.start, seg.end, seg.label) for seg in before.phase]
    assert len(bounds_before) == 4

    analysis.rows = sweep + browsed
    s.refresh_timelines()
    after = s.timelines
    assert [(seg.start, seg.end, seg.label) for seg in after.phase] == bounds_before
    assert [seg.segments for seg in after.cvs] == [seg.segments for seg in before.cvs]
    assert after.tools == before.tools
    assert set(after.frames.tolist()) >= {488, 1063, 1413, 1438, 1469}  # the raw row keeps every answer
    assert len(after.raw_phase_segments()) > len(before.raw_phase_segments())
    assert len(after.phase_path) == len(after.frames)
    s.playhead.displayed = bounds_before[2][0]  # `]` and `[` from a boundary reach the same boundaries
    assert (s.phase_target(1), s.phase_target(-1)) == (bounds_before[3][0], bounds_before[1][0])
