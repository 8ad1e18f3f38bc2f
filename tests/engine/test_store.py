from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.chain import ChainStatus, CvsState
from engine.chain_parser import parse_chain
from engine.store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    CaseInfo,
    CaseStore,
    FrameResult,
    StoreError,
    case_store_path,
    video_fingerprint,
)
from engine.timeline import build_timelines

ROOT = Path(__file__).resolve().parents[2]
KEY = ("surg-r1-7b@abc123", "prompts-1", "chain")


def chain_text(
    frame: int,
    phase: str = "Calot Triangle Dissection",
    cvs=("met", "not met", "not assessable"),
    tools=("Grasper", "Hook"),
) -> str:
    return (
        "<think>\n"
        f"Level 1 (Perception): Instruments: {', '.join(tools) or 'none'}. Anatomy: gallbladder, liver.\n"
        "Level 2 (Relation): Triplets: grasper retract gallbladder; hook dissect cystic duct.\n"
        f"Level 3 (Context): Phase: {phase}. CVS: C1 {cvs[0]}, C2 {cvs[1]}, C3 {cvs[2]}. Safety: frame {frame}.\n"
        f"</think>\n<answer>{phase}</answer>"
    )


def result(frame: int, key=KEY, **kw) -> FrameResult:
    return FrameResult.from_text(frame, *key, chain_text(frame, **kw), first_token_s=0.05, total_s=1.5, tokens=120)


# Child processes: write results in a loop, printing each frame once put_result has returned.
WRITER = r"""
import sys, time
from pathlib import Path
from engine.store import CaseStore, FrameResult
path, model, first, step, count, go = sys.argv[1:7]
while not Path(go).exists():
    time.sleep(0.002)
text = ("<think>\nLevel 1 (Perception): Instruments: Grasper. Anatomy: liver.\n"
        "Level 2 (Relation): Triplets: grasper retract gallbladder.\n"
        "Level 3 (Context): Phase: Clipping Cutting. CVS: C1 met, C2 met, C3 not met. Safety: frame {}.\n"
        "</think>\n<answer>Clipping Cutting</answer>")
with CaseStore.open(Path(path)) as store:
    for i in range(int(count)):
        frame = int(first) + i * int(step)
        store.put_result(FrameResult.from_text(frame, model, "prompts-1", "chain", text.format(frame), total_s=1.0, tokens=9))
        if i % 10 == 0:
            store.add_note(f"{model} wrote {frame}", frame=frame, author=model)
        print(frame, flush=True)
"""


def writer(path: Path, model: str, first: int, step: int, count: int, go: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), model, str(first), str(step), str(count), str(go)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def raw_rows(path: Path, sql: str, args=()) -> list[tuple]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


# ------------------------------------------------------------------------------------- round trips
def test_results_round_trip_ordered_by_frame(tmp_path):
    path = tmp_path / "case.sqlite"
    with CaseStore.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        for frame in (50, 0, 25, 75):
            stored = store.put_result(result(frame))
            assert stored.created is not None
        got = store.get_result(25, *KEY)
        assert got.raw_text == chain_text(25) and got.status == ChainStatus.COMPLETE
        assert got.chain == parse_chain(chain_text(25)).to_dict()
        assert got.parsed() == parse_chain(chain_text(25))
        assert (got.first_token_s, got.total_s, got.tokens) == (0.05, 1.5, 120)
        assert store.get_result(25, "other-model", *KEY[1:]) is None
        assert [r.frame for r in store.results(*KEY)] == [0, 25, 50, 75]
        assert [r.frame for r in store.results(*KEY, start=25, stop=75)] == [25, 50]
        assert store.analysed_frames(*KEY) == {0, 25, 50, 75}
        assert store.analysed_frames(KEY[0], "prompts-2", KEY[2]) == set()
        # Another answer for the same key replaces the first.
        store.put_result(result(25, phase="Clipping Cutting"))
        assert store.get_result(25, *KEY).chain["context"]["phase"]["label"] == "ClippingCutting"
        store.put_result(result(25, key=("other-model", "prompts-1", "chain")))
        assert [(a.model_id, a.frames) for a in store.analyses()] == [("other-model", 1), (KEY[0], 4)]
        store.set_case_info(CaseInfo("f" * 32, "/videos/case 1.mp4", 25.0, 90_000))
        store.set_case_info(CaseInfo("f" * 32, "/moved/case 1.mp4", 25.0, 90_000))
    with CaseStore.open(path, readonly=True) as store:
        info = store.case_info()
        assert (info.video_path, info.fps, info.frame_count) == ("/moved/case 1.mp4", 25.0, 90_000)
        assert len(store.results(*KEY)) == 4
        with pytest.raises(StoreError, match="read-only"):
            store.put_result(result(100))


