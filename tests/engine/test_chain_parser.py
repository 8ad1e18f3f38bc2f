from __future__ import annotations

import time

import pytest

from engine.chain import (
    ChainStatus,
    Context,
    CvsState,
    InstrumentSighting,
    LevelState,
    Mention,
    Perception,
    Relations,
    TripletMention,
    render_context,
    render_perception,
    render_relations,
)
from engine.chain_fields import parse_perception
from engine.chain_parser import (
    DEFAULT_MAX_CHARS,
    AnswerClosed,
    ChainParser,
    LevelClosed,
    LevelOpened,
    TextAdded,
    parse_chain,
)
from engine.ontology import load_ontology

CANONICAL = """<think>
Level 1 (Perception): Instruments: Grasper [412, 80, 590, 260] (0.93), Hook [120, 300, 260, 420]. Anatomy: gallbladder, liver, cystic duct.
Level 2 (Relation): Triplets: grasper retract gallbladder; hook dissect cystic duct.
Level 3 (Context): Phase: Calot Triangle Dissection. CVS: C1 met, C2 not met, C3 not assessable. Safety: the cystic plate is not yet exposed; do not clip.
</think>
<answer>B. Calot Triangle Dissection</answer>"""

SURG_R1_SHORT = (
    "<think> This is a Level 2 task. L1: A grasper and a hook are visible near the gall bladder. "
    "L2: The grasper is retracting the gallbladder while the hook dissects the cystic duct. </think> "
    "<answer>Grasper Retract Gallbladder, Hook Dissect Cystic_duct</answer>"
)


def labels(mentions):
    return [m.label for m in mentions]


def test_canonical_chain_is_complete_with_every_field():
    chain = parse_chain(CANONICAL)
    assert chain.status is ChainStatus.COMPLETE and chain.problems == ()
    grasper, hook = chain.perception.instruments
    assert (grasper.name.label, grasper.box, grasper.confidence) == ("Grasper", (412, 80, 590, 260), 0.93)
    assert (hook.name.label, hook.box) == ("Hook", (120, 300, 260, 420))
    assert labels(chain.perception.anatomy) == ["gallbladder", "liver", "cystic_duct"]
    assert [t.triplet_id for t in chain.relations.triplets] == [17, 58]
    assert chain.context.phase.label == "CalotTriangleDissection"
    assert chain.context.cvs == (CvsState.MET, CvsState.NOT_MET, CvsState.NOT_ASSESSABLE)
    assert chain.context.safety.startswith("the cystic plate")
    assert (chain.answer.option, chain.answer.phase.label) == ("B", "CalotTriangleDissection")


def test_surg_r1_short_form_stops_at_the_declared_level():
    chain = parse_chain(SURG_R1_SHORT)
    assert chain.status is ChainStatus.COMPLETE, chain.problems
    assert chain.task_level == 2 and [lv.number for lv in chain.levels] == [1, 2]
    assert chain.context is None
    assert labels(s.name for s in chain.perception.instruments) == ["Grasper", "Hook"]
    assert [t.triplet_id for t in chain.relations.triplets] == [17, 58]
    assert [t.triplet_id for t in chain.answer.triplets] == [17, 58]


def test_surg_r1_long_form_on_one_line():
    text = (
        "<think> Level 1: The scene shows a clipper on the cystic artery. Level 2: clipper, clip, cystic_artery. "
        "Level 3: The surgical phase is Clipping Cutting; C1: yes, C2: yes, C3: no. </think>"
        "<answer>C. Clipping Cutting</answer>"
    )
    chain = parse_chain(text)
    assert chain.status is ChainStatus.COMPLETE
    assert chain.relations.triplets[0].triplet_id == 78
    assert chain.context.phase.label == "ClippingCutting"
    assert chain.context.cvs == (CvsState.MET, CvsState.MET, CvsState.NOT_MET)
    assert chain.answer.option == "C"


