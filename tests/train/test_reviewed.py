"""Training from reviewed cases: the reviewer's labels are the truth of SFT and GRPO, the chains the reviewer
accepted join self-iteration beside the rule-verified ones, and the model's lineage names the cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from engine.chain_parser import parse_chain
from engine.labels_cli import case_facts
from engine.labels_io import export_cholec80, import_cholec80, import_cholect50, import_endoscapes
from engine.modeldir import Manifest
from engine.profiles import get_profile
from engine.review_labels import ReviewLabels
from engine.store import CaseStore, FrameResult
from engine.tasks import Task
from tests.train.test_pipeline import MICRO
from train.data.errors import DatasetError
from train.data.reviewed import reviewed_data
from train.iterate import SelfSample, write_iteration_set
from train.pipeline import load_pipeline_recipe, run_pipeline

VERSION = get_profile("surgview", "phase").version
MODEL = ("tiny@reviewed-test", VERSION, "phase")


def answer(phase: str, frame: int) -> str:
    return (
        "<think>\nThis is a Level 3 task.\nLevel 1 (Perception): Instruments: Grasper. Anatomy: gallbladder.\n"
        "Level 2 (Relation): Triplets: grasper retract gallbladder.\n"
        f"Level 3 (Context): Phase: {phase}. Reviewed frame {frame}.\n</think>\n<answer>{phase}</answer>"
    )


@pytest.fixture
def reviewed_case(synth_case, tmp_path, monkeypatch):
    """The synthetic case with its ground truth imported as the reviewer's labels, one segment relabelled,
    and three model answers: two accepted, one rejected. Returns (store path, video, accepted, rejected)."""
    monkeypatch.setenv("SURGVIEW_DATA", str(tmp_path / "data"))
    root = synth_case[0]
    video = root / "cholec80" / "videos" / "video01.mp4"
    facts = case_facts(video)
    with CaseStore.for_video(video, fps=facts.fps, frame_count=facts.frames) as store:
        labels = ReviewLabels(store, reviewer="dr-a")
        import_cholec80(labels, root / "cholec80" / "phase_annotations" / "video01-phase.txt", facts)
        import_endoscapes(labels, root / "endoscapes" / "all_metadata.csv", facts)
        import_cholect50(labels, root / "CholecT50" / "labels" / "VID01.json", facts)
        labels.set_phase(0, 50, "CleaningCoagulation")  # the reviewer's word, not the generator's
        texts = {frame: answer(labels.snapshot().phase_at(frame), frame) for frame in (100, 500, 900)}
        results = {f: store.put_result(FrameResult.from_text(f, *MODEL, t)) for f, t in texts.items()}
        labels.accept_chain(results[100])
        labels.accept_chain(results[500])
        labels.reject_chain(results[900])
        path = store.path
    return path, video, [texts[100], texts[500]], texts[900]


def test_reviewed_samples_carry_the_reviewers_truth(reviewed_case, tmp_path):
    store, video, accepted, _ = reviewed_case
    data = reviewed_data([store], (Task.PHASE, Task.CVS, Task.TRIPLET))
    by_task = {t: [s for s in data.samples if s.task is t] for t in (Task.PHASE, Task.CVS, Task.TRIPLET)}
    assert len(by_task[Task.PHASE]) == 60  # 1 fps over the 60 s case
    first = by_task[Task.PHASE][0]
    assert (first.frame.index, first.truth.phase, first.split) == (0, "CleaningCoagulation", "train")
    assert by_task[Task.PHASE][2].truth.phase == "Preparation"
    assert len(by_task[Task.CVS]) == 60 and all(len(s.truth.cvs) == 3 for s in by_task[Task.CVS])
    assert sum(bool(s.truth.triplets) for s in by_task[Task.TRIPLET]) > 10
    boxed = next(s for s in by_task[Task.TRIPLET] if s.truth.triplets)
    assert boxed.truth.instruments and boxed.truth.instruments[0].box is not None and boxed.truth.tools
    assert sorted(c.text for c in data.chains) == sorted(accepted)  # the rejected one is not verified
    system, prompt = data.chains[0].prompt(224, 126)
    assert prompt == get_profile("surgview", "phase").prompt("phase", 224, 126) and system
    (case,) = data.cases
    assert case.source == "store" and len(case.case) == 16 and case.frames_reviewed == 60
    assert case.accepted_chains == 2 and "video01" not in json.dumps(case.to_json())

    # The same labels exported: read by the adapters, the same phase truth.
    with CaseStore.open(store) as opened:
        export_cholec80(ReviewLabels(opened).snapshot(), case_facts(video), tmp_path / "export", "video01")
    again = reviewed_data([tmp_path / "export"], (Task.PHASE,))
    assert [(s.frame.index, s.truth.phase) for s in again.samples[:3]] == [
        (s.frame.index, s.truth.phase) for s in by_task[Task.PHASE][:3]
    ]
    assert again.cases[0].case == "video01" and again.cases[0].source == "export" and not again.chains

    with pytest.raises(DatasetError, match="not a labels export"):
        reviewed_data([tmp_path])
    with pytest.raises(DatasetError, match="case store"):
        reviewed_data([tmp_path / "notes.txt"])


def test_human_verified_rows_join_the_iteration_set_once(tmp_path):
    image = str(tmp_path / "f.jpg")
    prompt = [{"role": "system", "content": "s"}, {"role": "user", "content": "<image>q"}]
    grpo = tmp_path / "grpo.jsonl"
    grpo.write_text(json.dumps({"prompt": prompt, "images": [image]}) + "\n")
    original = tmp_path / "sft.jsonl"
    row = {"messages": [*prompt, {"role": "assistant", "content": "orig"}], "images": [image]}
    original.write_text(json.dumps(row) + "\n")
    verified = tmp_path / "verified.jsonl"
    mine = {"messages": [*prompt, {"role": "assistant", "content": "accepted by dr-a"}], "images": [image]}
    verified.write_text("".join(json.dumps(r) + "\n" for r in (mine, mine, row)))
    samples = [SelfSample(0, "rule-kept", {}, True), SelfSample(0, "dropped", {}, False)]
    stats = write_iteration_set(samples, grpo, original, tmp_path / "mix.jsonl", verified)
    texts = [json.loads(line)["messages"][-1]["content"] for line in (tmp_path / "mix.jsonl").read_text().splitlines()]
    assert texts == ["orig", "rule-kept", "accepted by dr-a"]
    assert stats["human_verified"] == 1 and stats["kept_unique"] == 1


def test_a_reviewed_case_trains_the_tiny_model_and_is_named_in_its_lineage(reviewed_case, tmp_path, monkeypatch):
    monkeypatch.setenv("SURGVIEW_NO_TENSORBOARD", "1")
    store, _, accepted, rejected = reviewed_case
    recipe = {**MICRO, "data": {**MICRO["data"], "reviewed": [str(store)]}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    lines: list[str] = []
    result = run_pipeline(load_pipeline_recipe(path), say=lines.append)
    assert any("1 reviewed case(s): 60 reviewed frames, 2 accepted chains" in line for line in lines)
    run = tmp_path / "run"

    grpo = [json.loads(line) for line in (run / "cot" / "grpo.jsonl").read_text().splitlines()]
    mine = [r for r in grpo if r["dataset"] == "reviewed"]
    assert len(mine) == 60 and mine[0]["phase"] == "CleaningCoagulation"  # the reviewer's label is the truth
    sft = [json.loads(line) for line in (run / "cot" / "sft.jsonl").read_text().splitlines()]
    first = next(r for r in sft if r["images"][0] == mine[0]["images"][0])
    assert parse_chain(first["messages"][-1]["content"]).answer.phase.label == "CleaningCoagulation"

    iteration = [json.loads(line) for line in (run / "chain" / "iter1" / "sft.jsonl").read_text().splitlines()]
    texts = [r["messages"][-1]["content"] for r in iteration]
    assert all(text in texts for text in accepted) and rejected not in texts
    verified = [r for r in iteration if r["messages"][-1]["content"] in accepted]
    assert all(Path(r["images"][0]).is_file() and "<image>" in r["messages"][1]["content"] for r in verified)
    stats = json.loads((run / "chain" / "iter1" / "samples.json").read_text())
    assert stats["human_verified"] == 2

    manifest = Manifest.read(Path(result["model"]))
    names = [s.name for s in manifest.lineage]
    assert names[-2:] == ["reviewed", "export"]
    stage = manifest.lineage[-2]
    assert len(stage.data) == 1 and len(stage.data[0]) == 16
    assert stage.details["frames_reviewed"] == 60 and stage.details["accepted_chains"] == 2
    assert stage.details["cases"][0]["case"] == stage.data[0]
