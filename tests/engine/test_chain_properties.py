"""Property tests: the parser never raises, streaming equals whole-text parsing, text round-trips."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.chain import (
    ChainStatus,
    Context,
    CvsState,
    InstrumentSighting,
    Mention,
    Perception,
    Relations,
    TripletMention,
    neutralize_structure,
    render_context,
    render_perception,
    render_relations,
)
from engine.chain_parser import ChainParser, parse_chain
from engine.ontology import load_ontology

ONTO = load_ontology()
FRAGMENTS = [
    "<think>",
    "</think>",
    "<answer>",
    "</answer>",
    "Level 1:",
    "Level 2 (Relation):",
    "L3:",
    "Level 1 (Perception):",
    "This is a Level 2 task.",
    "<",
    "</",
    "Lev",
    "L",
    "\n",
    " ",
    "grasper retract gallbladder",
    "Phase: Calot Triangle Dissection.",
    "C1: met",
    "B. ",
    "[1, 2, 3, 4]",
    "(1,2), (3,4)",
    "<script>alert(1)</script>",
    "\x00",
    "\x1b[2J",
    "é",
    "⟨",
    "⟩",
    "Instruments: Hook, Laser.",
    "Anatomy: liver.",
    "Triplets: none.",
]
model_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), max_size=40).map("".join)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(model_text)
def test_any_text_yields_a_chain(text):
    chain = parse_chain(text)
    assert chain.status in set(ChainStatus)
    assert chain.raw == text
    chain.to_text()
    chain.to_dict()


@SETTINGS
@given(model_text, st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_any_split_gives_the_same_chain_as_the_whole(text, cuts):
    points = sorted({c % (len(text) + 1) for c in cuts})
    parser = ChainParser()
    last = 0
    for p in [*points, len(text)]:
        parser.feed(text[last:p])
        last = p
    assert parser.close() == parse_chain(text)


@SETTINGS
@given(model_text)
def test_canonical_text_is_a_fixed_point(text):
    once = parse_chain(text).to_text()
    twice = parse_chain(once).to_text()
    assert twice == once


def _mention(vocab: str):
    labels = list(ONTO.vocabulary(vocab))
    return st.sampled_from(labels).map(lambda lb: Mention(vocab, lb.display, lb.name))


boxes = st.tuples(*[st.integers(0, 1920).map(float)] * 4)
sightings = st.builds(
    InstrumentSighting,
    _mention("tool"),
    st.one_of(st.none(), boxes),
    st.one_of(st.none(), st.integers(0, 100).map(lambda v: v / 100)),
)


@st.composite
def triplets(draw):
    trip = draw(st.sampled_from(ONTO.triplets))
    i, v, t = ONTO.triplet(trip.id)
    return TripletMention(
        Mention("instrument", i.display, i.name),
        Mention("verb", v.display, v.name),
        Mention("target", t.display, t.name),
        trip.id,
    )


cvs = st.tuples(*[st.one_of(st.none(), st.sampled_from(list(CvsState)))] * 3)
safety = st.one_of(
    st.none(),
    st.text(alphabet=st.characters(blacklist_categories=["Cc", "Cs"]), min_size=1, max_size=40)
    .map(str.strip)
    .filter(bool),
)


@SETTINGS
@example([], [], [], None, (None, None, None), "ends <THINK> here")  # found by Hypothesis: read as a tag
@example([], [], [], None, (None, None, None), "see </answer> and Level 2: more")
@given(
    st.lists(sightings, max_size=4, unique_by=lambda s: s.name.label),
    st.lists(_mention("anatomy"), max_size=5, unique_by=lambda m: m.label),
    st.lists(triplets(), max_size=4),
    st.one_of(st.none(), _mention("phase")),
    cvs,
    safety,
)
def test_chains_built_from_labels_parse_back_exactly(instruments, anatomy, trips, phase, cvs_states, remark):
    perception = Perception(tuple(instruments), tuple(anatomy))
    relations = Relations(tuple(trips))
    context = Context(phase, cvs_states, remark)
    text = (
        f"<think>\nLevel 1 (Perception): {render_perception(perception)}\n"
        f"Level 2 (Relation): {render_relations(relations)}\n"
        f"Level 3 (Context): {render_context(context) or 'Phase not assessable.'}\n</think>\n<answer>x</answer>"
    )
    chain = parse_chain(text)
    assert chain.perception == perception
    assert chain.relations == relations
    assert chain.context.phase == phase
    assert chain.context.cvs == cvs_states
    if remark is not None:
        assert chain.context.safety == neutralize_structure(remark)
    assert chain.status.value == "complete" and [lv.number for lv in chain.levels] == [1, 2, 3]
