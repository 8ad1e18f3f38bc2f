"""A training run reuses cases and cached frames only while they are the ones its recipe and renderer would make."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import cv2
import pytest

import train.synth.generate as synth
from train.data.cholec80 import cholec80_samples
from train.data.frames import extract_frames
from train.data.sample import Task
from train.synth.generate import GENERATOR_VERSION, train_test_cases

from .test_adapters import phase_txt, write_video


@pytest.fixture
def fake_generate(monkeypatch):
    """Stand-in for rendering (minutes a case): writes the summary a real run writes and one marker file."""
    made: list[tuple[str, int, float]] = []

    def generate(folder: Path, config: synth.SynthConfig, progress=None, workers: int = 1, reuse=None) -> dict:
        folder.mkdir(parents=True, exist_ok=True)
        made.append((folder.name, config.seed, config.minutes))
        summary = {"generator": "surgview synth", "version": GENERATOR_VERSION, "config": asdict(config), "cases": []}
        (folder / "synth.json").write_text(json.dumps(summary))
        (folder / "marker").write_text(f"seed {config.seed} minutes {config.minutes}")
        return summary

    monkeypatch.setattr(synth, "generate", generate)
    return made


def test_a_rerun_keeps_cases_made_with_the_same_settings(tmp_path, fake_generate):
    train_test_cases(tmp_path, 3, 1, 2.0, 0)
    assert fake_generate == [("cases-train.partial", 0, 2.0), ("cases-test.partial", 1000, 2.0)]
    assert (tmp_path / "cases-train" / "marker").read_text() == "seed 0 minutes 2.0"
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob("*.stale"))
    train_test_cases(tmp_path, 3, 1, 2.0, 0)
    assert len(fake_generate) == 2  # nothing made again


def test_cases_of_an_older_renderer_or_other_settings_are_made_again(tmp_path, fake_generate):
    """Before, any folder with a synth.json was kept: a recipe changed to other minutes, or cases copied from a run
    made before a renderer fix, trained and evaluated on pictures other than the ones the recipe names."""
    train_test_cases(tmp_path, 3, 1, 2.0, 0)
    train_test_cases(tmp_path, 3, 1, 3.0, 0)  # other settings: both splits made again
    assert [m[2] for m in fake_generate] == [2.0, 2.0, 3.0, 3.0]
    assert (tmp_path / "cases-test" / "marker").read_text() == "seed 1000 minutes 3.0"

    summary_path = tmp_path / "cases-train" / "synth.json"
    summary = json.loads(summary_path.read_text())
    summary["version"] = GENERATOR_VERSION - 1
    summary_path.write_text(json.dumps(summary))
    (tmp_path / "cases-train" / "video99.mp4").write_bytes(b"an old case")
    train_test_cases(tmp_path, 3, 1, 3.0, 0)
    assert len(fake_generate) == 5  # the older renderer's training cases only
    assert not (tmp_path / "cases-train" / "video99.mp4").exists()  # no old case left among the new ones


def test_an_interrupted_remake_leaves_the_old_cases_not_a_mix(tmp_path, fake_generate, monkeypatch):
    train_test_cases(tmp_path, 3, 1, 2.0, 0)

    def killed(folder, config, progress=None, workers=1, reuse=None):
        folder.mkdir(parents=True)
        (folder / "half.mp4").write_bytes(b"half a case")
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "generate", killed)
    with pytest.raises(KeyboardInterrupt):
        train_test_cases(tmp_path, 3, 1, 3.0, 0)
    assert (tmp_path / "cases-train" / "marker").read_text() == "seed 0 minutes 2.0"  # old cases intact
    assert not (tmp_path / "cases-train" / "half.mp4").exists()


def _cholec80_case(root: Path, grey_shift: int) -> None:
    """One Cholec80 case whose frames' grey levels depend on ``grey_shift`` (another recording, same name)."""
    write_video(root / "videos" / "video01.mp4", 60, grey_shift=grey_shift)
    (root / "phase_annotations").mkdir(parents=True, exist_ok=True)
    (root / "phase_annotations" / "video01-phase.txt").write_text(phase_txt(["Preparation"] * 60))


def test_a_video_written_again_under_its_name_is_not_served_from_the_old_frames(tmp_path):
    root, cache = tmp_path / "cholec80", tmp_path / "cache"
    _cholec80_case(root, 0)
    before = extract_frames(cholec80_samples(root, cases=["video01"], tasks={Task.PHASE}), cache, fmt="png")
    grey_before = {ref.index: int(cv2.imread(str(p))[0, 0, 0]) for ref, p in before.items()}

    _cholec80_case(root, 100)  # remade cases: same path, other pictures
    after = extract_frames(cholec80_samples(root, cases=["video01"], tasks={Task.PHASE}), cache, fmt="png")
    grey_after = {ref.index: int(cv2.imread(str(p))[0, 0, 0]) for ref, p in after.items()}
    assert set(grey_after) == set(grey_before)
    for index, grey in grey_before.items():
        assert abs(grey_after[index] - (grey + 100) % 250) <= 3  # the new recording's frame, not the cached one


