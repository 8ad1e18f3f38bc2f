"""Dataset adapters on small fixtures written here in the datasets' exact formats, and on a synthetic case."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from engine.ontology import load_ontology
from engine.video import VideoReader
from train.data.cholec80 import cholec80_samples, read_phases, read_tools
from train.data.cholect50 import cholect50_samples, read_labels
from train.data.endoscapes import endoscapes_samples, read_metadata
from train.data.errors import DatasetError
from train.data.frames import extract_frames, with_cached_frames
from train.data.join import frame_view
from train.data.sample import Task
from train.data.splits import cholec80_split, cholect50_folds, cholect50_split, endoscapes_split
from train.data.surgr1 import answer_text, read_jsonl, to_row, write_jsonl
from train.data.synthetic import synthetic_samples

# The real Cholec80 sample lies in ../shared/data beside the checkout (never committed); SURGVIEW_SHARED_DATA moves it.
SHARED_DATA = Path(os.environ.get("SURGVIEW_SHARED_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data")
REAL_MCQ = SHARED_DATA / "cholec80-phase-mcq" / "phase_mcq.jsonl"
TOOL_HEADER = "Frame\tGrasper\tBipolar\tHook\tScissors\tClipper\tIrrigator\tSpecimenBag"
PHASES = ["Preparation"] * 25 + ["CalotTriangleDissection"] * 25 + ["ClippingCutting"] * 25


# ---------------------------------------------------------------- fixture writers (real formats)


def write_video(path: Path, frames: int, width: int = 64, height: int = 48, fps: int = 25, grey_shift: int = 0) -> None:
    """A tiny H.264 video whose frame i has a distinct grey level (so cached frames can be checked)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "10", "g": "10"}
        for i in range(frames):
            image = np.full((height, width, 3), (i * 3 + grey_shift) % 250, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def phase_txt(phases: list[str]) -> str:
    return "Frame\tPhase\n" + "".join(f"{i}\t{p}\n" for i, p in enumerate(phases))


def tool_txt(rows: list[tuple[int, str]]) -> str:
    return TOOL_HEADER + "\n" + "".join(f"{f}\t" + "\t".join(bits) + "\n" for f, bits in rows)


@pytest.fixture(scope="module")
def cholec80_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cholec80")
    write_video(root / "videos" / "video01.mp4", len(PHASES))
    write_video(root / "videos" / "video41.mp4", 50)
    (root / "phase_annotations").mkdir()
    (root / "tool_annotations").mkdir()
    (root / "phase_annotations" / "video01-phase.txt").write_text(phase_txt(PHASES))
    (root / "phase_annotations" / "video41-phase.txt").write_text(phase_txt(["Preparation"] * 50))
    tools = [(0, "1000000"), (25, "1010000"), (50, "0000101")]
    (root / "tool_annotations" / "video01-tool.txt").write_text(tool_txt(tools))
    (root / "tool_annotations" / "video41-tool.txt").write_text(tool_txt([(0, "0000000"), (25, "0000001")]))
    return root


def t50_instance(tid, iid, vid, gid, phase, box=(-1, -1, -1, -1), tbox=(-1, -1, -1, -1)) -> list:
    score = 1.0 if tid >= 0 else -1.0
    return [tid, iid, score, *box, vid, gid, 1.0 if tbox[0] >= 0 else -1.0, *tbox, phase]


T50_CATEGORIES = {
    "instrument": {"0": "grasper", "2": "hook"},
    "verb": {"1": "retract", "2": "dissect"},
    "target": {"0": "gallbladder", "1": "cystic_plate"},
    "triplet": {"17": "grasper,retract,gallbladder", "60": "hook,dissect,gallbladder"},
    "phase": {"0": "preparation", "1": "carlot-triangle-dissection"},
}


def t50_json(annotations: dict, indent: int | None = 1) -> str:
    data = {"video": 1, "num_frames": len(annotations), "categories": T50_CATEGORIES, "annotations": annotations}
    return json.dumps(data, indent=indent)


@pytest.fixture(scope="module")
def cholect50_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cholect50")
    (root / "labels").mkdir()
    annotations = {
        "0": [t50_instance(-1, -1, -1, -1, 0)],
        "1": [
            t50_instance(17, 0, 1, 0, 1, box=(0.1, 0.2, 0.3, 0.4)),
            t50_instance(60, 2, 2, 0, 1, box=(0.5, 0.5, 0.25, 0.25), tbox=(0.4, 0.1, 0.5, 0.5)),
        ],
        "2": [t50_instance(17, 0, 1, 0, 1)],
    }
    (root / "labels" / "VID79.json").write_text(t50_json(annotations))
    frames = root / "videos" / "VID79"
    frames.mkdir(parents=True)
    for second in range(3):
        cv2.imwrite(str(frames / f"{second:06d}.png"), np.zeros((48, 86, 3), np.uint8))  # 86x48, not 854x480
    return root


ENDO_HEADER = "vid,frame,avg_cvs,C1,C2,C3,is_ds_keyframe"


@pytest.fixture(scope="module")
def endoscapes_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("endoscapes")
    rows = [
        "1,14050,0.0,0.0,0.0,0.0,True",
        "1,14075,0.444,0.6666666666666666,0.3333333333333333,0.3333333333333333,False",
        "121,300,1.0,1.0,1.0,1.0,True",
        "121,325,,,,,False",  # not annotated: no sample
    ]
    (root / "all_metadata.csv").write_text(ENDO_HEADER + "\n" + "\n".join(rows) + "\n")
    for split, name in (("train", "1_14050"), ("train", "1_14075"), ("val", "121_300")):
        (root / split).mkdir(exist_ok=True)
        cv2.imwrite(str(root / split / f"{name}.jpg"), np.zeros((40, 60, 3), np.uint8))
    (root / "train_vids.txt").write_text("1.0\n2.0\n")
    (root / "val_vids.txt").write_text("121.0\n")
    (root / "test_vids.txt").write_text("160.0\n")
    return root


def assert_names(exc: pytest.ExceptionInfo, path: Path, line: int | None) -> None:
    err = exc.value
    assert err.path == path
    assert err.line == line
    assert str(err).startswith(f"{path}:{line}:" if line is not None else f"{path}:")


# ---------------------------------------------------------------- Cholec80


def test_cholec80_phase_and_tool_samples_at_1fps(cholec80_root):
    samples = cholec80_samples(cholec80_root)
    phase = [s for s in samples if s.task is Task.PHASE and s.case == "video01"]
    assert [s.frame.index for s in phase] == [0, 25, 50]
    assert [s.truth.phase for s in phase] == ["Preparation", "CalotTriangleDissection", "ClippingCutting"]
    assert phase[0].frame.path == cholec80_root / "videos" / "video01.mp4"
    assert (phase[0].frame.width, phase[0].frame.height) == (64, 48)
    tools = [s for s in samples if s.task is Task.TOOLS and s.case == "video01"]
    assert [s.truth.tools for s in tools] == [("Grasper",), ("Grasper", "Hook"), ("Clipper", "SpecimenBag")]
    assert phase[1].truth.tools == ("Grasper", "Hook")  # every sample carries all the frame's labels
    assert {s.split for s in samples if s.case == "video01"} == {"train"}
    assert {s.split for s in samples if s.case == "video41"} == {"test"}
    five = cholec80_samples(cholec80_root, fps=5, tasks=[Task.PHASE], cases=["video01"])
    assert [s.frame.index for s in five][:3] == [0, 5, 10] and len(five) == 15


@pytest.mark.parametrize(
    "body, line, words",
    [
        ("0\tPreparation\n1\tPreparation\tx\n", 3, "expected"),  # bad tab count
        ("0\tPreparation\n1\tAppendectomy\n", 3, "unknown phase"),
        ("0\tPreparation\nx1\tPreparation\n", 3, "expected"),  # non-integer frame
        ("0\tPreparation\n2\tPreparation\n", 3, "out of sequence"),
    ],
)
def test_cholec80_malformed_phase_rows_name_file_and_line(tmp_path, body, line, words):
    path = tmp_path / "video01-phase.txt"
    path.write_text("Frame\tPhase\n" + body)
    with pytest.raises(DatasetError, match=words) as exc:
        read_phases(path)
    assert_names(exc, path, line)


@pytest.mark.parametrize(
    "text, line, words",
    [
        (TOOL_HEADER + "\n0\t1\t0\t0\t0\t0\t0\n", 2, "8 tab-separated fields, got 7"),
        (TOOL_HEADER + "\n0\t1\t0\t0\t0\t0\t0\t0\n2.5\t1\t0\t0\t0\t0\t0\t0\n", 3, "not a non-negative integer"),
        (TOOL_HEADER + "\n0\t1\t0\t0\t0\t0\t0\t2\n", 2, "0 or 1"),
        (TOOL_HEADER + "\n25\t1\t0\t0\t0\t0\t0\t0\n0\t1\t0\t0\t0\t0\t0\t0\n", 3, "not after"),
        ("Frame\tGrasper\tBipolar\n", 1, "header"),
        (TOOL_HEADER.replace("Hook", "Stapler") + "\n", 1, "unknown tool column"),
    ],
)
def test_cholec80_malformed_tool_rows_name_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "video01-tool.txt"
    path.write_text(text)
    with pytest.raises(DatasetError, match=words) as exc:
        read_tools(path)
    assert_names(exc, path, line)


def test_cholec80_missing_video_or_tool_file_is_an_error_not_a_skip(cholec80_root, tmp_path):
    root = tmp_path / "c80"
    (root / "phase_annotations").mkdir(parents=True)
    (root / "tool_annotations").mkdir()
    (root / "phase_annotations" / "video02-phase.txt").write_text(phase_txt(["Preparation"] * 5))
    with pytest.raises(DatasetError, match="tool file missing"):
        cholec80_samples(root)
    (root / "tool_annotations" / "video02-tool.txt").write_text(tool_txt([(0, "0000000")]))
    with pytest.raises(DatasetError, match="no video file for video02"):
        cholec80_samples(root)


def test_cholec80_tool_row_beyond_the_phase_rows_is_an_error(tmp_path):
    root = tmp_path / "c80"
    (root / "phase_annotations").mkdir(parents=True)
    (root / "tool_annotations").mkdir()
    (root / "phase_annotations" / "video03-phase.txt").write_text(phase_txt(["Preparation"] * 5))
    (root / "tool_annotations" / "video03-tool.txt").write_text(tool_txt([(0, "0000000"), (25, "0000000")]))
    write_video(root / "videos" / "video03.mp4", 5)
    with pytest.raises(DatasetError, match="beyond the 5 phase rows"):
        cholec80_samples(root)


# ---------------------------------------------------------------- CholecT50


def test_cholect50_png_layout_triplets_tools_phase_and_pixel_boxes(cholect50_root):
    samples = cholect50_samples(cholect50_root)
    by = {(s.extra["second"], s.task): s for s in samples}
    assert (0, Task.TRIPLET) in by and by[(0, Task.TRIPLET)].truth.triplets == ()
    assert by[(0, Task.PHASE)].truth.phase == "Preparation"
    one = by[(1, Task.TRIPLET)]
    assert one.frame.path == cholect50_root / "videos" / "VID79" / "000001.png" and one.frame.index is None
    assert (one.frame.width, one.frame.height) == (86, 48)  # read from the file, not assumed 854x480
    assert one.truth.phase == "CalotTriangleDissection"
    grasp, hook = one.truth.triplets
    assert (grasp.instrument, grasp.verb, grasp.target, grasp.triplet_id) == ("grasper", "retract", "gallbladder", 17)
    assert grasp.instrument_box == pytest.approx((8.6, 9.6, 34.4, 28.8))
    assert grasp.target_box is None
    assert hook.instrument_box == pytest.approx((43.0, 24.0, 64.5, 36.0))
    assert hook.target_box == pytest.approx((34.4, 4.8, 77.4, 28.8))
    assert by[(1, Task.TOOLS)].truth.tools == ("Grasper", "Hook")
    assert [i.tool for i in by[(1, Task.TOOLS)].truth.instruments] == ["Grasper", "Hook"]
    assert "SpecimenBag" not in by[(1, Task.TOOLS)].extra["tool_vocabulary"]
    assert one.split == "test" and one.extra["fold"] == 1  # VID79 is in fold 1
    assert cholect50_samples(cholect50_root, test_fold=2)[0].split == "train"


@pytest.mark.parametrize(
    "frames, words",
    [
        (
            {"0": [t50_instance(-1, -1, -1, -1, 0)], "1": [t50_instance(17, 0, 1, 0, 1)[:14]]},
            "expected 15 values, got 14",
        ),
        ({"0": [t50_instance(-1, -1, -1, -1, 0)], "1": [t50_instance(17, 2, 1, 0, 1)]}, "row says"),
        ({"0": [t50_instance(-1, -1, -1, -1, 0)], "1": [t50_instance(999, 0, 1, 0, 1)]}, "unknown triplet id 999"),
        ({"0": [t50_instance(-1, -1, -1, -1, 0)], "1": [t50_instance(17, 0, 1, 0, 9)]}, "unknown phase id 9"),
        ({"0": [t50_instance(-1, -1, -1, -1, 0)], "1": [[17, 0, "x", *([0] * 12)]]}, "not a number"),
        ({"0": [t50_instance(-1, -1, -1, -1, 0)], "1": [t50_instance(17, 0, 1, 0, 1, box=(3, 3, 1, 1))]}, "normalised"),
    ],
)
def test_cholect50_malformed_instances_name_file_and_line(tmp_path, frames, words):
    path = tmp_path / "VID01.json"
    text = t50_json(frames)
    path.write_text(text)
    line = text.splitlines().index('  "1": [') + 1
    with pytest.raises(DatasetError, match=words) as exc:
        read_labels(path)
    assert_names(exc, path, line)
    assert "frame 1" in str(exc.value)


def test_cholect50_invalid_json_names_its_line(tmp_path):
    path = tmp_path / "VID01.json"
    path.write_text('{\n "annotations": {\n  "0": [[1, 2,]]\n }\n}\n')
    with pytest.raises(DatasetError, match="invalid JSON") as exc:
        read_labels(path)
    assert_names(exc, path, 3)


def test_cholect50_missing_png_names_the_frame_line(cholect50_root, tmp_path):
    root = tmp_path / "t50"
    (root / "labels").mkdir(parents=True)
    (root / "videos" / "VID02").mkdir(parents=True)
    text = t50_json({"0": [t50_instance(17, 0, 1, 0, 1)]})
    (root / "labels" / "VID02.json").write_text(text)
    with pytest.raises(DatasetError, match=r"000000\.png missing") as exc:
        cholect50_samples(root)
    assert exc.value.line == text.splitlines().index('  "0": [') + 1


def test_cholect50_video_layout_maps_seconds_to_frame_indices(tmp_path):
    root = tmp_path / "t50"
    (root / "labels").mkdir(parents=True)
    data = json.loads(t50_json({"0": [t50_instance(17, 0, 1, 0, 0)], "2": [t50_instance(17, 0, 1, 0, 0)]}))
    data["info"] = {"source_fps": 10}
    (root / "labels" / "VID05.json").write_text(json.dumps(data))
    write_video(tmp_path / "vids" / "video05.mp4", 30, fps=10)
    samples = cholect50_samples(root, video_dir=tmp_path / "vids", tasks=[Task.TRIPLET])
    assert [(s.frame.path.name, s.frame.index) for s in samples] == [("video05.mp4", 0), ("video05.mp4", 20)]


# ---------------------------------------------------------------- Endoscapes


def test_endoscapes_csv_cvs_samples_with_images_and_splits(endoscapes_root):
    samples = endoscapes_samples(endoscapes_root)
    assert [(s.case, s.extra["frame"]) for s in samples] == [("1", 14050), ("1", 14075), ("121", 300)]
    assert samples[1].truth.cvs == pytest.approx((2 / 3, 1 / 3, 1 / 3))
    assert samples[0].frame.path == endoscapes_root / "train" / "1_14050.jpg"
    assert (samples[0].frame.width, samples[0].frame.height) == (60, 40)
    assert [s.split for s in samples] == ["train", "train", "val"]
    assert all(s.task is Task.CVS for s in samples)
    assert len(endoscapes_samples(endoscapes_root, keyframes_only=True)) == 2


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("vid,frame,avg_cvs,C1,C2\n1,0,0,0,0\n", 1, "lacks column.*C3"),
        (ENDO_HEADER + "\n1,0,0,0,0,0,True\n1,25,0,0,0\n", 3, "expected 7 comma-separated fields, got 5"),
        (ENDO_HEADER + "\n1,x,0,0,0,0,True\n", 2, "frame is not a number"),
        (ENDO_HEADER + "\n1,0,0,0,1.5,0,True\n", 2, "C2 must be a rater mean"),
        (ENDO_HEADER + "\n1,0,0,0,yes,0,True\n", 2, "C2 is not a number"),
    ],
)
def test_endoscapes_malformed_rows_name_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "all_metadata.csv"
    path.write_text(text)
    with pytest.raises(DatasetError, match=words) as exc:
        read_metadata(path)
    assert_names(exc, path, line)


