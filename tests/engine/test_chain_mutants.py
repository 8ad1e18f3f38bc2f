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


# ----------------------------------------------------------------------------- the chain model's writers
def test_free_text_is_made_inert_exactly_as_documented():
    from engine.chain import neutralize_structure

    text = "see <think> and </ANSWER> then Level 2: x, Level 3 (Context): y and L1: z; Level 12 stays"
    assert neutralize_structure(text) == (
        "see \u2039think\u203a and \u2039/ANSWER\u203a then Level 2\u2236 x, Level 3 (Context)\u2236 y and L1\u2236 z;"
        " Level 12 stays"
    )
    assert neutralize_structure("nothing to do: fine") == "nothing to do: fine"


def test_writers_use_the_display_names_and_say_none():
    from engine.chain import (
        Context,
        InstrumentSighting,
        Mention,
        Perception,
        Relations,
        TripletMention,
        render_context,
        render_perception,
        render_relations,
    )

    display = {"Grasper": "grasping forceps", "liver": "the liver", "CalotTriangleDissection": "Calot's triangle"}
    grasper, hook = Mention("tool", "grasper", "Grasper"), Mention("tool", "hook", "Hook")
    perception = Perception(
        (InstrumentSighting(grasper, (1.0, 2.5, 3.0, 4.0), 0.934), InstrumentSighting(hook)),
        (Mention("anatomy", "liver", "liver"), Mention("anatomy", "omentum", None)),
    )
    assert render_perception(perception, display) == (
        "Instruments: grasping forceps [1, 2.5, 3, 4] (0.93), hook. Anatomy: the liver, omentum."
    )
    assert render_perception(Perception()) == "Instruments: none. Anatomy: none."
    triplet = TripletMention(grasper, Mention("verb", "retract", "retract"), Mention("target", "liver", "liver"))
    assert render_relations(Relations((triplet, triplet)), display) == (
        "Triplets: grasping forceps retract the liver; grasping forceps retract the liver."
    )
    assert render_relations(Relations()) == "Triplets: none."
    phase = Mention("phase", "calot", "CalotTriangleDissection")
    assert render_context(Context(phase=phase), display) == "Phase: Calot's triangle."
    assert render_context(Context(phase=Mention("phase", "odd phase", None)), display) == "Phase: odd phase."


def test_the_chain_model_reads_back_what_it_holds():
    chain = parse_chain(CHAIN)
    assert chain.level(3) is None and chain.level(2).number == 2
    data = chain.to_dict()
    assert "raw" not in data and data["status"] == "complete" and data["levels"][0]["state"] == "done"
    assert chain.to_text().splitlines()[0] == "<think>" and chain.to_text().endswith("</answer>")


# ----------------------------------------------------------------------------- fields of a level
def _spans_hold(text: str, mentions) -> None:
    for m in mentions:
        assert m.span is not None and text[m.span[0] : m.span[1]] == m.text, (m, text)


def test_every_mention_points_at_its_own_words_with_its_vocabulary():
    from engine.chain_fields import parse_context, parse_perception, parse_relations
    from engine.ontology import load_ontology

    onto = load_ontology()
    canonical = " Instruments: Grasper [1, 2, 3, 4] (0.9), Hook and Clipper. Anatomy: gallbladder; cystic duct."
    prose = "A grasper holds the gallbladder while the hook works near the cystic artery and the liver."
    for text in (canonical, prose):
        p = parse_perception(text, onto)
        _spans_hold(text, [s.name for s in p.instruments] + list(p.anatomy))
        assert {s.name.vocabulary for s in p.instruments} == {"tool"}
        assert {m.vocabulary for m in p.anatomy} == {"anatomy"}
    p = parse_perception(canonical, onto)
    assert [(s.name.label, s.box, s.confidence) for s in p.instruments] == [
        ("Grasper", (1.0, 2.0, 3.0, 4.0), 0.9),
        ("Hook", None, None),
        ("Clipper", None, None),
    ]
    assert [m.label for m in p.anatomy] == ["gallbladder", "cystic_duct"]
    p = parse_perception(prose, onto)
    assert [s.name.label for s in p.instruments] == ["Grasper", "Hook"]
    assert [m.label for m in p.anatomy] == ["gallbladder", "cystic_artery", "liver"]

    for text in (
        " Triplets: grasper retract gallbladder; hook dissect cystic duct.",
        "The hook dissects the cystic duct.",
    ):
        r = parse_relations(text, onto)
        parts = [m for t in r.triplets for m in (t.instrument, t.verb, t.target)]
        _spans_hold(text, parts)
        assert [m.vocabulary for m in parts] == ["instrument", "verb", "target"] * len(r.triplets)
        assert all(t.triplet_id is not None for t in r.triplets)

    text = " Phase: Calot Triangle Dissection. CVS: C1 met, C2 not met, C3 met."
    c = parse_context(text, onto)
    assert c.phase.vocabulary == "phase" and c.phase.label == "CalotTriangleDissection"
    _spans_hold(text, [c.phase])
    prose = " The team is in the clipping and cutting phase now."
    c = parse_context(prose, onto)
    assert c.phase.label == "ClippingCutting" and c.phase.vocabulary == "phase"
    _spans_hold(prose, [c.phase])


