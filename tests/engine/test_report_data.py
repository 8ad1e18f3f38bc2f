"""What a report says, from the store: durations, coverage, CVS first met against clipping,
instrument usage, bookmarks matched to analysed frames; blank areas and their migration."""

from __future__ import annotations

import sqlite3

import pytest

from engine.report_data import ReportError, gather_report, visible_text
from engine.store import SCHEMA_VERSION, BlankArea, CaseStore, FrameResult, StoreError
from tests.engine.test_store import KEY, chain_text

FPS = 25.0


def fill(store: CaseStore, phases: list[tuple[int, int, str, tuple[str, str, str]]], step: int = 25) -> None:
    """Results every ``step`` frames: (start, stop, phase, cvs) runs."""
    for start, stop, phase, cvs in phases:
        for frame in range(start, stop, step):
            store.put_result(FrameResult.from_text(frame, *KEY, chain_text(frame, phase=phase, cvs=cvs)))


def test_durations_coverage_cvs_and_tools(tmp_path):
    never = ("not met", "not met", "not met")
    met = ("met", "met", "met")
    with CaseStore.open(tmp_path / "s.sqlite") as store:
        fill(store, [(0, 500, "Calot Triangle Dissection", never), (500, 750, "Calot Triangle Dissection", met)])
        fill(store, [(750, 1000, "Clipping Cutting", met)])
        store.add_bookmark(510, "CVS reached")
        store.add_bookmark(2400, "late, not analysed")
        store.add_note("all three seen", frame=510)
        store.add_note("case note", frame=None)
        data = gather_report(store, fps=FPS, frame_count=2500)
    s = data.summary
    assert (s.analysed_frames, s.covered_frames, s.stride_frames) == (40, 1000, 25)
    assert s.coverage == pytest.approx(0.4) and s.status_counts == {"complete": 40}
    assert [(p.phase, round(p.seconds)) for p in data.phases] == [
        ("CalotTriangleDissection", 30),
        ("ClippingCutting", 10),
    ]
    assert data.cvs.first_all_met is not None and 475 < data.cvs.first_all_met <= 500  # half-way to the frame before
    assert data.cvs.first_all_met_raw == 500 and data.cvs.clipping_start is not None
    # Issue 14: the statement says whether CVS was established on a stable run before the first clip, and held.
    assert data.cvs.statement.startswith("CVS was established at 00:00:20 (frame 500) and held until clipping began")
    assert data.cvs.assessment.green_light and data.cvs.assessment.established_frame == 500
    usage = {t.tool: t for t in data.tools}
    assert usage["Grasper"].seconds == pytest.approx(40.0) and usage["Grasper"].share == pytest.approx(0.4)
    assert usage["Clipper"].seconds == 0 and usage["Clipper"].first_frame is None
    first, late = data.bookmarks
    assert first.shown_frame == 500 and first.notes == ["all three seen"] and first.levels[0][0].startswith("Level 1")
    assert late.result is None and late.levels == []
    assert data.case_notes == ["case note"] and not s.title.endswith(".mp4")
    assert s.title.startswith("Laparoscopic cholecystectomy review, ") and "Case " not in s.title


def test_cvs_never_met_before_clipping_is_said(tmp_path):
    never = ("not met", "met", "not assessable")
    with CaseStore.open(tmp_path / "s.sqlite") as store:
        fill(store, [(0, 500, "Calot Triangle Dissection", never), (500, 800, "Clipping Cutting", never)])
        data = gather_report(store, fps=FPS, frame_count=800)
    assert data.cvs.first_all_met is None
    assert data.cvs.statement.startswith("CVS was NOT established before clipping began at 00:00:19")
    assert not data.cvs.assessment.green_light
    with CaseStore.open(tmp_path / "late.sqlite") as store:
        fill(store, [(0, 500, "Calot Triangle Dissection", never)])
        fill(store, [(500, 800, "Clipping Cutting", ("met", "met", "met"))])
        data = gather_report(store, fps=FPS, frame_count=800)
    assert data.cvs.statement.startswith("CVS was NOT established before clipping began")
    assert "met only after it" in data.cvs.statement


def test_nothing_stored_or_no_frame_rate_is_a_clear_error(tmp_path):
    with CaseStore.open(tmp_path / "s.sqlite") as store:
        with pytest.raises(ReportError, match="no stored analysis"):
            gather_report(store, fps=FPS, frame_count=100)
        fill(store, [(0, 100, "Preparation", ("met", "met", "met"))])
        with pytest.raises(ReportError, match="frame rate"):
            gather_report(store)
        with pytest.raises(ReportError, match="no stored analysis"):
            gather_report(store, model_id="other", fps=FPS, frame_count=100)


def test_visible_text_shows_controls_and_keeps_markup():
    assert visible_text("a\x00b\x1b[1m\x7f\x85<b>\r\nc\td") == "a\\x00b\\x1b[1m\\x7f\\x85<b>\nc\td"
    assert visible_text("evil\u202etxt.exe") == "evil\\u202etxt.exe"
    assert visible_text("line\nnext", keep_newlines=False) == "line\\x0anext"


def test_blank_areas_are_stored_replaced_and_validated(tmp_path):
    with CaseStore.open(tmp_path / "s.sqlite") as store:
        assert store.blank_areas() == []
        store.set_blank_areas([BlankArea(0, 0, 200, 40), BlankArea(1000, 650, 280, 70)])
        store.set_blank_areas([BlankArea(5, 5, 10, 10), *store.blank_areas()])
    with CaseStore.open(tmp_path / "s.sqlite", readonly=True) as store:
        assert store.blank_areas() == [BlankArea(5, 5, 10, 10), BlankArea(0, 0, 200, 40), BlankArea(1000, 650, 280, 70)]
        with pytest.raises(StoreError, match="read-only"):
            store.set_blank_areas([])
    for bad in ((-1, 0, 5, 5), (0, 0, 0, 5)):
        with pytest.raises(ValueError):
            BlankArea(*bad)