def test_endoscapes_row_without_a_frame_is_an_error(tmp_path):
    (tmp_path / "all_metadata.csv").write_text(ENDO_HEADER + "\n7,100,0,0,0,0,True\n")
    with pytest.raises(DatasetError, match="no frame for vid 7 frame 100") as exc:
        endoscapes_samples(tmp_path)
    assert exc.value.line == 2
    assert endoscapes_samples(tmp_path, missing="skip") == []


# ---------------------------------------------------------------- splits


def test_official_splits():
    assert cholec80_split("video01") == "train" and cholec80_split("video40") == "train"
    assert cholec80_split("video41") == "test" and cholec80_split(80) == "test"
    assert cholec80_split("video33", "32/8/40") == "val"
    folds = cholect50_folds()
    videos = [v for vids in folds.values() for v in vids]
    assert sorted(folds) == [1, 2, 3, 4, 5] and all(len(v) == 10 for v in folds.values())
    assert len(set(videos)) == 50
    assert cholect50_split("VID79", test_fold=1) == "test"
    assert cholect50_split("VID80", test_fold=1, val_fold=2) == "val"
    assert cholect50_split("VID78", test_fold=1) == "train"
    assert cholect50_split("VID06", test_fold=None) == "test"  # challenge split
    assert endoscapes_split(5) == "train" and endoscapes_split(130) == "val" and endoscapes_split(190) == "test"


