"""Another procedure's answers end to end in the engine: parsed in its ontology, its action and step in
the store's own columns (schema 5, migrated from 4), merged into frame records, exported, reported
without CVS."""

from __future__ import annotations

import json
import sqlite3
import threading
from argparse import Namespace
from pathlib import Path

import av
import numpy as np
import pytest

from engine.backends.base import Backend, GenerationRequest, TextStream
from engine.chain_parser import parse_chain
from engine.frame_record import case_analyses, merge_results
from engine.ontology import load_ontology
from engine.profiles import get_profile
from engine.report_data import gather_report, report_json
from engine.scheduler import AnalysisScheduler, SchedulerConfig
from engine.store import MIGRATIONS, SCHEMA_VERSION, CaseStore, FrameResult, StoreError, _summary
from engine.timeline import build_action_track

RARP = "1.0+rarp"
ACTIONS = [
    "Picking-up the needle",
    "Positioning the needle tip",
    "Pushing the needle through the tissue",
    "Pulling the needle out of the tissue",
]


def rarp_answer(action: str, tools: str = "Large Needle Driver [10, 10, 40, 40], Prograsp Forceps") -> str:
    return (
        "<think>\nThis is a Level 2 task.\n"
        f"Level 1 (Perception): Instruments: {tools}. Anatomy: suturing needle, thread, tissue.\n"
        f"Level 2 (Relation): Action: {action}.\n</think>\n<answer>{action}</answer>"
    )


BYPASS_ANSWER = (
    "<think>\nLevel 1 (Perception): Instruments: none. Anatomy: stomach.\n"
    "Level 2 (Relation): Triplets: none.\n"
    "Level 3 (Context): Phase: Gastric pouch creation. Step: Vertical stapling.\n</think>\n"
    "<answer>Gastric pouch creation</answer>"
)


def test_an_answer_is_parsed_in_the_ontology_its_prompt_version_names():
    text = rarp_answer(ACTIONS[3])
    rarp = FrameResult.from_text(0, "m", RARP, "action", text)
    assert rarp.status == "complete"
    assert [s.name.label for s in rarp.chain.perception.instruments] == ["Large_Needle_Driver", "Prograsp_Forceps"]
    chole = FrameResult.from_text(0, "m", "1.0", "action", text)  # the same words as a cholecystectomy's
    assert [s.name.label for s in chole.chain.perception.instruments] == [None, None]
    stored_form = FrameResult(0, "m", RARP, "action", text, rarp.chain_dict)  # as read back from a store
    assert stored_form.parsed().perception.instruments[0].name.label == "Large_Needle_Driver"


def test_the_store_keeps_action_step_and_tools_in_their_columns(tmp_path):
    with CaseStore.open(tmp_path / "c.sqlite") as store:
        assert store.schema_version == SCHEMA_VERSION == 5
        for i, action in enumerate(ACTIONS):
            store.put_result(FrameResult.from_text(60 * i, "m", RARP, "action", rarp_answer(action)))
        store.put_result(FrameResult.from_text(0, "m", "1.0+bypass", "phase", BYPASS_ANSWER))
        store.put_result(FrameResult.from_text(0, "m", "1.0", "action", rarp_answer(ACTIONS[0])))
        rows = store.timeline_rows("m", RARP, "action")
        bypass = store.timeline_rows("m", "1.0+bypass", "phase")
        chole = store.timeline_rows("m", "1.0", "action")
        plan = store._conn.execute(
            "EXPLAIN QUERY PLAN SELECT frame, action, step FROM results INDEXED BY results_timeline "
            "WHERE model_id = 'm' AND prompt_version = ? AND task = 'action' ORDER BY frame",
            (RARP,),
        ).fetchall()
    assert [r.action for r in rows] == [
        "picking_up_the_needle",
        "positioning_the_needle_tip",
        "pushing_the_needle_through_the_tissue",
        "pulling_the_needle_out_of_the_tissue",
    ]
    assert rows[0].tools == ("Large_Needle_Driver", "Prograsp_Forceps") and rows[0].step is None
    assert (bypass[0].phase, bypass[0].step, bypass[0].action) == (
        "gastric_pouch_creation",
        "s8_vertical_stapling",
        None,
    )
    assert chole[0].action is None and chole[0].tools == ()  # a cholecystectomy has no actions; no EndoVis tools
    assert "COVERING INDEX" in " ".join(str(p) for p in plan)  # the action never comes from the raw text