def test_box_answers_in_point_form():
    chain = parse_chain("<think>L1: grasper at (10, 20), (110, 220).</think><answer>(10,20), (110,220)</answer>")
    assert chain.answer.boxes == ((10, 20, 110, 220),)
    assert chain.perception.instruments[0].box == (10, 20, 110, 220)


@pytest.mark.parametrize(
    "text",
    [
        "Instruments: Grasper [10, 20, 110, 220] (0.9), Hook. Anatomy: liver.",  # a list
        "A grasper at [10, 20, 110, 220] holds the fundus; a hook waits.",  # prose
    ],
)
def test_a_sighting_knows_where_its_box_is_written(text):
    # Evaluation scores a box by the probabilities of the tokens it was written with: it needs their place.
    grasper, hook = parse_perception(text, load_ontology()).instruments
    assert text[slice(*grasper.box_span)] == "[10, 20, 110, 220]"
    assert hook.box is None and hook.box_span is None


def test_direct_answer_without_reasoning_is_complete():
    chain = parse_chain("<answer>Gallbladder Dissection</answer>")
    assert chain.status is ChainStatus.COMPLETE and chain.levels == ()
    assert chain.answer.phase.label == "GallbladderDissection"


def test_plain_text_is_malformed_but_the_answer_is_recovered():
    chain = parse_chain("B. Calot Triangle Dissection")
    assert chain.status is ChainStatus.MALFORMED
    assert chain.answer.option == "B" and chain.answer.phase.label == "CalotTriangleDissection"


@pytest.mark.parametrize(
    "text, problem",
    [
        ("<think>Level 2: a. Level 1: b. Level 3: c.</think><answer>x</answer>", "Level 1 after Level 2"),
        ("<think>Level 1: a. Level 1: b. Level 2: c. Level 3: d.</think><answer>x</answer>", "Level 1 repeated"),
        (CANONICAL + " and more", "text after </answer>"),
        ("<think><think>Level 1: a. Level 2: b. Level 3: c.</think><answer>x</answer>", "nested <think>"),
        ("<think>Level 1: a. Level 3: c.</think><answer>x</answer>", "Level 2 missing"),
        ("<think>Level 1: a. Level 2: b. Level 3: c. <answer>x</answer>", "<answer> inside <think> (</think> missing)"),
        ("<think>free reasoning only</think><answer>x</answer>", "no Level headers in the reasoning"),
        ("<think>Level 1:</think><answer>x</answer>", "Level 1 is empty"),
    ],
)
def test_malformed_chains_say_what_is_wrong(text, problem):
    chain = parse_chain(text)
    assert chain.status is ChainStatus.MALFORMED
    assert problem in chain.problems


def test_out_of_order_level_is_marked_malformed_in_the_levels():
    chain = parse_chain("<think>Level 2: a. Level 1: b. Level 3: c.</think><answer>x</answer>")
    assert [lv.state for lv in chain.levels] == [LevelState.DONE, LevelState.MALFORMED, LevelState.DONE]


def test_cut_off_chain_is_partial_and_keeps_what_arrived():
    chain = parse_chain(CANONICAL[: CANONICAL.index("Level 3")] + "Level 3 (Context): Phase: Calot")
    assert chain.status is ChainStatus.PARTIAL
    assert chain.perception is not None and chain.relations is not None
    assert chain.level(3).text == "Phase: Calot"
    assert chain.answer is None


def test_unknown_labels_are_kept_as_text_and_flagged():
    chain = parse_chain(
        "<think>Level 1: Instruments: Grasper, Laser scalpel. Anatomy: spleen.\n"
        "Level 2: Laser Burn Liver.\nLevel 3: Phase: Appendectomy.</think><answer>x</answer>"
    )
    assert chain.status is ChainStatus.COMPLETE
    assert [(m.text, m.known) for m in chain.unknown_mentions] == [
        ("Laser scalpel", False),
        ("spleen", False),
        ("Laser", False),
        ("Burn", False),
        ("Appendectomy", False),
    ]
    assert chain.relations.triplets[0].target.label == "liver"