def test_endoscapes_split_files_win_over_ranges(endoscapes_root):
    assert endoscapes_split(160, endoscapes_root) == "test"  # the ranges would say val
    assert endoscapes_split(3, endoscapes_root) is None


# ---------------------------------------------------------------- Surg-R1 / ms-swift JSONL

MCQ_Q = (
    "Given the laparoscopic cholecystectomy image <image>, which surgical phase is being performed?\n"
    "A. Preparation\nB. Calot Triangle Dissection\nC. Clipping Cutting\nD. Gallbladder Dissection\n"
    "E. Gallbladder Packaging\nF. Cleaning Coagulation\nG. Gallbladder Retraction"
)


def jsonl_rows() -> list[dict]:
    return [
        {
            "messages": [{"role": "user", "content": MCQ_Q}, {"role": "assistant", "content": "C. Clipping Cutting"}],
            "images": ["frames/42/63051.jpg"],
        },
        {
            "messages": [
                {"role": "system", "content": "You are a surgical assistant."},
                {"role": "user", "content": "<image>Locate the <ref-object> in the frame."},
                {"role": "assistant", "content": "<bbox>"},
            ],
            "images": ["frames/42/63076.jpg"],
            "objects": {"ref": ["grasper"], "bbox": [[10, 20, 30, 40]]},
        },
        {
            "messages": [
                {"role": "user", "content": "<image>Which instrument-verb-target triplets are shown?"},
                {"role": "assistant", "content": "hook,dissect,gallbladder; grasper,retract,gallbladder"},
            ],
            "images": ["frames/42/63101.jpg"],
            "id": "é-7",
        },
    ]


