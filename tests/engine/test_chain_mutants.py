"""The chain parser and the chain model pinned where mutation testing (scripts/mutation.py) found the tests
blind: the problem lines the reasoning panel shows (each wording, each cause), the events a streaming viewer
draws from, what a non-text or over-long output gives, and a chain read in another procedure's vocabulary."""

from __future__ import annotations

import pytest

from engine.chain import ChainStatus, LevelState
from engine.chain_parser import (
    AnswerClosed,
    ChainParser,
    LevelClosed,
    LevelOpened,
    ProblemFound,
    TextAdded,
    parse_chain,
)

DONE, BAD = LevelState.DONE.value, LevelState.MALFORMED.value
MISSING_2_3 = ("Level 2 missing", "Level 3 missing")


@pytest.mark.parametrize(
    "text, problems, levels",
    [
        (
            "Level 1 (Perception): Hook.\n</think>\n<answer>x</answer>",
            ("Level header outside <think>", "</think> without <think>", *MISSING_2_3),
            [(1, DONE)],
        ),
        ("</think>", ("unexpected </think>",), []),
        ("<think>\nLevel 1 (Perception): Hook.\n</think></think>", ("unexpected </think>", *MISSING_2_3), [(1, DONE)]),
        (
            "hello <think>\nLevel 1: a\n</think><answer>x</answer>",
            ("text before <think>", *MISSING_2_3),
            [(1, DONE)],
        ),
        ("<think>\n<think>\nLevel 1: a\n</think><answer>x</answer>", ("nested <think>", *MISSING_2_3), [(1, DONE)]),
        (
            "<think>\nLevel 1: a\n</think><think><answer>x</answer>",
            ("a second <think> after the reasoning closed", *MISSING_2_3),
            [(1, DONE)],
        ),
        (
            "<think>\nLevel 1: a\n</think><answer>x</answer><answer>y</answer>",
            ("a second <answer>", "text after </answer>", "unexpected </answer>", *MISSING_2_3),
            [(1, DONE)],
        ),
        (
            "<think>\nLevel 1: a\n<answer>x</answer>",
            ("<answer> inside <think> (</think> missing)", *MISSING_2_3),
            [(1, DONE)],
        ),
        (
            "<think>\nLevel 1: a\n</think> so <answer>x</answer>",
            ("text between </think> and <answer>", *MISSING_2_3),
            [(1, DONE)],
        ),
        ("hmm <answer>x</answer>", ("text before <answer>",), []),
        ("<think>\nLevel 1: a\n</answer>", ("unexpected </answer>",), [(1, DONE)]),
        ("Level 1: a", ("Level header outside <think>",), [(1, DONE)]),
        (
            "<think>\nLevel 1: a\nLevel 1: b\n</think><answer>x</answer>",
            ("Level 1 repeated", *MISSING_2_3),
            [(1, DONE), (1, BAD)],
        ),
        (
            "<think>\nLevel 2: a\nLevel 1: b\n</think><answer>x</answer>",
            ("Level 1 after Level 2", "Level 3 missing"),
            [(2, DONE), (1, BAD)],
        ),
        (
            "<think>\nLevel 1:\nLevel 2: b\n</think><answer>x</answer>",
            ("Level 1 is empty", "Level 3 missing"),
            [(1, BAD), (2, DONE)],
        ),
        (
            "<think>\nThis is a Level 1 task.\nLevel 1: a\n</think><answer>x</answer> more",
            ("text after </answer>",),
            [(1, DONE)],
        ),
        ("just words", ("no <think>/<answer> structure",), []),
        ("<think>\nthinking\n</think><answer>x</answer>", ("no Level headers in the reasoning",), []),
    ],
)
def test_each_fault_is_named_in_the_words_the_panel_shows(text, problems, levels):
    chain = parse_chain(text)
    assert chain.status is ChainStatus.MALFORMED
    assert chain.problems == problems
    assert [(lv.number, lv.state.value) for lv in chain.levels] == levels
    # streamed one character at a time, the same faults are reported as they happen, each once
    parser = ChainParser()
    found = [e.message for piece in text for e in parser.feed(piece) if isinstance(e, ProblemFound)]
    found += [e.message for e in parser.finish() if isinstance(e, ProblemFound)]
    at_the_end = (
        "Level 2 missing",
        "Level 3 missing",
        "no <think>/<answer> structure",
        "no Level headers in the reasoning",
    )
    assert found == [p for p in problems if p not in at_the_end]  # these are judged on the whole chain


def test_a_stray_close_before_any_level_is_unexpected_not_a_closed_reasoning():
    chain = parse_chain("</think>\n<answer>x</answer>")
    assert chain.problems == ("unexpected </think>",)


def test_output_past_the_cap_is_cut_and_said_once():
    parser = ChainParser(max_chars=10)
    events = parser.feed("<think>\nLevel 1: abc")
    assert events[0] == ProblemFound("output longer than 10 characters; the rest was ignored")
    assert parser.feed("more") == []
    chain = parser.close()
    assert chain.problems == ("output longer than 10 characters; the rest was ignored",)
    assert chain.raw == "<think>\nLe"


