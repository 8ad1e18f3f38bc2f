"""CVS as a surgeon reads it, on crafted histories (one analysed frame a second, 25 fps): established on a
stable run before the first clip and held; established then lost; met only after clipping; never met; a single
spurious 'met' frame, which must never read as a green light."""

from __future__ import annotations

from engine.chain import CvsState
from engine.cvs_assessment import CvsRule, assess_cvs
from engine.timeline import TimelineRow

FPS = 25.0
MET, NOT, NA = CvsState.MET, CvsState.NOT_MET, CvsState.NOT_ASSESSABLE


def history(spec: str) -> list[TimelineRow]:
    """One analysed frame per second: 'M' all three met, 'n' C3 not met, '.' not assessable, ' ' unsaid."""
    states = {"M": (MET, MET, MET), "n": (MET, MET, NOT), ".": (NA, NA, NA), " ": (None, None, None)}
    return [TimelineRow(i * 25, None, states[c], ()) for i, c in enumerate(spec)]


CLIP = 30 * 25  # clipping begins at 30 s


def test_established_on_a_stable_run_and_held_until_the_clip():
    a = assess_cvs(history("nnnnnnnnnn" + "M" * 25), FPS, CLIP)
    assert a.established and a.held_until_clip and a.green_light
    assert a.established_at_s == 10.0 and a.established_frame == 250 and a.first_clip_s == 30.0
    assert "established at 00:00:10 (frame 250) and held until clipping began at 00:00:30 (frame 750)" in a.statement
    data = a.to_json()
    assert data["established"] is True and data["held_until_clip"] is True and data["first_clip_s"] == 30.0
    assert [e["status"] for e in data["episodes"]] == ["established"]  # one view, held into clipping


def test_met_then_lost_before_the_clip_is_no_green_light():
    a = assess_cvs(history("nnnnn" + "M" * 10 + "nnnnnnnnnnnnnnn"), FPS, CLIP)
    assert a.established and a.held_until_clip is False and not a.green_light
    assert a.lost_at_s == 15.0 and "lost at 00:00:15 (frame 375)" in a.statement


def test_lost_and_established_again_before_the_clip_says_so():
    a = assess_cvs(history("M" * 8 + "nnnn" + "M" * 18), FPS, CLIP)
    assert a.green_light and a.established_at_s == 0.0
    assert "established again at 00:00:12 (frame 300)" in a.statement


def test_met_only_after_clipping_is_not_established():
    a = assess_cvs(history("n" * 30 + "M" * 10), FPS, CLIP)
    assert not a.established and not a.green_light and a.established_at_s is None
    assert "NOT established before clipping began at 00:00:30" in a.statement
    assert "met only after it, from 00:00:30 (frame 750)" in a.statement


def test_a_run_that_starts_just_before_clipping_does_not_establish_cvs_before_it():
    """Found on a held-out case clipped without the cystic plate exposed: the model said all three met on the last
    analysed frame before the clip, then on the frames of clipping, and the report read the whole run as "CVS was
    established at 00:00:47 and held until clipping began at 00:00:47", a green light on one frame. Only what was
    seen before the first clip can establish CVS before it."""
    a = assess_cvs(history("n" * 29 + "M" * 11), FPS, CLIP)
    assert not a.established and not a.green_light and a.held_until_clip is None
    assert [(e.start_frame, e.status) for e in a.episodes] == [(725, "doubtful"), (750, "established")]
    assert "NOT established before clipping began at 00:00:30 (frame 750)" in a.statement
    assert "met only after it, from 00:00:30 (frame 750)" in a.statement
    assert "Isolated frames said all three were met" in a.statement and "frame(s) 725" in a.statement
    assert a.doubt(725, (MET, MET, MET)) == "doubtful"  # the badge on that frame is no green light either
    assert a.statement.startswith(a.verdict) and "Isolated" not in a.verdict  # the summary line's short form
    # enough of the run before the clip still establishes it, from where it began
    b = assess_cvs(history("n" * 24 + "M" * 16), FPS, CLIP)
    assert b.green_light and b.established_frame == 600


def test_never_met():
    a = assess_cvs(history("n" * 20 + "." * 20), FPS, CLIP)
    assert not a.established and a.episodes == () and "NOT established" in a.statement


def test_a_single_spurious_met_frame_is_doubtful_never_a_green_light():
    a = assess_cvs(history("M" + "n" * 29), FPS, CLIP)  # frame 0 says all met, as the demo model did
    assert not a.established and not a.green_light
    assert [e.status for e in a.episodes] == ["doubtful"]
    assert "doubtful" in a.statement and "frame(s) 0" in a.statement


def test_unsaid_frames_do_not_break_or_lose_a_run_but_gaps_do():
    a = assess_cvs(history("M" * 10 + "     " + "M"), FPS, CLIP)  # silence after: not a contradiction
    assert a.held_until_clip is True
    sparse = [TimelineRow(0, None, (MET, MET, MET), ()), TimelineRow(60 * 25, None, (MET, MET, MET), ())]
    b = assess_cvs(sparse, FPS, 90 * 25, CvsRule(max_gap_s=30.0))  # two frames a minute apart are two runs
    assert [e.frames for e in b.episodes] == [1, 1] and not b.established