def test_surgr1_jsonl_reads_and_writes_back_the_same_lines(tmp_path):
    lines = [json.dumps(row, ensure_ascii=False) for row in jsonl_rows()]
    src = tmp_path / "set.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    samples = read_jsonl(src)
    assert [s.task for s in samples] == [Task.PHASE_MCQ, Task.LOCALISATION, Task.TRIPLET]
    mcq, loc, trip = samples
    assert mcq.truth.phase == "ClippingCutting" and mcq.answer == "C. Clipping Cutting"
    assert mcq.case == "video42" and mcq.extra["frame_index"] == 63051
    assert mcq.frame.path == tmp_path / "frames" / "42" / "63051.jpg"
    assert loc.truth.instruments[0].tool == "Grasper" and loc.truth.instruments[0].box == (10, 20, 30, 40)
    assert [t.triplet_id for t in trip.truth.triplets] == [60, 17]
    out = tmp_path / "out.jsonl"
    assert write_jsonl(samples, out) == 3
    assert out.read_text(encoding="utf-8").splitlines() == lines
    # written into another folder, image paths are rewritten relative to it
    other = tmp_path / "sub" / "copy.jsonl"
    write_jsonl(samples, other)
    assert json.loads(other.read_text().splitlines()[0])["images"] == ["../frames/42/63051.jpg"]


