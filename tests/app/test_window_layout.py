"""The window's layout: the Reasoning dock keeps its width whatever the answer's length (the video
never resizes while stepping), and the default dock sizes at common screen sizes show the chain."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QPoint, QRect, Qt

from app.engine_worker import profile_info
from app.main_window import SurgviewWindow
from app.window_layout import DEFAULT_SIZE, apply_default_layout, dock_sizes
from engine.profiles import get_profile
from engine.store import CaseStore, FrameResult

MODEL = "local:tiny@test"
SHORT = (
    "<think>\nLevel 1 (Perception): Instruments: Grasper.\nLevel 2 (Relation): Triplets: grasper retract gallbladder.\n"
    "Level 3 (Context): Phase: Preparation. CVS: C1 not met, C2 not met, C3 not met. Safety: fine.\n"
    "</think>\n<answer>Preparation</answer> and then some text after the answer"  # malformed: a longer status
)
LONG_WORD = "Cholecystectomyretractor" * 8  # one unbreakable name far wider than the dock (flagged unknown)
LONG = (
    "<think>\nLevel 1 (Perception): Instruments: Grasper [10, 10, 120, 90], Hook [200, 40, 320, 160], "
    + LONG_WORD
    + ". "
    + "The grasper holds the fundus up while the hook clears the fat of the hepatocystic triangle. " * 260
    + f"{LONG_WORD}\nLevel 2 (Relation): Triplets: grasper retract gallbladder, hook dissect cystic-duct. "
    + "The hook dissects along the cystic duct. " * 10
    + "\nLevel 3 (Context): Phase: Calot Triangle Dissection. CVS: C1 met, C2 not met, C3 not met. "
    + "Safety: the hook works close to the duct; keep the critical view in sight. " * 6
    + f"\n</think>\n<answer>Calot Triangle Dissection {LONG_WORD}</answer>"
)


def fill_alternating(video: Path, frames: range) -> None:
    """Very short and very long answers on neighbouring frames (the long one past what a section shows,
    so its level carries a note of the characters not shown)."""
    version = get_profile().version
    with CaseStore.for_video(video, fps=25.0, frame_count=1500) as store:
        for frame in frames:
            text = LONG if frame % 2 else SHORT
            store.put_result(FrameResult.from_text(frame, MODEL, version, "frame_analysis", text))


def settled_widths(qtbot, window: SurgviewWindow) -> tuple[int, int]:
    """The Reasoning dock's and the video's widths once the window's first layout has settled: the
    layout that follows showing a window resized before it was shown can come a few event-loop turns
    later on a loaded machine, so two readings 100 ms apart must agree."""
    readings: list[tuple[int, int]] = []

    def stable() -> bool:
        qtbot.wait(100)
        readings.append((window.reasoning_dock.width(), window.canvas.width()))
        return len(readings) >= 2 and readings[-1] == readings[-2]

    qtbot.waitUntil(stable, timeout=5000)
    return readings[-1]


def test_stepping_over_answers_of_different_lengths_keeps_the_dock_and_video_width(qtbot, open_viewer, video):
    fill_alternating(video, range(0, 12))
    window = open_viewer(video)
    window.engine.ready.emit(MODEL, "cpu", profile_info(get_profile(), "profile surgview"))
    window.seek(0)
    qtbot.waitUntil(lambda: window.panel.frame == 0 and window.canvas.index == 0, timeout=5000)
    dock_width, canvas_width = settled_widths(qtbot, window)
    window.activateWindow()
    window.canvas.setFocus()
    for frame in range(1, 8):
        qtbot.keyClick(window.canvas, Qt.Key.Key_Right)
        qtbot.waitUntil(lambda f=frame: window.panel.frame == f and window.canvas.index == f, timeout=5000)
        qtbot.wait(20)  # layouts settle
        assert window.reasoning_dock.width() == dock_width, f"frame {frame}"
        assert window.canvas.width() == canvas_width, f"frame {frame}"


TYPICAL = (
    "<think>\nLevel 1 (Perception): Instruments: Grasper [412, 88, 640, 300], Hook [210, 260, 380, 470]. "
    "Anatomy: gallbladder, cystic duct, liver.\n"
    "Level 2 (Relation): Triplets: grasper retract gallbladder, hook dissect cystic-duct.\n"
    "Level 3 (Context): Phase: Calot Triangle Dissection. CVS: C1 met, C2 not met, C3 not met. "
    "Safety: the hook works close to the cystic duct; the hepatocystic triangle is not yet cleared.\n"
    "</think>\n<answer>Calot Triangle Dissection</answer>"
)


def window_at(qtbot, settings, video: Path, size: tuple[int, int] | None) -> SurgviewWindow:
    """A window with no saved geometry (the default layout), at ``size`` when given, on the case
    with a typical three-level chain on frame 0."""
    version = get_profile().version
    with CaseStore.for_video(video, fps=25.0, frame_count=1500) as store:
        store.put_result(FrameResult.from_text(0, MODEL, version, "frame_analysis", TYPICAL))
    window = SurgviewWindow(settings=settings, start_engine=False)
    qtbot.addWidget(window)
    if size is not None:
        apply_default_layout(window, *size)
    window.show()
    qtbot.waitExposed(window)
    window.open_case(video)
    qtbot.waitUntil(lambda: window.store is not None and window.canvas.index is not None, timeout=10000)
    window.engine.ready.emit(MODEL, "cpu", profile_info(get_profile(), "profile surgview"))
    window.seek(0)
    qtbot.waitUntil(lambda: window.panel.frame == 0 and bool(window.panel.section_text("answer")), timeout=5000)
    qtbot.wait(50)  # layouts settle
    return window


def in_view(window: SurgviewWindow, section: str) -> bool:
    """Whether the panel's section lies wholly within its scroll area's viewport, unscrolled."""
    panel = window.panel
    widget = panel._views[0].sections[section]
    viewport = panel._scroll.viewport()
    top_left = widget.mapTo(viewport, QPoint(0, 0))
    rect = QRect(top_left, widget.size())
    return panel._scroll.verticalScrollBar().value() == 0 and viewport.rect().contains(rect)


def test_the_default_layout_at_1440_by_900_shows_the_answer(qtbot, settings, data_home, video):
    window = window_at(qtbot, settings, video, None)
    assert window.size().toTuple() == DEFAULT_SIZE
    reasoning, _, timelines = dock_sizes(*DEFAULT_SIZE)
    assert abs(window.reasoning_dock.width() - reasoning) <= 0.03 * DEFAULT_SIZE[0]
    assert abs(window.timeline_dock.height() - timelines) <= 0.03 * DEFAULT_SIZE[1]
    assert window.canvas.width() > window.reasoning_dock.width()  # the video keeps the larger part
    assert in_view(window, "answer")


def test_the_default_layout_at_1280_by_720_shows_level_3(qtbot, settings, data_home, video):
    window = window_at(qtbot, settings, video, (1280, 720))
    assert window.size().toTuple() == (1280, 720)
    assert 0.30 * 1280 <= window.reasoning_dock.width() <= 0.36 * 1280
    assert in_view(window, "level3")
