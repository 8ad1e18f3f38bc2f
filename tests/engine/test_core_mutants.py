"""Bugs an audit planted one at a time in the core and no test caught: each test here fails on one of them,
and asserts what a user would notice (a wrong safety statement, a truncated chain paid as complete, an empty
CVS track, an analysis lost to a power cut)."""

from __future__ import annotations

from engine.chain import ChainStatus, CvsState
from engine.chain_parser import parse_chain
from engine.store import CaseStore, FrameResult
from engine.timeline import TimelineRow, build_timelines

MET, NOT = CvsState.MET, CvsState.NOT_MET


def _rows(c1: list[CvsState], c2: list[CvsState], c3: list[CvsState], step: int = 25) -> list[TimelineRow]:
    return [
        TimelineRow(i * step, "CalotTriangleDissection", (a, b, c), ())
        for i, (a, b, c) in enumerate(zip(c1, c2, c3, strict=True))
    ]


def test_criteria_met_one_after_another_are_never_all_met_together():
    # C1 met on the first half only, C2 and C3 on the second half only: never all three at once.
    half = 20
    rows = _rows([MET] * half + [NOT] * half, [NOT] * half + [MET] * half, [NOT] * half + [MET] * half)
    timelines = build_timelines(rows, fps=25.0, frame_count=40 * 25)
    assert timelines.first_all_met() is None
    assert timelines.first_all_met(raw=True) is None


def test_all_met_is_dated_at_the_first_frame_all_three_hold():
    rows = _rows([MET] * 40, [NOT] * 10 + [MET] * 30, [NOT] * 20 + [MET] * 20)
    timelines = build_timelines(rows, fps=25.0, frame_count=40 * 25)
    assert timelines.first_all_met(raw=True) == 20 * 25
    smoothed = timelines.first_all_met()
    assert smoothed is not None and 19 * 25 <= smoothed <= 20 * 25  # smoothing may start the run half a stride early


def test_a_chain_stopping_after_level_two_is_not_complete():
    text = (
        "<think>\nLevel 1 (Perception): Instruments: Hook. Anatomy: liver.\n"
        "Level 2 (Relation): Triplets: hook dissect cystic duct.\n</think>\n<answer>Calot Triangle Dissection</answer>"
    )
    chain = parse_chain(text)
    assert chain.status is ChainStatus.MALFORMED and "Level 3 missing" in chain.problems
    declared = parse_chain(text.replace("<think>\n", "<think>\nThis is a Level 2 task.\n"))  # it may stop there
    assert declared.status is ChainStatus.COMPLETE


def test_a_cvs_task_answer_fills_the_cvs_track(tmp_path):
    text = (
        "<think>\nThis is a Level 1 task.\nLevel 1 (Perception): Instruments: Hook. Anatomy: cystic duct.\n</think>\n"
        "<answer>C1 met, C2 not met, C3 not assessable</answer>"
    )
    with CaseStore.open(tmp_path / "case.sqlite") as store:
        store.put_result(FrameResult.from_text(100, "m@1", "1.0", "cvs", text))
        (row,) = store.timeline_rows("m@1", "1.0", "cvs")
    assert row.cvs == (MET, NOT, CvsState.NOT_ASSESSABLE)


def test_the_store_waits_for_the_disk_on_every_commit_unless_told_otherwise(tmp_path):
    # synchronous=FULL (2): a committed frame survives a power cut; NORMAL (1) only a killed process.
    with CaseStore.open(tmp_path / "durable.sqlite") as store:
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
        assert store._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with CaseStore.open(tmp_path / "fast.sqlite", durable=False) as store:
        assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 1
