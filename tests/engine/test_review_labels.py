"""The reviewer's labels in the case store: the schema 3 → 4 migration, every edit and its exact inverse,
the reviewer's truth at a frame, disagreements with the model and the agreement figures."""

from __future__ import annotations

import sqlite3

import pytest

from engine.chain import CvsState
from engine.chain_parser import parse_chain
from engine.report_data import gather_report, report_json
from engine.review_agreement import agreement, case_agreement, disagreements, next_disagreement, stored_agreement
from engine.review_labels import ModelRef, ReviewError, ReviewLabels, triplet_label
from engine.store import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, CaseStore, FrameResult, StoreError
from engine.timeline import TimelineRow
from tests.engine.test_store import KEY, chain_text

MET, NOT_MET, NA = CvsState.MET, CvsState.NOT_MET, CvsState.NOT_ASSESSABLE
REF = ModelRef(*KEY)


def phases(labels: ReviewLabels) -> list[tuple[int, int, str]]:
    return [(s.start, s.end, s.phase) for s in labels.snapshot().segments]


@pytest.fixture
def labels(tmp_path):
    with CaseStore.open(tmp_path / "case.sqlite") as store:
        yield ReviewLabels(store, reviewer="dr-a", model=REF)


# ------------------------------------------------------------------------------------- migration
def test_a_version_3_store_opens_with_its_results_and_gains_the_review_tables(tmp_path):
    path = tmp_path / "v3.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)  # written exactly as schema 3 writes it
    for migrate in MIGRATIONS[:3]:
        migrate(conn)
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    assert SCHEMA_VERSION >= 4
    with CaseStore.open(path) as store:  # a release without reviewer labels writes into it ...
        store.put_result(FrameResult.from_text(0, *KEY, chain_text(0)))
        store.add_bookmark(5, "kept")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 3")  # ... as that release would have left it
    for table in ("review_phase", "review_cvs", "review_items", "review_chains", "review_log"):
        conn.execute(f"DROP TABLE {table}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="older store schema"):
        CaseStore.open(path, readonly=True)
    with CaseStore.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert [b.title for b in store.bookmarks()] == ["kept"] and len(store.results(*KEY)) == 1
        assert store.get_result(0, *KEY).raw_text == chain_text(0)
        labels = ReviewLabels(store, "dr-a")
        assert labels.snapshot().empty
        labels.set_phase(0, 10, "Preparation")
        assert store.integrity_problems() == []
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    conn.close()
    with CaseStore.open(path, readonly=True) as store:  # the current schema reads back
        assert phases(ReviewLabels(store)) == [(0, 10, "Preparation")]


def test_model_output_is_never_touched_by_a_review(labels):
    store = labels.store
    result = store.put_result(FrameResult.from_text(25, *KEY, chain_text(25)))
    labels.set_phase(0, 100, "Preparation")
    labels.reject_item(25, "instrument", "Hook")
    labels.reject_chain(result)
    again = store.get_result(25, *KEY)
    assert again.raw_text == result.raw_text and again.chain_dict == result.chain_dict
    assert store.timeline_rows(*KEY)[0].phase == "CalotTriangleDissection"


# ------------------------------------------------------------------------------------- phase edits
def check_undo_redo(labels: ReviewLabels, edit):
    """Run ``edit``; its inverse gives back exactly the rows before it, and redoing gives the rows after."""
    before = labels.snapshot()
    change = edit()
    after = labels.snapshot()
    assert after != before and not change.empty
    labels.apply(change.inverse())
    assert labels.snapshot() == before
    labels.apply(change)
    assert labels.snapshot() == after
    return change


def test_phase_edits_and_their_inverses(labels):
    labels.set_phase(0, 100, "Preparation")
    labels.set_phase(100, 300, "calot triangle dissection")
    assert phases(labels) == [(0, 100, "Preparation"), (100, 300, "CalotTriangleDissection")]

    change = check_undo_redo(labels, lambda: labels.move_boundary(100, 140))
    assert phases(labels) == [(0, 140, "Preparation"), (140, 300, "CalotTriangleDissection")]
    assert change.frames == (0, 300)

    check_undo_redo(labels, lambda: labels.split_segment(200, "ClippingCutting"))
    assert phases(labels)[1:] == [(140, 200, "CalotTriangleDissection"), (200, 300, "ClippingCutting")]

    seg = labels.snapshot().segment_at(250)
    check_undo_redo(labels, lambda: labels.relabel_segment(seg.id, "CalotTriangleDissection"))
    assert phases(labels)[1:] == [(140, 300, "CalotTriangleDissection")]  # equal neighbours become one

    check_undo_redo(labels, lambda: labels.split_segment(200))
    check_undo_redo(labels, lambda: labels.merge_at(140, keep="right"))
    assert phases(labels) == [(0, 300, "CalotTriangleDissection")]  # the touching equal one joins too

    check_undo_redo(labels, lambda: labels.clear_phase(50, 60))
    assert phases(labels)[:2] == [(0, 50, "CalotTriangleDissection"), (60, 300, "CalotTriangleDissection")]
    check_undo_redo(labels, lambda: labels.move_boundary(50, 55))  # a lone edge grows into the gap
    assert phases(labels)[0] == (0, 55, "CalotTriangleDissection")


def test_phase_edits_keep_the_authors_of_what_they_did_not_change(labels):
    labels.set_phase(0, 100, "Preparation")
    other = ReviewLabels(labels.store, reviewer="dr-b")
    other.set_phase(40, 60, "CalotTriangleDissection")
    segs = labels.snapshot().segments
    assert [(s.start, s.end, s.reviewer) for s in segs] == [(0, 40, "dr-a"), (40, 60, "dr-b"), (60, 100, "dr-a")]
    assert segs[0].model == REF and segs[1].model is None and segs[0].source == "viewer"
    log = labels.log()
    assert [(who, action) for _, who, action, _ in log] == [
        ("dr-a", "set phase Preparation on 0..99"),
        ("dr-b", "set phase CalotTriangleDissection on 40..59"),
    ]


def test_impossible_phase_edits_are_refused_and_change_nothing(labels):
    labels.set_phase(0, 100, "Preparation")
    labels.set_phase(100, 200, "CalotTriangleDissection")
    before = labels.snapshot()
    with pytest.raises(ReviewError, match=r"within 1\.\.199"):
        labels.move_boundary(100, 200)  # would empty the right segment
    with pytest.raises(ReviewError, match="no phase segment edge"):
        labels.move_boundary(150, 160)
    with pytest.raises(ReviewError, match="no segment to split"):
        labels.split_segment(100)
    with pytest.raises(ReviewError, match="no two phase segments meet"):
        labels.merge_at(50)
    with pytest.raises(ReviewError, match="unknown phase"):
        labels.set_phase(0, 10, "Appendectomy")
    with pytest.raises(ReviewError, match="start < end"):
        labels.set_phase(10, 10, "Preparation")
    assert labels.snapshot() == before
    assert labels.set_phase(10, 20, "Preparation").empty  # already so: nothing to undo


def test_an_inverse_is_refused_when_the_labels_changed_meanwhile(labels):
    change = labels.set_phase(0, 100, "Preparation")
    ReviewLabels(labels.store, "dr-b").set_phase(50, 100, "CalotTriangleDissection")  # another window
    before = labels.snapshot()
    with pytest.raises(ReviewError, match="changed meanwhile"):
        labels.apply(change.inverse())
    assert labels.snapshot() == before


# ------------------------------------------------------------------------------------- CVS
def test_cvs_toggles_at_the_playhead_and_ranges(labels):
    check_undo_redo(labels, lambda: labels.toggle_cvs(1, 10, model_state=MET))
    assert labels.snapshot().cvs_at(10) == (NOT_MET, None, None)  # flipped from the model's
    labels.toggle_cvs(1, 10)
    assert labels.snapshot().cvs_at(10) == (MET, None, None)  # and back, from the reviewer's own
    labels.toggle_cvs(2, 10)
    assert labels.snapshot().cvs_at(10) == (MET, MET, None)  # nothing said: met
    check_undo_redo(labels, lambda: labels.set_cvs(3, 0, 50, "not assessable"))
    labels.set_cvs(3, 20, 30, MET)
    review = labels.snapshot()
    assert [(r.start, r.end, r.state) for r in review.cvs[2]] == [(0, 20, NA), (20, 30, MET), (30, 50, NA)]
    assert review.cvs_at(11) == (None, None, NA)
    with pytest.raises(ReviewError, match="criteria are 1, 2 and 3"):
        labels.set_cvs(4, 0, 1, MET)
    with pytest.raises(ReviewError, match="CVS state"):
        labels.set_cvs(1, 0, 1, "maybe")


# ------------------------------------------------------------------------------------- items and chains
def test_item_verdicts_and_the_truth_at_a_frame(labels):
    accept = check_undo_redo(labels, lambda: labels.accept_item(5, "instrument", "grasper", (1, 2, 30, 40)))
    assert accept.added[0].label == "Grasper" and accept.added[0].model_box == (1.0, 2.0, 30.0, 40.0)
    flip = check_undo_redo(labels, lambda: labels.reject_item(5, "instrument", "Grasper", (1, 2, 30, 40)))
    assert flip.removed == accept.added  # a new verdict on the same model item replaces the old one
    check_undo_redo(labels, lambda: labels.edit_item(5, "instrument", "hook", (5, 5, 9, 9), "Scissors", (5, 5, 12, 12)))
    added = check_undo_redo(
        labels, lambda: labels.add_item(5, "triplet", "grasper, retract, gallbladder", (0, 0, 8, 8))
    )
    moved = check_undo_redo(labels, lambda: labels.update_item(added.added[0].id, box=(1, 1, 9, 9)))
    assert moved.added[0].verdict == "added" and moved.added[0].box == (1.0, 1.0, 9.0, 9.0)
    truth = labels.snapshot().truth_at(5)
    assert [i.label for i in truth.instruments] == ["Scissors"]  # the rejected grasper is not there
    assert [i.label for i in truth.triplets] == ["grasper,retract,gallbladder"]
    assert labels.snapshot().truth_at(6).instruments is None  # not reviewed: unknown, not "none"
    item = labels.snapshot().items_at(5, "instrument")[0]
    check_undo_redo(labels, lambda: labels.remove_item(item.id))
    with pytest.raises(ReviewError, match="unknown instrument"):
        labels.add_item(5, "instrument", "laser")
    with pytest.raises(ReviewError, match="unknown triplet verb"):
        labels.add_item(5, "triplet", "grasper,paint,gallbladder")
    with pytest.raises(ReviewError, match="x2 > x1"):
        labels.add_item(5, "instrument", "Hook", (10, 10, 5, 20))
    empty = labels.set_frame_items(7, "instrument", [])
    assert labels.snapshot().truth_at(7).instruments == ()  # the reviewer says: none there
    labels.add_item(7, "instrument", "Hook")
    assert [i.label for i in labels.snapshot().truth_at(7).instruments] == ["Hook"]
    assert empty.added[0] not in labels.snapshot().items  # the 'none' statement went


def test_chain_verdicts_follow_the_text_they_judged(labels):
    store = labels.store
    result = store.put_result(FrameResult.from_text(25, *KEY, chain_text(25)))
    change = check_undo_redo(labels, lambda: labels.accept_chain(result))
    verdict = change.added[0]
    assert verdict.matches(result) and verdict.model == REF
    labels.reject_chain(result)  # replaces the acceptance
    assert [c.verdict for c in labels.snapshot().chains_at(25)] == ["rejected"]
    reasked = store.put_result(FrameResult.from_text(25, *KEY, chain_text(25, phase="Preparation")))
    assert not labels.snapshot().chains_at(25)[0].matches(reasked)  # a new answer is not what was judged
    check_undo_redo(labels, lambda: labels.clear_chain_verdict(25, REF))


# ------------------------------------------------------------------------------------- agreement
def rows(*spec) -> list[TimelineRow]:
    return [TimelineRow(frame, phase, cvs, tools) for frame, phase, cvs, tools in spec]


def test_agreement_counts_only_reviewed_analysed_frames(labels):
    labels.set_phase(0, 50, "Preparation")
    labels.set_cvs(1, 0, 100, MET)
    labels.set_cvs(2, 0, 100, NOT_MET)
    model = rows(
        (0, "Preparation", (MET, MET, None), ("Grasper",)),
        (25, "CalotTriangleDissection", (NOT_MET, NOT_MET, None), ("Grasper",)),
        (50, "CalotTriangleDissection", (MET, None, None), ("Hook",)),  # no reviewer phase here
        (75, None, (None, None, None), None),  # CVS not stated by the model: not counted
        (200, "Preparation", (MET, MET, MET), ()),  # not reviewed
    )
    found = agreement(labels.snapshot(), model)
    assert found.phase_accuracy == pytest.approx(1 / 2) and found.phase_frames == 2
    assert found.cvs_agreement == (pytest.approx(2 / 3), pytest.approx(1 / 2), None)
    assert found.cvs_frames == (3, 2, 0) and found.frames_reviewed == 4
    assert found.to_json() == {
        "phase_accuracy": 0.5,
        "cvs_agreement": {"C1": 0.6667, "C2": 0.5, "C3": None},
        "frames_reviewed": 4,
    }
    assert found.text() == "reviewed 4 frames · phase 50% · CVS 67/50/–%"
    labels.reject_item(0, "instrument", "Grasper")
    labels.add_item(50, "instrument", "Hook")
    found = disagreements(labels.snapshot(), model)
    assert [(d.frame, d.fields) for d in found] == [
        (0, ("C2", "instruments")),
        (25, ("phase", "C1")),
        (50, ("instruments",)),
    ]
    assert next_disagreement(found, 0).frame == 25 and next_disagreement(found, 50) is None
    assert next_disagreement(found, 25, forward=False).frame == 0


def test_the_report_json_holds_the_agreement(labels):
    store = labels.store
    for frame in range(0, 100, 25):
        phase = "Preparation" if frame < 50 else "Calot Triangle Dissection"
        store.put_result(FrameResult.from_text(frame, *KEY, chain_text(frame, phase=phase)))
    empty = report_json(gather_report(store, fps=25.0, frame_count=100))["review"]
    assert empty == {
        "phase_accuracy": None,
        "cvs_agreement": {"C1": None, "C2": None, "C3": None},
        "frames_reviewed": 0,
    }
    labels.set_phase(0, 100, "Preparation")
    labels.set_cvs(1, 0, 100, MET)  # chain_text says C1 met, C2 not met, C3 not assessable
    labels.set_cvs(2, 0, 100, MET)
    review = report_json(gather_report(store, fps=25.0, frame_count=100))["review"]
    assert review == {"phase_accuracy": 0.5, "cvs_agreement": {"C1": 1.0, "C2": 0.0, "C3": None}, "frames_reviewed": 4}
    assert case_agreement(store).to_json() == review


def test_the_models_timeline_taken_as_a_start_is_one_change(labels):
    labels.set_phase(90, 120, "ClippingCutting")
    runs = [(0, 50, "Preparation"), (50, 100, "CalotTriangleDissection"), (200, 210, "Preparation")]
    change = check_undo_redo(labels, lambda: labels.set_phases(runs))
    assert change.action == "set 3 phase segments on 0..209"
    assert phases(labels) == [
        (0, 50, "Preparation"),
        (50, 100, "CalotTriangleDissection"),
        (100, 120, "ClippingCutting"),  # the reviewer's own, where no run reaches
        (200, 210, "Preparation"),
    ]
    with pytest.raises(ReviewError, match="overlap"):
        labels.set_phases([(0, 10, "Preparation"), (5, 20, "Preparation")])


def test_a_models_triplet_is_named_as_the_reviewers_items_are(labels):
    chain = parse_chain(chain_text(0))
    triplet = chain.relations.triplets[0]
    assert triplet_label(triplet) == "grasper,retract,gallbladder"
    change = labels.accept_item(0, "triplet", triplet_label(triplet))
    assert change.added[0].label == "grasper,retract,gallbladder"


def test_the_library_reads_a_cases_agreement_without_writing(tmp_path):
    path = tmp_path / "case.sqlite"
    assert stored_agreement(path) is None
    with CaseStore.open(path) as store:
        store.put_result(FrameResult.from_text(0, *KEY, chain_text(0, phase="Preparation")))
        ReviewLabels(store).set_phase(0, 10, "Preparation")
    before = path.stat().st_mtime_ns
    assert stored_agreement(path).to_json()["phase_accuracy"] == 1.0
    assert path.stat().st_mtime_ns == before
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 3")  # a store an older surgview wrote: not reviewed
    conn.commit()
    conn.close()
    assert stored_agreement(path) is None