def test_surgr1_writes_samples_from_other_adapters(cholect50_root, tmp_path):
    from dataclasses import replace

    sample = cholect50_samples(cholect50_root, tasks=[Task.PHASE])[1]
    sample = replace(sample, question="<image>Which phase?", answer="Calot Triangle Dissection")
    row = to_row(sample, image_root=cholect50_root)
    assert row == {
        "messages": [
            {"role": "user", "content": "<image>Which phase?"},
            {"role": "assistant", "content": "Calot Triangle Dissection"},
        ],
        "images": ["videos/VID79/000001.png"],
    }


def test_surgr1_malformed_lines_name_file_and_line(tmp_path):
    good = json.dumps(jsonl_rows()[0])
    cases = [
        ("{not json", "invalid JSON"),
        (json.dumps({"images": ["a.jpg"]}), "'messages'"),
        (json.dumps({**jsonl_rows()[0], "images": []}), "'images'"),
        (good.replace("C. Clipping Cutting", "C. Appendectomy"), "not a surgical phase"),
        (json.dumps({**jsonl_rows()[1], "objects": {"ref": ["x", "y"], "bbox": [[1, 2, 3, 4]]}}), "same length"),
    ]
    for bad, words in cases:
        path = tmp_path / "bad.jsonl"
        path.write_text(good + "\n" + bad + "\n")
        with pytest.raises(DatasetError, match=words) as exc:
            read_jsonl(path)
        assert_names(exc, path, 2)


