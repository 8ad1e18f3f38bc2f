"""The reasoning panel's section states, without Qt: each state from a crafted chain, and the
rule that hex colours live in app/palette.py only."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.chain_sections import (
    NOT_ANSWERED,
    SectionState,
    answer_state,
    cut_off_section,
    heading_state,
    level_state,
    section_states,
    state_role,
    status_role,
)
from engine.chain import Answer, Chain, ChainStatus, Level, LevelState
from engine.chain_parser import AnswerClosed, ChainParser, TextAdded

ROOT = Path(__file__).resolve().parents[2]


def _chain(*levels: tuple[int, LevelState], task_level: int | None = None, answer: bool = False, status=None) -> Chain:
    return Chain(
        status=status or ChainStatus.COMPLETE,
        levels=tuple(Level(number, f"level {number}", state=state) for number, state in levels),
        answer=Answer(text="A") if answer else None,
        task_level=task_level,
    )


def _stream(text: str, final: bool) -> dict[str, str]:
    """What the panel shows after ``text`` (and the end of the stream, if ``final``)."""
    parser = ChainParser()
    events = parser.feed(text)
    section = parser.section
    if final:
        events += parser.finish()
    started = any(isinstance(e, TextAdded) and e.section == "answer" and e.text for e in events)
    closed = any(isinstance(e, AnswerClosed) for e in events)
    chain = parser.close() if final else parser.chain
    cut_off = cut_off_section(chain, section) if final else ""
    return section_states(chain, final, cut_off=cut_off, answer_started=started, answer_closed=closed)


# ----------------------------------------------------------------- levels from crafted chains
def test_nothing_written_is_pending_while_streaming_and_missing_at_the_end():
    chain = _chain()
    assert [level_state(chain, n, final=False) for n in (1, 2, 3)] == [SectionState.PENDING] * 3
    assert [level_state(chain, n, final=True) for n in (1, 2, 3)] == [SectionState.MISSING] * 3


def test_a_chain_stopping_at_level_2_of_a_3_level_task():
    chain = _chain((1, LevelState.DONE), (2, LevelState.STREAMING), task_level=3)
    states = section_states(chain, final=False)
    assert states == {
        "level1": SectionState.DONE,
        "level2": SectionState.STREAMING,
        "level3": SectionState.PENDING,
        "answer": SectionState.PENDING,
        "other": SectionState.OUTSIDE,
    }
    ended = _chain((1, LevelState.DONE), (2, LevelState.DONE), task_level=3, status=ChainStatus.PARTIAL)
    states = section_states(ended, final=True)
    assert states["level2"] == SectionState.DONE
    assert states["level3"] == SectionState.MISSING
    assert states["answer"] == SectionState.MISSING


def test_a_level_1_task_leaves_levels_2_and_3_out():
    chain = _chain((1, LevelState.DONE), task_level=1, answer=True)
    for final in (False, True):
        assert level_state(chain, 1, final) == SectionState.DONE
        assert level_state(chain, 2, final) == SectionState.NOT_IN_TASK
        assert level_state(chain, 3, final) == SectionState.NOT_IN_TASK


def test_malformed_wins_over_streaming_and_done_in_a_repeated_level():
    chain = _chain((1, LevelState.DONE), (1, LevelState.STREAMING), (1, LevelState.MALFORMED))
    assert level_state(chain, 1, final=True) == SectionState.MALFORMED
    chain = _chain((1, LevelState.DONE), (1, LevelState.STREAMING))
    assert level_state(chain, 1, final=False) == SectionState.STREAMING


def test_the_level_a_partial_chain_stopped_in_is_cut_off():
    chain = _chain((1, LevelState.DONE), (2, LevelState.DONE), status=ChainStatus.PARTIAL)
    cut = cut_off_section(chain, "level2")
    assert cut == "level2"
    assert level_state(chain, 1, True, cut) == SectionState.DONE
    assert level_state(chain, 2, True, cut) == SectionState.CUT_OFF
    assert cut_off_section(_chain(status=ChainStatus.COMPLETE), "level2") == ""
    # A malformed level stays malformed even where the stream stopped.
    bad = _chain((1, LevelState.MALFORMED), status=ChainStatus.PARTIAL)
    assert level_state(bad, 1, True, "level1") == SectionState.MALFORMED


# ----------------------------------------------------------------- the answer
@pytest.mark.parametrize(
    ("final", "answer", "started", "closed", "expected"),
    [
        (False, False, False, False, SectionState.PENDING),
        (True, False, False, False, SectionState.MISSING),
        (False, False, True, False, SectionState.STREAMING),
        (False, True, True, True, SectionState.DONE),
        (True, True, True, True, SectionState.DONE),
        (True, True, True, False, SectionState.CUT_OFF),  # the stream ended inside <answer>
    ],
)
def test_answer_states(final, answer, started, closed, expected):
    assert answer_state(_chain(answer=answer), final, started, closed) == expected


# ----------------------------------------------------------------- through the parser, as the panel feeds it
def test_streamed_chain_states_follow_the_text():
    text = "<think>\nLevel 1 (Perception): Instruments: Grasper.\nLevel 2 (Relations): grasper retract"
    assert _stream(text, final=False) == {
        "level1": SectionState.DONE,
        "level2": SectionState.STREAMING,
        "level3": SectionState.PENDING,
        "answer": SectionState.PENDING,
        "other": SectionState.OUTSIDE,
    }
    ended = _stream(text, final=True)
    assert ended["level2"] == SectionState.CUT_OFF
    assert ended["level3"] == SectionState.MISSING
    assert ended["answer"] == SectionState.MISSING


def test_surg_r1_level_task_through_the_parser():
    text = "This is a Level 1 task. L1: Instruments: grasper, hook. Anatomy: liver."
    states = _stream(text, final=False)
    assert states["level2"] == states["level3"] == SectionState.NOT_IN_TASK
    assert _stream(text, final=True)["level3"] == SectionState.NOT_IN_TASK


def test_answer_through_the_parser():
    text = "<think>\nLevel 1 (Perception): Grasper.\n</think>\n<answer>Calot triangle dis"
    assert _stream(text, final=False)["answer"] == SectionState.STREAMING
    # The parser closes an answer the stream ended in (its text is parsed), so the panel shows
    # it done; "cut off" is for an answer started and never closed in a final chain (above).
    assert _stream(text, final=True)["answer"] == SectionState.DONE
    whole = (
        "<think>\nLevel 1 (Perception): Grasper.\nLevel 2 (Relation): Triplets: none.\n"
        "Level 3 (Context): Phase: Preparation.\n</think>\n<answer>Prepar"
    )
    assert _stream(whole, final=True)["answer"] == SectionState.CUT_OFF  # a well-formed chain cut in its answer
    done = _stream(text + "section</answer>", final=True)
    assert done["answer"] == SectionState.DONE and done["level1"] == SectionState.DONE
    assert done["level2"] == done["level3"] == SectionState.MISSING


# ----------------------------------------------------------------- headings and colour roles
def test_heading_states():
    assert heading_state(None, final=False) == (NOT_ANSWERED, None)
    assert heading_state(_chain(), final=False) == ("streaming", "streaming")
    assert heading_state(_chain(), final=True) == ("complete", "done")
    partial = _chain(status=ChainStatus.PARTIAL)
    assert heading_state(partial, final=True, status_text="cancelled") == ("partial — cancelled", "warning")
    assert heading_state(_chain(status=ChainStatus.MALFORMED), final=True)[1] == "warning"


def test_state_roles_name_palette_colours():
    from app.palette import SECTION_STATE_COLOURS

    assert state_role(SectionState.DONE) == "done"
    assert state_role(SectionState.STREAMING) == "streaming"
    for state in (SectionState.MALFORMED, SectionState.MISSING, SectionState.CUT_OFF, SectionState.OUTSIDE):
        assert state_role(state) == "warning"
    assert state_role(SectionState.PENDING) is None and state_role(SectionState.NOT_IN_TASK) is None
    assert status_role("streaming") == "streaming" and status_role("whatever") is None
    for dark in (True, False):
        assert {"done", "streaming", "warning"} <= set(SECTION_STATE_COLOURS[dark])


# ----------------------------------------------------------------- layering
def test_chain_sections_imports_no_qt():
    code = "import sys, app.chain_sections; sys.exit(any(m.startswith('PySide6') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0


def test_hex_colours_live_in_the_palette_only():
    hex_colour = re.compile(r"#[0-9a-fA-F]{6}\b")
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted((ROOT / "app").rglob("*.py"))
        if path != ROOT / "app" / "palette.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if hex_colour.search(line)
    ]
    assert not found, "hex colours outside app/palette.py:\n" + "\n".join(found)