def test_cases_something_was_built_on_are_refused_not_remade(tmp_path, fake_generate):
    """A run whose stages were trained on its cases, or an evaluation reading another run's cases, must not remake
    them: the stages would stay on the old pictures, or the other run would lose its cases."""
    train_test_cases(tmp_path, 3, 1, 2.0, 0)
    with pytest.raises(synth.SynthError, match="use a new run folder"):
        train_test_cases(tmp_path, 3, 1, 3.0, 0, remake=False)
    assert (tmp_path / "cases-train" / "marker").read_text() == "seed 0 minutes 2.0"  # untouched
    assert len(fake_generate) == 2
    train_test_cases(tmp_path, 3, 1, 2.0, 0, remake=False)  # the same settings: read as they are
    fresh = tmp_path / "fresh"
    train_test_cases(fresh, 3, 1, 2.0, 0, remake=False)  # nothing there yet: made
    assert (fresh / "cases-test" / "marker").exists()


def test_a_link_or_file_in_place_of_the_folder_is_replaced_and_its_target_kept(tmp_path, fake_generate):
    shared = tmp_path / "shared-cases"
    shared.mkdir()
    (shared / "video01.mp4").write_bytes(b"someone else's case")
    out = tmp_path / "run"
    out.mkdir()
    (out / "cases-train").symlink_to(shared, target_is_directory=True)
    (out / "cases-test").write_text("not a folder")
    train_test_cases(out, 3, 1, 2.0, 0)
    assert (out / "cases-train").is_dir() and not (out / "cases-train").is_symlink()
    assert (out / "cases-test" / "marker").exists()
    assert (shared / "video01.mp4").exists()  # the link's target is never deleted
    assert not list(out.glob("*.stale")) and not list(out.glob("*.partial"))


def test_rarp_splits_follow_the_same_rule(tmp_path, monkeypatch):
    """SAR-RARP50-layout cases (one root, a summary listing each split's settings) are kept, remade or refused as
    the cholecystectomy cases are, and the summary never names a split's old settings beside its new ones."""
    import train.synth.rarp as rarp

    made: list[tuple[str, float]] = []

    def generate_rarp(out: Path, config: rarp.RarpConfig, progress=None) -> dict:
        made.append((config.split, config.minutes))
        summary = synth.read_summary(out) or {"version": rarp.GENERATOR_VERSION, "configs": [], "cases": []}
        summary["version"] = rarp.GENERATOR_VERSION
        summary["configs"].append(asdict(config))
        last = out / config.split / f"video_{config.first_id + config.cases - 1:02d}"
        last.mkdir(parents=True, exist_ok=True)
        (last / "action_discrete.txt").write_text(f"{config.minutes}")
        (out / "synth.json").write_text(json.dumps(summary))
        return summary

    monkeypatch.setattr(rarp, "generate_rarp", generate_rarp)
    rarp.rarp_train_test_cases(tmp_path, 2, 1, 0.5, 0)
    rarp.rarp_train_test_cases(tmp_path, 2, 1, 0.5, 0)
    assert made == [("train1", 0.5), ("test", 0.5)]  # kept on the rerun
    with pytest.raises(rarp.RarpSynthError, match="use a new run folder"):
        rarp.rarp_train_test_cases(tmp_path, 2, 1, 1.0, 0, remake=False)
    assert len(made) == 2
    rarp.rarp_train_test_cases(tmp_path, 2, 1, 1.0, 0)
    assert made[2:] == [("train1", 1.0), ("test", 1.0)]
    summary = json.loads((tmp_path / "synth.json").read_text())
    assert sorted((c["split"], c["minutes"]) for c in summary["configs"]) == [("test", 1.0), ("train1", 1.0)]

    summary["version"] = rarp.GENERATOR_VERSION - 1  # an older generator wrote both: both made again
    (tmp_path / "synth.json").write_text(json.dumps(summary))
    rarp.rarp_train_test_cases(tmp_path, 2, 1, 1.0, 0)
    assert made[4:] == [("train1", 1.0), ("test", 1.0)]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_more_cases_of_the_same_settings_render_only_the_new_ones(tmp_path):
    small = synth.SynthConfig(cases=1, minutes=0.9, seed=4, width=160, height=90)
    more = synth.SynthConfig(cases=2, minutes=0.9, seed=4, width=160, height=90)
    synth.generate(tmp_path / "one", small)
    frames: list[int] = []
    synth.generate(tmp_path / "two", more, frames.append, reuse=tmp_path / "one")
    synth.generate(tmp_path / "fresh", more)
    assert _files(tmp_path / "two") == _files(tmp_path / "fresh")  # the folder a fresh run writes, byte for byte
    assert sum(frames) == 2 * more.frames_per_case  # the progress bar still counts every frame

    # the first case was copied, not rendered: a mark made on the earlier folder's video comes along
    video = tmp_path / "one" / "cholec80" / "videos" / "video01.mp4"
    video.write_bytes(video.read_bytes() + b"copied")
    synth.generate(tmp_path / "again", more, reuse=tmp_path / "one")
    assert (tmp_path / "again" / "cholec80" / "videos" / "video01.mp4").read_bytes().endswith(b"copied")
    # another seed makes other cases: nothing is taken from the folder
    other = synth.SynthConfig(cases=1, minutes=0.9, seed=5, width=160, height=90)
    synth.generate(tmp_path / "other", other, reuse=tmp_path / "one")
    assert not (tmp_path / "other" / "cholec80" / "videos" / "video01.mp4").read_bytes().endswith(b"copied")