@pytest.mark.parametrize("value", [None, 3, b"<think>"])
def test_output_that_is_not_text_is_an_empty_partial_chain(value):
    chain = parse_chain(value)
    assert chain.status is ChainStatus.PARTIAL and chain.problems == () and chain.raw == "" and chain.answer is None
    parser = ChainParser()
    assert parser.feed(value) == [] and parser.feed("") == []


def test_a_chain_is_read_in_its_procedures_vocabulary():
    from engine.procedures import get_procedure

    text = (
        "<think>\nThis is a Level 1 task.\nLevel 1 (Perception): Instruments: Large Needle Driver. Anatomy: none.\n"
        "</think>\n<answer>Large Needle Driver</answer>"
    )
    robotic = parse_chain(text, get_procedure("rarp").ontology)
    assert [s.name.label for s in robotic.perception.instruments] == ["Large_Needle_Driver"]
    default = parse_chain(text)
    assert [s.name.label for s in default.perception.instruments] in ([], [None])


CHAIN = (
    "<think>\nThis is a Level 2 task.\n"
    "Level 1 (Perception): Instruments: Hook. Anatomy: liver.\n"
    "Level 2 (Relation): Triplets: hook dissect liver.\n"
    "</think>\n<answer>hook dissect liver</answer>"
)


def test_streaming_events_follow_the_text_as_the_viewer_draws_it():
    parser = ChainParser()
    cut = CHAIN.index("Level 2 (Relation)") + 12  # inside the header: held back until it is one
    first = parser.feed(CHAIN[:cut])
    assert parser.section == "level1"
    snapshot = parser.chain
    assert snapshot.status is ChainStatus.PARTIAL and snapshot.task_level == 2
    assert [(lv.number, lv.state) for lv in snapshot.levels] == [(1, LevelState.STREAMING)]
    assert snapshot.perception is None  # fields only once the level closes
    assert [type(e) for e in first] == [TextAdded, LevelOpened, TextAdded]
    assert first[0] == TextAdded("preamble", "\nThis is a Level 2 task.\n")
    assert first[1] == LevelOpened(1)
    assert first[2] == TextAdded("level1", " Instruments: Hook. Anatomy: liver.\n")

    rest = parser.feed(CHAIN[cut:])
    kinds = [type(e) for e in rest]
    assert kinds == [LevelClosed, LevelOpened, TextAdded, LevelClosed, TextAdded, TextAdded, AnswerClosed]
    assert rest[0].level == 1 and [s.name.label for s in rest[0].fields.instruments] == ["Hook"]
    assert rest[1] == LevelOpened(2) and rest[2] == TextAdded("level2", " Triplets: hook dissect liver.\n")
    assert rest[4] == TextAdded("other", "\n") and rest[5] == TextAdded("answer", "hook dissect liver")
    assert rest[6].answer.text == "hook dissect liver"
    assert parser.section == "trailing"
    assert parser.finish() == [] and parser.finish() == []
    chain = parser.close()
    assert chain.status is ChainStatus.COMPLETE and chain.preamble == "This is a Level 2 task."
    assert [lv.header for lv in chain.levels] == ["Level 1 (Perception):", "Level 2 (Relation):"]
    assert parser.chain is chain and parser.close() is chain and parser.feed("more") == []


def test_a_cut_off_answer_is_closed_by_the_end_of_the_stream():
    parser = ChainParser()
    parser.feed(CHAIN[: CHAIN.index("</answer>")])
    assert parser.section == "answer"
    assert parser.chain.answer is not None and parser.chain.answer.text == "hook dissect liver"
    events = parser.finish()
    assert [type(e) for e in events] == [AnswerClosed] and events[0].answer.text == "hook dissect liver"
    chain = parser.close()
    assert chain.status is ChainStatus.PARTIAL and chain.problems == ()


def test_a_held_back_tail_ends_a_complete_chain_only_when_blank():
    assert parse_chain(CHAIN + "\n  ").status is ChainStatus.COMPLETE
    assert parse_chain(CHAIN + " <thi").status is ChainStatus.MALFORMED  # text after </answer>


def test_a_chain_without_level_one_is_not_complete():
    chain = parse_chain(
        "<think>\nLevel 2: hook dissect liver.\nLevel 3: Phase: Preparation.\n</think><answer>x</answer>"
    )
    assert chain.status is ChainStatus.MALFORMED and chain.problems == ("Level 1 missing",)


def test_what_was_streamed_in_pieces_is_joined_as_written():
    text = "Level 2 task ahead.\n<think>\nThis is a Level 2 task.\n" + CHAIN[CHAIN.index("Level 1") :]
    text = text[: text.index("</answer>")]  # the stream stops inside the answer
    parser = ChainParser()
    for piece in text:
        parser.feed(piece)
    (closed,) = parser.finish()
    assert closed.answer.text == "hook dissect liver"
    chain = parser.close()
    assert chain.preamble == "Level 2 task ahead.\n\nThis is a Level 2 task."  # before and inside <think>
    assert chain.task_level == 2 and chain.answer.text == "hook dissect liver"
    outside = ChainParser()
    for piece in "We answer a Level 1 question here. <think>\nLevel 1: Hook.\n</think><answer>x</answer>":
        outside.feed(piece)
    assert outside.close().task_level == 1  # declared before <think>, streamed a character at a time
