"""Reopening a case puts the reviewer back on the frame they left, with their selection."""

from __future__ import annotations

import json

from PySide6.QtCore import QSettings

from app.review_memory import KEY, MAX_CASES, ReviewMemory, ReviewSpot


def test_a_reopened_case_shows_the_frame_and_selection_it_was_left_with(qtbot, open_viewer, settings, video, tmp_path):
    window = open_viewer(video)
    assert window.playhead.displayed == 0 and window.case.selection is None  # never opened before
    window.seek(777)
    qtbot.waitUntil(lambda: window.playhead.displayed == 777, timeout=10000)
    window.timeline.selectionChanged.emit((250, 499))  # as a Shift+drag announces it
    assert window.case.selection == (250, 499)
    window.close()

    moved = tmp_path / "renamed.mp4"  # the same video, renamed: still recognised
    moved.write_bytes(video.read_bytes())
    again = open_viewer(moved, QSettings(settings.fileName(), QSettings.Format.IniFormat))
    qtbot.waitUntil(lambda: again.playhead.displayed == 777, timeout=10000)
    assert again.case.selection == (250, 499) and again.timeline.selection == (250, 499)
    assert again.canvas.index == 777


def test_the_place_is_kept_while_playing_without_closing(qtbot, open_viewer, settings, video):
    """A crash loses at most the last couple of seconds of where the reviewer was."""
    window = open_viewer(video)
    window.seek(300)
    qtbot.waitUntil(lambda: window.playhead.displayed == 300, timeout=10000)
    fresh = ReviewMemory(QSettings(settings.fileName(), QSettings.Format.IniFormat))
    fingerprint = window.store.case_info().fingerprint
    qtbot.waitUntil(lambda: (settings.sync(), fresh.recall(fingerprint))[1] == ReviewSpot(300), timeout=10000)


def test_damaged_or_outdated_memory_opens_at_the_start(qtbot, open_viewer, settings, video):
    settings.setValue(KEY, "{not json")
    window = open_viewer(video)
    assert window.playhead.displayed == 0 and window.case.selection is None
    fingerprint = window.store.case_info().fingerprint
    window.close()
    # a spot past the end (another video with the same fingerprint is impossible; a hand edit is not)
    settings.setValue(KEY, json.dumps({fingerprint: {"frame": 10**6, "selection": [1400, 10**6]}}))
    again = open_viewer(video)
    qtbot.waitUntil(lambda: again.playhead.displayed == 1499, timeout=10000)
    assert again.case.selection == (1400, 1499)


def test_only_the_most_recent_cases_are_kept(settings):
    memory = ReviewMemory(settings)
    for n in range(MAX_CASES + 5):
        memory.remember(f"case{n}", ReviewSpot(n, (0, n)))
    assert memory.recall("case0") is None
    assert memory.recall(f"case{MAX_CASES + 4}") == ReviewSpot(MAX_CASES + 4, (0, MAX_CASES + 4))
    assert len(json.loads(settings.value(KEY))) == MAX_CASES


def test_clamping_keeps_what_fits():
    assert ReviewSpot(5, (9, 2)).clamped(100) == ReviewSpot(5, (2, 9))
    assert ReviewSpot(500, (200, 300)).clamped(100) == ReviewSpot(99, None)
    assert ReviewSpot(-3, (-5, 10)).clamped(100) == ReviewSpot(0, (0, 10))
    assert ReviewSpot(3).clamped(0) is None
