"""The case store pinned where mutation testing (scripts/mutation.py) found the store tests blind: the
one-line errors that name what failed, results past the first frames, the video fingerprint that finds a
case's store again, a store used from the viewer's worker threads, CVS words that are no CVS state."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import threading

import pytest

from engine.chain import CvsState
from engine.store import BlankArea, CaseInfo, CaseStore, FrameResult, StoreError, video_fingerprint

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


# ------------------------------------------------------------------ errors that name what failed
RARP_CHAIN = "<think>\nLevel 1 (Perception): Instruments: Large Needle Driver.\n</think>\n<answer>Tying a knot</answer>"
BYPASS_CHAIN = "<think>\nLevel 3 (Context): Phase: Preparation.\n</think>\n<answer>Crura dissection</answer>"


@contextlib.contextmanager
def _held_by_another_connection(path, *statements: str):
    """Another connection runs ``statements`` (opening a transaction) and holds the lock until the block ends."""
    other = sqlite3.connect(path, isolation_level=None)
    for statement in statements:
        other.execute(statement)
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_a_second_connection_holding_the_lock_is_named_at_open(tmp_path):
    path = tmp_path / "n.sqlite"
    with (
        _held_by_another_connection(path, "BEGIN EXCLUSIVE", "CREATE TABLE t (a)"),
        pytest.raises(
            StoreError, match=r"^cannot open in n\.sqlite: another process kept the case store locked too long$"
        ),
    ):
        CaseStore.open(path, timeout_s=0)


def test_an_upgrade_blocked_by_another_writer_is_named(tmp_path):
    from tests.engine.test_store import make_v1_store

    path = tmp_path / "old.sqlite"
    make_v1_store(path)
    with (
        _held_by_another_connection(path, "PRAGMA journal_mode = WAL", "BEGIN IMMEDIATE"),
        pytest.raises(
            StoreError, match=r"^cannot upgrade in old\.sqlite: another process kept the case store locked too long$"
        ),
    ):
        CaseStore.open(path, timeout_s=0)


def _creating_elsewhere(path, monkeypatch, finish: str) -> list[float]:
    """Another process is creating ``path`` (holds its write lock); it finishes (``finish``: COMMIT or
    ROLLBACK) when the opening store first waits for it."""
    import engine.store

    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE foreign_table (a)")
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 1:
            other.execute(finish)
            other.close()

    monkeypatch.setattr(engine.store.time, "sleep", sleep)
    return waits


def test_a_store_another_process_is_creating_is_waited_for_in_short_steps(tmp_path, monkeypatch):
    path = tmp_path / "n.sqlite"
    waits = _creating_elsewhere(path, monkeypatch, "ROLLBACK")
    with CaseStore.open(path) as store:
        store.add_bookmark(1, "after the wait")
        assert [b.title for b in store.bookmarks()] == ["after the wait"]
    assert len(waits) >= 1 and all(0 < w <= 0.05 for w in waits)


def test_a_foreign_database_finished_meanwhile_is_refused_by_name(tmp_path, monkeypatch):
    path = tmp_path / "n.sqlite"
    _creating_elsewhere(path, monkeypatch, "COMMIT")
    with pytest.raises(StoreError, match=r"^n\.sqlite is not a surgview case store$"):
        CaseStore.open(path)


def test_a_full_disk_is_named_and_earlier_results_stay(store_path):
    with CaseStore.open(store_path) as store:
        store._conn.execute("PRAGMA max_page_count = 1")  # SQLite's own SQLITE_FULL, as on a full disk
        with pytest.raises(
            StoreError, match=r"^cannot add a note in case\.sqlite: the disk is full; earlier results are kept$"
        ):
            store.add_note("x" * 10_000)
    with CaseStore.open(store_path, readonly=True) as store:
        assert [n.text for n in store.notes()] == ["a note"]


def test_a_store_that_refuses_writes_is_named_read_only(store_path):
    with CaseStore.open(store_path) as store:
        store._conn.execute("PRAGMA query_only = 1")  # SQLite answers SQLITE_READONLY, as for a read-only file
        with pytest.raises(
            StoreError, match=r"^cannot add a note in case\.sqlite: the case store or its folder is read-only$"
        ):
            store.add_note("x")


def _error(message: str, code: str | None) -> sqlite3.Error:
    exc = sqlite3.OperationalError(message)
    if code is not None:
        exc.sqlite_errorname = code
    return exc


@pytest.mark.parametrize(
    "message, code, expected",
    [
        (
            "database disk image is malformed",
            "SQLITE_CORRUPT",
            "case store c.sqlite is damaged (database disk image is malformed); it was left as it is",
        ),
        ("out of space", "SQLITE_FULL", "cannot store frame 3 in c.sqlite: the disk is full; earlier results are kept"),
        ("disk is full", None, "cannot store frame 3 in c.sqlite: the disk is full; earlier results are kept"),
        (
            "unable to open",
            "SQLITE_CANTOPEN_ISDIR",
            "cannot open case store c.sqlite: its folder is missing or not writable",
        ),
        (
            "database is locked",
            "SQLITE_BUSY_SNAPSHOT",
            "cannot store frame 3 in c.sqlite: another process kept the case store locked too long",
        ),
        (
            "table is locked",
            "SQLITE_LOCKED",
            "cannot store frame 3 in c.sqlite: another process kept the case store locked too long",
        ),
        ("disk I/O error", "SQLITE_IOERR_WRITE", "cannot store frame 3 in c.sqlite: disk I/O error (disk I/O error)"),
        ("something else", "SQLITE_ERROR", "cannot store frame 3 in c.sqlite: something else"),
    ],
)
def test_each_sqlite_failure_gets_its_own_one_line_message(tmp_path, monkeypatch, message, code, expected):
    """Codes no real condition here can give (a damaged disk, an I/O error): a connection that fails with them."""
    with CaseStore.open(tmp_path / "c.sqlite") as store:

        class Failing:
            in_transaction = False

            def execute(self, sql, *args):
                if sql.startswith("INSERT"):
                    raise _error(message, code)
                return store_conn.execute(sql, *args)

        store_conn = store._conn
        store._conn = Failing()
        try:
            with pytest.raises(StoreError) as info:
                store.put_result(FrameResult.from_text(3, "m@1", "1.0", "frame", CHAIN))
        finally:
            store._conn = store_conn
            if store_conn.in_transaction:
                store_conn.execute("ROLLBACK")
    assert str(info.value) == expected


def test_a_connection_that_cannot_be_made_is_named(tmp_path, monkeypatch):
    import engine.store

    path = tmp_path / "c.sqlite"
    CaseStore.open(path).close()

    def refuse(*args, **kwargs):
        raise sqlite3.OperationalError("no more file handles")

    monkeypatch.setattr(engine.store.sqlite3, "connect", refuse)
    for readonly in (False, True):
        with pytest.raises(StoreError, match=r"^cannot open in c\.sqlite: no more file handles$"):
            CaseStore.open(path, readonly=readonly)


def test_a_read_only_file_is_refused_for_writing_by_name(store_path, monkeypatch):
    import engine.store

    real_access = os.access

    def access(path, mode):  # a file without write permission (as root, os.access says yes to everything)
        if os.fspath(path) == os.fspath(store_path) and mode & os.W_OK:
            return False
        return real_access(path, mode)

    monkeypatch.setattr(engine.store.os, "access", access)
    with pytest.raises(StoreError, match=r"^cannot write case store case\.sqlite: the file is read-only$"):
        CaseStore.open(store_path)


def test_a_store_read_in_a_read_only_folder_sees_what_a_writer_has_not_checkpointed(store_path, monkeypatch):
    import engine.store

    real_access = os.access

    def access(path, mode):  # the folder is read-only for this reader; the writer's -shm is there
        if os.fspath(path) == os.fspath(store_path.parent) and mode & os.W_OK:
            return False
        return real_access(path, mode)

    with CaseStore.open(store_path) as writer:
        writer.add_bookmark(20, "second")  # in the WAL only
        monkeypatch.setattr(engine.store.os, "access", access)
        with CaseStore.open(store_path, readonly=True) as reader:
            assert [b.title for b in reader.bookmarks()] == ["first", "second"]


def test_a_write_that_fails_midway_leaves_nothing_and_the_next_write_works(store_path):
    with CaseStore.open(store_path) as store:
        with pytest.raises(RuntimeError), store.transaction("import") as conn:
            conn.execute("DELETE FROM bookmarks")
            raise RuntimeError("the import stopped")
        assert [b.title for b in store.bookmarks()] == ["first"]
        store.add_bookmark(30, "later")
        assert [b.title for b in store.bookmarks()] == ["first", "later"]


@pytest.mark.parametrize(
    "call, action",
    [
        (lambda s: s.statuses("m@1", "1.0", "frame"), "read statuses"),
        (lambda s: s.blank_areas(), "read blank areas"),
        (lambda s: s.integrity_problems(), "check the store"),
    ],
)
def test_more_failed_reads_name_what_they_were_reading(store_path, call, action):
    store = CaseStore.open(store_path)
    store._conn.close()
    with pytest.raises(StoreError, match=rf"^cannot {action} in case\.sqlite: "):
        call(store)


@pytest.mark.parametrize(
    "call, action",
    [
        (lambda s: s.set_blank_areas([]), "store blank areas"),
        (lambda s: s.update_note(1, text="t"), "update a note"),
    ],
)
def test_more_refused_writes_name_what_they_were_writing(store_path, call, action):
    with CaseStore.open(store_path) as store:
        store._conn.execute("PRAGMA query_only = 1")
        with pytest.raises(StoreError, match=rf"^cannot {action} in case\.sqlite: the case store or its folder"):
            call(store)


# ------------------------------------------------------------------ round trips
def test_blank_areas_round_trip_in_the_order_drawn(tmp_path):
    areas = [BlankArea(10, 20, 300, 40), BlankArea(0, 0, 5, 7)]
    with CaseStore.open(tmp_path / "c.sqlite") as store:
        assert store.blank_areas() == []
        store.set_blank_areas(areas)
        assert store.blank_areas() == areas
    with CaseStore.open(tmp_path / "c.sqlite", readonly=True) as store:
        assert store.blank_areas() == areas
    with CaseStore.open(tmp_path / "c.sqlite") as store:
        store.set_blank_areas([areas[1]])
        assert store.blank_areas() == [areas[1]]


@pytest.mark.parametrize("x, y, width, height", [(-1, 0, 5, 5), (0, -1, 5, 5), (0, 0, 0, 5), (0, 0, 5, 0)])
def test_a_blank_area_off_the_picture_or_empty_is_refused(x, y, width, height):
    with pytest.raises(ValueError, match=r"^a blank area needs x, y >= 0 and a positive size"):
        BlankArea(x, y, width, height)


def test_a_blank_area_at_the_corner_is_valid():
    assert BlankArea(0, 0, 1, 1).height == 1


def test_statuses_round_trip_per_frame_in_order(tmp_path):
    with CaseStore.open(tmp_path / "c.sqlite") as store:
        store.put_result(FrameResult.from_text(50, "m@1", "1.0", "frame", CHAIN))
        store.put_result(FrameResult.from_text(5, "m@1", "1.0", "frame", "no chain here"))
        store.put_result(FrameResult.from_text(7, "other", "1.0", "frame", CHAIN))
        assert store.statuses("m@1", "1.0", "frame") == [(5, "malformed"), (50, "complete")]


def test_a_result_reads_back_as_it_was_stored(tmp_path):
    with CaseStore.open(tmp_path / "c.sqlite") as store:
        stored = store.put_result(FrameResult.from_text(4, "m@1", "1.0", "frame", CHAIN, tokens=12))
        (read,) = store.results("m@1", "1.0", "frame")
    assert read.model_id == "m@1" and read.created == stored.created and read.tokens == 12
    assert read.frame == 4 and read.status == stored.status == "complete"


def test_a_chain_dict_gives_its_status_and_no_status_reads_malformed():
    assert FrameResult(1, "m", "1.0", "frame", "x", {"status": "partial"}).status == "partial"
    assert FrameResult(1, "m", "1.0", "frame", "x", {}).status == "malformed"


def test_the_cvs_columns_keep_only_cvs_states(tmp_path):
    chain = {"status": "complete", "context": {"cvs": ["met", "maybe", "not met"]}}
    with CaseStore.open(tmp_path / "c.sqlite") as store:
        store.put_result(FrameResult(3, "m@1", "1.0", "frame", "x", chain))
        with store.reading("check") as conn:
            assert conn.execute("SELECT cvs1, cvs2, cvs3 FROM results").fetchall() == [("met", None, "not met")]


def test_actions_and_steps_are_stored_in_their_procedures_words(tmp_path):
    with CaseStore.open(tmp_path / "c.sqlite") as store:
        store.put_result(FrameResult.from_text(1, "m", "1.0+rarp", "action", RARP_CHAIN))
        store.put_result(FrameResult.from_text(2, "m", "1.0+bypass", "step", BYPASS_CHAIN))
        (rarp,) = store.timeline_rows("m", "1.0+rarp", "action")
        (bypass,) = store.timeline_rows("m", "1.0+bypass", "step")
    assert (rarp.tools, rarp.action, rarp.step) == (("Large_Needle_Driver",), "tying_a_knot", None)
    assert (bypass.phase, bypass.action, bypass.step) == ("preparation", None, "s4_crura_dissection")


def test_for_video_read_only_creates_nothing(tmp_path, data_home):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not really a video" * 100)
    with pytest.raises(StoreError, match=r"^no case store at "):
        CaseStore.for_video(video, readonly=True)
    assert not (data_home / "cases").exists() or not any((data_home / "cases").iterdir())
    CaseStore.for_video(video, fps=25.0, frame_count=10).close()
    with CaseStore.for_video(video, readonly=True) as store:
        assert store.readonly and store.case_info().frame_count == 10
        with pytest.raises(StoreError, match=r"is open read-only$"):
            store.add_note("x")


# ------------------------------------------------------------------ migrations
def test_a_v1_store_whose_chain_json_is_no_object_is_upgraded(tmp_path):
    from tests.engine.test_store import make_v1_store

    path = tmp_path / "old.sqlite"
    make_v1_store(path, frames=[])
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO results VALUES (4, 'm', 'p', 't', 'x', '[1, 2]', 'malformed', 1, 1, 1, 1)")
    conn.commit()
    conn.close()
    with CaseStore.open(path) as store:
        assert [r.frame for r in store.timeline_rows("m", "p", "t")] == [4, 9]
        assert store.timeline_rows("m", "p", "t")[0].phase is None


def _v4_store(path, drop_columns: bool) -> None:
    """A store as schema 4 left another procedure's rows: no action/step (or, set back by hand, empty ones)
    and the summary read in cholecystectomy's words."""
    with CaseStore.open(path) as store:
        store.put_result(FrameResult.from_text(1, "m", "1.0+rarp", "action", RARP_CHAIN))
        store.put_result(FrameResult.from_text(2, "m", "1.0+bypass", "step", BYPASS_CHAIN))
        store.put_result(FrameResult.from_text(3, "m", "1.0+bypass", "step", ""))
        store.put_result(FrameResult.from_text(3, "m@1", "1.0", "frame", CHAIN))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP INDEX results_timeline")
    conn.execute("UPDATE results SET phase = 'stale', tools = 'stale', action = NULL, step = NULL")
    conn.execute("ALTER TABLE results DROP COLUMN action")
    conn.execute("ALTER TABLE results DROP COLUMN step")
    if not drop_columns:  # as surgview 5 wrote them, before the version was set back
        conn.execute("ALTER TABLE results ADD COLUMN action TEXT")
        conn.execute("ALTER TABLE results ADD COLUMN step TEXT")
    conn.execute(f"CREATE INDEX results_timeline ON results (model_id, prompt_version, task, frame, phase, cvs1, "
                 f"cvs2, cvs3, tools{'' if drop_columns else ', action, step'})")  # fmt: skip
    conn.execute("PRAGMA user_version = 4")
    conn.close()


