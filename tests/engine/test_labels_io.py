"""Reviewer labels in and out in the datasets' formats: ``surgview labels import|export`` round trips, the
train adapters reading the exports unchanged, and bad files refused with file and line, the store untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.main import main as surgview
from engine.chain import CvsState
from engine.labels_cli import case_facts
from engine.labels_io import LabelFormatError, cholec80_text, import_cholec80
from engine.review_labels import ReviewLabels
from engine.store import CaseStore, case_store_path
from train.data.cholec80 import cholec80_samples
from train.data.cholect50 import cholect50_samples
from train.data.endoscapes import endoscapes_samples


@pytest.fixture
def case(synth_case, data_home):
    root = synth_case[0]
    return root, root / "cholec80" / "videos" / "video01.mp4"


def snapshot(video: Path):
    with CaseStore.open(case_store_path(video)) as store:
        return ReviewLabels(store).snapshot()


def test_cholec80_phase_file_round_trips_byte_identical(case, tmp_path, capsys):
    root, video = case
    original = root / "cholec80" / "phase_annotations" / "video01-phase.txt"
    assert surgview(["labels", "import", str(video), "--cholec80-phase", str(original), "--reviewer", "dr-a"]) == 0
    assert "imported 7 label rows on frames 0..1499" in capsys.readouterr().out
    review = snapshot(video)
    assert {s.reviewer for s in review.segments} == {"dr-a"}
    assert {s.source for s in review.segments} == {"import cholec80 video01-phase.txt"}
    out = tmp_path / "export"
    assert surgview(["labels", "export", str(video), "--format", "cholec80", "--out", str(out)]) == 0
    exported = out / "phase_annotations" / "video01-phase.txt"
    assert exported.read_bytes() == original.read_bytes()
    again = cholec80_samples(out, split_variant=None, tasks=("phase",))
    first = cholec80_samples(root / "cholec80", split_variant=None, tasks=("phase",))
    assert [(s.frame.index, s.truth.phase) for s in again] == [(s.frame.index, s.truth.phase) for s in first]
    assert again[0].frame.path.resolve() == video.resolve()  # the export links the case's video


def test_endoscapes_and_cholect50_exports_read_as_the_originals(case, tmp_path):
    root, video = case
    csv_file = root / "endoscapes" / "all_metadata.csv"
    t50_file = root / "CholecT50" / "labels" / "VID01.json"
    assert surgview(["labels", "import", str(video), "--endoscapes-cvs", str(csv_file)]) == 0
    assert surgview(["labels", "import", str(video), "--cholect50", str(t50_file)]) == 0
    review = snapshot(video)
    r = review.cvs_range_at(1, 0)
    assert (r.start, r.end, r.value) == (0, 1, 0.0) and r.state is CvsState.NOT_MET
    out = tmp_path / "export"
    assert surgview(["labels", "export", str(video), "--format", "endoscapes", "--out", str(out / "e")]) == 0
    assert surgview(["labels", "export", str(video), "--format", "cholect50", "--out", str(out / "t")]) == 0

    mine = endoscapes_samples(out / "e", video_dir=out / "e" / "videos", splits=False)
    theirs = endoscapes_samples(root / "endoscapes", video_dir=video.parent, splits=False)
    assert [(s.frame.index, s.truth.cvs) for s in mine] == [(s.frame.index, s.truth.cvs) for s in theirs]
    assert any(s.truth.cvs != (0.0, 0.0, 0.0) for s in mine)  # the rater means came back, not just 0/1

    mine = cholect50_samples(out / "t", splits=False, tasks=("triplet",))
    theirs = cholect50_samples(root / "CholecT50", splits=False, tasks=("triplet",), video_dir=video.parent)
    assert [(s.frame.index, s.truth.triplets) for s in mine] == [(s.frame.index, s.truth.triplets) for s in theirs]
    assert sum(bool(s.truth.triplets) for s in mine) > 10  # boxes and all, and frames without triplets kept


@pytest.mark.parametrize(
    ("flag", "name", "bad", "where"),
    [
        ("--cholec80-phase", "p.txt", "Frame\tPhase\n0\tPreparation\n1\tPreparation\n2\tAppendectomy\n", "p.txt:4"),
        ("--cholec80-phase", "p.txt", "Frame\tPhase\n0\tPreparation\n5\tPreparation\n", "p.txt:3"),
        ("--endoscapes-cvs", "m.csv", "vid,frame,C1,C2,C3\n1,0,0,0,0\n1,25,0.5,2,0\n", "m.csv:3"),
        ("--endoscapes-cvs", "m.csv", "vid,frame,C1,C2,C3\n1,99999,0,0,0\n", "m.csv:2"),
        ("--cholect50", "VID01.json", '{"annotations": {\n"0": [[1, 0, 1, -1, -1, -1, -1, 1, 2, -1]]}}', "VID01.json:2"),
        ("--cholect50", "VID01.json", '{"annotations": {\n\n"0": [[999, 0, 1.0, -1, -1, -1, -1, 1, 2, -1, -1, -1, '
         '-1, -1, 0]]}}', "VID01.json:3"),
    ],
)  # fmt: skip
def test_bad_files_name_file_and_line_and_change_nothing(case, tmp_path, capsys, flag, name, bad, where):
    root, video = case
    good = root / "cholec80" / "phase_annotations" / "video01-phase.txt"
    assert surgview(["labels", "import", str(video), "--cholec80-phase", str(good)]) == 0
    before = snapshot(video)
    path = tmp_path / name
    path.write_text(bad, encoding="utf-8")
    capsys.readouterr()
    assert surgview(["labels", "import", str(video), flag, str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("surgview: error: ") and where in err and "Traceback" not in err
    assert err.count("\n") == 1
    assert snapshot(video) == before


def test_an_import_replaces_the_reviewers_labels_of_its_frames_and_undoes(case, tmp_path):
    _, video = case
    facts = case_facts(video)
    phase_file = tmp_path / "short-phase.txt"
    phase_file.write_text("Frame\tPhase\n0\tPreparation\n1\tPreparation\n2\tCalotTriangleDissection\n")
    with CaseStore.for_video(video, fps=facts.fps, frame_count=facts.frames) as store:
        labels = ReviewLabels(store, "dr-a")
        labels.set_phase(0, 10, "ClippingCutting")
        before = labels.snapshot()
        change = import_cholec80(labels, phase_file, facts)
        assert [(s.start, s.end, s.phase) for s in labels.snapshot().segments] == [
            (0, 2, "Preparation"),
            (2, 3, "CalotTriangleDissection"),
            (3, 10, "ClippingCutting"),  # outside the file: the reviewer's own label stays
        ]
        assert cholec80_text(labels.snapshot()).startswith("Frame\tPhase\n0\tPreparation\n")
        labels.apply(change.inverse())
        assert labels.snapshot() == before
        labels.clear_phase(0, 1)
        with pytest.raises(LabelFormatError, match=r"no reviewer phase on frames 0\.\.0"):
            cholec80_text(labels.snapshot())


def test_exports_say_what_the_format_cannot_hold(case, tmp_path, capsys):
    _, video = case
    facts = case_facts(video)
    with CaseStore.for_video(video, fps=facts.fps, frame_count=facts.frames) as store:
        ReviewLabels(store).set_phase(10, 20, "Preparation")
    assert surgview(["labels", "export", str(video), "--format", "cholec80", "--out", str(tmp_path / "x")]) == 1
    assert "no reviewer phase on frames 0..9" in capsys.readouterr().err
    assert surgview(["labels", "export", str(video), "--format", "endoscapes", "--out", str(tmp_path / "y")]) == 1
    assert "no frame has all three criteria" in capsys.readouterr().err
    args = ["labels", "export", str(video), "--format", "cholect50", "--out", str(tmp_path / "z"), "--name", "case"]
    assert surgview(args) == 1
    assert "--name with one" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").rglob("*.txt"))
