"""The viewer follows the engine's model profile: a Surg-R1 analysis (three questions per frame) is
read back merged — each question in its own panel section, the localisation boxes mapped to the
video's pixels on the canvas, the phase question's phase on the timelines — streamed questions
land in their own sections, the sweep's pace is in the status bar, and Preferences choose the
profile, the concurrency and the servers."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtWidgets import QDialog

from app.engine_link import EngineLink
from app.engine_worker import profile_info
from app.export.clip import ClipOptions, clip_for_video
from app.export.report import report_for_video
from app.main_window import PreferencesDialog, SurgviewWindow
from engine.profiles import SURG_R1_VERSION, get_profile
from engine.store import CaseStore, FrameResult

MODEL = "openai:surg-r1@test"
NOTE = "profile surg-r1 (default for a model called 'Surg-R1-7B'; choose with --profile)"
WIDTH, HEIGHT = 320, 180  # the synthetic case; Surg-R1 sees 840x476


def phase_answer(phase: str) -> str:
    return (
        "<think> Level 1: A grasper and a hook are visible. Level 2: The hook dissects the cystic duct. "
        f"Level 3: The phase is {phase}. </think><answer>{phase}</answer>"
    )


TRIPLET = (
    "<think> This is a Level 2 task. Level 1: A hook is visible. Level 2: The hook dissects the cystic duct. "
    "</think><answer>hook, dissect, cystic duct</answer>"
)
TOOLS = (
    "<think> Level 1: A grasper and a hook are visible. </think>"
    "<answer>Grasper (84,42), (252,210), Hook (420,238), (588,406)</answer>"
)
PARTIAL_FRAME = 25  # phase and action stored, no tools answer yet


def put(store: CaseStore, frame: int, task: str, text: str) -> None:
    store.put_result(FrameResult.from_text(frame, MODEL, SURG_R1_VERSION, task, text))


def fill_surg_r1(video: Path) -> None:
    """A Surg-R1 analysis every second: Calot triangle dissection, then clipping from 30 s."""
    with CaseStore.for_video(video, fps=25.0, frame_count=1500) as store:
        for frame in range(0, 1500, 25):
            put(store, frame, "phase", phase_answer("Calot Triangle Dissection" if frame < 750 else "Clipping Cutting"))
            put(store, frame, "triplet", TRIPLET)
            if frame != PARTIAL_FRAME:
                put(store, frame, "localisation", TOOLS)


def engine_ready(window: SurgviewWindow, profile: str = "surg-r1", note: str = NOTE) -> None:
    """What the engine process says once its model is loaded (no process is started here)."""
    window.engine.ready.emit(MODEL, "remote:127.0.0.1:8000", profile_info(get_profile(profile), note))


@pytest.fixture
def surg_r1_window(open_viewer, video, data_home) -> SurgviewWindow:
    fill_surg_r1(video)
    window = open_viewer(video)
    engine_ready(window)
    return window


def boxes(window: SurgviewWindow) -> dict[str, tuple[float, ...]]:
    chain = window.canvas.chain
    assert chain is not None and chain.perception is not None
    return {s.name.label: tuple(round(v, 1) for v in s.box) for s in chain.perception.instruments if s.box}


def test_a_stored_surg_r1_frame_shows_each_question_and_draws_the_mapped_boxes(qtbot, surg_r1_window):
    window = surg_r1_window
    assert window.playhead.displayed == 0 and window.prompt_version == SURG_R1_VERSION
    panel = window.panel
    assert [title for _, title in panel.questions] == ["Phase", "Action", "Tools"]
    assert all(panel.question_heading(task).isVisibleTo(panel) for task, _ in panel.questions)
    assert panel.question_state("phase") == "complete"
    assert panel.section_text("answer", "phase") == "Calot Triangle Dissection"
    assert panel.section_text("answer", "localisation").startswith("Grasper (84,42)")
    # The canvas draws the merged record: the Tools question's boxes, from 840x476 to 320x180 pixels,
    # with the phase question's phase.
    sx, sy = WIDTH / 840, HEIGHT / 476
    expected = {
        "Grasper": tuple(round(v, 1) for v in (84 * sx, 42 * sy, 252 * sx, 210 * sy)),
        "Hook": tuple(round(v, 1) for v in (420 * sx, 238 * sy, 588 * sx, 406 * sy)),
    }
    assert boxes(window) == expected
    assert window.canvas.chain.context.phase.label == "CalotTriangleDissection"
    assert window.canvas.chain.relations.triplets[0].verb.label == "dissect"
    # The status bar names the profile; its tooltip says why it was chosen.
    assert window.model_label.text() == f"{MODEL} · surg-r1"
    assert NOTE in window.model_label.toolTip() and "Phase, Action, Tools" in window.model_label.toolTip()

    window.seek(PARTIAL_FRAME)
    qtbot.waitUntil(lambda: window.panel.frame == PARTIAL_FRAME, timeout=10000)
    assert panel.question_state("localisation") == "not answered yet"
    assert panel._status.text().endswith("2 of 3 answered")
    assert window.canvas.chain.context.phase.label == "CalotTriangleDissection"  # what is known is drawn


def test_timelines_read_the_merged_rows(surg_r1_window):
    window = surg_r1_window
    phases = [(label, start) for start, _, label in window.timeline.track_runs("phase")]
    assert [label for label, _ in phases] == ["CalotTriangleDissection", "ClippingCutting"]
    assert 700 <= phases[1][1] <= 750
    assert window.timeline.track_runs("tool:Grasper")  # tools from the localisation question
    assert window.timeline.track_runs("confidence")  # every analysed frame, weakest status over questions


def test_a_frame_with_a_question_missing_is_asked_for(qtbot, surg_r1_window, monkeypatch):
    window = surg_r1_window
    asked: list[int] = []
    monkeypatch.setattr(EngineLink, "alive", property(lambda self: True))
    monkeypatch.setattr(window.engine, "request", asked.append)
    window.seek(50)  # all three answered: nothing to ask
    qtbot.waitUntil(lambda: window.playhead.displayed == 50, timeout=10000)
    qtbot.wait(300)
    assert asked == []
    window.seek(PARTIAL_FRAME)
    qtbot.waitUntil(lambda: asked == [PARTIAL_FRAME], timeout=10000)


def test_questions_stream_into_their_own_sections(qtbot, surg_r1_window, video):
    window = surg_r1_window
    frame = 110  # not analysed
    window.seek(frame)
    qtbot.waitUntil(lambda: window.playhead.displayed == frame and window.panel.frame is None, timeout=10000)
    engine = window.engine
    engine.started.emit(frame, "phase", True)
    engine.started.emit(frame, "localisation", True)
    text = phase_answer("Calot Triangle Dissection")
    for i in range(0, max(len(text), len(TOOLS)), 7):
        engine.pieces.emit(frame, "phase", text[i : i + 7])
        engine.pieces.emit(frame, "localisation", TOOLS[i : i + 7])
    panel = window.panel
    panel.flush()
    assert panel.frame == frame and panel.question_state("triplet") == "not answered yet"
    assert panel.section_text("answer", "phase") == "Calot Triangle Dissection"
    assert panel.section_text("answer", "localisation").startswith("Grasper (84,42)")

    with CaseStore.for_video(video) as store:  # the child commits before it says done
        put(store, frame, "phase", text)
    engine.done.emit(frame, {"task": "phase", "frame_complete": False, "status": "complete"})
    assert panel.question_state("phase") == "complete"
    assert panel.question_state("localisation") == "streaming"  # still streaming: left alone
    assert window.canvas.chain.context.phase.label == "CalotTriangleDissection"
    assert window.canvas.chain.perception is None or not boxes(window)

    with CaseStore.for_video(video) as store:
        put(store, frame, "localisation", TOOLS)
    engine.done.emit(frame, {"task": "localisation", "frame_complete": False, "status": "malformed"})
    assert panel.raw_text == f"Phase:\n{text}\n\nTools:\n{TOOLS}"  # read back from the store
    assert set(boxes(window)) == {"Grasper", "Hook"}


def test_the_status_bar_shows_the_sweeps_pace_and_time_left(surg_r1_window):
    window = surg_r1_window
    window.engine.rate.emit(2.5, 125.0)
    assert window.rate_label.text() == "2.50 frames/s · 2:05 left"
    window.engine.done.emit(5000, {"task": "phase", "tokens": 101, "total_s": 2.1, "first_token_s": 0.1})
    window.engine.rate.emit(3.0, 3725.0)
    assert window.rate_label.text() == "50 tokens/s · 3.00 frames/s · 1:02:05 left"
    window.engine.rate.emit(3.0, None)  # not known yet
    assert window.rate_label.text() == "50 tokens/s · 3.00 frames/s"
    window.engine.idle.emit()
    assert window.rate_label.text() == "50 tokens/s"


def test_the_profile_named_by_the_model_says_so_without_a_default_note(open_viewer, video):
    window = open_viewer(video)
    engine_ready(window, "surgview", "profile surgview (a surgview model)")
    assert window.panel.questions == (("frame_analysis", "Frame analysis"),)
    assert window.model_label.text().endswith(" · surgview")
    assert "default" not in window.statusBar().currentMessage()


def test_preferences_save_profile_concurrency_and_servers_into_the_engine_spec(qtbot, settings, monkeypatch):
    window = SurgviewWindow(settings=settings, start_engine=False)
    qtbot.addWidget(window)
    restarts: list[dict] = []
    monkeypatch.setattr(window, "restart_engine", lambda: restarts.append(window.engine_spec))

    def fill(dialog: PreferencesDialog) -> int:
        assert dialog.profile.profile() == "" and dialog.concurrency.value() == 16  # Automatic, 16
        assert "Automatic" in dialog.profile.combo.currentText()
        dialog.backend.setCurrentText("openai")
        dialog.model.setText("surg-r1")
        dialog.url.setText("http://gpu1:8000/v1, http://gpu2:8000/v1")
        dialog.profile.set_profile("surg-r1")
        assert dialog.profile.about.text() == get_profile("surg-r1").description
        dialog.concurrency.setValue(48)
        dialog.accept()
        return dialog.result()

    monkeypatch.setattr(PreferencesDialog, "exec", fill)
    window.preferences_dialog()
    spec = window.engine_spec
    assert (spec["kind"], spec["profile"], spec["concurrency"]) == ("openai", "surg-r1", 48)
    assert spec["url"] == "http://gpu1:8000/v1" and spec["urls"] == ["http://gpu1:8000/v1", "http://gpu2:8000/v1"]
    assert restarts == [spec]  # the engine restarts with them

    def check(dialog: PreferencesDialog) -> int:  # the next opening shows what was saved
        assert dialog.profile.profile() == "surg-r1" and dialog.concurrency.value() == 48
        assert dialog.url.text() == "http://gpu1:8000/v1 http://gpu2:8000/v1"
        dialog.profile.set_profile("")  # back to Automatic, one server
        dialog.url.setText("http://gpu1:8000/v1")
        dialog.accept()
        return dialog.result()

    monkeypatch.setattr(PreferencesDialog, "exec", check)
    window.preferences_dialog()
    spec = window.engine_spec
    assert spec["profile"] is None and spec["url"] == "http://gpu1:8000/v1" and "urls" not in spec
    assert len(restarts) == 2


def test_preferences_refuse_a_bad_server_url(qtbot, settings):
    dialog = PreferencesDialog(settings)
    qtbot.addWidget(dialog)
    dialog.url.setText("http://gpu1:8000/v1 gpu2:8000")
    dialog.accept()
    assert dialog.result() != QDialog.DialogCode.Accepted and "gpu2:8000" in dialog.error.text()
    assert not settings.value("engine/url")


def test_report_and_clip_of_a_surg_r1_analysis(tmp_path, video, data_home):
    fill_surg_r1(video)
    with CaseStore.for_video(video) as store:
        store.add_bookmark(PARTIAL_FRAME, "tools not answered")
    out = tmp_path / "report.html"
    data = report_for_video(video, out)
    html = out.read_text(encoding="utf-8")
    assert [p.phase for p in data.phases] == ["CalotTriangleDissection", "ClippingCutting"]
    assert data.summary.profile == "surg-r1" and data.summary.task == "phase, triplet, localisation"
    assert "Calot Triangle Dissection" in html and "Phase · Level 3 (Context)" in html
    (entry,) = data.bookmarks
    assert entry.levels[-1] == ("Tools", "not answered", "")
    stats = clip_for_video(video, tmp_path / "clip.mp4", ClipOptions(0, 9))
    assert stats.frames == 10