def test_answer_text_strips_the_option_letter():
    assert answer_text("D. Gallbladder Dissection") == "Gallbladder Dissection"
    assert answer_text("B", MCQ_Q) == "Calot Triangle Dissection"
    assert answer_text("Preparation") == "Preparation"


@pytest.mark.skipif(not REAL_MCQ.exists(), reason=f"the Surg-R1 phase MCQ sample is not at {REAL_MCQ}")
def test_real_surgr1_phase_mcq_file(tmp_path):
    samples = read_jsonl(REAL_MCQ)
    assert len(samples) == 30
    phases = set(load_ontology().phase.names)
    assert all(s.task is Task.PHASE_MCQ and s.truth.phase in phases for s in samples)
    assert all(s.case.startswith("video") and s.frame.path.exists() for s in samples)
    out = tmp_path / "again.jsonl"
    write_jsonl(samples, out, image_root=REAL_MCQ.parent)
    assert out.read_text(encoding="utf-8").splitlines() == REAL_MCQ.read_text(encoding="utf-8").splitlines()


# ---------------------------------------------------------------- synthetic cases through the same adapters


@pytest.fixture(scope="module")
def synth_samples(synth_case):
    out, summary = synth_case
    return out, summary, synthetic_samples(out)


def test_synthetic_phase_counts_match_the_generator(synth_samples):
    _, summary, samples = synth_samples
    case = summary["cases"][0]
    phase = [s for s in samples if s.task is Task.PHASE]
    assert len(phase) == case["frames"] // 25
    for name, start, end in case["phases"]:
        expected = len([f for f in range(start, end) if f % 25 == 0])
        assert sum(s.truth.phase == name for s in phase) == expected
    assert all(s.split is None and s.dataset == "synthetic" for s in samples)


