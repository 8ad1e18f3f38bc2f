"""The viewer opens a suturing case as one: its procedure chosen on the command line (remembered), the
action track drawn with its segments and named in the legend, no CVS rows or badge; Case ▸ Procedure
switches a case to a bypass (phase and step tracks) or back to a cholecystectomy (CVS rows again)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import palette
from app.engine_worker import WorkerSpec, _Engine, profile_info
from app.main import main as surgview_main
from engine.case_procedure import case_procedure
from engine.profiles import get_profile
from engine.store import CaseStore, FrameResult
from tests.engine.test_procedure_results import ACTIONS, RARP, rarp_answer, write_video

MODEL = "suturing@1"
FPS, STEP = 10, 10  # one answer a second
PATTERN = [a for a in ACTIONS for _ in range(4)]  # four seconds of each action, in the natural order
NAMES = [
    "picking_up_the_needle",
    "positioning_the_needle_tip",
    "pushing_the_needle_through_the_tissue",
    "pulling_the_needle_out_of_the_tissue",
]


@pytest.fixture
def suturing_video(tmp_path, data_home) -> Path:
    """A 16 s case whose store holds a suturing model's answers, one a second (as an engine writes them)."""
    video = tmp_path / "suturing.mp4"
    frames = STEP * len(PATTERN)
    write_video(video, frames, fps=FPS)
    with CaseStore.for_video(video, fps=float(FPS), frame_count=frames) as store:
        for i, action in enumerate(PATTERN):
            store.put_result(FrameResult.from_text(STEP * i, MODEL, RARP, "action", rarp_answer(action)))
    return video


def engine_opens_as_rarp(window, video: Path) -> None:
    """What the engine process says when it opens this case: ready with its base profile, then the case's
    store keys in the case's procedure (no process is started here)."""
    window.engine.ready.emit(MODEL, "cpu", profile_info(get_profile(), "profile surgview (a surgview model)"))
    rarp = get_profile("surgview", procedure="rarp")
    info = {"prompt_version": rarp.version, "profile": rarp.name, "tasks": list(rarp.tasks), "procedure": "rarp"}
    window.engine.case_opened.emit(str(video), info)


def test_a_suturing_case_shows_its_action_track_and_no_cvs(qtbot, open_viewer, suturing_video, capsys):
    assert surgview_main([str(suturing_video), "--procedure", "RARP", "--info"]) == 0  # remembered, no window
    assert "case suturing.mp4" in capsys.readouterr().out
    assert case_procedure(suturing_video).procedure.name == "rarp"

    window = open_viewer(suturing_video)
    assert window.procedures.procedure.name == "rarp" and window.procedures.actions["rarp"].isChecked()
    engine_opens_as_rarp(window, suturing_video)
    assert window.session.profile.tasks == ("action",) and window.session.profile.version == RARP
    assert window.panel.questions == (("action", "Action"),)  # the session asks the procedure's default task

    timeline = window.timeline
    qtbot.waitUntil(
        lambda: "label:action" in timeline.track_keys() and bool(timeline.track_runs("label:action")), timeout=5000
    )
    keys = timeline.track_keys()
    assert not any(k.startswith("cvs") for k in keys) and "phase" not in keys and "raw" not in keys
    assert not any(k.startswith("reviewed") for k in keys)  # nor the reviewer's cholecystectomy phase and CVS rows
    assert keys.index("label:action") < keys.index("raw:action") < keys.index("tool:Prograsp_Forceps")
    assert "tool:Large_Needle_Driver" in keys
    runs = timeline.track_runs("label:action")
    assert [label for *_, label in runs] == NAMES
    assert runs[0][0] == 0 and runs[-1][1] == STEP * len(PATTERN)
    assert timeline.colour_of("label:action", NAMES[2]) == palette.OKABE_ITO[2]
    assert timeline.cvs_statement() is None

    legend = timeline.legend_text()
    assert "Action" in legend and "Pushing the needle through the tissue" in legend and "Other" in legend
    assert "CVS" not in legend and "Calot" not in legend and "met (reviewer)" not in legend
    assert "Large Needle Driver" in legend  # the procedure's instruments, by their display names

    window.seek(STEP * 9)  # an analysed frame: its record has an action, and no phase or CVS to badge
    qtbot.waitUntil(lambda: window.canvas.chain is not None and window.playhead.displayed == STEP * 9, timeout=5000)
    qtbot.waitUntil(lambda: timeline.playhead_phase() == "Pushing the needle through the tissue", timeout=5000)
    record = window.session.record(STEP * 9)
    assert record is not None and record.action is not None and record.action.label == NAMES[2]
    assert window.canvas.chain.context is None and window.canvas.cvs_doubt is None
    assert {s.name.label for s in window.canvas.chain.perception.instruments} == {
        "Large_Needle_Driver",
        "Prograsp_Forceps",
    }