def schema_4_store(path: Path, rows: list[tuple[int, str, str, str]]) -> None:
    """A store exactly as schema 4 wrote it: columns summarised in cholecystectomy's ontology."""
    conn = sqlite3.connect(path, isolation_level=None)
    for migrate in MIGRATIONS[:4]:
        migrate(conn)
    conn.execute("PRAGMA user_version = 4")
    for frame, version, task, text in rows:
        chain = parse_chain(text).to_dict()  # what the old scheduler stored: the default ontology
        conn.execute(
            "INSERT INTO results (frame, model_id, prompt_version, task, raw_text, chain_json, status, created, "
            "phase, cvs1, cvs2, cvs3, tools) VALUES (?, 'm', ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)",
            (frame, version, task, text, json.dumps(chain), chain["status"], *_summary(chain)),
        )
    conn.close()


def test_a_schema_4_store_is_migrated_and_its_other_procedures_rows_are_read_again(tmp_path):
    path = tmp_path / "old.sqlite"
    chole_text = "<think>\nLevel 1 (Perception): Instruments: Hook. Anatomy: liver.\n</think>\n<answer>x</answer>"
    schema_4_store(
        path,
        [
            (0, RARP, "action", rarp_answer(ACTIONS[0])),
            (60, RARP, "action", rarp_answer(ACTIONS[2])),
            (0, "1.0+bypass", "phase", BYPASS_ANSWER),
            (0, "1.0", "tools", chole_text),
        ],
    )
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT tools FROM results WHERE prompt_version = ?", (RARP,)).fetchone() == ("",)
    with pytest.raises(StoreError, match="older store schema"):
        CaseStore.open(path, readonly=True)
    with CaseStore.open(path) as store:
        assert store.schema_version == 5
        rarp = store.timeline_rows("m", RARP, "action")
        bypass = store.timeline_rows("m", "1.0+bypass", "phase")
        chole = store.timeline_rows("m", "1.0", "tools")
        columns = [r[2] for r in store._conn.execute("PRAGMA index_info(results_timeline)").fetchall()]
    assert [r.action for r in rarp] == ["picking_up_the_needle", "pushing_the_needle_through_the_tissue"]
    assert rarp[0].tools == ("Large_Needle_Driver", "Prograsp_Forceps")  # re-read in EndoVis17's names
    assert (bypass[0].phase, bypass[0].step) == ("gastric_pouch_creation", "s8_vertical_stapling")
    assert (chole[0].tools, chole[0].action) == (("Hook",), None)  # cholecystectomy rows as they were
    assert columns[-2:] == ["action", "step"]
    with CaseStore.open(path, readonly=True) as again:  # upgraded once: readable read-only now
        assert again.timeline_rows("m", RARP, "action")[1].action == "pushing_the_needle_through_the_tissue"


def test_a_frame_record_merges_the_action_and_exports_no_cvs_for_a_suturing_case():
    profile = get_profile("surgview", procedure="rarp")
    answer = FrameResult.from_text(120, "m", profile.version, "action", rarp_answer(ACTIONS[1]))
    record = merge_results(profile, {"action": answer}, 640, 480)
    assert record.action is not None and record.action.label == "positioning_the_needle_tip"
    assert record.procedure == "rarp" and record.step is None
    row = record.to_json()
    assert row["action"] == "positioning_the_needle_tip" and row["procedure"] == "rarp"
    assert "cvs" not in row and "step" not in row
    assert [i["label"] for i in row["instruments"]] == ["Large_Needle_Driver", "Prograsp_Forceps"]
    chole = get_profile("surgview")
    plain = merge_results(chole, {}, 640, 480).to_json()
    assert "cvs" in plain and "action" not in plain and "procedure" not in plain