def test_timeline_rows_come_from_the_covering_index(tmp_path):
    with CaseStore.open(tmp_path / "case.sqlite") as store:
        store.put_result(result(0, phase="Preparation", cvs=("not met", "not met", "not met"), tools=()))
        store.put_result(result(25, tools=("Grasper", "clip applier")))
        store.put_result(FrameResult.from_text(50, *KEY, "the model rambled <b>without</b> structure"))
        l2 = (
            "<think> This is a Level 2 task. L1: A grasper is visible. L2: The grasper retracts the gallbladder. "
            "</think> <answer>Grasper Retract Gallbladder</answer>"
        )
        store.put_result(FrameResult.from_text(75, *KEY, l2))
        rows = store.timeline_rows(*KEY)
        plan = " ".join(
            str(r)
            for r in store._conn.execute(
                "EXPLAIN QUERY PLAN SELECT frame, phase, cvs1, cvs2, cvs3, tools FROM results "
                "WHERE model_id = ? AND prompt_version = ? AND task = ? ORDER BY frame",
                KEY,
            )
        )
    assert "COVERING INDEX results_timeline" in plan
    assert [r.frame for r in rows] == [0, 25, 50, 75]
    assert (rows[0].phase, rows[0].cvs, rows[0].tools) == ("Preparation", (CvsState.NOT_MET,) * 3, ())
    assert rows[1].phase == "CalotTriangleDissection" and rows[1].tools == ("Grasper", "Clipper")
    assert rows[1].cvs == (CvsState.MET, CvsState.NOT_MET, CvsState.NOT_ASSESSABLE)
    assert (rows[2].phase, rows[2].cvs, rows[2].tools) == (None, (None, None, None), None)  # says nothing
    assert (rows[3].phase, rows[3].tools) == (None, ("Grasper",))


def test_each_result_is_visible_to_other_connections_once_put_returns(tmp_path):
    path = tmp_path / "case.sqlite"
    with CaseStore.open(path) as store:
        for frame in range(5):
            store.put_result(result(frame))
            assert raw_rows(path, "SELECT max(frame), count(*) FROM results") == [(frame, frame + 1)]


def test_hostile_model_text_round_trips(tmp_path):
    hostile = "<script>alert(1)</script>\x00\x1b[31m\u202e" + "é" * 3 + "\ud800 lone surrogate" + "x" * 200_000
    with CaseStore.open(tmp_path / "case.sqlite") as store:
        store.put_result(FrameResult.from_text(3, *KEY, hostile))
        got = store.get_result(3, *KEY)
    assert got.raw_text == hostile.replace("\ud800", "\ufffd")
    assert got.status == ChainStatus.MALFORMED


# ------------------------------------------------------------------------------------- schema
V1_SCHEMA = """
CREATE TABLE case_info (id INTEGER PRIMARY KEY CHECK (id = 1), fingerprint TEXT NOT NULL, video_path TEXT NOT NULL,
    fps REAL, frame_count INTEGER, created REAL NOT NULL);
CREATE TABLE results (frame INTEGER NOT NULL CHECK (frame >= 0), model_id TEXT NOT NULL, prompt_version TEXT NOT NULL,
    task TEXT NOT NULL, raw_text TEXT NOT NULL, chain_json TEXT NOT NULL, status TEXT NOT NULL, first_token_s REAL,
    total_s REAL, tokens INTEGER, created REAL NOT NULL, PRIMARY KEY (model_id, prompt_version, task, frame));
CREATE TABLE bookmarks (id INTEGER PRIMARY KEY, frame INTEGER NOT NULL, title TEXT NOT NULL, created REAL NOT NULL,
    updated REAL NOT NULL);
CREATE TABLE notes (id INTEGER PRIMARY KEY, frame INTEGER, text TEXT NOT NULL, author TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL, updated REAL NOT NULL);
"""