def test_case_procedure_menu_switches_the_rows_and_is_remembered(qtbot, open_viewer, suturing_video):
    window = open_viewer(suturing_video)
    assert window.procedures.procedure.name == "cholecystectomy"  # no choice, no layout hint: the default
    assert "Case ▸ Procedure" in window.statusBar().currentMessage()
    assert "cvs1" in window.timeline.track_keys()

    window.procedures.actions["bypass"].trigger()
    assert case_procedure(suturing_video).procedure.name == "bypass"
    keys = window.timeline.track_keys()
    assert keys.index("label:phase") < keys.index("label:step") and "cvs1" not in keys
    assert "Phase" in window.timeline.legend_text() and "Step" in window.timeline.legend_text()

    window.procedures.actions["rarp"].trigger()
    assert "label:action" in window.timeline.track_keys() and "label:step" not in window.timeline.track_keys()

    window.procedures.actions["cholecystectomy"].trigger()
    keys = window.timeline.track_keys()
    assert {"phase", "raw", "cvs1", "cvs2", "cvs3"} <= set(keys) and "label:action" not in keys
    assert {"reviewed", "reviewed_c1"} <= set(keys)  # the reviewer's rows are back with CVS
    assert case_procedure(suturing_video).source == "chosen"


def test_the_engine_asks_a_case_its_procedures_default_question(suturing_video):
    spec = WorkerSpec.from_dict({"kind": "openai", "url": "http://127.0.0.1:9/v1", "model": "x", "profile": "surgview"})
    engine = _Engine(None, spec, None, get_profile())  # type: ignore[arg-type]  # no backend is used here
    profile, note = engine.case_profile(suturing_video, None)
    assert profile.version == get_profile().version and "default" in note
    assert surgview_main([str(suturing_video), "--procedure", "suturing", "--info"]) == 0
    profile, note = engine.case_profile(suturing_video, None)
    assert (profile.version, profile.tasks) == (RARP, ("action",)) and "chosen" in note
    assert "which suturing action is being performed" in profile.questions[0].prompt


def test_an_unknown_procedure_on_the_command_line_is_one_line(suturing_video, capsys):
    assert surgview_main([str(suturing_video), "--procedure", "appendectomy", "--info"]) != 0
    err = capsys.readouterr().err
    assert "unknown procedure 'appendectomy'" in err and "Traceback" not in err


