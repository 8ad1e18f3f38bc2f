"""The demo model the README's run command opens: shipped, trained, installed, and kept current."""

from __future__ import annotations

import json
import shutil

import pytest

from engine.modeldir import Manifest, inspect_model_dir
from engine.resources import resource_path
from train import cli
from train.synth.generate import GENERATOR_VERSION

BUNDLED = resource_path("demo_model")


def test_the_bundled_demo_model_is_a_trained_model_the_engine_loads():
    info = inspect_model_dir(BUNDLED)
    manifest = Manifest.read(BUNDLED)
    stages = [stage.name for stage in manifest.lineage]
    assert stages[:2] == ["init", "sft"] and stages[-1] == "export"  # trained from random weights, then shipped
    held_out = manifest.evaluation["held_out"]
    assert held_out["format_ok"] >= 0.9  # it writes whole chains
    assert held_out["key_metrics"]["phase"] > 0.5  # and knows the phase far above chance (1/7)
    assert info.architecture == "Qwen2_5_VLForConditionalGeneration"


def test_demo_installs_the_bundled_model_and_replaces_an_older_one(tmp_path, monkeypatch):
    out = tmp_path / "demo"
    out.mkdir()
    # a current case: only the model is at stake
    (out / "synth.json").write_text(json.dumps({"version": GENERATOR_VERSION}))
    stale = out / "model"
    shutil.copytree(BUNDLED, stale)
    manifest = json.loads((stale / "surgview.json").read_text())
    manifest["name"] = "an older demo model"
    (stale / "surgview.json").write_text(json.dumps(manifest))

    assert cli.main(["demo", "--out", str(out), "--quiet"]) == 0
    assert (out / "model" / "surgview.json").read_bytes() == (BUNDLED / "surgview.json").read_bytes()
    assert not (out / "model.part").exists()
    weights = (out / "model" / "model.safetensors").stat().st_mtime_ns
    assert cli.main(["demo", "--out", str(out), "--quiet"]) == 0  # current: left alone
    assert (out / "model" / "model.safetensors").stat().st_mtime_ns == weights


def test_demo_remakes_a_case_an_older_renderer_made_and_keeps_a_current_one(tmp_path, monkeypatch, capsys):
    """A returning user's demo case from before a renderer fix shows pictures the bundled model was not trained on
    (its CVS call on them lands a frame early): the demo command makes the case again, and only then."""
    out = tmp_path / "demo"
    out.mkdir()
    (out / "synth.json").write_text(json.dumps({"generator": "surgview synth", "version": GENERATOR_VERSION - 1}))
    made = []

    def fake_generate(folder, config, progress=None):
        made.append((folder, config.seed, config.minutes))
        (folder / "synth.json").write_text(json.dumps({"generator": "surgview synth", "version": GENERATOR_VERSION}))
        return {}

    monkeypatch.setattr(cli, "generate", fake_generate)
    assert cli.main(["demo", "--out", str(out), "--quiet"]) == 0
    assert made == [(out, 7, 2.0)]
    assert "older renderer" in capsys.readouterr().err
    assert (out / "model" / "surgview.json").exists()
    assert cli.main(["demo", "--out", str(out), "--quiet"]) == 0  # now current: left alone
    assert len(made) == 1
    (out / "synth.json").write_text("{not json")  # a damaged summary is a case to make again, not a crash
    assert cli.main(["demo", "--out", str(out), "--quiet"]) == 0
    assert len(made) == 2


@pytest.mark.slow
def test_the_demo_models_phase_timeline_matches_a_held_out_case(tmp_path, capsys, monkeypatch):
    """What the viewer shows: the smoothed phase timeline over a case the model never saw."""
    from engine import cli as engine_cli
    from train.synth.generate import SynthConfig, generate

    generate(tmp_path / "case", SynthConfig(cases=1, minutes=2.0, seed=11))
    video = tmp_path / "case" / "cholec80" / "videos" / "video01.mp4"
    phases = tmp_path / "case" / "cholec80" / "phase_annotations" / "video01-phase.txt"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home"))  # the case store goes here
    code = engine_cli.main(
        [
            "analyze",
            str(video),
            "--model",
            str(BUNDLED),
            "--stride",
            "2",
            "--batch",
            "4",
            "--quiet",
            "--phases",
            str(phases),
        ]
    )
    assert code == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "phase timeline agrees" in x)
    agreement = float(line.split(" on ")[1].split("%")[0]) / 100
    assert agreement > 0.5, line