def test_list_items_split_on_commas_semicolons_and_and_but_not_inside_brackets():
    from engine.chain_fields import parse_perception
    from engine.ontology import load_ontology

    onto = load_ontology()
    text = "Instruments: Grasper (the left one. near the liver), Hook and Clipper; Scissors. Anatomy: liver."
    p = parse_perception(text, onto)
    # the sentence end inside the parentheses does not end the list
    assert [s.name.label for s in p.instruments][1:] == ["Hook", "Clipper", "Scissors"]
    assert [s.name.text for s in p.instruments][1:] == ["Hook", "Clipper", "Scissors"]
    assert [m.text for m in p.anatomy] == ["liver"]
    _spans_hold(text, [s.name for s in p.instruments])
    boxed = "Instruments: Grasper [10.5, 20, 30, 40] confidence: 0.75, a Hook (1.0). Anatomy: none."
    p = parse_perception(boxed, onto)
    assert [(s.name.text, s.box, s.confidence) for s in p.instruments] == [
        ("Grasper", (10.5, 20.0, 30.0, 40.0), 0.75),
        ("Hook", None, 1.0),
    ]
    _spans_hold(boxed, [s.name for s in p.instruments])
    unknown = "Instruments: Laser, Grasper, laser. Anatomy: Spleen, spleen."
    p = parse_perception(unknown, onto)
    assert [(s.name.text, s.name.label) for s in p.instruments] == [("Laser", None), ("Grasper", "Grasper")]
    assert [(m.text, m.label) for m in p.anatomy] == [("Spleen", None)]


def test_answers_in_every_task_form():
    from engine.chain_fields import parse_answer
    from engine.ontology import load_ontology

    onto = load_ontology()
    mcq = parse_answer(" B. Calot Triangle Dissection ", onto)
    assert (mcq.option, mcq.option_text, mcq.phase.label, mcq.phase.vocabulary) == (
        "B",
        "Calot Triangle Dissection",
        "CalotTriangleDissection",
        "phase",
    )
    assert parse_answer("(C)", onto).option == "C" and parse_answer("(C)", onto).option_text is None
    within = parse_answer("It is the clipping and cutting phase.", onto)
    assert within.phase.label == "ClippingCutting" and within.phase.vocabulary == "phase"
    assert within.phase.text.lower() == "clipping and cutting"
    for parse in (parse_answer,):
        empty = parse(None, onto)
        assert empty.text == "" and empty.phase is None and empty.triplets == ()


@pytest.mark.parametrize("name", ["parse_perception", "parse_relations", "parse_context"])
def test_a_level_that_is_not_text_has_no_fields(name):
    import engine.chain_fields as fields
    from engine.ontology import load_ontology

    value = getattr(fields, name)(None, load_ontology())
    assert value == getattr(fields, name)("", load_ontology())


def _perception(text: str):
    from engine.chain_fields import parse_perception
    from engine.ontology import load_ontology

    return parse_perception(text, load_ontology())


@pytest.mark.parametrize(
    "text",
    [
        "Instruments:Grasper, Hook. The liver is retracted.",  # no space after the colon
        "Instruments: Grasper,Hook. The liver is retracted.",  # no space after the comma
        "Instruments: Grasper, Hook Anatomy: liver.",  # the next label ends the list
        "Instruments: Grasper (0.9), Hook. The liver is retracted.",
    ],
)
def test_an_instrument_list_ends_where_its_sentence_ends(text):
    p = _perception(text)
    assert [s.name.label for s in p.instruments] == ["Grasper", "Hook"], [s.name.text for s in p.instruments]
    _spans_hold(text, [s.name for s in p.instruments])


def test_a_comma_inside_nested_brackets_does_not_split_the_item():
    p = _perception("Instruments: Grasper (near (left), top), Hook.\nThe liver is retracted.")
    # Split inside the brackets, the items would be "Grasper (near (left)" and "top)": three names, one unknown.
    assert [(s.name.text, s.name.label) for s in p.instruments] == [("Grasper", "Grasper"), ("Hook", "Hook")]


def test_a_list_holding_an_x_ends_at_its_sentence_too():
    text = "Instruments: X-ray probe, Hook. The liver is retracted."
    assert [s.name.text for s in _perception(text).instruments] == ["X-ray probe", "Hook"]


def test_unknown_names_are_kept_each_once():
    p = _perception("Instruments: Laser, Stapler, laser. Anatomy: Spleen, kidney.")
    assert [(s.name.text, s.name.label) for s in p.instruments] == [("Laser", None), ("Stapler", None)]
    assert [(m.text, m.label) for m in p.anatomy] == [("Spleen", None), ("kidney", None)]


def test_an_unknown_three_word_triplet_is_flagged_with_its_words():
    from engine.chain_fields import parse_relations
    from engine.ontology import load_ontology

    text = " Triplets: laser zap spleen."
    (triplet,) = parse_relations(text, load_ontology()).triplets
    parts = (triplet.instrument, triplet.verb, triplet.target)
    assert [(m.vocabulary, m.text, m.label) for m in parts] == [
        ("instrument", "laser", None),
        ("verb", "zap", None),
        ("target", "spleen", None),
    ]
    assert triplet.triplet_id is None
    _spans_hold(text, parts)


def test_the_phase_is_the_one_after_the_phase_label():
    from engine.chain_fields import parse_context
    from engine.ontology import load_ontology

    text = " Clipping Cutting is over. Phase: Calot Triangle Dissection. CVS: C1 met."
    context = parse_context(text, load_ontology())
    assert context.phase.label == "CalotTriangleDissection"
    _spans_hold(text, [context.phase])


def test_prose_triplets_split_at_commas_keep_their_places():
    from engine.chain_fields import parse_relations
    from engine.ontology import load_ontology

    text = (
        "The grasper retracts the gallbladder, the hook dissects the cystic duct, the clipper clips the cystic artery."
    )
    triplets = parse_relations(text, load_ontology()).triplets
    assert [(t.instrument.label, t.verb.label, t.target.label) for t in triplets] == [
        ("grasper", "retract", "gallbladder"),
        ("hook", "dissect", "cystic_duct"),
        ("clipper", "clip", "cystic_artery"),
    ]
    _spans_hold(text, [m for t in triplets for m in (t.instrument, t.verb, t.target)])
