"""Detection adapters (m2cai16-tool-locations VOC XML, Endoscapes2023 COCO) on small fixtures written
here in the datasets' exact formats."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from train.data.endoscapes_coco import coco_to_box, endoscapes_coco_samples, read_coco
from train.data.errors import DatasetError
from train.data.join import frame_view
from train.data.m2cai16 import case_of, m2cai16_samples, read_voc, voc_to_box
from train.data.sample import Task

# ---------------------------------------------------------------- m2cai16 (Pascal VOC)


def write_jpeg(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(path, "JPEG")


def voc_xml(filename: str, objects: list[tuple[str, tuple]], size: tuple[int, int] | None = (64, 48)) -> str:
    """A VOC annotation as labelImg writes it (m2cai16-tool-locations' tool)."""
    size_xml = (
        f"\t<size>\n\t\t<width>{size[0]}</width>\n\t\t<height>{size[1]}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
        if size
        else ""
    )
    objs = "".join(
        f"\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n"
        f"\t\t<difficult>0</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{b[0]}</xmin>\n\t\t\t<ymin>{b[1]}</ymin>\n"
        f"\t\t\t<xmax>{b[2]}</xmax>\n\t\t\t<ymax>{b[3]}</ymax>\n\t\t</bndbox>\n\t</object>\n"
        for name, b in objects
    )
    return (
        f"<annotation>\n\t<folder>JPEGImages</folder>\n\t<filename>{filename}</filename>\n"
        f"\t<source>\n\t\t<database>m2cai16-tool-locations</database>\n\t</source>\n{size_xml}"
        f"\t<segmented>0</segmented>\n{objs}</annotation>\n"
    )


def write_m2cai(root: Path, images: dict[str, list[tuple[str, tuple]]], splits: dict[str, list[str]] | None = None):
    for stem, objects in images.items():
        write_jpeg(root / "JPEGImages" / f"{stem}.jpg", 64, 48)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{stem}.xml").write_text(voc_xml(f"{stem}.jpg", objects), encoding="utf-8")
    for split, ids in (splits or {}).items():
        (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")


GOOD = {
    "v01_002000": [("Grasper", (1, 1, 10, 20)), ("Hook", (30, 5, 64, 48)), ("Grasper", (40, 10, 50, 30))],
    "v01_002025": [],
    "v02_000100": [("SpecimenBag", (5, 6, 7, 8))],
}


def test_voc_conversion_is_one_based_inclusive():
    assert voc_to_box(1, 1, 64, 48) == (0.0, 0.0, 64.0, 48.0)  # whole 64x48 frame
    assert voc_to_box(10, 20, 10, 20) == (9.0, 19.0, 10.0, 20.0)  # one pixel: width 1
    assert case_of("v01_002000") == "v01" and case_of("v10_000025.jpg") == "v10" and case_of("odd") == "odd"


def test_m2cai16_samples(tmp_path):
    write_m2cai(tmp_path, GOOD, {"train": ["v01_002000", "v01_002025"], "test": ["v02_000100"]})
    samples = m2cai16_samples(tmp_path)
    tools = [s for s in samples if s.task is Task.TOOLS]
    local = [s for s in samples if s.task is Task.LOCALISATION]
    assert [(s.case, s.split) for s in tools] == [("v01", "train"), ("v01", "train"), ("v02", "test")]
    first = tools[0]
    assert first.dataset == "m2cai16" and first.level == 1
    assert first.frame.path == tmp_path / "JPEGImages" / "v01_002000.jpg" and first.frame.index is None
    assert (first.frame.width, first.frame.height) == (64, 48)
    assert first.truth.tools == ("Grasper", "Hook")
    assert [(i.tool, i.box) for i in first.truth.instruments] == [
        ("Grasper", (0.0, 0.0, 10.0, 20.0)),
        ("Hook", (29.0, 4.0, 64.0, 48.0)),
        ("Grasper", (39.0, 9.0, 50.0, 30.0)),
    ]
    assert tools[1].truth.tools == () and tools[1].truth.instruments == ()  # annotated, nothing present
    # one localisation question per distinct tool, holding every box of that tool
    assert [(s.extra["instrument"], len(s.truth.instruments)) for s in local] == [
        ("Grasper", 2),
        ("Hook", 1),
        ("SpecimenBag", 1),
    ]
    assert all(i.tool == s.extra["instrument"] for s in local for i in s.truth.instruments)
    assert local[0].truth.tools == ("Grasper", "Hook")
    # the whole-frame view keeps all boxes
    view = frame_view(samples)
    assert len(view) == 3 and len(view[0].truth.instruments) == 3
    # split filter and task filter
    assert {s.case for s in m2cai16_samples(tmp_path, splits=["test"])} == {"v02"}
    assert {s.task for s in m2cai16_samples(tmp_path, tasks=[Task.TOOLS])} == {Task.TOOLS}
    with pytest.raises(ValueError):
        m2cai16_samples(tmp_path, tasks=[Task.PHASE])


def test_m2cai16_without_split_lists_and_lowercase_names(tmp_path):
    write_m2cai(tmp_path, {"v03_000000": [("grasper", (2, 2, 4, 4)), ("specimen_bag", (1, 1, 64, 48))]})
    (s,) = m2cai16_samples(tmp_path, tasks=[Task.TOOLS])
    assert s.split is None and s.truth.tools == ("Grasper", "SpecimenBag")


@pytest.mark.parametrize(
    ("xml", "needle"),
    [
        (voc_xml("a.jpg", [("Grasper", (1, 1, 5, 5))]).replace("</object>", "</objekt>"), "malformed XML"),
        (voc_xml("a.jpg", [("Stapler", (1, 1, 5, 5))]), "unknown tool 'Stapler'"),
        (voc_xml("a.jpg", [("Hook", (0, 1, 5, 5))]), "outside the 64x48 image"),
        (voc_xml("a.jpg", [("Hook", (1, 1, 65, 5))]), "outside the 64x48 image"),
        (voc_xml("a.jpg", [("Hook", (1, 1, 5, 49))]), "outside the 64x48 image"),
        (voc_xml("a.jpg", [("Hook", (9, 1, 5, 5))]), "is empty"),
        (voc_xml("a.jpg", [("Hook", (1, "x", 5, 5))]), "not a number"),
        (voc_xml("a.jpg", [("Hook", (1, 1, 5, 5))], size=None), "no <size>"),
        (voc_xml("a.jpg", []).replace("<width>64</width>", ""), "<size> has no <width>"),
        (
            voc_xml("a.jpg", [("Hook", (1, 1, 5, 5))]).replace("<bndbox>", "<box>").replace("</bndbox>", "</box>"),
            "no <bndbox>",
        ),
        ("<annotation><filename>a.jpg</filename>", "malformed XML"),
        ("<voc/>", "expected <annotation>"),
    ],
)
def test_read_voc_errors(tmp_path, xml, needle):
    path = tmp_path / "v01_000001.xml"
    path.write_text(xml, encoding="utf-8")
    with pytest.raises(DatasetError) as err:
        read_voc(path)
    assert err.value.path == path and needle in str(err.value)
    assert str(err.value).startswith(str(path))


def test_read_voc_parse_error_names_line(tmp_path):
    path = tmp_path / "v01_000001.xml"
    path.write_text(voc_xml("a.jpg", [("Grasper", (1, 1, 5, 5))]).replace("</name>", "</nam>"), encoding="utf-8")
    with pytest.raises(DatasetError) as err:
        read_voc(path)
    assert err.value.line == 14  # the <name> line of the first object
    assert str(err.value) == f"{path}:14: malformed XML (column 18): mismatched tag"


def test_m2cai16_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="no Annotations folder"):
        m2cai16_samples(tmp_path)
    write_m2cai(tmp_path, GOOD, {"train": ["v01_002000"], "val": ["v01_002000"]})
    with pytest.raises(DatasetError) as err:
        m2cai16_samples(tmp_path)
    assert err.value.path.name == "val.txt" and err.value.line == 1
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("v09_000000\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="v09_000000, which has no XML"):
        m2cai16_samples(tmp_path)
    (tmp_path / "ImageSets" / "Main" / "val.txt").unlink()
    (tmp_path / "JPEGImages" / "v02_000100.jpg").unlink()
    with pytest.raises(DatasetError, match=re.escape("v02_000100.jpg not found")) as err:
        m2cai16_samples(tmp_path)
    assert err.value.path.name == "v02_000100.xml"
    write_jpeg(tmp_path / "JPEGImages" / "v02_000100.jpg", 32, 48)
    with pytest.raises(DatasetError, match=re.escape("says 64x48 but v02_000100.jpg is 32x48")):
        m2cai16_samples(tmp_path)


# ---------------------------------------------------------------- Endoscapes2023 (COCO)

CATEGORIES = [
    {"id": 1, "name": "cystic_plate", "supercategory": ""},
    {"id": 2, "name": "calot_triangle", "supercategory": ""},
    {"id": 3, "name": "cystic_artery", "supercategory": ""},
    {"id": 4, "name": "cystic_duct", "supercategory": ""},
    {"id": 5, "name": "gallbladder", "supercategory": ""},
    {"id": 6, "name": "tool", "supercategory": ""},
]


def coco(images: list[dict], annotations: list[dict]) -> dict:
    return {"info": {"description": "Endoscapes2023"}, "licenses": [], "images": images,
            "annotations": annotations, "categories": CATEGORIES}  # fmt: skip


def image(image_id: int, name: str, width: int = 64, height: int = 48) -> dict:
    return {"id": image_id, "file_name": name, "width": width, "height": height, "video_id": int(name.split("_")[0])}


def ann(ann_id: int, image_id: int, category_id: int, bbox: list) -> dict:
    x, y, w, h = bbox if len(bbox) == 4 else (0, 0, 0, 0)
    seg = [[x, y, x + w, y, x + w, y + h, x, y + h]] if all(isinstance(v, int | float) for v in (x, y, w, h)) else []
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "area": 1.0,
            "iscrowd": 0, "segmentation": seg}  # fmt: skip


def write_coco(root: Path, split: str, data: dict, name: str = "annotation_coco.json") -> Path:
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    for entry in data["images"]:
        write_jpeg(folder / entry["file_name"], entry["width"], entry["height"])
    path = folder / name
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


def test_coco_conversion():
    assert coco_to_box(10, 5, 20.5, 8) == (10.0, 5.0, 30.5, 13.0)


def test_endoscapes_coco_samples(tmp_path):
    train = coco(
        [image(1, "120_35600.jpg"), image(2, "120_35625.jpg"), image(3, "121_100.jpg")],
        [
            ann(10, 1, 6, [30.0, 20.0, 34.0, 28.0]),  # tool, to the right and bottom edges
            ann(11, 1, 5, [0, 0, 32, 24]),
            ann(12, 1, 4, [10.5, 12.25, 5, 4]),
            ann(13, 3, 6, [1, 1, 2, 2]),
        ],
    )
    write_coco(tmp_path, "train", train)
    write_coco(tmp_path, "val", coco([image(7, "130_50.jpg")], [ann(1, 7, 2, [4, 4, 8, 8])]))
    write_coco(tmp_path, "test", coco([], []))
    samples = endoscapes_coco_samples(tmp_path)
    assert [(s.case, s.split, s.extra["image_id"]) for s in samples] == [
        ("120", "train", 1),
        ("121", "train", 3),
        ("130", "val", 7),
    ]  # image 2 has no annotation: left out
    s = samples[0]
    assert s.dataset == "endoscapes" and s.task is Task.FRAME
    assert s.frame.path == tmp_path / "train" / "120_35600.jpg" and (s.frame.width, s.frame.height) == (64, 48)
    assert s.truth.anatomy == ("cystic_duct", "gallbladder")  # Endoscapes class order
    assert s.truth.tools is None and s.truth.instruments == ()  # "tool" is generic: no Cholec80 name
    assert s.extra["boxes"] == [
        {"class": "tool", "box": [30.0, 20.0, 64.0, 48.0]},
        {"class": "gallbladder", "box": [0.0, 0.0, 32.0, 24.0]},
        {"class": "cystic_duct", "box": [10.5, 12.25, 15.5, 16.25]},
    ]
    assert (s.extra["vid"], s.extra["frame"]) == (120, 35600)
    assert samples[1].truth.anatomy == () and samples[2].truth.anatomy == ("calot_triangle",)
    kept = endoscapes_coco_samples(tmp_path, splits=["train"], unannotated="keep")
    assert [x.extra["image_id"] for x in kept] == [1, 2, 3] and kept[1].extra["boxes"] == []
    # the downsampled file of the same folders
    write_coco(
        tmp_path, "test", coco([image(5, "140_25.jpg")], [ann(3, 5, 1, [0, 0, 64, 48])]), "annotation_ds_coco.json"
    )
    (ds,) = endoscapes_coco_samples(tmp_path, splits=["test"], annotation="annotation_ds_coco.json")
    assert ds.truth.anatomy == ("cystic_plate",) and ds.split == "test"


BAD_COCO = [
    (coco([image(1, "1_1.jpg")], [ann(5, 1, 9, [1, 1, 2, 2])]), "annotation 5 has unknown category_id 9"),
    (coco([image(1, "1_1.jpg")], [ann(6, 2, 1, [1, 1, 2, 2])]), "annotation 6 refers to image_id 2"),
    (coco([image(1, "1_1.jpg")], [ann(7, 1, 1, [1, 1, 2])]), "annotation 7: bbox must be 4 finite numbers"),
    (coco([image(1, "1_1.jpg")], [ann(8, 1, 1, [1, "1", 2, 2])]), "annotation 8: bbox must be 4 finite numbers"),
    (coco([image(1, "1_1.jpg")], [ann(9, 1, 1, [60, 1, 5, 2])]), "annotation 9: bbox [60, 1, 5, 2]"),
    (coco([image(1, "1_1.jpg")], [ann(10, 1, 1, [-1, 1, 5, 2])]), "leaves the 64x48 image 1_1.jpg"),
    (coco([image(1, "1_1.jpg")], [ann(11, 1, 1, [1, 40, 5, 9])]), "annotation 11"),
    (coco([image(1, "1_1.jpg")], [ann(12, 1, 1, [1, 1, 0, 2])]), "annotation 12: bbox [1, 1, 0, 2] has no area"),
    (coco([image(1, "1_1.jpg"), image(1, "1_2.jpg")], []), "image 1 appears twice"),
    ({**coco([image(1, "1_1.jpg")], []), "categories": [{"id": 1, "name": "liver"}]}, "'liver' is not an Endoscapes"),
    ({"images": [], "annotations": []}, "no 'categories' list"),
]


@pytest.mark.parametrize(("data", "needle"), BAD_COCO)
def test_read_coco_errors(tmp_path, data, needle):
    path = write_coco(tmp_path, "train", data)
    with pytest.raises(DatasetError) as err:
        read_coco(path)
    assert err.value.path == path and needle in str(err.value)
    with pytest.raises(DatasetError, match=re.escape("annotation_coco.json")):
        endoscapes_coco_samples(tmp_path, splits=["train"])


def test_read_coco_image_size_error(tmp_path):
    path = tmp_path / "annotation_coco.json"
    path.write_text(json.dumps(coco([{"id": 1, "file_name": "1_1.jpg", "width": 0, "height": 48}], [])))
    with pytest.raises(DatasetError, match=re.escape("image 1 (1_1.jpg) needs positive integer width")):
        read_coco(path)


def test_read_coco_malformed_json_names_line(tmp_path):
    path = tmp_path / "annotation_coco.json"
    path.write_text('{\n  "images": [\n    {"id": 1,}\n  ]\n}\n', encoding="utf-8")
    with pytest.raises(DatasetError) as err:
        read_coco(path)
    assert err.value.line == 3 and str(err.value).startswith(f"{path}:3: invalid JSON")


def test_endoscapes_coco_missing_files(tmp_path):
    with pytest.raises(DatasetError, match="annotation file missing") as err:
        endoscapes_coco_samples(tmp_path, splits=["val"])
    assert err.value.path == tmp_path / "val" / "annotation_coco.json"
    path = write_coco(tmp_path, "val", coco([image(1, "1_1.jpg")], [ann(1, 1, 5, [1, 1, 2, 2])]))
    (tmp_path / "val" / "1_1.jpg").unlink()
    with pytest.raises(DatasetError, match=re.escape("image 1: 1_1.jpg not found")) as err:
        endoscapes_coco_samples(tmp_path, splits=["val"])
    assert err.value.path == path
    assert endoscapes_coco_samples(tmp_path, splits=["val"], missing="skip") == []
