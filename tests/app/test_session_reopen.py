"""Reopening a case with many stored answers (issue 20): the bulk read decodes no chain JSON, and with
a viewer's hand-off it runs off the calling thread once the first frame is on screen, while the frame
on screen, the held overlay's frames and the timelines are served at once."""

from __future__ import annotations

import threading
import time

import pytest

from app.engine_worker import profile_info
from app.session import CaseSession
from engine.profiles import get_profile
from engine.store import CaseStore
from tests.app.test_session import FACTS
from tests.app.test_viewer_profiles import MODEL, NOTE, PARTIAL_FRAME, TOOLS, fill_surg_r1, put

pytestmark = pytest.mark.usefixtures("data_home")


class HandOff:
    """A viewer's hand-off without Qt: what the warm-up thread hands over waits here for ``run``."""

    def __init__(self) -> None:
        self.waiting: list = []
        self.threads: list[str] = []

    def __call__(self, fn) -> None:
        self.threads.append(threading.current_thread().name)
        self.waiting.append(fn)

    def wait(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.waiting and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.waiting, "the bulk read was never handed over"

    def run(self) -> None:
        while self.waiting:
            self.waiting.pop(0)()


def opened(video, hand_off: HandOff | None = None) -> CaseSession:
    fill_surg_r1(video)
    s = CaseSession()
    s.hand_off = hand_off
    s.set_engine(MODEL, profile_info(get_profile("surg-r1"), NOTE))
    s.open_store(video, FACTS)
    if hand_off is not None:  # the timelines come through the hand-off, after the caller has asked for a frame
        assert s.timelines is None and len(hand_off.waiting) == 1
        hand_off.run()
    return s


def test_the_bulk_read_decodes_no_chain_json(video, monkeypatch):
    monkeypatch.setattr("engine.store.json.loads", lambda *a, **k: pytest.fail("a chain JSON decoded in bulk"))
    s = opened(video)
    try:
        assert len(s._results) == 60 and s.answered(PARTIAL_FRAME) == 2
        record = s.record(0)
        assert record is not None and record.phase.label == "CalotTriangleDissection" and record.instruments
        assert s.record(750).phase.label == "ClippingCutting"
        assert s.results(0)["phase"].status == "complete" and s.results(0)["phase"].raw_text
        assert s.timelines is not None and len(s.statuses) == 60
    finally:
        s.close_store()


def test_result_texts_are_the_results_without_their_chain(video):
    fill_surg_r1(video)
    with CaseStore.for_video(video) as store:
        analysis = store.analyses()[0]
        full = store.results(analysis.model_id, analysis.prompt_version, analysis.task)
        texts = store.result_texts(analysis.model_id, analysis.prompt_version, analysis.task)
    assert [(r.frame, r.raw_text, r.status, r.created) for r in texts] == [
        (r.frame, r.raw_text, r.status, r.created) for r in full
    ]
    assert all(r.chain == {} for r in texts)
    assert [r.parsed() for r in texts] == [r.parsed() for r in full]


def test_with_a_hand_off_the_bulk_read_waits_for_the_first_frame_and_runs_off_this_thread(video, monkeypatch):
    readers: list[str] = []
    original = CaseStore.result_texts
    monkeypatch.setattr(
        CaseStore,
        "result_texts",
        lambda self, *a: readers.append(threading.current_thread().name) or original(self, *a),
    )
    hand_off = HandOff()
    s = opened(video, hand_off)
    events: list[tuple[str, object]] = []
    s.subscribe(lambda name, value: events.append((name, value)))
    try:
        # At once, before the bulk read: the timelines, the frame on screen read on its own, the
        # analysed frames (for the held overlay while playing) and whether a question is missing.
        assert readers == [] and s.timelines is not None
        record = s.record(0)
        assert record is not None and record.phase.label == "CalotTriangleDissection"
        assert s.results(750)["phase"].raw_text and s.answered(PARTIAL_FRAME) == 2
        assert s.needs_answer(PARTIAL_FRAME) and not s.needs_answer(50) and s.needs_answer(1)
        s.playhead.playing = True
        assert s.latest_record_at(60)[0] == 50
        s.playhead.playing = False
        time.sleep(0.2)
        assert readers == [] and not hand_off.waiting  # waits for the first frame
        s.playhead.displayed = 0
        hand_off.wait()
        assert readers and threading.current_thread().name not in [*readers, hand_off.threads[-1]]
        assert ("results", None) not in events  # handed over, not applied yet
        hand_off.run()
        assert ("results", None) in events and not s._pending and len(s._results) == 60
        assert s.record(0) is record  # merged once
        assert [f for f, _ in s.nearby(750, count=3)] == [725, 775]
    finally:
        s.close_store()


def test_an_answer_arriving_before_the_bulk_read_lands_wins(video):
    hand_off = HandOff()
    s = opened(video, hand_off)
    try:
        s.playhead.displayed = 0
        hand_off.wait()  # read before the answer below is stored
        with CaseStore.for_video(video) as store:
            put(store, PARTIAL_FRAME, "localisation", TOOLS)
        s.answer_arrived(PARTIAL_FRAME)
        hand_off.run()
        assert s.answered(PARTIAL_FRAME) == 3 and s.record(PARTIAL_FRAME).instruments
    finally:
        s.close_store()


def test_a_bulk_read_handed_over_after_the_case_changed_is_dropped(video):
    hand_off = HandOff()
    s = opened(video, hand_off)
    try:
        s.playhead.displayed = 0
        hand_off.wait()
        s.close_store()  # another case opens (or none)
        hand_off.run()
        assert s._results == {} and s.record(0) is None
    finally:
        s.close_store()
