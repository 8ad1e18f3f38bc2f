"""SAR-RARP50, MultiBypass140 and EndoVis17 adapters on files laid out as the datasets ship them."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.tasks import Task
from train.data.endovis17 import endovis17_samples, instrument_type
from train.data.errors import DatasetError
from train.data.multibypass140 import multibypass140_samples, official_split_lists, read_labels
from train.data.sar_rarp50 import read_actions, sar_rarp50_samples
from train.data.splits import endovis17_fold, multibypass140_split


def _png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


# ------------------------------------------------------------------------------------- SAR-RARP50
def _rarp_video(folder: Path, actions: list[int], objects: dict[int, list[int]] | None = None) -> None:
    folder.mkdir(parents=True)
    lines = [f"{6 * i:09d},{a}" for i, a in enumerate(actions)]
    (folder / "action_discrete.txt").write_text("\n".join(lines) + "\n")
    for i in range(len(actions)):
        _png(folder / "rgb" / f"{6 * i:09d}.png", np.full((18, 32, 3), 40 + i, np.uint8))
    for frame, values in (objects or {}).items():
        mask = np.zeros((18, 32), np.uint8)
        for k, value in enumerate(values):
            mask[k, k] = value
        _png(folder / "segmentation" / f"{frame:09d}.png", mask)


@pytest.fixture
def rarp_root(tmp_path) -> Path:
    _rarp_video(tmp_path / "train1" / "video_01", [0] * 10 + [1, 1, 2], {0: [3, 4, 5], 60: [1, 9]})
    _rarp_video(tmp_path / "test" / "video_41", [5, 5, 6])
    return tmp_path


def test_sar_rarp50_reads_actions_frames_objects_and_splits(rarp_root):
    samples = sar_rarp50_samples(rarp_root, tasks=[Task.ACTION])
    assert len(samples) == 16 and {s.procedure for s in samples} == {"rarp"}
    first = samples[0]
    assert (first.case, first.split, first.truth.action) == ("video_01", "train", "other")
    assert first.frame.path == rarp_root / "train1" / "video_01" / "rgb" / "000000000.png"
    assert first.truth.anatomy == ("suturing_needle", "thread")  # mask values 4 and 5; 3 is a tool shaft
    assert samples[10].truth.action == "picking_up_the_needle" and samples[10].truth.anatomy == ("catheter",)
    assert samples[12].truth.action == "positioning_the_needle_tip" and samples[12].extra["action_id"] == 2
    assert [s.split for s in samples[-3:]] == ["test"] * 3
    assert [s.truth.action for s in samples[-3:]] == ["tying_a_knot", "tying_a_knot", "cutting_the_suture"]
    one_hz = sar_rarp50_samples(rarp_root, tasks=[Task.ACTION, Task.ACTION_MCQ], every=10)
    assert [(s.frame.path.name, s.task) for s in one_hz[:2]] == [("000000000.png", Task.ACTION),
                                                                 ("000000000.png", Task.ACTION_MCQ)]  # fmt: skip


@pytest.mark.parametrize(
    "rows, line, reason",
    [
        ("000000000,0\n000000006,8\n", 2, "action id 8 is not one of 0-7"),
        ("000000000,0\n000000007,1\n", 2, "not a multiple of 6"),
        ("000000006,0\n000000000,1\n", 2, "not after the previous row's frame 6"),
        ("000000000,0\n000000006;1\n", 2, "expected 'frame_id,action_id'"),
        ("000000000,0,3\n", 1, "expected 'frame_id,action_id'"),
    ],
)
def test_sar_rarp50_malformed_rows_name_file_and_line(tmp_path, rows, line, reason):
    path = tmp_path / "action_discrete.txt"
    path.write_text(rows)
    with pytest.raises(DatasetError, match=reason) as err:
        read_actions(path)
    assert (err.value.path, err.value.line) == (path, line)


def test_sar_rarp50_missing_files_are_errors(tmp_path):
    (tmp_path / "train1" / "video_02").mkdir(parents=True)
    with pytest.raises(DatasetError, match="action file missing"):
        sar_rarp50_samples(tmp_path)
    (tmp_path / "train1" / "video_02" / "action_discrete.txt").write_text("000000000,3\n")
    with pytest.raises(DatasetError, match=r"neither video_left\.avi nor an rgb/"):
        sar_rarp50_samples(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no video_NN folders"):
        sar_rarp50_samples(tmp_path / "empty")


# --------------------------------------------------------------------------------- MultiBypass140
def _label_file(path: Path, phases: list, steps: list, pretty: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "phases": [{"start": a, "end": b, "label_name": n, "label_id": i} for a, b, n, i in phases],
        "steps": [{"start": a, "end": b, "label_name": n, "label_id": i} for a, b, n, i in steps],
    }
    path.write_text(json.dumps(data, indent=1 if pretty else None))


@pytest.fixture
def bypass_root(tmp_path) -> Path:
    labels = tmp_path / "labels" / "bern" / "labels_by70" / "BBP02.mp4.json"
    _label_file(
        labels,
        [(1500, 4000, "preparation", 0), (2000, 3000, "out_of_body", 12), (4000, 6000, "gastric_pouch_creation", 1)],
        [(1500, 5000, "s1_cavity_exploration", 1), (5000, 6000, "s4_crura_dissection", 4)],
    )
    frames = tmp_path / "labels" / "bern" / "labels_by70_splits" / "frames" / "BBP02"
    for k in range(1, 7):
        _png(frames / f"BBP02_{k:08d}.jpg", np.full((18, 32, 3), 10 * k, np.uint8))
    return tmp_path


def test_multibypass140_seconds_carry_the_labels_in_force_before_the_next_second(bypass_root):
    samples = multibypass140_samples(bypass_root, tasks=[Task.PHASE, Task.STEP])
    by_second = {}
    for s in samples:
        by_second.setdefault(s.extra["second"], {})[s.task] = s
    # second s is frame s+1 and carries the labels at s*1000 + 999 ms: 0.999 s is before the first phase
    assert sorted(by_second) == [1, 2, 3, 4, 5]
    assert by_second[1][Task.PHASE].frame.path.name == "BBP02_00000002.jpg"
    assert by_second[1][Task.PHASE].truth.phase == "preparation"
    assert by_second[2][Task.PHASE].extra["out_of_body"] and not by_second[3][Task.PHASE].extra["out_of_body"]
    assert by_second[4][Task.STEP].truth.step == "s1_cavity_exploration"  # 4.999 s: still the first step
    assert (by_second[5][Task.STEP].truth.phase, by_second[5][Task.STEP].truth.step) == (
        "gastric_pouch_creation", "s4_crura_dissection",
    )  # fmt: skip
    assert {s.procedure for s in samples} == {"bypass"}
    assert by_second[1][Task.PHASE].split is None  # fold 0 of bern: only its val list is known, BBP02 not in it


def test_multibypass140_splits_come_from_the_official_pickles_else_the_yaml_lists(bypass_root):
    assert multibypass140_split("BBP02", 1) == "test"  # bern fold 1 test list (splits.yaml)
    assert multibypass140_split("BBP12", 1) == "val"
    assert multibypass140_split("BBP01", 1) == "train"  # neither val nor test of a fold whose lists are known
    assert multibypass140_split("SBP01", 1) is None  # strasbourg test lists were not available
    assert multibypass140_split("SBP09", 0) == "val"
    pickles = bypass_root / "labels" / "bern" / "labels_by70_splits" / "labels"
    (pickles / "val").mkdir(parents=True)
    frame = {"Frame_id": "BBP02_00000001", "Original_frame_id": 0, "Phase_gt": 0, "Step_gt": 1, "unique_id": 0}
    (pickles / "val" / "1fps_1.pickle").write_bytes(pickle.dumps({"BBP02": [frame]}))
    official_split_lists.cache_clear()
    assert multibypass140_split("BBP02", 1, bypass_root) == "val"  # the dataset's own file wins
    assert official_split_lists(bypass_root, "bern", 1) == {"val": frozenset({"BBP02"})}


class _Sneaky:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_split_pickle_that_references_code_is_refused_unread(bypass_root):
    pickles = bypass_root / "labels" / "bern" / "labels_by70_splits" / "labels" / "test"
    pickles.mkdir(parents=True)
    (pickles / "1fps_2.pickle").write_bytes(pickle.dumps({"BBP02": _Sneaky()}))
    official_split_lists.cache_clear()
    with pytest.raises(DatasetError, match=r"refused builtins\.print"):
        official_split_lists(bypass_root, "bern", 2)


@pytest.mark.parametrize(
    "phases, reason",
    [
        ([(0, 1000, "preparation", 1)], "phase id 1 is 'gastric_pouch_creation', not 'preparation'"),
        ([(0, 1000, "preparation", 0), (500, 2000, "omentum_division", 2)], "phases overlap"),
        ([(1000, 1000, "preparation", 0)], "empty or negative"),
        ([(0, 1000, "severe", 13)], "event id 13 is 'severe_index'"),
        ([(0, 1000, "mystery", 14)], "unknown phase id 14"),
    ],
)
def test_multibypass140_bad_items_are_errors(tmp_path, phases, reason):
    path = tmp_path / "BBP05.mp4.json"
    _label_file(path, phases, [(0, 1000, "s1_cavity_exploration", 1)])
    with pytest.raises(DatasetError, match=reason):
        read_labels(path)


def test_multibypass140_errors_name_the_items_line(tmp_path):
    path = tmp_path / "SBP03.mp4.json"
    _label_file(path, [(0, 1000, "preparation", 0)], [(0, 500, "s1_cavity_exploration", 1), (500, 900, "s2", 2)],
                pretty=True)  # fmt: skip
    text = path.read_text()
    with pytest.raises(DatasetError, match=r"steps\[1\]: step id 2 is 's2_trocar_placement'") as err:
        read_labels(path)
    second_item = text.index("{", text.index('"label_id": 1', text.index('"steps"')))
    assert err.value.line == text.count("\n", 0, second_item) + 1 and err.value.line > 1


def test_multibypass140_reads_its_own_label_file_shape(tmp_path):
    labels = read_labels(_write_real_shape(tmp_path))
    assert labels.video == "BBP01" and [i.label for i in labels.events] == ["out_of_body"]
    assert labels.at(13_300) == (None, None, False) and labels.at(13_301)[0] == "preparation"


def _write_real_shape(tmp_path: Path) -> Path:
    # The official files are one line: {"phases": [{"start": ..., "end": ..., "label_name": ..., "label_id": ...}, ...],
    # "steps": [...]}, events (out_of_body) inside the phase list, times in milliseconds.
    path = tmp_path / "BBP01.mp4.json"
    path.write_text(
        '{"phases": [{"start": 13301, "end": 1371912, "label_name": "preparation", "label_id": 0}, '
        '{"start": 53583, "end": 75743, "label_name": "out_of_body", "label_id": 12}], '
        '"steps": [{"start": 13301, "end": 79263, "label_name": "s0_null_step", "label_id": 0}]}'
    )
    return path


# --------------------------------------------------------------------------------------- EndoVis17
@pytest.fixture
def endovis_root(tmp_path) -> Path:
    seq = tmp_path / "instrument_dataset_3"
    for k in range(3):
        _png(seq / "left_frames" / f"frame{k:03d}.png", np.full((40, 64, 3), 90, np.uint8))
        _png(seq / "right_frames" / f"frame{k:03d}.png", np.full((40, 64, 3), 90, np.uint8))
        bipolar = np.zeros((40, 64), np.uint8)
        bipolar[5:10, 2:20] = 10  # shaft
        bipolar[10:12, 20:24] = 30  # claspers
        _png(seq / "ground_truth" / "Maryland_Bipolar_Forceps_labels" / f"frame{k:03d}.png", bipolar)
        driver = np.zeros((40, 64), np.uint8)
        if k == 1:
            driver[30:35, 40:60] = 20
        _png(seq / "ground_truth" / "Large_Needle_Driver_Left_labels" / f"frame{k:03d}.png", driver)
    return tmp_path


def test_endovis17_masks_become_one_box_per_instrument(endovis_root):
    samples = endovis17_samples(endovis_root)
    tools = [s for s in samples if s.task is Task.TOOLS]
    assert len(tools) == 3 and {s.procedure for s in samples} == {"robotic"}
    assert tools[0].truth.tools == ("Bipolar_Forceps",)
    assert tools[0].truth.instruments[0].box == (2.0, 5.0, 24.0, 12.0)
    assert tools[1].truth.tools == ("Large_Needle_Driver", "Bipolar_Forceps")  # ground_truth folders in name order
    assert tools[1].truth.instruments[0].box == (40.0, 30.0, 60.0, 35.0)
    loc = [s for s in samples if s.task is Task.LOCALISATION]
    assert [s.extra["instrument"] for s in loc] == ["Bipolar_Forceps", "Large_Needle_Driver", "Bipolar_Forceps",
                                                    "Bipolar_Forceps"]  # fmt: skip
    assert tools[0].case == "instrument_dataset_3" and tools[0].frame.width == 64


def test_endovis17_folder_names_map_to_types_as_public_loaders_do():
    assert instrument_type("Maryland_Bipolar_Forceps_labels") == "Bipolar_Forceps"
    assert instrument_type("Right_Prograsp_Forceps_labels") == "Prograsp_Forceps"
    assert instrument_type("Large_Needle_Driver_Right_labels") == "Large_Needle_Driver"
    assert instrument_type("Other_labels") == "Other"
    assert instrument_type("Camera_labels") is None
    assert endovis17_fold(5) == 1 and endovis17_fold(9) is None


def test_endovis17_unknown_folders_missing_and_mis_sized_masks_are_errors(endovis_root):
    seq = endovis_root / "instrument_dataset_3" / "ground_truth"
    (seq / "Camera_labels").mkdir()
    with pytest.raises(DatasetError, match="names no EndoVis 2017 instrument type"):
        endovis17_samples(endovis_root)
    (seq / "Camera_labels").rmdir()
    _png(seq / "Other_labels" / "frame000.png", np.zeros((40, 64), np.uint8))
    with pytest.raises(DatasetError, match="mask missing for this frame") as err:
        endovis17_samples(endovis_root)
    assert err.value.path.name == "frame001.png"
    for k in (1, 2):
        _png(seq / "Other_labels" / f"frame{k:03d}.png", np.zeros((20, 64), np.uint8))
    with pytest.raises(DatasetError, match="mask is 64x20, the frame 64x40"):
        endovis17_samples(endovis_root)
