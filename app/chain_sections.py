"""What each section of a chain shows next to its heading: the reasoning panel's state machine.

A chain (:class:`engine.chain.Chain`, the stream so far or the final one) has three level
sections and an answer. Each is waiting (``pending``), being written (``streaming``), ``done``,
``malformed``, never written (``missing``, once the stream is final), stopped mid-way by the end
of the stream (``cut off``), or beyond the level a "This is a Level N task" chain stops at
(``not part of this task``). A question's heading says "not answered yet", "streaming", or its
final chain's status. Each state names a colour role (``done``, ``streaming``, ``warning``)
that :data:`app.palette.SECTION_STATE_COLOURS` gives a colour.

Qt-free: the panel (:mod:`app.widgets.reasoning_panel`) draws what this module decides.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine.chain import Chain, ChainStatus, LevelState

__all__ = [
    "LEVELS",
    "NOT_ANSWERED",
    "SectionState",
    "answer_state",
    "cut_off_section",
    "heading_state",
    "level_state",
    "section_states",
    "state_role",
    "status_role",
]

LEVELS = ("level1", "level2", "level3")
NOT_ANSWERED = "not answered yet"


class SectionState:
    """What a section shows next to its heading."""

    PENDING = "pending"
    STREAMING = LevelState.STREAMING.value
    DONE = LevelState.DONE.value
    MALFORMED = LevelState.MALFORMED.value
    MISSING = "missing"
    CUT_OFF = "cut off"
    NOT_IN_TASK = "not part of this task"
    OUTSIDE = "outside <think>/<answer>"


# Colour role of a section state (None: the placeholder text colour).
_STATE_ROLES: Mapping[str, str] = {
    SectionState.DONE: "done",
    SectionState.STREAMING: "streaming",
    SectionState.MALFORMED: "warning",
    SectionState.MISSING: "warning",
    SectionState.CUT_OFF: "warning",
    SectionState.OUTSIDE: "warning",
}

# Colour role of a question's heading: streaming, or its final chain's status.
_STATUS_ROLES: Mapping[str, str] = {
    "streaming": "streaming",
    ChainStatus.COMPLETE.value: "done",
    ChainStatus.PARTIAL.value: "warning",
    ChainStatus.MALFORMED.value: "warning",
}


def state_role(state: str) -> str | None:
    """The colour role of a section state; None for states shown dim (pending, not in the task)."""
    return _STATE_ROLES.get(state)


def status_role(status: str) -> str | None:
    """The colour role of a question heading's state ("streaming" or a chain status value)."""
    return _STATUS_ROLES.get(status)


def level_state(chain: Chain, number: int, final: bool, cut_off: str = "") -> str:
    """The state of level ``number`` (1–3) of ``chain``; ``final``: the stream has ended.

    ``cut_off``: the section a partial chain stopped in (:func:`cut_off_section`); a level that
    parsed as done but is that section was stopped mid-way.
    """
    written = [lv for lv in chain.levels if lv.number == number]
    if written:
        states = {lv.state for lv in written}
        for state in (LevelState.MALFORMED, LevelState.STREAMING):
            if state in states:
                return state.value
        return SectionState.CUT_OFF if cut_off == f"level{number}" else SectionState.DONE
    if chain.task_level is not None and number > chain.task_level:
        return SectionState.NOT_IN_TASK
    return SectionState.MISSING if final else SectionState.PENDING


def answer_state(chain: Chain, final: bool, started: bool, closed: bool) -> str:
    """The answer's state: ``started`` once its text began, ``closed`` once the parser closed it. The end of
    the stream closes an answer cut short too (no ``</answer>``): a final partial chain's answer is cut off."""
    if closed and not (final and started and chain.status is ChainStatus.PARTIAL):
        return SectionState.DONE
    if final and chain.answer is not None and started:
        return SectionState.CUT_OFF
    if started:
        return SectionState.STREAMING
    return SectionState.MISSING if final else SectionState.PENDING


def section_states(
    chain: Chain, final: bool, *, cut_off: str = "", answer_started: bool = False, answer_closed: bool = False
) -> dict[str, str]:
    """Every section's state: ``level1``–``level3``, ``answer`` and ``other`` (text outside the chain)."""
    states = {name: level_state(chain, number, final, cut_off) for number, name in enumerate(LEVELS, 1)}
    states["answer"] = answer_state(chain, final, answer_started, answer_closed)
    states["other"] = SectionState.OUTSIDE
    return states


def cut_off_section(chain: Chain, section: str) -> str:
    """The section a final chain stopped in: ``section`` (where the parser was) if it is partial."""
    return section if chain.status is ChainStatus.PARTIAL else ""


def heading_state(chain: Chain | None, final: bool, status_text: str = "") -> tuple[str, str | None]:
    """A question heading's text and colour role: not asked, streaming, or the final status."""
    if chain is None:
        return NOT_ANSWERED, None
    if not final:
        return "streaming", "streaming"
    text = chain.status.value + (f" — {status_text}" if status_text else "")
    return text, status_role(chain.status.value)