def test_a_synthetic_suturing_case_opens_as_one_from_its_layout(qtbot, open_viewer, tmp_path, data_home):
    """``surgview-train synth --procedure rarp``'s case, in SAR-RARP50's layout, answered every second with its
    own ground truth (a perfect model): the layout says suturing, and the action track follows the truth."""
    from engine.procedures import get_procedure
    from train.synth.rarp import RarpConfig, generate_rarp

    generate_rarp(tmp_path / "sar", RarpConfig(cases=1, minutes=0.25, width=160, height=90, seed=3))
    (video,) = (tmp_path / "sar").rglob("video_left.avi")
    truth = {}
    for line in (video.parent / "action_discrete.txt").read_text().split():
        frame, action = line.split(",")
        truth[int(frame)] = int(action)
    vocab = get_procedure("rarp").vocabulary("action")
    by_id = {label.id: label for label in vocab}
    answered = {f: by_id[a] for f, a in truth.items() if f % 60 == 0}
    with CaseStore.for_video(video, fps=60.0, frame_count=900) as store:
        for frame, label in answered.items():
            store.put_result(FrameResult.from_text(frame, MODEL, RARP, "action", rarp_answer(label.display)))

    window = open_viewer(video)
    assert window.procedures.procedure.name == "rarp" and window.procedures.current.source == "layout"
    assert "dataset layout" in window.statusBar().currentMessage()
    engine_opens_as_rarp(window, video)
    timeline = window.timeline
    qtbot.waitUntil(lambda: bool(timeline.track_runs("raw:action")), timeout=5000)
    raw = timeline.track_runs("raw:action")
    for frame, label in answered.items():  # every analysed second reads as the truth says
        assert next(name for start, end, name in raw if start <= frame < end) == label.name
    assert timeline.track_runs("label:action") and not any(k.startswith("cvs") for k in timeline.track_keys())


def test_a_bypass_timeline_draws_phases_and_steps_and_names_the_steps_drawn(view):
    from engine.procedures import get_procedure
    from engine.timeline import TimelineRow, build_timelines

    bypass = get_procedure("bypass")
    rows = [
        TimelineRow(25 * i, "gastric_pouch_creation" if i < 30 else "omentum_division", (None,) * 3, None)
        for i in range(60)
    ]
    rows = [
        TimelineRow(
            r.frame, r.phase, r.cvs, r.tools, step="s8_vertical_stapling" if r.frame < 750 else "s13_omental_section"
        )
        for r in rows
    ]
    view.set_procedure(bypass)
    view.set_timelines(build_timelines(rows, 25.0, 1500, tools=bypass.vocabulary("tool")))
    keys = view.track_keys()
    assert keys[:4] == ["label:phase", "raw:phase", "label:step", "raw:step"] and "cvs1" not in keys
    assert [label for *_, label in view.track_runs("label:phase")] == ["gastric_pouch_creation", "omentum_division"]
    assert [label for *_, label in view.track_runs("label:step")] == ["s8_vertical_stapling", "s13_omental_section"]
    assert view.colour_of("label:step", "s13_omental_section") == palette.GLASBEY[13]
    assert view.colour_of("label:phase", "omentum_division") == palette.TOL_LIGHT12[2]
    legend = view.legend_text()
    assert "Gastric pouch creation" in legend and "Disassembling" in legend  # the 12 phases: all of them
    assert "Vertical stapling" in legend and "Trocar removal" not in legend  # the 46 steps: those drawn
    view.set_playhead(800)
    assert view.playhead_phase() == "Omentum division"


def test_the_engine_process_opens_a_case_chosen_as_suturing_with_its_questions(qtbot, suturing_video):
    """A real engine process (an OpenAI-compatible client, connecting only when it generates) told the case
    is suturing asks it the action question under the procedure's store version."""
    import socket

    from app.engine_link import EngineLink
    from engine.case_procedure import set_case_procedure

    set_case_procedure(suturing_video, "rarp")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"  # closed once the block ends
    link = EngineLink()
    try:
        with qtbot.waitSignal(link.ready, timeout=60_000):
            link.start({"kind": "openai", "model": "m", "url": url, "profile": "surgview", "give_up_s": 1.0})
        with qtbot.waitSignal(link.case_opened, timeout=30_000) as opened:
            link.open_case(str(suturing_video))
        info = opened.args[1]
        assert (info["prompt_version"], info["tasks"], info["procedure"]) == (RARP, ["action"], "rarp")
        assert "chosen for this case" in info["procedure_note"]
        assert link.profile["version"] == get_profile().version  # the engine's own profile is unchanged
    finally:
        link.stop()