def test_synthetic_triplet_boxes_lie_within_the_frame(synth_samples):
    _, _, samples = synth_samples
    triplets = [s for s in samples if s.task is Task.TRIPLET]
    assert len(triplets) == 60
    boxes = 0
    for s in triplets:
        assert s.frame.path.suffix == ".mp4" and s.frame.index == s.extra["second"] * 25
        for t in s.truth.triplets:
            for box in (t.instrument_box, t.target_box):
                if box is None:
                    continue
                boxes += 1
                x1, y1, x2, y2 = box
                assert 0 <= x1 < x2 <= s.frame.width and 0 <= y1 < y2 <= s.frame.height
    assert boxes > 10


def test_synthetic_cvs_values_are_rater_means(synth_samples):
    _, _, samples = synth_samples
    cvs = [s for s in samples if s.task is Task.CVS]
    assert len(cvs) == 60
    allowed = (0.0, 1 / 3, 2 / 3, 1.0)
    for s in cvs:
        assert all(min(abs(v - a) for a in allowed) < 0.01 for v in s.truth.cvs)
    assert any(s.truth.cvs == (1.0, 1.0, 1.0) for s in cvs)


def test_synthetic_frame_view_joins_every_label(synth_samples):
    _, _, samples = synth_samples
    frames = [s for s in samples if s.task is Task.FRAME]
    assert len(frames) == 60
    assert all(s.extra.get("truth_log") and not s.extra.get("conflicts") for s in frames)
    full = [s for s in frames if s.truth.triplets and s.truth.anatomy]
    assert full
    t = full[0].truth
    assert t.phase and t.tools is not None and t.cvs is not None
    assert all(i.box is not None for i in t.instruments)
    # tools of the Cholec80 file agree with the instruments of the generator's log
    assert all(set(s.truth.tools) == {i.tool for i in s.truth.instruments} for s in frames)


