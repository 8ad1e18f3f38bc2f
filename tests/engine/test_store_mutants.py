"""The case store pinned where mutation testing (scripts/mutation.py) found the store tests blind: the
one-line errors that name what failed, results past the first frames, the video fingerprint that finds a
case's store again, a store used from the viewer's worker threads, CVS words that are no CVS state."""

from __future__ import annotations

import hashlib
import sqlite3
import threading

import pytest

from engine.chain import CvsState
from engine.store import CaseInfo, CaseStore, FrameResult, StoreError, video_fingerprint

CHAIN = (
    "<think>\nLevel 1 (Perception): Instruments: Hook. Anatomy: liver.\n"
    "Level 2 (Relation): Triplets: hook dissect cystic duct.\n"
    "Level 3 (Context): Phase: Calot Triangle Dissection. CVS: C1 met, C2 not met, C3 met.\n"
    "</think>\n<answer>Calot Triangle Dissection</answer>"
)


@pytest.fixture
def store_path(tmp_path):
    path = tmp_path / "case.sqlite"
    with CaseStore.open(path) as store:
        store.put_result(FrameResult.from_text(10, "m@1", "1.0", "frame", CHAIN))
        store.add_bookmark(10, "first")
        store.add_note("a note")
    return path


@pytest.mark.parametrize(
    "write, action",
    [
        (lambda s: s.add_bookmark(5, "x"), "add a bookmark"),
        (lambda s: s.update_bookmark(1, title="y"), "update a bookmark"),
        (lambda s: s.delete_bookmark(1), "delete a bookmark"),
        (lambda s: s.add_note("n"), "add a note"),
        (lambda s: s.delete_note(1), "delete a note"),
        (lambda s: s.set_case_info(CaseInfo("f" * 32, "/v.mp4", 25.0, 100, None)), "record the case"),
    ],
)
def test_a_read_only_store_refuses_each_write_naming_it(store_path, write, action):
    with (
        CaseStore.open(store_path, readonly=True) as store,
        pytest.raises(StoreError, match=rf"^cannot {action}: case\.sqlite is open read-only$"),
    ):
        write(store)


@pytest.mark.parametrize(
    "read, action",
    [
        (lambda s: s.results("m@1", "1.0", "frame"), "read results"),
        (lambda s: s.get_result(10, "m@1", "1.0", "frame"), "read a result"),
        (lambda s: s.analysed_frames("m@1", "1.0", "frame"), "read results"),
        (lambda s: s.timeline_rows("m@1", "1.0", "frame"), "read timelines"),
        (lambda s: s.analyses(), "list analyses"),
        (lambda s: s.bookmarks(), "read bookmarks"),
        (lambda s: s.notes(), "read notes"),
        (lambda s: s.case_info(), "read the case"),
    ],
)
def test_a_failed_read_names_what_it_was_reading(store_path, read, action):
    store = CaseStore.open(store_path)
    store._conn.close()  # any SQLite failure under the read
    with pytest.raises(StoreError, match=rf"^cannot {action} in case\.sqlite: "):
        read(store)


def test_results_reach_past_the_first_frames(tmp_path):
    with CaseStore.open(tmp_path / "c.sqlite") as store:
        for frame in (0, 125, 90_000):
            store.put_result(FrameResult.from_text(frame, "m@1", "1.0", "frame", CHAIN))
        assert [r.frame for r in store.results("m@1", "1.0", "frame")] == [0, 125, 90_000]
        assert [r.frame for r in store.results("m@1", "1.0", "frame", start=1, stop=90_000)] == [125]
        with pytest.raises(ValueError, match=r"^frame must not be negative, got -1$"):
            store.put_result(FrameResult.from_text(-1, "m@1", "1.0", "frame", CHAIN))


def test_what_a_write_returns_is_what_was_stored(tmp_path):
    with CaseStore.open(tmp_path / "c.sqlite") as store:
        bookmark = store.add_bookmark(42, "clip")
        note = store.add_note("bleeding", frame=7, author="ab")
        assert (bookmark.frame, bookmark.title) == (42, "clip")
        assert note.created is not None and note.created == note.updated and note.id >= 1
        assert store.bookmarks() == [bookmark] and store.notes() == [note]
        assert store.delete_bookmark(bookmark.id) and not store.delete_bookmark(bookmark.id)
        assert store.delete_note(note.id) and store.notes() == []


def test_the_phase_and_cvs_of_a_phase_task_come_from_the_answer(tmp_path):
    chain = {
        "status": "complete",
        "context": {"phase": None, "cvs": [None, None, None]},
        "answer": {"phase": {"label": "ClippingCutting"}, "cvs": ["met", "maybe", None]},
    }
    with CaseStore.open(tmp_path / "c.sqlite") as store:
        store.put_result(FrameResult(3, "m@1", "1.0", "phase", "<answer>Clipping Cutting</answer>", chain))
        (row,) = store.timeline_rows("m@1", "1.0", "phase")
    assert row.phase == "ClippingCutting" and row.cvs == (CvsState.MET, None, None)  # "maybe" is no state


def test_the_fingerprint_is_size_and_both_ends_of_the_file(tmp_path):
    chunk = 1 << 20
    data = bytes(range(256)) * (3 * chunk // 256 + 7)
    video = tmp_path / "v.mp4"
    video.write_bytes(data)
    expected = hashlib.sha256(b"surgview-video-v1\0" + len(data).to_bytes(8, "little"))
    expected.update(data[:chunk])
    expected.update(data[len(data) - chunk :])
    assert video_fingerprint(video) == expected.hexdigest()[:32]  # the name of every existing case store
    with pytest.raises(StoreError, match=r"^cannot read video absent\.mp4: "):
        video_fingerprint(tmp_path / "absent.mp4")


def test_the_store_serves_the_viewers_worker_threads(store_path):
    with CaseStore.open(store_path) as store:
        seen: list[object] = []

        def work() -> None:
            try:
                seen.append(len(store.results("m@1", "1.0", "frame")))
                store.add_bookmark(1, "from a thread")
            except (sqlite3.Error, StoreError) as exc:  # pragma: no cover - what the test guards against
                seen.append(exc)

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        assert seen == [1] and len(store.bookmarks()) == 2
    with CaseStore.open(store_path, readonly=True) as store:
        thread = threading.Thread(target=lambda: seen.append(store.bookmarks()))
        thread.start()
        thread.join()
        assert len(seen[-1]) == 2


def test_a_file_that_is_no_store_is_named(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(StoreError, match=r"notes\.sqlite is not a surgview case store"):
        CaseStore.open(path)


def test_level_three_names_the_phase_before_the_answer_does(tmp_path):
    chain = {
        "status": "complete",
        "context": {"phase": {"label": "CalotTriangleDissection"}, "cvs": ["met", "met", "not met"]},
        "answer": {"phase": {"label": "ClippingCutting"}, "cvs": ["not met", None, None]},
    }
    with CaseStore.open(tmp_path / "c.sqlite") as store:
        store.put_result(FrameResult(3, "m@1", "1.0", "frame", "<answer>Clipping Cutting</answer>", chain))
        (row,) = store.timeline_rows("m@1", "1.0", "frame")
    assert row.phase == "CalotTriangleDissection" and row.cvs == (CvsState.MET, CvsState.MET, CvsState.NOT_MET)
