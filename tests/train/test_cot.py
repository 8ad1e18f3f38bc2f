from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest

from engine.backends.base import Backend, GenerationRequest, TextStream
from engine.chain import ChainStatus, CvsState
from engine.chain_parser import parse_chain
from engine.ontology import load_ontology
from engine.procedures import get_procedure
from engine.prompts import build_prompt, frame_prompt, system_prompt
from train.cot import (
    CotError,
    answer_matches,
    build_chain,
    cvs_states,
    distill,
    perceived_instruments,
    structured_messages,
    task_answer,
    write_distilled_set,
    write_grpo_set,
    write_sft_set,
)
from train.data.sample import FrameRef, Instrument, Sample, Task, TripletLabel, Truth

ONTO = load_ontology()
TOOLS = [label.name for label in ONTO.tool]
ANATOMY = [label.name for label in ONTO.anatomy]
PHASES = [label.name for label in ONTO.phase]

# The cholecystectomy tasks (action and step belong to other procedures: tests/train/test_action_path.py).
CHOLECYSTECTOMY_TASKS = [Task(t) for t in get_procedure().tasks]


def _box(rng: random.Random) -> tuple[float, float, float, float]:
    x1, y1 = rng.randrange(0, 800), rng.randrange(0, 400)
    w, h = rng.randrange(5, 400), rng.randrange(5, 300)
    if rng.random() < 0.5:
        return (float(x1), float(y1), float(x1 + w), float(y1 + h))
    return (x1 + 0.5, round(y1 + rng.random(), 1), round(x1 + w + rng.random(), 1), float(y1 + h))


def random_truth(rng: random.Random, task: Task) -> Truth:
    tools = None if rng.random() < 0.25 else tuple(rng.sample(TOOLS, rng.randrange(0, 4)))
    instruments: list[Instrument] = []
    for tool in tools or (rng.sample(TOOLS, rng.randrange(0, 2)) if rng.random() < 0.5 else ()):
        if rng.random() < 0.6:
            instruments.append(Instrument(tool, _box(rng)))
            if tool == "Grasper" and rng.random() < 0.5:  # two graspers, each with its box
                instruments.append(Instrument(tool, _box(rng)))
    anatomy = tuple(rng.sample(ANATOMY, rng.randrange(0, 4)))
    triplets = None
    if rng.random() < 0.7:
        triplets = []
        for tid in rng.sample(range(len(ONTO.triplets)), rng.randrange(0, 4)):
            i, v, t = ONTO.triplet(ONTO.triplets[tid].id)
            triplets.append(TripletLabel(i.name, v.name, t.name, ONTO.triplets[tid].id))
        triplets = tuple(triplets)
    phase = rng.choice(PHASES) if rng.random() < 0.75 else None
    cvs = tuple(rng.choice([0.0, 0.33, 0.5, 0.67, 1.0]) for _ in range(3)) if rng.random() < 0.6 else None
    # the task's own label must exist
    if task in (Task.PHASE, Task.PHASE_MCQ) and phase is None:
        phase = rng.choice(PHASES)
    if task is Task.TOOLS and tools is None:
        tools = ("Hook",)
    if task is Task.TRIPLET and triplets is None:
        triplets = ()
    if task is Task.CVS and cvs is None:
        cvs = (0.67, 0.33, 0.0)
    if task is Task.LOCALISATION and not any(i.box for i in instruments):
        instruments.append(Instrument("Clipper", _box(rng)))
        tools = None if tools is None else (*tools, "Clipper")
    if task is Task.FRAME and phase is None and triplets is None and cvs is None:
        phase = "Preparation"
    return Truth(phase, tools, tuple(instruments), anatomy, triplets, cvs)


def make_sample(truth: Truth, task: Task = Task.FRAME, n: int = 0, **kw) -> Sample:
    return Sample("synthetic", f"case{n % 3}", FrameRef(Path(f"frames/{n:05d}.jpg"), None, 854, 480), task, truth, **kw)


