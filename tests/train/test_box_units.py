"""Boxes in 0–1000 coordinates: a model trained so is asked so, in training and in the engine, and mapped back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from engine.chain_parser import parse_chain
from engine.modeldir import MANIFEST_NAME, Manifest, ModelDirError
from engine.profiles import resolve_profile
from engine.prompts import system_prompt
from train.cot.box_units import sample_in_thousandths
from train.cot.chains import CanonicalChoices, build_chain
from train.cot.procedure_sets import write_procedure_grpo_set, write_procedure_sft_set
from train.data.sample import FrameRef, Instrument, Sample, Task, TripletLabel, Truth
from train.eval.report import evaluate
from train.pipeline import PipelineError, check_recipe, load_pipeline_recipe, record_box_units, run_pipeline

from .test_pipeline import MICRO as PIPELINE_MICRO

TRUTH = Truth(
    phase="CalotTriangleDissection",
    tools=("Grasper", "Hook"),
    instruments=(Instrument("Grasper", (64.0, 36.0, 320.0, 180.0)), Instrument("Hook", (320.0, 180.0, 640.0, 360.0))),
    anatomy=("gallbladder", "liver", "calot_triangle"),
    triplets=(TripletLabel("grasper", "retract", "gallbladder"), TripletLabel("hook", "dissect", "cystic_duct")),
    cvs=(0.67, 0.33, 0.0),
)
SAMPLE = Sample("synthetic", "video01", FrameRef(Path("frames/00001.jpg"), None, 640, 360), Task.FRAME, TRUTH)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _boxes(chain_text: str) -> list[tuple]:
    chain = parse_chain(chain_text)
    return [tuple(s.box) for s in chain.perception.instruments if s.box is not None]


def test_training_rows_in_thousandths_write_every_box_so_and_ask_for_them(tmp_path):
    image = lambda s: Path("/data") / s.frame.path.name  # noqa: E731
    pixels, thousandths = tmp_path / "px.jsonl", tmp_path / "th.jsonl"
    write_procedure_sft_set([SAMPLE], image, pixels, canonical=True)
    write_procedure_sft_set([SAMPLE], image, thousandths, canonical=True, box_units="thousandths")
    (px_row,), (th_row,) = _rows(pixels), _rows(thousandths)
    assert _boxes(px_row["messages"][2]["content"]) == [(64, 36, 320, 180), (320, 180, 640, 360)]
    assert _boxes(th_row["messages"][2]["content"]) == [(100, 100, 500, 500), (500, 500, 1000, 1000)]
    system, user = th_row["messages"][0]["content"], th_row["messages"][1]["content"]
    assert "in pixels" in system_prompt() and "in pixels" not in system and "from 0 to 1000" in system
    assert "640x360" in px_row["messages"][1]["content"] and "in pixels" not in user and "from 0 to 1000" in user
    # only the boxes and the words about them change: the rest of the chain is the pixel row's
    strip = lambda text: [w for w in text.split() if not any(c.isdigit() for c in w)]  # noqa: E731
    assert strip(th_row["messages"][2]["content"]) == strip(px_row["messages"][2]["content"])

    grpo = tmp_path / "grpo.jsonl"
    write_procedure_grpo_set([SAMPLE], image, grpo, box_units="thousandths")
    (row,) = _rows(grpo)
    assert [b["box"] for b in row["boxes"]] == [[100, 100, 500, 500], [500, 500, 1000, 1000]]  # what rewards score
    assert "from 0 to 1000" in row["prompt"][0]["content"] and "from 0 to 1000" in row["prompt"][1]["content"]


def test_a_frame_of_unknown_size_cannot_be_written_in_thousandths(tmp_path):
    unsized = Sample("synthetic", "video01", FrameRef(Path("frames/1.jpg"), None), Task.FRAME, TRUTH)
    out = tmp_path / "sft.jsonl"
    assert write_procedure_sft_set([unsized], lambda s: s.frame.path, out, box_units="thousandths") == 0
    # a dataset's own localisation answer gives pixels, which no rewriting of the prompt turns into thousandths
    answered = Sample("surgr1", "v1", SAMPLE.frame, Task.LOCALISATION, TRUTH, answer="[64, 36, 320, 180]")
    assert write_procedure_sft_set([answered], lambda s: s.frame.path, out) == 1
    assert write_procedure_sft_set([answered], lambda s: s.frame.path, out, box_units="thousandths") == 0
    with pytest.raises(ValueError, match="box_units must be one of"):
        write_procedure_sft_set([SAMPLE], lambda s: s.frame.path, out, box_units="inches")


def _model_folder(tmp_path: Path, **manifest) -> str:
    folder = tmp_path / "model"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"architectures": ["Qwen2_5_VLForConditionalGeneration"]}))
    data = {"format_version": 1, "name": "m", "base_architecture": "Qwen2_5_VLForConditionalGeneration",
            "ontology_version": "1.0", "prompts_version": "1.0", **manifest}  # fmt: skip
    (folder / MANIFEST_NAME).write_text(json.dumps(data))
    return str(folder)


def test_the_engine_asks_a_thousandths_model_for_thousandths_and_maps_them_to_pixels(tmp_path):
    model = _model_folder(tmp_path, box_units="thousandths")
    assert Manifest.read(model).box_units == "thousandths"
    for chosen in (None, "surgview"):  # the manifest's default profile, or one the user picked
        profile, note = resolve_profile(chosen, kind="transformers", model=model)
        assert profile.box_scale(640, 360) == (0.64, 0.36)
        assert "from 0 to 1000" in profile.prompt("frame_analysis", 640, 360) and "0–1000" in note
        assert "in pixels" not in profile.system
    plain, _ = resolve_profile(None, kind="transformers", model=_model_folder(tmp_path, box_units=None))
    assert plain.box_scale(640, 360) == (1.0, 1.0) and "in pixels" in plain.prompt("frame_analysis", 640, 360)
    (Path(model) / MANIFEST_NAME).write_text(json.dumps({**Manifest.read(model).to_dict(), "box_units": "inches"}))
    with pytest.raises(ModelDirError, match="box_units must be one of"):
        Manifest.read(model)


def test_the_evaluation_maps_a_thousandths_answer_to_the_frames_pixels():
    answer = build_chain(sample_in_thousandths(SAMPLE), CanonicalChoices())
    mapped = evaluate([{"response": answer, "sample": SAMPLE, "box_scale": (0.64, 0.36)}])
    assert mapped["tasks"]["boxes"]["mAP50"] == pytest.approx(1.0)
    unmapped = evaluate([{"response": answer, "sample": SAMPLE}])  # read as pixels, every box misses
    assert unmapped["tasks"]["boxes"]["mAP50"] == pytest.approx(0.0)


MICRO = {  # the pipeline tests' micro run, asked for whole chains (boxes) in thousandths, without iteration
    **PIPELINE_MICRO,
    "name": "micro-th",
    "box_units": "thousandths",
    "canonical_chains": True,
    "data": {**PIPELINE_MICRO["data"], "tasks": ["frame_analysis"]},
    "iterate": {"rounds": 0},
    "evaluation": {"max_new_tokens": 16, "batch_size": 4},
}


def test_a_run_in_thousandths_trains_on_them_and_every_model_it_writes_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("SURGVIEW_NO_TENSORBOARD", "1")
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(MICRO))
    result = run_pipeline(load_pipeline_recipe(recipe_file), say=lambda _: None)
    run = tmp_path / "run"
    rows = _rows(run / "cot" / "sft.jsonl")
    boxes = [b for row in rows for b in _boxes(row["messages"][2]["content"])]
    assert boxes and all(0 <= v <= 1000 for b in boxes for v in b)
    assert max(v for b in boxes for v in b[::2]) > 160  # thousandths of the 160x90 frame, not its pixels
    assert all("from 0 to 1000" in row["messages"][1]["content"] for row in rows)
    for model in (run / "chain" / "sft" / "model", run / "chain" / "grpo" / "model", Path(result["model"])):
        assert Manifest.read(model).box_units == "thousandths", model
    profile, _ = resolve_profile(None, kind="transformers", model=result["model"])
    assert profile.box_scale(640, 360) == (0.64, 0.36)

    record_box_units(Path(result["model"]), "pixels")  # a model trained on pixels says nothing
    assert "box_units" not in json.loads((Path(result["model"]) / MANIFEST_NAME).read_text())


def test_units_are_checked_before_a_run(tmp_path):
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump({**MICRO, "box_units": "inches"}))
    with pytest.raises(PipelineError, match="box_units must be one of"):
        check_recipe(load_pipeline_recipe(recipe_file))
    recipe_file.write_text(yaml.safe_dump({**MICRO, "data": {**MICRO["data"], "reviewed": ["case.sqlite"]}}))
    with pytest.raises(PipelineError, match="reviewer-accepted chains"):
        check_recipe(load_pipeline_recipe(recipe_file))
