"""While the video plays, the AI's latest analysed frame stays on screen, marked with its age: the
canvas keeps its boxes between analysed frames (no blinking) under "from … · x s ago", the panel
shows that frame's answers titled "held" with the same age, and nothing is presented as the frame
on screen. Paused on a frame that was not analysed, nothing is held."""

from __future__ import annotations

from app.session import CaseSession
from tests.app.test_viewer_profiles import engine_ready, fill_surg_r1


def test_playing_an_analysed_case_holds_the_latest_answer_with_its_age(qtbot, open_viewer, video):
    fill_surg_r1(video)  # every 25th frame (1 s) analysed
    window = open_viewer(video)
    engine_ready(window)
    seen: list[tuple[int, bool, str | None, int | None, str]] = []

    def watch(name: str, value: object) -> None:
        if name == "displayed" and isinstance(value, int) and window.playhead.playing:
            feed = window.feed
            seen.append((value, window.canvas.chain is not None, window.canvas.held_label,
                         window.panel.frame, feed.held_label.text() if feed.held_label.isVisibleTo(window.panel) else ""))  # fmt: skip

    window.playhead.subscribe(watch)
    window.toggle_play()
    qtbot.waitUntil(lambda: len(seen) >= 30, timeout=15000)
    window.toggle_play()
    qtbot.waitUntil(lambda: not window.playhead.playing, timeout=5000)

    between = [s for s in seen if s[0] % 25]
    on_analysed = [s for s in seen if not s[0] % 25]
    assert between, seen
    for frame, drawn, label, panel_frame, panel_text in between:
        source = frame - frame % 25
        assert drawn, frame  # boxes held, not blinking
        assert label is not None and label.startswith("from ") and label.endswith("s ago"), label
        assert f"{(frame - source) / 25:.1f} s ago" in label
        assert panel_frame == source and "not of the frame on screen" in panel_text
    for frame, drawn, label, panel_frame, _ in on_analysed:
        assert drawn and label is None and panel_frame == frame  # the frame's own answer: no age

    # paused on a frame that was not analysed: nothing held
    window.seek(37)
    qtbot.waitUntil(lambda: window.playhead.displayed == 37, timeout=5000)
    assert window.canvas.chain is None and window.canvas.held_label is None
    assert not window.feed.held_label.isVisibleTo(window.panel)


def test_latest_record_at_bisects_within_the_hold(open_viewer, video):
    fill_surg_r1(video)
    window = open_viewer(video)
    engine_ready(window)
    session: CaseSession = window.session
    assert session.hold_s == 2.0
    source, record = session.latest_record_at(60)
    assert source == 50 and record is session.record(50)
    assert session.latest_record_at(50)[0] == 50
    session.stride_s = 0.5  # hold: 2 s at least
    assert session.latest_analysed_at(74) == 50
    session._frames = [0, 100]  # a gap in the sweep: too old to hold
    assert session.latest_analysed_at(99) is None and session.latest_analysed_at(150) == 100
    assert session.age_text(50, 60) == "from 00:00:02 · 0.4 s ago"