def rarp_store(path: Path, pattern: list[str], step: int = 60) -> CaseStore:
    store = CaseStore.open(path)
    from engine.store import CaseInfo

    store.set_case_info(CaseInfo("f" * 32, "video_left.avi", 60.0, step * len(pattern)))
    for i, action in enumerate(pattern):
        store.put_result(FrameResult.from_text(step * i, "m", RARP, "action", rarp_answer(action)))
    return store


def test_the_case_analysis_knows_its_procedure_and_its_rows_carry_the_action(tmp_path):
    pattern = [ACTIONS[0]] * 4 + [ACTIONS[1]] * 4 + [ACTIONS[2]] * 4 + [ACTIONS[3]] * 4
    with rarp_store(tmp_path / "c.sqlite", pattern) as store:
        (analysis,) = case_analyses(store)
        rows = analysis.timeline_rows(store)
    assert analysis.procedure.name == "rarp" and analysis.tasks == ("action",)
    assert analysis.profile.version == RARP
    from engine.action_fields import action_rows

    track = build_action_track(action_rows(rows), 60.0, 60 * len(pattern))
    assert [s.label for s in track.segments] == [
        "picking_up_the_needle",
        "positioning_the_needle_tip",
        "pushing_the_needle_through_the_tissue",
        "pulling_the_needle_out_of_the_tissue",
    ]


def test_a_suturing_report_has_actions_in_order_and_no_cvs(tmp_path):
    pattern = [ACTIONS[1]] * 3 + [ACTIONS[2]] * 6 + [ACTIONS[3]] * 3
    with rarp_store(tmp_path / "c.sqlite", pattern) as store:
        data = gather_report(store)
    assert data.cvs is None and data.phases == []
    assert list(data.tracks) == ["action"]
    assert [d.label for d in data.durations["action"]] == [
        "positioning_the_needle_tip",
        "pushing_the_needle_through_the_tissue",
        "pulling_the_needle_out_of_the_tissue",
    ]
    assert data.durations["action"][1].display == "Pushing the needle through the tissue"
    assert data.durations["action"][1].share == pytest.approx(0.5, abs=0.1)
    assert data.summary.title.startswith("Robot-assisted radical prostatectomy (suturing) review, ")
    used = {t.tool for t in data.tools if t.runs}
    assert used == {"Large_Needle_Driver", "Prograsp_Forceps"}
    out = report_json(data)
    assert "cvs" not in out and out["case"]["procedure"] == "rarp"
    assert [a["action"] for a in out["actions"]] == [d.label for d in data.durations["action"]]


def test_a_bypass_report_has_its_phases_and_steps_in_their_order(tmp_path):
    store = CaseStore.open(tmp_path / "b.sqlite")
    from engine.store import CaseInfo

    store.set_case_info(CaseInfo("b" * 32, "BBP01.mp4", 25.0, 25 * 20))
    late = BYPASS_ANSWER.replace("Gastric pouch creation", "Omentum division").replace(
        "Vertical stapling", "Omental section"
    )
    for i in range(20):
        store.put_result(FrameResult.from_text(25 * i, "m", "1.0+bypass", "phase", BYPASS_ANSWER if i < 10 else late))
    with store:
        data = gather_report(store)
    assert data.cvs is None and list(data.tracks) == ["phase", "step"]
    assert [p.phase for p in data.phases] == ["gastric_pouch_creation", "omentum_division"]
    assert [p.display for p in data.phases] == ["Gastric pouch creation", "Omentum division"]
    assert [d.label for d in data.durations["step"]] == ["s8_vertical_stapling", "s13_omental_section"]
    out = report_json(data)
    assert [p["phase"] for p in out["phases"]] == ["gastric_pouch_creation", "omentum_division"]
    assert [s["step"] for s in out["steps"]] == ["s8_vertical_stapling", "s13_omental_section"]