def test_hostile_text_is_kept_literally_never_interpreted():
    hostile = '<script>alert("x")</script><b>bold</b>\x00\x1b[31m\u202e'
    chain = parse_chain(f"<think>Level 1: {hostile}\nLevel 2: none.\nLevel 3: none.</think><answer>{hostile}</answer>")
    assert chain.level(1).text == hostile
    assert chain.answer.text == hostile.strip()


def test_streaming_reports_level_fields_before_the_phase_arrives():
    parser = ChainParser()
    events = []
    for ch in CANONICAL:
        events += parser.feed(ch)
        if any(isinstance(e, LevelClosed) and e.level == 1 for e in events):
            break
    perception = next(e.fields for e in events if isinstance(e, LevelClosed))
    assert perception.instruments[0].box == (412, 80, 590, 260)
    assert parser.chain.context is None  # the phase is not decided yet
    assert parser.section == "level2"


def test_streamed_text_adds_up_to_each_section():
    parser = ChainParser()
    events = []
    for i in range(0, len(CANONICAL), 3):
        events += parser.feed(CANONICAL[i : i + 3])
    parser.close()
    level2 = "".join(e.text for e in events if isinstance(e, TextAdded) and e.section == "level2")
    assert level2.strip() == "Triplets: grasper retract gallbladder; hook dissect cystic duct."
    kinds = [type(e).__name__ for e in events if not isinstance(e, TextAdded)]
    assert kinds == ["LevelOpened", "LevelClosed"] * 3 + ["AnswerClosed"]
    assert isinstance(next(e for e in events if isinstance(e, AnswerClosed)), AnswerClosed)
    assert isinstance(events[0], LevelOpened) or any(isinstance(e, LevelOpened) for e in events)


def test_the_end_of_the_stream_reports_the_held_back_tail():
    """A stream that stops without a closing marker: finish() still says the last level closed,
    delivers its held-back text, and the streamed text adds up to the final chain's."""
    text = CANONICAL[: CANONICAL.index("</think>")]  # cut off after Level 3, no </think>, no answer
    parser = ChainParser()
    events = []
    for i in range(0, len(text), 5):
        events += parser.feed(text[i : i + 5])
    assert not any(isinstance(e, LevelClosed) and e.level == 3 for e in events)
    tail = parser.finish()
    closed = [e for e in tail if isinstance(e, LevelClosed)]
    assert [e.level for e in closed] == [3] and closed[0].fields.phase is not None
    events += tail
    level3 = "".join(e.text for e in events if isinstance(e, TextAdded) and e.section == "level3")
    chain = parser.close()
    assert level3.strip() == chain.levels[-1].text
    assert parser.finish() == [] and parser.close() is chain


def test_an_answer_cut_off_by_the_stream_is_closed_at_the_end():
    text = CANONICAL[: CANONICAL.index("</answer>")]
    parser = ChainParser()
    parser.feed(text)
    answers = [e for e in parser.finish() if isinstance(e, AnswerClosed)]
    assert len(answers) == 1 and answers[0].answer == parser.close().answer


def test_piecewise_equals_whole_for_every_split_point():
    whole = parse_chain(CANONICAL)
    for cut in range(0, len(CANONICAL), 7):
        parser = ChainParser()
        parser.feed(CANONICAL[:cut])
        parser.feed(CANONICAL[cut:])
        assert parser.close() == whole


def test_endless_output_is_capped_and_reported():
    parser = ChainParser(max_chars=5_000)
    parser.feed("<think>Level 1: ")
    for _ in range(2_000):
        parser.feed("grasper grasper ")
    chain = parser.close()
    assert chain.status is ChainStatus.MALFORMED
    assert any("longer than 5000" in p for p in chain.problems)
    assert len(chain.raw) == 5_000