def random_samples(count: int, seed: int) -> list[Sample]:
    rng = random.Random(seed)
    out = []
    for n in range(count):
        task = CHOLECYSTECTOMY_TASKS[n % len(CHOLECYSTECTOMY_TASKS)]
        out.append(make_sample(random_truth(rng, task), task, n))
    return out


FULL = Truth(
    phase="CalotTriangleDissection",
    tools=("Grasper", "Hook"),
    instruments=(Instrument("Grasper", (10.0, 20.0, 110.5, 140.0)),),
    anatomy=("gallbladder", "liver", "calot_triangle"),
    triplets=(TripletLabel("grasper", "retract", "gallbladder"), TripletLabel("hook", "dissect", "cystic_duct")),
    cvs=(0.67, 0.33, 0.0),
)


def assert_grounded(sample: Sample, text: str) -> None:
    """Every field the chain states equals the labels; nothing is stated that they do not support."""
    chain = parse_chain(text)
    assert chain.status is ChainStatus.COMPLETE, (chain.problems, text)
    truth, level = sample.truth, sample.level
    assert [lv.number for lv in chain.levels] == list(range(1, level + 1)), text
    assert chain.task_level == (level if level < 3 else None)
    expected = perceived_instruments(truth) or []
    got = [(s.name.label, s.box) for s in chain.perception.instruments]
    assert got == expected, text
    assert all(s.name.known for s in chain.perception.instruments)
    assert [m.label for m in chain.perception.anatomy] == list(dict.fromkeys(truth.anatomy)), text
    if level >= 2:
        got = [(t.instrument.label, t.verb.label, t.target.label) for t in chain.relations.triplets]
        assert got == [(t.instrument, t.verb, t.target) for t in truth.triplets or ()], text
    else:
        assert chain.relations is None and chain.context is None
    if level >= 3:
        ctx = chain.context
        assert (ctx.phase.label if ctx.phase else None) == truth.phase, text
        assert ctx.cvs == (cvs_states(truth) or (None, None, None)), text
    if truth.cvs is None:
        assert "C1" not in text and "C2" not in text and "C3" not in text
    if truth.phase is None:
        assert chain.answer.phase is None, text
    assert answer_matches(sample, text), text


def test_chains_parse_back_to_the_labels_for_every_task():
    for seed in range(3):
        for n, sample in enumerate(random_samples(210, seed)):
            text = build_chain(sample, random.Random(seed * 1000 + n))
            assert_grounded(sample, text)


def test_every_template_of_a_rich_sample_parses_back():
    for task in CHOLECYSTECTOMY_TASKS:
        sample = make_sample(FULL, task)
        for seed in range(60):
            assert_grounded(sample, build_chain(sample, random.Random(seed)))


def test_chain_stops_at_the_task_level():
    for task, level in [(Task.TOOLS, 1), (Task.LOCALISATION, 1), (Task.TRIPLET, 2), (Task.CVS, 3), (Task.FRAME, 3)]:
        text = build_chain(make_sample(FULL, task), random.Random(0))
        assert ("Level 2 (Relation)" in text) == (level >= 2)
        assert ("Level 3 (Context)" in text) == (level >= 3)
        assert text.splitlines()[1].startswith(f"This is a Level {level} task") == (level < 3)
        assert parse_chain(text).task_level == (level if level < 3 else None)


