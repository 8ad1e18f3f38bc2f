"""Endoscapes2023 boxes: the COCO files of each split folder. Layout (the dataset's own)::

    <root>/{train,val,test}/annotation_coco.json       (also annotation_ds_coco.json)
    <root>/{train,val,test}/<vid>_<frame>.jpg

``images`` [{id, file_name, width, height, ...}], ``annotations`` [{id, image_id, category_id,
bbox [x, y, w, h], segmentation, ...}], ``categories`` [{id, name}] with the six Endoscapes classes
(cystic_plate, calot_triangle, cystic_artery, cystic_duct, gallbladder, tool).

Box convention: COCO boxes are continuous pixel coordinates from the top-left corner of the image, the same
convention as :data:`~train.data.sample.Box`, so ``(x, y, w, h)`` → ``(x, y, x + w, y + h)`` with no shift.

Endoscapes' "tool" class does not say which tool, so it cannot be an ``Instrument`` (whose tool is a
Cholec80 name): every box, anatomy or tool, goes to ``Sample.extra["boxes"]`` as
``{"class": <endoscapes class>, "box": [x1, y1, x2, y2]}``, and the anatomy classes in view go to
``Truth.anatomy`` as canonical anatomy names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.ontology import load_ontology
from engine.tasks import Task
from train.data.errors import DatasetError, read_json
from train.data.sample import Box, FrameRef, Sample, Truth

SPLITS = ("train", "val", "test")
ANNOTATION_FILES = ("annotation_coco.json", "annotation_ds_coco.json")
TOOL_CLASS = "tool"
EDGE_TOLERANCE = 0.01  # pixels a box may overrun the frame (float round-off in mask-derived boxes); clamped
_VID_FRAME = re.compile(r"^(\d+)_(\d+)$")


@dataclass(frozen=True)
class CocoImage:
    """One image of a COCO file with its boxes as (Endoscapes class name, box) in file order."""

    id: int
    file_name: str
    width: int
    height: int
    boxes: tuple[tuple[str, Box], ...]


def coco_to_box(x: float, y: float, w: float, h: float) -> Box:
    """COCO ``[x, y, w, h]`` → ``(x1, y1, x2, y2)`` (both continuous pixel coordinates)."""
    return (float(x), float(y), float(x) + float(w), float(y) + float(h))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _list(data: dict, key: str, path: Path) -> list:
    value = data.get(key)
    if not isinstance(value, list):
        raise DatasetError(path, f"no {key!r} list at the top level (expected COCO: images, annotations, categories)")
    return value


def read_coco(path: str | Path) -> list[CocoImage]:
    """Images of one COCO file in file order, validated: DatasetError naming the file (the line for JSON
    syntax errors; the image or annotation id otherwise) when an entry lacks its fields, a category is not
    an Endoscapes class, an annotation names an unknown image or category, or a bbox is not four numbers
    with positive size inside its image."""
    path = Path(path)
    data, _ = read_json(path)
    if not isinstance(data, dict):
        raise DatasetError(path, f"top level is a JSON {type(data).__name__}, expected an object")

    vocab = load_ontology().endoscapes_class
    classes: dict[int, str] = {}
    for entry in _list(data, "categories", path):
        if not isinstance(entry, dict) or not _is_int(entry.get("id")) or not isinstance(entry.get("name"), str):
            raise DatasetError(path, f"category without an integer id and a name: {str(entry)[:80]}")
        label = vocab.resolve(entry["name"])
        if label is None:
            raise DatasetError(path, f"category {entry['id']}: {entry['name']!r} is not an Endoscapes class")
        if entry["id"] in classes:
            raise DatasetError(path, f"category id {entry['id']} appears twice")
        classes[entry["id"]] = label.name

    images: dict[int, dict] = {}
    for entry in _list(data, "images", path):
        if not isinstance(entry, dict) or not _is_int(entry.get("id")):
            raise DatasetError(path, f"image without an integer id: {str(entry)[:80]}")
        where = f"image {entry['id']}"
        if entry["id"] in images:
            raise DatasetError(path, f"{where} appears twice")
        if not isinstance(entry.get("file_name"), str) or not entry["file_name"].strip():
            raise DatasetError(path, f"{where} has no file_name")
        if not all(_is_int(entry.get(k)) and entry[k] > 0 for k in ("width", "height")):
            size = f"{entry.get('width')!r}x{entry.get('height')!r}"
            raise DatasetError(
                path, f"{where} ({entry['file_name']}) needs positive integer width and height, got {size}"
            )
        images[entry["id"]] = entry

    boxes: dict[int, list[tuple[str, Box]]] = {i: [] for i in images}
    for entry in _list(data, "annotations", path):
        if not isinstance(entry, dict) or not _is_int(entry.get("id")):
            raise DatasetError(path, f"annotation without an integer id: {str(entry)[:80]}")
        where = f"annotation {entry['id']}"
        image_id, category_id = entry.get("image_id"), entry.get("category_id")
        if not _is_int(image_id) or image_id not in images:
            raise DatasetError(path, f"{where} refers to image_id {image_id!r}, which is not in 'images'")
        if not _is_int(category_id) or category_id not in classes:
            known = ", ".join(str(c) for c in sorted(classes))
            raise DatasetError(path, f"{where} has unknown category_id {category_id!r} (known: {known})")
        bbox = entry.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            raise DatasetError(path, f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {str(bbox)[:60]}")
        image = images[image_id]
        width, height = image["width"], image["height"]
        x1, y1, x2, y2 = coco_to_box(*bbox)
        if bbox[2] <= 0 or bbox[3] <= 0:
            raise DatasetError(path, f"{where}: bbox {bbox} has no area")
        tol = EDGE_TOLERANCE
        if x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol:
            reason = f"{where}: bbox {bbox} (x1 y1 x2 y2 = {x1:g} {y1:g} {x2:g} {y2:g}) leaves the"
            raise DatasetError(path, f"{reason} {width}x{height} image {image['file_name']}")
        box = (max(0.0, x1), max(0.0, y1), min(float(width), x2), min(float(height), y2))
        boxes[image_id].append((classes[category_id], box))

    return [CocoImage(i, e["file_name"].strip(), e["width"], e["height"], tuple(boxes[i])) for i, e in images.items()]


def endoscapes_coco_samples(
    root: str | Path,
    *,
    splits: Iterable[str] = SPLITS,
    annotation: str = "annotation_coco.json",
    unannotated: str = "skip",
    missing: str = "error",
    dataset: str = "endoscapes",
) -> list[Sample]:
    """One ``Task.FRAME`` sample per image of ``<root>/<split>/<annotation>`` for each split, in file order.

    ``annotation`` is ``annotation_coco.json`` or ``annotation_ds_coco.json``. Truth holds the anatomy in
    view (canonical anatomy names, in Endoscapes class order); ``extra["boxes"]`` holds every box. An image
    with no annotation says nothing either way and is left out unless ``unannotated="keep"``. A missing
    annotation file raises DatasetError; so does a missing image, unless ``missing="skip"``.
    """
    if unannotated not in ("skip", "keep"):
        raise ValueError("unannotated must be 'skip' or 'keep'")
    if missing not in ("error", "skip"):
        raise ValueError("missing must be 'error' or 'skip'")
    splits = list(splits)
    if set(splits) - set(SPLITS):
        raise ValueError(f"splits must be among {SPLITS}, got {sorted(set(splits) - set(SPLITS))}")
    root = Path(root)
    onto = load_ontology()
    order = {label.name: label.id for label in onto.endoscapes_class}
    out: list[Sample] = []
    for split in splits:
        path = root / split / annotation
        if not path.exists():
            raise DatasetError(path, f"annotation file missing (expected one of {', '.join(ANNOTATION_FILES)})")
        for image in read_coco(path):
            if not image.boxes and unannotated == "skip":
                continue
            frame_path = root / split / Path(image.file_name).name
            if not frame_path.exists():
                if missing == "skip":
                    continue
                raise DatasetError(path, f"image {image.id}: {image.file_name} not found in {root / split}")
            classes = sorted({c for c, _ in image.boxes if c != TOOL_CLASS}, key=order.__getitem__)
            anatomy = tuple(onto.anatomy.require(c).name for c in classes)
            extra: dict = {
                "boxes": [{"class": c, "box": list(b)} for c, b in image.boxes],
                "image_id": image.id,
                "annotation": str(path),
            }
            m = _VID_FRAME.match(Path(image.file_name).stem)
            if m:
                extra["vid"], extra["frame"] = int(m.group(1)), int(m.group(2))
            case = m.group(1) if m else Path(image.file_name).stem
            ref = FrameRef(frame_path, None, image.width, image.height)
            out.append(Sample(dataset, case, ref, Task.FRAME, Truth(anatomy=anatomy), split=split, extra=extra))
    return out