def test_a_version_2_store_gains_the_blank_areas_table(tmp_path):
    path = tmp_path / "v2.sqlite"
    with CaseStore.open(path) as store:
        fill(store, [(0, 100, "Preparation", ("met", "met", "met"))])
        store.add_bookmark(25, "kept")
    conn = sqlite3.connect(path)  # back to schema 2, as the previous release wrote it
    conn.execute("DROP TABLE blank_areas")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="older store schema"):
        CaseStore.open(path, readonly=True)
    with CaseStore.open(path) as store:
        assert store.schema_version == SCHEMA_VERSION >= 3
        assert store.blank_areas() == [] and [b.title for b in store.bookmarks()] == ["kept"]
        assert len(store.results(*KEY)) == 4
        store.set_blank_areas([BlankArea(1, 2, 3, 4)])
        assert store.integrity_problems() == []


def test_the_report_shows_the_held_out_metrics_a_pipeline_export_records():
    from engine.modeldir import Manifest
    from engine.report_data import manifest_summary

    manifest = Manifest(
        name="m",
        base_architecture="Qwen2_5_VLForConditionalGeneration",
        ontology_version="1.0",
        prompts_version="1.0",
        evaluation={
            "held_out": {"key_metrics": {"phase": 0.8166}, "format_ok": 1.0, "n": 120},
            "stages": [{"stage": "sft"}],
        },
    )
    shown = manifest_summary(manifest)["evaluation"]
    assert shown == {"held-out phase": 0.817, "held-out format_ok": 1.0, "held-out n": 120.0}


def test_a_surg_r1_analysis_reports_the_phase_question_and_the_localisation_boxes(tmp_path):
    """Three questions per frame form one analysis: phase from the phase answer, tools from every answer,
    bookmarks with each question's levels under its title and the boxes mapped to the video's pixels."""
    version = "surg-r1-release"

    def phase(name: str) -> str:
        levels = "Level 1: A grasper is visible. Level 2: It retracts the gallbladder."
        return f"<think> {levels} Level 3: The phase is {name}. </think><answer>{name}</answer>"

    tools = "<think> Level 1: A grasper and a hook. </think><answer>Grasper (84,42), (252,210), Hook (420,238), (588,406)</answer>"
    with CaseStore.open(tmp_path / "s.sqlite") as store:
        fill(store, [(0, 250, "Preparation", ("met", "met", "met"))])  # an older, surgview analysis
        for frame in range(0, 1000, 25):
            name = "Calot Triangle Dissection" if frame < 500 else "Clipping Cutting"
            store.put_result(FrameResult.from_text(frame, "surg-r1", version, "phase", phase(name)))
            if frame != 500:
                store.put_result(FrameResult.from_text(frame, "surg-r1", version, "localisation", tools))
        store.add_bookmark(500, "first clip")
        store.add_bookmark(530, "boxes")
        data = gather_report(store, fps=FPS, frame_count=1000)
        by_task = gather_report(store, task="localisation", fps=FPS, frame_count=1000)
    s = data.summary
    assert (s.model_id, s.profile, s.task) == ("surg-r1", "surg-r1", "phase, triplet, localisation")
    assert by_task.summary.profile == "surg-r1"
    assert [p.phase for p in data.phases] == ["CalotTriangleDissection", "ClippingCutting"]
    usage = {t.tool: t.seconds for t in data.tools}
    assert usage["Hook"] == pytest.approx(40.0, abs=1.5)  # the localisation answer's tools
    clip, boxed = data.bookmarks
    assert clip.shown_frame == 500 and clip.result.status == "complete"
    assert clip.levels[0][0] == "Phase · Level 1 (Perception)"
    assert ("Action", "not answered", "") in clip.levels and ("Tools", "not answered", "") in clip.levels
    record = clip.record(1680, 952)
    assert record.phase.label == "ClippingCutting" and all(i.box is None for i in record.instruments)
    assert boxed.shown_frame == 525 and boxed.result.status == "malformed"  # the weakest of its answers
    found = {i.name.label: i.box for i in boxed.record(1680, 952).instruments}  # 840x476 → 1680x952
    assert found == {"Grasper": (168.0, 84.0, 504.0, 420.0), "Hook": (840.0, 476.0, 1176.0, 812.0)}


def test_met_at_the_first_frame_then_lost_is_no_green_light(tmp_path):
    # The demo report's bug: "all three met at frame 0" while its own chart showed them not met from 0:09 to 0:42.
    met, never = ("met", "met", "met"), ("not met", "not met", "not met")
    with CaseStore.open(tmp_path / "s.sqlite") as store:
        fill(store, [(0, 50, "Preparation", met), (50, 750, "Calot Triangle Dissection", never)])
        fill(store, [(750, 1000, "Clipping Cutting", never)])
        data = gather_report(store, fps=FPS, frame_count=1000)
    assert data.cvs.first_all_met_raw == 0  # the raw answer is kept beside the statement ...
    assert not data.cvs.assessment.established and not data.cvs.assessment.green_light  # ... but is no green light
    assert "NOT established before clipping began" in data.cvs.statement and "doubtful" in data.cvs.statement
    assert [e["status"] for e in data.cvs.assessment.to_json()["episodes"]] == ["doubtful"]