def test_answers_per_task():
    answers = {t: task_answer(make_sample(FULL, t)) for t in CHOLECYSTECTOMY_TASKS}
    assert answers[Task.PHASE] == "Calot Triangle Dissection"
    assert answers[Task.PHASE_MCQ] == "B. Calot Triangle Dissection"
    assert answers[Task.TOOLS] == "Grasper, Hook"
    assert answers[Task.TRIPLET] == "grasper retract gallbladder; hook dissect cystic duct"
    assert answers[Task.CVS] == "C1 met, C2 not met, C3 not met"
    assert answers[Task.LOCALISATION] == "[10, 20, 110.5, 140]"
    assert answers[Task.FRAME] == (
        "Phase: Calot Triangle Dissection. Triplets: grasper retract gallbladder; hook dissect cystic duct. "
        "CVS: C1 met, C2 not met, C3 not met."
    )
    given = make_sample(FULL, Task.PHASE_MCQ, answer="D. Calot Triangle Dissection")
    assert task_answer(given) == "D. Calot Triangle Dissection"
    forms = {task_answer(make_sample(FULL, Task.TRIPLET), random.Random(s)) for s in range(40)}
    assert "Grasper Retract Gallbladder, Hook Dissect Cystic Duct" in forms
    forms = {task_answer(make_sample(FULL, Task.LOCALISATION), random.Random(s)) for s in range(40)}
    assert "(10,20), (110.5,140)" in forms


def test_cvs_threshold_and_not_assessable():
    assert cvs_states(Truth(cvs=(0.5, 0.49, 1.0))) == (CvsState.MET, CvsState.NOT_MET, CvsState.MET)
    assert cvs_states(Truth(cvs=(float("nan"), 0.0, 0.0)))[0] is CvsState.NOT_ASSESSABLE
    assert cvs_states(Truth()) is None


def test_no_ungrounded_claims():
    unknown = Truth(phase=None, tools=None, anatomy=(), triplets=None, cvs=None)
    sample = make_sample(Truth(phase="GallbladderDissection", cvs=None), Task.PHASE)
    for seed in range(40):
        text = build_chain(sample, random.Random(seed))
        level1 = parse_chain(text).level(1).text
        assert "Instrument" not in level1 and "Tools" not in level1
        assert not parse_chain(text).perception.instruments
        assert "C1" not in text and "critical view" not in text.lower()
        assert "Triplets" not in text
    for seed in range(20):  # a level-3 task whose context is unknown names no phase and no CVS
        text = build_chain(make_sample(Truth(triplets=()), Task.FRAME), random.Random(seed))
        assert parse_chain(text).context.phase is None and "C1" not in text.split("<answer>")[0]
    with pytest.raises(CotError):
        build_chain(make_sample(unknown, Task.TOOLS), random.Random(0))
    with pytest.raises(CotError):
        build_chain(make_sample(unknown, Task.CVS), random.Random(0))
    with pytest.raises(CotError):
        build_chain(make_sample(unknown, Task.FRAME), random.Random(0))


def test_safety_remark_follows_the_labels():
    met = Truth(phase="ClippingCutting", cvs=(1.0, 0.67, 0.67))
    remarks = {parse_chain(build_chain(make_sample(met, Task.CVS), random.Random(s))).level(3).text for s in range(30)}
    assert any("The critical view of safety is established before clipping." in r for r in remarks)
    unmet = Truth(phase="CalotTriangleDissection", cvs=(0.0, 0.33, 0.0))
    texts = [build_chain(make_sample(unmet, Task.CVS), random.Random(s)) for s in range(30)]
    assert any("Dissection should continue before any clipping." in t for t in texts)
    assert not any("clipping can proceed" in t or "may now be clipped" in t for t in texts)


def test_phrasing_varies_across_seeds():
    sample = make_sample(FULL, Task.FRAME)
    texts = {build_chain(sample, random.Random(seed)) for seed in range(30)}
    assert len(texts) >= 10
    levels = {n: {parse_chain(t).level(n).text for t in texts} for n in (1, 2, 3)}
    assert all(len(v) >= 3 for v in levels.values())
    # canonical; the label's 110.5 is written in whole pixels (sub-pixel digits are noise a model cannot learn)
    assert any(t.startswith("Instruments: Grasper [10, 20, 110, 140], Hook.") for t in levels[1])
    assert any("grasper at [10, 20, 110, 140]" in t or "grasper [10" in t for t in levels[1])  # prose
    assert not any("110.5" in t for t in texts)
    assert any(t.startswith("Triplets: grasper retract gallbladder; hook dissect cystic duct.") for t in levels[2])
    assert any("retracts the gallbladder" in t or "retracting the gallbladder" in t for t in levels[2])