def _seconds(work, repeats: int = 2) -> float:
    """The fastest of a few runs: noise from a busy machine only ever adds time."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def _feed(text: str, size: int) -> None:
    parser = ChainParser()
    for i in range(0, len(text), size):
        parser.feed(text[i : i + size])
    parser.close()


def test_text_after_the_answer_in_one_character_pieces_four_times_longer_takes_under_eight_times_as_long():
    # Each piece after </answer> used to copy the list of every earlier piece: quadratic.
    def chain_then(size: int) -> str:
        return (CANONICAL + " and then the model went on " * size)[:size]

    long, short = chain_then(DEFAULT_MAX_CHARS), chain_then(DEFAULT_MAX_CHARS // 4)
    piecewise = _seconds(lambda: _feed(long, 1))
    at_once = _seconds(lambda: _feed(long, len(long)), repeats=5)
    assert piecewise / at_once < 20_000, (piecewise, at_once)  # per-call overhead only (~1,500 here)
    assert piecewise / _seconds(lambda: _feed(short, 1)) < 8  # four times the text: about four times the time


def test_an_instrument_list_without_anatomy_four_times_longer_parses_in_under_eight_times_as_long(ontology):
    # Each anatomy name found in the list was checked against every instrument: quadratic.
    def parse(items: int) -> None:
        listed = ", ".join(["grasper", "gallbladder", "hook [1, 2, 3, 4]", "cystic duct"] * (items // 4))
        perception = parse_perception(f"Instruments: {listed}.", ontology)
        assert perception.anatomy == ()  # every name is in the instrument list
        assert len(perception.instruments) == 3 + items // 4  # each unboxed name once, every boxed hook

    assert _seconds(lambda: parse(40_000)) / _seconds(lambda: parse(10_000)) < 8


def test_text_to_chain_to_text_round_trips():
    chain = parse_chain(SURG_R1_SHORT)
    again = parse_chain(chain.to_text())
    assert again == chain
    assert again.to_text() == chain.to_text()


def test_chain_built_from_labels_parses_back_to_the_same_fields(ontology):
    def m(vocab, name):
        return Mention(vocab, ontology.vocabulary(vocab).require(name).display, name)

    perception = Perception(
        (InstrumentSighting(m("tool", "Clipper"), (10.0, 20.0, 30.0, 40.0), 0.5),), (m("anatomy", "cystic_duct"),)
    )
    relations = Relations(
        (TripletMention(m("instrument", "clipper"), m("verb", "clip"), m("target", "cystic_duct"), 79),)
    )
    context = Context(m("phase", "ClippingCutting"), (CvsState.MET, CvsState.MET, CvsState.MET), "Clips are secure.")
    text = (
        f"<think>\nLevel 1 (Perception): {render_perception(perception)}\n"
        f"Level 2 (Relation): {render_relations(relations)}\n"
        f"Level 3 (Context): {render_context(context)}\n</think>\n<answer>Clipping Cutting</answer>"
    )
    chain = parse_chain(text)
    assert chain.status is ChainStatus.COMPLETE
    assert (chain.perception, chain.relations, chain.context) == (perception, relations, context)


def test_json_form_is_serialisable():
    import json

    data = parse_chain(CANONICAL).to_dict()
    again = json.loads(json.dumps(data))
    assert again == data and again["status"] == "complete"
    assert [lv["number"] for lv in again["levels"]] == [1, 2, 3] and again["answer"]["text"]


def test_a_remark_in_brackets_after_a_listed_name_keeps_the_name_known(ontology):
    """Models add remarks to listed names; the panel must not call "Grasper (the left one…)" unknown."""
    text = (
        "Instruments: Grasper (the left one, holding the fundus), Hook [10, 20, 30, 40] (tip visible), "
        "(partly hidden). Anatomy: gallbladder (distended), liver."
    )
    found = parse_perception(text, ontology)
    assert [(i.name.label, i.name.text, i.box) for i in found.instruments] == [
        ("Grasper", "Grasper", None),
        ("Hook", "Hook", (10.0, 20.0, 30.0, 40.0)),
    ]
    assert text[slice(*found.instruments[0].name.span)] == "Grasper"  # the span the panel highlights
    assert [(a.label, text[slice(*a.span)]) for a in found.anatomy] == [
        ("gallbladder", "gallbladder"),
        ("liver", "liver"),
    ]