def test_frame_view_merges_datasets_on_the_same_frame(cholec80_root):
    samples = cholec80_samples(cholec80_root, cases=["video01"])
    view = frame_view(samples)
    assert len(view) == 3 and all(s.task is Task.FRAME for s in view)
    assert view[1].truth.phase == "CalotTriangleDissection" and view[1].truth.tools == ("Grasper", "Hook")


# ---------------------------------------------------------------- frame cache


def test_extract_frames_decodes_once_and_matches_the_reader(cholec80_root, tmp_path, monkeypatch):
    samples = cholec80_samples(cholec80_root, cases=["video01"])
    mapping = extract_frames(samples, tmp_path / "cache", fmt="png")
    files = sorted(set(mapping.values()))
    assert [f.name for f in files] == ["000000.png", "000025.png", "000050.png"]
    assert files[0].parent.name.startswith("video01-")
    with VideoReader(cholec80_root / "videos" / "video01.mp4") as reader:
        expected = reader.frame(25)
    got = cv2.cvtColor(cv2.imread(str(files[1])), cv2.COLOR_BGR2RGB)
    assert np.array_equal(got, expected)
    assert not list((tmp_path / "cache").rglob("*.part"))

    def boom(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr("train.data.frames.VideoReader", boom)
    assert extract_frames(samples, tmp_path / "cache", fmt="png") == mapping  # idempotent: nothing decoded


def test_videos_decoded_side_by_side_give_the_same_cache(cholec80_root, tmp_path):
    """A training run on many cases decodes its videos in threads: the files and the mapping are the ones a
    one-by-one decode writes, and an unreadable video is still named in the error."""
    samples = cholec80_samples(cholec80_root)
    assert {s.case for s in samples} == {"video01", "video41"}
    one = extract_frames(samples, tmp_path / "one", fmt="png")
    both = extract_frames(samples, tmp_path / "both", fmt="png", workers=2)
    assert len(one) == len(both) == len({s.frame for s in samples})
    for ref, path in one.items():
        assert both[ref].relative_to(tmp_path / "both") == path.relative_to(tmp_path / "one")
        assert both[ref].read_bytes() == path.read_bytes()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    bad = [replace(s, frame=replace(s.frame, path=broken)) for s in samples if s.case == "video41"]
    with pytest.raises(DatasetError, match=r"broken\.mp4"):
        extract_frames([*samples, *bad], tmp_path / "bad", fmt="png", workers=2)


def test_one_video_named_by_two_datasets_caches_frames_for_both(cholec80_root, tmp_path):
    """A synthetic case is Cholec80's "video01" and CholecT50's "VID01": the CVS task read one name, the
    triplet task the other. Each name's frames are written, whichever comes first (it crashed before)."""
    samples = cholec80_samples(cholec80_root, cases=["video01"])
    renamed = [replace(s, case="VID01") for s in samples[1:]]  # frames 25 and 50 under the other name
    mapping = extract_frames([samples[0], *renamed], tmp_path / "cache", fmt="png")
    assert sorted(p.parent.name.split("-")[0] + "/" + p.name for p in mapping.values()) == [
        "VID01/000025.png",
        "VID01/000050.png",
        "video01/000000.png",
    ]
    assert all(p.is_file() for p in mapping.values())


def test_cached_frames_replace_video_refs_and_scale_boxes(synth_samples, tmp_path):
    _, _, samples = synth_samples
    frames = [s for s in samples if s.task is Task.FRAME and s.truth.instruments][:3]
    mapping = extract_frames(frames, tmp_path / "cache", size=(160, 90))
    cached = with_cached_frames(frames, mapping)
    for before, after in zip(frames, cached, strict=True):
        assert after.frame.index is None and after.frame.path.suffix == ".jpg"
        assert (after.frame.width, after.frame.height) == (160, 90)
        b0, b1 = before.truth.instruments[0].box, after.truth.instruments[0].box
        assert b1 == pytest.approx(tuple(v / 2 for v in b0))
        assert after.extra["source_frame"] == (str(before.frame.path), before.frame.index)