def _images(sample: Sample) -> Path:
    return Path("/data/frames") / sample.frame.path.name


def test_sft_set_shape_prompts_and_determinism(tmp_path):
    samples = [*random_samples(40, 7), make_sample(Truth(), Task.TOOLS, 99)]  # the last cannot be grounded
    out = tmp_path / "sft" / "train.jsonl"
    assert write_sft_set(samples, _images, out, seed=3) == 40
    assert not list(tmp_path.rglob("*.part"))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 40
    for sample, row in zip(samples, rows, strict=False):
        assert set(row) == {"messages", "images"}
        system, user, assistant = row["messages"]
        assert (system["role"], user["role"], assistant["role"]) == ("system", "user", "assistant")
        assert system["content"] == system_prompt()
        assert user["content"].count("<image>") == 1
        assert row["images"] == [str(_images(sample))]
        assert_grounded(sample, assistant["content"])
    by_task = {s.task: r["messages"][1]["content"] for s, r in zip(samples, rows, strict=False)}
    assert by_task[Task.PHASE_MCQ] == build_prompt("phase_mcq")
    assert by_task[Task.PHASE] == build_prompt("phase")  # every task's prompt is the engine's
    assert by_task[Task.TOOLS] == build_prompt("tools")
    assert by_task[Task.CVS] == build_prompt("cvs")
    assert by_task[Task.TRIPLET] == build_prompt("triplet")
    assert by_task[Task.FRAME] == "<image>" + frame_prompt("frame_analysis", 854, 480).text
    again = tmp_path / "again.jsonl"
    write_sft_set(samples, _images, again, seed=3)
    assert again.read_bytes() == out.read_bytes()
    other = tmp_path / "other.jsonl"
    write_sft_set(samples, _images, other, seed=4)
    assert other.read_bytes() != out.read_bytes()
    # a chain depends on its sample and the seed, not on its place in the set
    shuffled = tmp_path / "shuffled.jsonl"
    write_sft_set(list(reversed(samples)), _images, shuffled, seed=3)
    assert sorted(shuffled.read_text().splitlines()) == sorted(out.read_text().splitlines())


def test_dataset_question_is_kept():
    sample = make_sample(FULL, Task.PHASE_MCQ, question="Which phase? <image>", answer="B. Calot Triangle Dissection")
    from train.cot import user_prompt

    assert user_prompt(sample) == "Which phase? <image>"
    loc = make_sample(FULL, Task.LOCALISATION)
    assert user_prompt(loc) == build_prompt("localisation", width=854, height=480, instrument="Grasper")


def test_grpo_set_columns_round_trip(tmp_path):
    samples = random_samples(28, 11)
    out = tmp_path / "grpo.jsonl"
    assert write_grpo_set(samples, _images, out, seed=0) == 28
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    keys = {"prompt", "images", "task", "answer", "level", "phase", "tools", "triplets", "cvs", "boxes", "anatomy",
            "dataset", "case"}  # fmt: skip
    for sample, row in zip(samples, rows, strict=True):
        assert set(row) == keys
        assert [t["role"] for t in row["prompt"]] == ["system", "user"]
        assert "<image>" in row["prompt"][1]["content"]
        assert row["task"] == sample.task.value and row["answer"] == task_answer(sample)
        truth = sample.truth
        assert row["phase"] == truth.phase
        assert row["tools"] == (list(truth.tools) if truth.tools is not None else None)
        assert row["cvs"] == (list(truth.cvs) if truth.cvs is not None else None)
        trip = None if truth.triplets is None else [f"{t.instrument},{t.verb},{t.target}" for t in truth.triplets]
        assert row["triplets"] == trip
        assert row["boxes"] == [{"tool": i.tool, "box": list(i.box)} for i in truth.instruments if i.box]
        assert json.loads(json.dumps(row)) == row


