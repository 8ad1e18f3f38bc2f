"""The canvas's CVS badge as a surgeon reads it: "all three met" is a green light only within an
established episode (engine.cvs_assessment); an isolated frame's "all met" says "doubtful", a frame
whose analysed neighbours both answer otherwise says "neighbours disagree", never plain green."""

from __future__ import annotations

from pathlib import Path

from app import palette
from app.engine_worker import profile_info
from app.widgets.overlay_painter import cvs_badge_parts
from engine.chain import CvsState
from engine.profiles import get_profile
from engine.store import CaseStore, FrameResult

MODEL = "local:tiny@test"
ALL_MET = "C1 met, C2 met, C3 met"
NOT_MET = "C1 met, C2 not met, C3 not met"


def chain(cvs: str) -> str:
    return (
        "<think>\nLevel 1 (Perception): Instruments: Grasper [10, 10, 120, 90].\n"
        "Level 2 (Relation): Triplets: grasper retract gallbladder.\n"
        f"Level 3 (Context): Phase: Calot Triangle Dissection. CVS: {cvs}. Safety: fine.\n"
        "</think>\n<answer>Calot Triangle Dissection</answer>"
    )


def said(frame: int) -> str:
    """Frame 0: an isolated 'all met'; 250–500 (11 frames, 10 s): established; 550 alone between 'not met'."""
    if frame == 0 or 250 <= frame <= 500 or frame == 550:
        return ALL_MET
    return NOT_MET


def fill(video: Path) -> None:
    version = get_profile().version
    with CaseStore.for_video(video, fps=25.0, frame_count=1500) as store:
        for frame in range(0, 750, 25):
            store.put_result(FrameResult.from_text(frame, MODEL, version, "frame_analysis", chain(said(frame))))


def test_the_badge_is_green_only_within_an_established_episode(qtbot, open_viewer, video):
    fill(video)
    window = open_viewer(video)
    window.engine.ready.emit(MODEL, "cpu", profile_info(get_profile(), "profile surgview"))
    qtbot.waitUntil(lambda: window.session.cvs_episodes != (), timeout=5000)

    def at(frame: int) -> str | None:
        window.seek(frame)
        qtbot.waitUntil(lambda: window.canvas.index == frame and window.canvas.chain is not None, timeout=5000)
        return window.canvas.cvs_doubt

    assert at(375) is None  # within the established episode: the green light
    assert at(0) == "doubtful · neighbours disagree"  # isolated, at the start of the case
    assert at(550) == "doubtful · neighbours disagree"
    assert at(525) == "neighbours disagree"  # 'not met' between two 'all met' frames
    assert at(100) is None  # 'not met' like its neighbours: nothing to say
    assert not window.canvas.grab().isNull()  # the marked badge paints


def test_a_doubtful_badge_never_shows_the_green_light():
    met = (CvsState.MET, CvsState.MET, CvsState.MET)
    green = palette.CVS_COLORS["met"]
    plain = cvs_badge_parts(met)
    assert [c for _, c in plain[1:]] == [green] * 3
    for doubt in ("doubtful", "neighbours disagree"):
        parts = cvs_badge_parts(met, doubt)
        assert green not in [c for _, c in parts]
        assert parts[-1] == (doubt, palette.THEME_WARNING)


def test_all_met_just_before_clipping_is_doubtful_on_the_badge_as_in_the_statement(qtbot, open_viewer, video):
    """A case clipped without a stable view: one frame before the clip says all three met, and so do the frames of
    clipping. The statement says CVS was not established before clipping; the badge on that frame must not show
    the green light the statement withholds (it did: its run, continued during clipping, counted as stable)."""
    version = get_profile().version
    with CaseStore.for_video(video, fps=25.0, frame_count=1500) as store:
        for frame in range(0, 750, 25):
            phase = "Calot Triangle Dissection" if frame < 500 else "Clipping Cutting"
            cvs = ALL_MET if frame >= 475 else NOT_MET
            text = chain(cvs).replace("Calot Triangle Dissection", phase)
            store.put_result(FrameResult.from_text(frame, MODEL, version, "frame_analysis", text))
    window = open_viewer(video)
    window.engine.ready.emit(MODEL, "cpu", profile_info(get_profile(), "profile surgview"))
    qtbot.waitUntil(lambda: window.session.cvs_episodes != (), timeout=5000)
    assert window.session.timelines.first_clip_frame() in range(476, 501)

    def at(frame: int) -> str | None:
        window.seek(frame)
        qtbot.waitUntil(lambda: window.canvas.index == frame and window.canvas.chain is not None, timeout=5000)
        return window.canvas.cvs_doubt

    assert at(475) == "doubtful"  # the one frame before the clip
    assert at(600) is None  # all met during clipping on a stable run: said, not doubted