def make_v1_store(path: Path, frames=range(3)) -> None:
    """A store as the first schema wrote it, built by hand (no timeline columns)."""
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    for frame in frames:
        text = chain_text(frame, phase="Gallbladder Dissection")
        conn.execute(
            "INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (frame, *KEY, text, json.dumps(parse_chain(text).to_dict()), "complete", 0.1, 2.0, 50, 1.0),
        )
    conn.execute("INSERT INTO results VALUES (9, 'm', 'p', 't', 'x', 'not json', 'malformed', 1, 1, 1, 1)")
    conn.execute("INSERT INTO bookmarks VALUES (1, 10, 'first clip', 1.0, 1.0)")
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def test_an_old_schema_is_migrated_and_keeps_its_data(tmp_path):
    path = tmp_path / "old.sqlite"
    make_v1_store(path)
    with pytest.raises(StoreError, match="older store schema"):
        CaseStore.open(path, readonly=True)
    with CaseStore.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert [r.frame for r in store.results(*KEY)] == [0, 1, 2]
        assert store.get_result(1, *KEY).raw_text == chain_text(1, phase="Gallbladder Dissection")
        rows = store.timeline_rows(*KEY)  # back-filled from the chain JSON
        assert [r.phase for r in rows] == ["GallbladderDissection"] * 3 and rows[0].tools == ("Grasper", "Hook")
        assert store.timeline_rows("m", "p", "t")[0].phase is None  # unreadable JSON: no evidence, no crash
        assert [(b.frame, b.title) for b in store.bookmarks()] == [(10, "first clip")]
        assert store.integrity_problems() == []
    with CaseStore.open(path, readonly=True) as store:
        assert store.schema_version == SCHEMA_VERSION


def test_a_newer_schema_or_a_foreign_database_is_refused_untouched(tmp_path):
    newer = tmp_path / "newer.sqlite"
    with CaseStore.open(newer) as store:
        store.put_result(result(0))
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = newer.read_bytes()
    for readonly in (False, True):
        with pytest.raises(StoreError, match="newer surgview"):
            CaseStore.open(newer, readonly=readonly)
    assert newer.read_bytes() == before

    foreign = tmp_path / "foreign.sqlite"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE accounts (id INTEGER)")
    conn.commit()
    conn.close()
    before = foreign.read_bytes()
    with pytest.raises(StoreError, match="not a surgview case store"):
        CaseStore.open(foreign)
    assert foreign.read_bytes() == before


def test_a_corrupt_file_is_reported_and_left_untouched(tmp_path):
    path = tmp_path / "case.sqlite"
    junk = os.urandom(64 * 1024)
    path.write_bytes(junk)
    for readonly in (False, True):
        with pytest.raises(StoreError, match="not a surgview case store"):
            CaseStore.open(path, readonly=readonly)
    assert path.read_bytes() == junk
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.sqlite"]


def test_missing_store_readonly(tmp_path):
    with pytest.raises(StoreError, match="no case store"):
        CaseStore.open(tmp_path / "absent.sqlite", readonly=True)
    (tmp_path / "empty.sqlite").write_bytes(b"")
    with pytest.raises(StoreError, match="empty"):
        CaseStore.open(tmp_path / "empty.sqlite", readonly=True)


# ------------------------------------------------------------------------------------- faults
@contextlib.contextmanager
def read_only_folder(folder: Path):
    """Make ``folder`` and its files unwritable, also for root (chattr +i), or skip."""
    files = [p for p in folder.iterdir() if p.is_file()]
    if os.geteuid() != 0:
        for p in files:
            p.chmod(0o444)
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
            for p in files:
                p.chmod(0o644)
        return
    chattr = shutil.which("chattr")
    targets = [str(p) for p in [*files, folder]]
    if chattr is None or subprocess.run([chattr, "+i", *targets], capture_output=True).returncode != 0:
        pytest.skip("running as root and cannot make a folder immutable (chattr +i) here")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", *targets], check=True)