def test_structured_messages_for_trl():
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "Look <image> here"}]
    assert structured_messages(msgs)[1]["content"] == [
        {"type": "text", "text": "Look "},
        {"type": "image"},
        {"type": "text", "text": " here"},
    ]
    assert structured_messages(msgs)[0]["content"] == [{"type": "text", "text": "sys"}]


class FakeTeacher(Backend):
    """Answers each request with the next scripted chain."""

    def __init__(self, texts: list[str]):
        self.texts = texts
        self.requests: list[GenerationRequest] = []

    @property
    def model_id(self) -> str:
        return "fake-teacher"

    def stream(self, request: GenerationRequest, cancel: threading.Event | None = None) -> TextStream:
        self.requests.append(request)
        return TextStream(iter([self.texts[(len(self.requests) - 1) % len(self.texts)]]))


def test_distillation_keeps_only_chains_whose_answer_matches(tmp_path):
    sample = make_sample(FULL, Task.PHASE_MCQ)
    right = build_chain(sample, random.Random(1))
    wrong = right.replace("B. Calot Triangle Dissection", "C. Clipping Cutting")
    assert not answer_matches(sample, wrong)
    teacher = FakeTeacher([wrong, right])
    kept = distill([sample], teacher, k=2)
    assert [d.chain for d in kept] == [right] and kept[0].attempt == 1
    assert len(teacher.requests) == 2
    assert teacher.requests[0].prompt == build_prompt("phase_mcq")
    assert teacher.requests[0].system == system_prompt()
    assert {r.seed for r in teacher.requests} == {0, 1}
    assert distill([sample], FakeTeacher([wrong, "no structure at all"]), k=2) == []
    out = tmp_path / "distilled.jsonl"
    assert write_distilled_set(kept, _images, out) == 1
    row = json.loads(out.read_text())
    assert row["messages"][2]["content"] == right


def test_localisation_keeps_the_dataset_answer():
    sample = make_sample(FULL, Task.LOCALISATION, question="Where are the tools? <image>",
                         answer="(10,20),(110,140); (300,40),(420,200)")  # fmt: skip
    assert task_answer(sample) == "(10,20),(110,140); (300,40),(420,200)"
    text = build_chain(sample, random.Random(0))
    assert answer_matches(sample, text)
    one = text.split("<answer>")[0] + "<answer>[10, 20, 110, 140]</answer>"
    assert not answer_matches(sample, one)


def test_answer_matching_per_task():
    for task in CHOLECYSTECTOMY_TASKS:
        sample = make_sample(FULL, task)
        assert answer_matches(sample, build_chain(sample, random.Random(0))), task
    cvs = make_sample(FULL, Task.CVS)
    text = build_chain(cvs, random.Random(0)).replace("<answer>C1 met", "<answer>C1 not met")
    assert not answer_matches(cvs, text)
    loc = make_sample(FULL, Task.LOCALISATION)
    far = build_chain(loc, random.Random(0)).split("<answer>")[0] + "<answer>[500, 400, 600, 470]</answer>"
    assert not answer_matches(loc, far)


def test_canonical_style_writes_one_phrasing_that_still_parses_to_the_labels():
    import random

    from engine.chain import ChainStatus
    from engine.chain_parser import parse_chain
    from train.cot.chains import CanonicalChoices, build_chain
    from train.data.sample import FrameRef, Sample, Task, Truth

    sample = Sample(
        "synthetic",
        "video01",
        FrameRef(__import__("pathlib").Path("f.jpg")),
        Task.PHASE,
        Truth(phase="CalotTriangleDissection", tools=("Grasper", "Hook"), cvs=(1.0, 0.33, 0.0)),
    )
    chains = {build_chain(sample, CanonicalChoices()) for _ in range(5)}
    varied = {build_chain(sample, random.Random(seed)) for seed in range(20)}
    assert len(chains) == 1 and len(varied) > 1
    chain = parse_chain(chains.pop())
    assert chain.status is ChainStatus.COMPLETE
    assert chain.context.phase.label == "CalotTriangleDissection"
    assert [s.name.label for s in chain.perception.instruments] == ["Grasper", "Hook"]