def test_a_cholecystectomy_report_keeps_its_cvs(tmp_path):
    text = (
        "<think>\nLevel 1 (Perception): Instruments: Hook. Anatomy: liver.\n"
        "Level 2 (Relation): Triplets: hook dissect cystic duct.\n"
        "Level 3 (Context): Phase: Calot Triangle Dissection. CVS: C1 met, C2 met, C3 met.\n"
        "</think>\n<answer>Calot Triangle Dissection</answer>"
    )
    store = CaseStore.open(tmp_path / "h.sqlite")
    from engine.store import CaseInfo

    store.set_case_info(CaseInfo("c" * 32, "v.mp4", 25.0, 250))
    for i in range(10):
        store.put_result(FrameResult.from_text(25 * i, "m", get_profile().version, "frame_analysis", text))
    with store:
        data = gather_report(store)
    assert data.cvs is not None and list(data.tracks) == ["phase"]
    assert "cvs" in report_json(data) and "actions" not in report_json(data)
    assert [t.tool for t in data.tools] == load_ontology().tool.names


def write_video(path: Path, frames: int, fps: int = 60) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            image = np.full((48, 64, 3), (i * 7) % 250, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


class SuturingBackend(Backend):
    """Answers every frame with a suturing chain whose action follows the frame (by the stride)."""

    name = "suturing"

    def __init__(self):
        self.calls = 0
        self.lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return "suturing@1"

    def stream(self, request: GenerationRequest, cancel: threading.Event | None = None) -> TextStream:
        with self.lock:
            self.calls += 1
        level = int(request.image.mean())
        text = rarp_answer(ACTIONS[0] if level < 100 else ACTIONS[3])
        return TextStream(iter([text[:20], text[20:]]), cancel or threading.Event())

    def generate_batch(self, requests):
        raise NotImplementedError


def test_the_scheduler_stores_a_suturing_answer_in_its_own_names_and_export_carries_the_action(
    tmp_path, data_home, capsys
):
    video = tmp_path / "video_01" / "suturing.mp4"
    video.parent.mkdir()
    write_video(video, 30, fps=10)
    profile = get_profile("surgview", procedure="rarp")
    with CaseStore.for_video(video, fps=10.0, frame_count=30) as store:
        scheduler = AnalysisScheduler(video, SuturingBackend(), store, profile, SchedulerConfig(stride_s=1.0))
        scheduler.start()
        assert scheduler.wait_idle(60)
        scheduler.stop()
        assert scheduler.error is None and scheduler.failures() == {}
        rows = store.timeline_rows("suturing@1", RARP, "action")
        stored = store.get_result(0, "suturing@1", RARP, "action")
    assert [r.frame for r in rows] == [0, 10, 20]
    assert rows[0].action == "picking_up_the_needle" and rows[2].action == "pulling_the_needle_out_of_the_tissue"
    assert stored is not None and stored.chain["perception"]["instruments"][0]["name"]["label"] == "Large_Needle_Driver"

    from engine.cli_commands import cmd_export

    out = tmp_path / "x.jsonl"
    args = Namespace(case=str(video), jsonl=str(out), csv=str(tmp_path / "x.csv"), model_id=None, task=None, stride=1.0)
    assert cmd_export(args) == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    frames = [r for r in lines if r["type"] == "frame"]
    segments = [r for r in lines if r["type"] == "segment"]
    assert [r["action"] for r in frames] == [
        "picking_up_the_needle",
        "picking_up_the_needle",
        "pulling_the_needle_out_of_the_tissue",
    ]
    assert all("cvs" not in r for r in frames)
    assert segments and all("action" in s and "phase" not in s for s in segments)
    csv_lines = (tmp_path / "x.csv").read_text().splitlines()
    assert csv_lines[0].endswith(",action,action_smoothed")
    assert csv_lines[1].split(",")[-2:] == ["picking_up_the_needle", "picking_up_the_needle"]
    assert "action segments" in capsys.readouterr().out