def test_read_only_location(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "case.sqlite"
    with CaseStore.open(path) as store:
        for frame in range(3):
            store.put_result(result(frame))
    assert sorted(p.name for p in folder.iterdir()) == ["case.sqlite"]  # WAL files gone on close
    with read_only_folder(folder):
        with pytest.raises(StoreError, match="read-only"):
            CaseStore.open(path)
        with pytest.raises(StoreError, match="read-only"):
            CaseStore.open(folder / "new.sqlite")
        with CaseStore.open(path, readonly=True) as store:
            assert [r.frame for r in store.results(*KEY)] == [0, 1, 2]
            assert len(store.timeline_rows(*KEY)) == 3
    assert sorted(p.name for p in folder.iterdir()) == ["case.sqlite"]


def test_disk_full_keeps_earlier_results(tmp_path):
    path = tmp_path / "case.sqlite"
    with CaseStore.open(path) as store:
        for frame in range(3):
            store.put_result(result(frame))
        pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
        store._conn.execute(f"PRAGMA max_page_count = {pages + 8}")  # a disk with ~32 KiB left
        big = chain_text(0) + "x" * 6000
        written = 3
        with pytest.raises(StoreError, match="disk is full") as err:
            for frame in range(3, 100):
                store.put_result(FrameResult.from_text(frame, *KEY, big))
                written += 1
        assert "Traceback" not in str(err.value) and 3 < written < 100
        assert len(store.results(*KEY)) == written  # the failed frame rolled back, the rest intact
        store.add_bookmark(1, "still readable")  # tiny writes may still fit; reading surely works
    with CaseStore.open(path) as store:
        assert store.integrity_problems() == []
        assert sorted(store.analysed_frames(*KEY)) == list(range(written))


def test_a_store_finished_by_another_process_while_opening_is_recognised(tmp_path, monkeypatch):
    """The CI race, made deterministic: another process finishes creating the store just as
    this one reads what kind of file it is. It must see one moment, not half of each."""
    path = tmp_path / "case.sqlite"
    real_connect = sqlite3.connect
    done = []

    def create_elsewhere(sql: str) -> None:
        if not done and "sqlite_master" in sql:
            done.append(True)
            with CaseStore.open(path):
                pass

    def connect(*args, **kwargs):
        conn = real_connect(*args, **kwargs)
        if not done:
            conn.set_trace_callback(create_elsewhere)
        return conn

    monkeypatch.setattr("engine.store.sqlite3.connect", connect)
    with CaseStore.open(path) as store:
        assert done and store.schema_version == SCHEMA_VERSION
        store.put_result(result(0))
        assert store.analysed_frames(*KEY) == {0}


def test_two_processes_write_the_same_new_store(tmp_path):
    path = tmp_path / "case.sqlite"
    go = tmp_path / "go"
    procs = [writer(path, "m", 0, 2, 150, go), writer(path, "m", 1, 2, 150, go)]  # even and odd frames
    time.sleep(0.3)
    go.touch()  # both open (and create) the store at the same moment
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert len(out.split()) == 150
    with CaseStore.open(path) as store:
        assert store.integrity_problems() == []
        key = ("m", "prompts-1", "chain")
        assert store.analysed_frames(*key) == set(range(300))
        assert all(r.chain["context"]["phase"]["label"] == "ClippingCutting" for r in store.results(*key))
        assert len(store.notes()) == 30


def test_a_killed_writer_loses_no_committed_result(tmp_path):
    path = tmp_path / "case.sqlite"
    go = tmp_path / "go"
    go.touch()
    proc = writer(path, "m", 0, 1, 1_000_000, go)
    committed = -1
    try:
        while committed < 40:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            committed = int(line)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    with CaseStore.open(path, readonly=True) as store:  # a reader copes with the left-over WAL
        assert store.analysed_frames("m", "prompts-1", "chain") >= set(range(committed + 1))
    with CaseStore.open(path) as store:
        assert store.integrity_problems() == []
        results = store.results("m", "prompts-1", "chain")
        frames = [r.frame for r in results]
        assert frames == list(range(len(frames))) and len(frames) >= committed + 1
        for r in results:
            assert r.parsed().to_dict() == r.chain and r.status == "complete"


# ------------------------------------------------------------------------------------- annotations
def test_bookmarks_and_notes(tmp_path):
    path = tmp_path / "case.sqlite"
    with CaseStore.open(path) as store:
        late = store.add_bookmark(900, "cystic artery clipped")
        early = store.add_bookmark(100, "first look <i>at</i> Calot")
        assert [b.frame for b in store.bookmarks()] == [100, 900]
        moved = store.update_bookmark(late.id, frame=950)
        assert (moved.frame, moved.title, moved.created) == (950, late.title, late.created)
        assert moved.updated >= late.updated
        assert store.update_bookmark(12345, title="gone") is None
        assert store.delete_bookmark(early.id) and not store.delete_bookmark(early.id)

        case_note = store.add_note("Difficult case: inflamed gallbladder", author="dr a")
        frame_note = store.add_note("bleeding here", frame=400, author="dr b")
        store.add_note("check CVS", frame=200)
        assert [n.frame for n in store.notes()] == [None, 200, 400]
        edited = store.update_note(frame_note.id, text="minor bleeding, controlled")
        assert (edited.text, edited.frame, edited.author) == ("minor bleeding, controlled", 400, "dr b")
        assert store.update_note(frame_note.id, frame=None).frame is None
        assert store.update_note(case_note.id, frame=10, author="dr c").author == "dr c"
        assert store.update_note(999, text="x") is None
        assert store.delete_note(case_note.id) and not store.delete_note(case_note.id)
    with CaseStore.open(path, readonly=True) as store:
        assert [(b.frame, b.title) for b in store.bookmarks()] == [(950, "cystic artery clipped")]
        assert [(n.frame, n.text) for n in store.notes()] == [(None, "minor bleeding, controlled"), (200, "check CVS")]


# ------------------------------------------------------------------------------------- locations
def test_store_path_is_under_data_home_and_survives_a_rename(tmp_path, monkeypatch):
    monkeypatch.setenv("SURGVIEW_DATA", str(tmp_path / "data"))
    videos = tmp_path / "videos"
    videos.mkdir()
    video = videos / "video01.mp4"
    video.write_bytes(os.urandom(3 << 20))
    path = case_store_path(video)
    assert path.parent == tmp_path / "data" / "cases" and path.suffix == ".sqlite"
    with CaseStore.for_video(video, fps=25.0, frame_count=100) as store:
        assert store.path == path
        store.put_result(result(0))
    assert sorted(p.name for p in videos.iterdir()) == ["video01.mp4"]  # nothing beside the video

    moved = tmp_path / "elsewhere" / "renamed.mp4"
    moved.parent.mkdir()
    video.rename(moved)
    assert case_store_path(moved) == path
    with CaseStore.for_video(moved, readonly=True) as store:
        assert store.analysed_frames(*KEY) == {0}
        assert store.case_info().video_path == str(video)
    with CaseStore.for_video(moved, fps=25.0, frame_count=100) as store:
        info = store.case_info()
        assert (info.fingerprint, info.video_path, info.frame_count) == (video_fingerprint(moved), str(moved), 100)

    with moved.open("r+b") as fh:  # a different recording (here: its last bytes) is a different case
        fh.seek(-10, os.SEEK_END)
        fh.write(b"0123456789")
    assert case_store_path(moved) != path
    small = tmp_path / "small.mp4"
    small.write_bytes(b"tiny")
    assert len(video_fingerprint(small)) == 32 and video_fingerprint(small) != video_fingerprint(moved)
    with pytest.raises(StoreError, match=r"cannot read video absent\.mp4"):
        case_store_path(tmp_path / "absent.mp4")


def test_reopening_a_case_shows_its_timelines(tmp_path):
    path = tmp_path / "case.sqlite"
    phases = ["Preparation", "Calot Triangle Dissection", "Clipping Cutting"]
    with CaseStore.open(path, durable=False) as store:
        for frame in range(0, 1500, 25):
            store.put_result(result(frame, phase=phases[frame // 500]))
    with CaseStore.open(path, readonly=True) as store:
        tl = build_timelines(store.timeline_rows(*KEY), fps=25, frame_count=1500)
    assert [(s.label, s.start, s.end) for s in tl.phase] == [
        ("Preparation", 0, 488),
        ("CalotTriangleDissection", 488, 988),
        ("ClippingCutting", 988, 1500),
    ]
    assert [(s.start, s.end) for s in tl.tools["Hook"]] == [(0, 1500)]