@pytest.mark.parametrize("drop_columns", [True, False])
def test_a_v4_store_reads_other_procedures_rows_again(tmp_path, drop_columns):
    path = tmp_path / "v4.sqlite"
    _v4_store(path, drop_columns)
    with CaseStore.open(path) as store:
        assert store.schema_version == 5
        (rarp,) = store.timeline_rows("m", "1.0+rarp", "action")
        bypass, empty = store.timeline_rows("m", "1.0+bypass", "step")
        (chole,) = store.timeline_rows("m@1", "1.0", "frame")
    assert (rarp.tools, rarp.action, rarp.step) == (("Large_Needle_Driver",), "tying_a_knot", None)
    assert (bypass.phase, bypass.action, bypass.step) == ("preparation", None, "s4_crura_dissection")
    assert (empty.phase, empty.step, empty.tools) == (None, None, None)
    assert (chole.phase, chole.tools) == ("stale", ("stale",))  # cholecystectomy's rows are left as they were


def test_result_texts_read_every_result_with_its_text_and_timings(tmp_path):
    with CaseStore.open(tmp_path / "c.sqlite") as store:
        late = store.put_result(FrameResult.from_text(50, "m@1", "1.0", "frame", CHAIN, first_token_s=0.5, tokens=9))
        early = store.put_result(FrameResult.from_text(5, "m@1", "1.0", "frame", "no chain", total_s=2.0))
        store.put_result(FrameResult.from_text(7, "other", "1.0", "frame", CHAIN))
        store.put_result(FrameResult.from_text(8, "m@1", "1.1", "frame", CHAIN))
        store.put_result(FrameResult.from_text(9, "m@1", "1.0", "phase", CHAIN))
        texts = store.result_texts("m@1", "1.0", "frame")
        failing = CaseStore.open(tmp_path / "c.sqlite")
        failing._conn.close()
        with pytest.raises(StoreError, match=r"^cannot read results in c\.sqlite: "):
            failing.result_texts("m@1", "1.0", "frame")
    got = [(r.frame, r.model_id, r.prompt_version, r.task, r.raw_text, r.chain, r.status) for r in texts]
    assert got == [
        (5, "m@1", "1.0", "frame", "no chain", {}, "malformed"),
        (50, "m@1", "1.0", "frame", CHAIN, {}, "complete"),
    ]
    assert [(r.first_token_s, r.total_s, r.tokens, r.created) for r in texts] == [
        (None, 2.0, None, early.created),
        (0.5, None, 9, late.created),
    ]
    assert texts[1].parsed().status == "complete"


def test_the_store_waits_for_a_lock_as_long_as_asked(tmp_path, monkeypatch):
    import engine.store

    asked: list[float] = []
    real_connect = sqlite3.connect

    def connect(*args, **kwargs):
        asked.append(kwargs["timeout"])
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(engine.store.sqlite3, "connect", connect)
    CaseStore.open(tmp_path / "c.sqlite").close()
    CaseStore.open(tmp_path / "c.sqlite", timeout_s=0.25).close()
    CaseStore.open(tmp_path / "c.sqlite", readonly=True, timeout_s=3.0).close()
    assert asked == [10.0, 0.25, 3.0]  # ten seconds unless told: a viewer's writes outwait a short import


def test_a_write_after_the_store_was_closed_is_a_store_error_naming_it(store_path):
    store = CaseStore.open(store_path)
    store.close()
    with pytest.raises(StoreError, match="add a bookmark"):
        store.add_bookmark(0, "after close")