def test_a_frame_that_said_nothing_of_cvs_neither_breaks_nor_extends_a_run():
    """Another question's answer, or a chain cut off before Level 3, says nothing of CVS: the report read it as the
    end of a run (two doubtful halves) while the viewer's badge skipped it (one established run), so the badge
    showed the green light the statement withheld."""
    a = assess_cvs(history("n" * 5 + "MMM MMM" + "n" * 18), FPS, CLIP)
    assert [(e.start_frame, e.end_frame, e.frames, e.status) for e in a.episodes] == [(125, 275, 6, "established")]
    assert a.established and a.established_frame == 125


def test_the_rule_is_configurable_and_times_come_from_the_video():
    rows = history("M" * 4 + "n" * 26)
    assert not assess_cvs(rows, FPS, CLIP).established  # 3 s < 5 s
    assert assess_cvs(rows, FPS, CLIP, CvsRule(min_duration_s=3.0)).established
    doubled = assess_cvs(rows, FPS, CLIP, time_of=lambda frame: 2 * frame / FPS)  # a slower clock: 6 s
    assert doubled.established and doubled.first_clip_s == 60.0


def test_no_clipping_found():
    a = assess_cvs(history("M" * 10), FPS, None)
    assert a.established and a.held_until_clip is None and "no clipping phase was found" in a.statement


def test_a_frame_saying_all_met_outside_a_stable_run_is_doubtful():
    a = assess_cvs(history("M" + "n" * 9 + "M" * 10 + "n" * 10), FPS, CLIP)
    assert a.doubt(0, (MET, MET, MET)) == "doubtful"  # the lone frame at the start
    assert a.doubt(12 * 25, (MET, MET, MET)) is None  # inside the established run
    assert a.doubt(0, (MET, MET, NOT)) is None  # not all met: nothing to doubt


def staged(spec: str, phases: str) -> list[TimelineRow]:
    """``history`` with a stated phase per second: 'P' Preparation, 'D' CalotTriangleDissection, ' ' unsaid."""
    names = {"P": "Preparation", "D": "CalotTriangleDissection", " ": None}
    return [TimelineRow(r.frame, names[p], r.cvs, r.tools) for r, p in zip(history(spec), phases, strict=True)]


def test_all_met_during_preparation_is_doubtful_however_long_it_lasts():
    # The demo model's history: ten seconds of "all met" while it still says Preparation, then dissection.
    rows = staged("M" * 10 + "n" * 20, "P" * 10 + "D" * 20)
    a = assess_cvs(rows, FPS, CLIP)
    assert not a.established and not a.green_light
    assert [e.status for e in a.episodes] == ["doubtful"]
    assert "NOT established before clipping began" in a.statement
    assert "saw dissection under way said all three were met (doubtful" in a.statement and "frame(s) 0" in a.statement
    assert a.doubt(0, (MET, MET, MET)) == "doubtful"


def test_all_met_from_the_first_frame_that_shows_dissection_is_doubtful():
    # The demo model's history: "Calot triangle dissection, all three met" from frame 0, lost at 10 s.
    a = assess_cvs(staged("M" * 10 + "n" * 20, "D" * 30), FPS, CLIP)
    assert not a.established and not a.green_light and [e.status for e in a.episodes] == ["doubtful"]
    assert "NOT established before clipping began at 00:00:30 (frame 750)" in a.statement
    assert "saw dissection under way said all three were met (doubtful" in a.statement


def test_a_run_that_starts_in_preparation_stays_doubtful_after_dissection_begins():
    a = assess_cvs(staged("nn" + "M" * 18 + "n" * 10, "PPPP" + "D" * 26), FPS, CLIP)
    assert [(e.start_frame, e.status) for e in a.episodes] == [(50, "doubtful")] and not a.established


def test_a_stable_run_after_dissection_was_seen_establishes_cvs():
    a = assess_cvs(staged("nnnnn" + "M" * 25, "PP" + "D" * 28), FPS, CLIP)
    assert a.established and a.established_frame == 125 and a.green_light


def test_phases_stated_but_never_past_preparation_establish_nothing():
    assert not assess_cvs(staged("n" + "M" * 29, "P" * 30), FPS, CLIP).established


def test_the_dissection_rule_can_be_turned_off_and_a_given_start_wins():
    rows = staged("M" * 10 + "n" * 20, "P" * 10 + "D" * 20)
    assert assess_cvs(rows, FPS, CLIP, CvsRule(after_dissection=False)).established
    rows = staged("n" * 3 + "M" * 10 + "n" * 17, "P" * 30)  # the stated phases never leave Preparation...
    assert not assess_cvs(rows, FPS, CLIP).established
    assert assess_cvs(rows, FPS, CLIP, dissection_frame=25).established  # ...a smoothed track said dissection at 1 s
    assert assess_cvs(rows, FPS, CLIP).to_json()["rule"]["after_dissection"] is True
