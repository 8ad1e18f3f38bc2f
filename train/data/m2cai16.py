"""m2cai16-tool-locations: Pascal VOC boxes of the seven Cholec80 tools. Layout (the dataset's own)::

    <root>/JPEGImages/v01_002000.jpg
    <root>/Annotations/v01_002000.xml        one <annotation> per image
    <root>/ImageSets/Main/{train,val,test}.txt   image ids, one per line (when present)

Box convention: VOC coordinates are 1-based *inclusive* pixel indices (``xmin=1, xmax=W`` is the whole
width). A :data:`~train.data.sample.Box` is in continuous pixel edges (pixel ``i`` spans ``[i, i+1)``, the
frame spans ``[0, W]``), so ``x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax`` (the box keeps its
``xmax - xmin + 1`` pixel width; the same shift Detectron2's VOC loader applies).

The XML is parsed with :mod:`xml.etree.ElementTree`; it does not fetch external entities or DTDs (so no
XXE), and the files come from the dataset download, not from users (defusedxml is not a dependency).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.ontology import load_ontology
from engine.tasks import Task
from train.data.errors import DatasetError
from train.data.media import image_size
from train.data.sample import Box, FrameRef, Instrument, Sample, Truth

SPLITS = ("train", "val", "test")
_CASE = re.compile(r"^(.+?)_\d+$")


@dataclass(frozen=True)
class VocAnnotation:
    """One VOC XML file: the image it labels, its declared size and its (canonical tool, box) objects."""

    path: Path
    filename: str
    width: int
    height: int
    objects: tuple[Instrument, ...]


def voc_to_box(xmin: float, ymin: float, xmax: float, ymax: float) -> Box:
    """VOC 1-based inclusive pixel indices → continuous pixel edges ``(x1, y1, x2, y2)``."""
    return (float(xmin) - 1.0, float(ymin) - 1.0, float(xmax), float(ymax))


def case_of(name: str) -> str:
    """Case id of an image id: ``v01_002000`` → ``v01`` (the whole stem when it has no ``_<frame>``)."""
    stem = Path(name).stem
    m = _CASE.match(stem)
    return m.group(1) if m else stem


def _text(element: ET.Element, tag: str, path: Path, where: str) -> str:
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DatasetError(path, f"{where} has no <{tag}>")
    return child.text.strip()


def _number(element: ET.Element, tag: str, path: Path, where: str) -> float:
    text = _text(element, tag, path, where)
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(path, f"{where} <{tag}> is not a number: {text[:20]!r}") from None
    if not math.isfinite(value):
        raise DatasetError(path, f"{where} <{tag}> is not finite: {text[:20]!r}")
    return value


def read_voc(path: str | Path) -> VocAnnotation:
    """One VOC annotation file, validated: DatasetError (file, and the line for XML syntax errors) when
    the XML is malformed, ``<size>`` is missing or not positive, a tool name is not one of the seven, or a
    box is empty or leaves the declared image."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(path, exc.strerror or str(exc)) from exc
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        line, column = exc.position
        message = re.sub(r":? line \d+, column \d+$", "", str(exc.msg))  # expat repeats the position
        raise DatasetError(path, f"malformed XML (column {column + 1}): {message}", line) from None
    if root.tag != "annotation":
        raise DatasetError(path, f"root element is <{root.tag}>, expected <annotation>")
    filename = root.findtext("filename", "").strip() or f"{path.stem}.jpg"
    size = root.find("size")
    if size is None:
        raise DatasetError(path, "no <size> (width and height are needed to check the boxes)")
    width, height = (_number(size, tag, path, "<size>") for tag in ("width", "height"))
    if not (width.is_integer() and height.is_integer() and width > 0 and height > 0):
        raise DatasetError(path, f"<size> must be positive whole pixels, got {width:g}x{height:g}")
    width, height = int(width), int(height)
    vocab = load_ontology().tool
    objects = []
    for number, obj in enumerate(root.findall("object"), start=1):
        where = f"<object> #{number}"
        name = _text(obj, "name", path, where)
        label = vocab.resolve(name)
        if label is None:
            raise DatasetError(path, f"{where}: unknown tool {name!r} (expected one of {', '.join(vocab.names)})")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DatasetError(path, f"{where} ({name}) has no <bndbox>")
        where = f"{where} ({name}) <bndbox>"
        xmin, ymin, xmax, ymax = (_number(bndbox, tag, path, where) for tag in ("xmin", "ymin", "xmax", "ymax"))
        if xmin > xmax or ymin > ymax:
            raise DatasetError(path, f"{where} is empty: ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g})")
        if xmin < 1 or ymin < 1 or xmax > width or ymax > height:
            reason = f"{where} ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) is outside the {width}x{height} image"
            raise DatasetError(path, f"{reason} (VOC pixels run 1..{width}, 1..{height})")
        objects.append(Instrument(label.name, voc_to_box(xmin, ymin, xmax, ymax)))
    return VocAnnotation(path, filename, width, height, tuple(objects))


def read_split_lists(root: str | Path) -> dict[str, str]:
    """Image id → split from ``ImageSets/Main/{train,val,test}.txt`` (empty when none is there). An id
    listed in two splits raises DatasetError naming the second list and its line."""
    folder = Path(root) / "ImageSets" / "Main"
    out: dict[str, str] = {}
    where: dict[str, Path] = {}
    for split in SPLITS:
        path = folder / f"{split}.txt"
        if not path.exists():
            continue
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise DatasetError(path, exc.strerror or str(exc)) from exc
        except UnicodeDecodeError:
            raise DatasetError(path, "not a UTF-8 text file") from None
        for number, line in enumerate(lines, start=1):
            parts = line.split()
            if not parts:
                continue
            image_id = Path(parts[0]).stem
            if image_id in out and out[image_id] != split:
                reason = f"{image_id} is also in the {out[image_id]} list ({where[image_id].name})"
                raise DatasetError(path, reason, number)
            out[image_id] = split
            where[image_id] = path
    return out


def m2cai16_samples(
    root: str | Path,
    *,
    tasks: Iterable[Task] = (Task.TOOLS, Task.LOCALISATION),
    splits: Iterable[str] | None = None,
    dataset: str = "m2cai16",
) -> list[Sample]:
    """Samples of every ``Annotations/*.xml`` in name order: per image one TOOLS sample (truth: the tools
    present and all their boxes) and one LOCALISATION sample per *distinct tool* present, whose truth keeps
    only that tool's boxes and whose ``extra["instrument"]`` names it (the question "where is the grasper"
    has every grasper box as its answer, so one sample per object would repeat the same question).

    ``split`` comes from ``ImageSets/Main/{train,val,test}.txt`` when they exist (None for an image in no
    list, and for all images when there are none); ``splits`` keeps only the samples of those splits. An
    image that is missing, unreadable or not the size its XML declares raises DatasetError.
    """
    root = Path(root)
    tasks = {Task(t) for t in tasks}
    unknown = tasks - {Task.TOOLS, Task.LOCALISATION}
    if unknown:
        raise ValueError(f"m2cai16 gives tools and localisation tasks, not {sorted(unknown)}")
    wanted = set(splits) if splits is not None else None
    if wanted is not None and wanted - set(SPLITS):
        raise ValueError(f"splits must be among {SPLITS}, got {sorted(wanted - set(SPLITS))}")
    folder = root / "Annotations"
    if not folder.is_dir():
        raise DatasetError(folder, "no Annotations folder (expected the VOC layout of m2cai16-tool-locations)")
    xmls = sorted(folder.glob("*.xml"))
    if not xmls:
        raise DatasetError(folder, "no .xml annotation files")
    split_of = read_split_lists(root)
    known = {p.stem for p in xmls}
    for image_id in split_of:
        if image_id not in known:
            raise DatasetError(root / "ImageSets" / "Main", f"split lists name {image_id}, which has no XML")
    out: list[Sample] = []
    for xml in xmls:
        split = split_of.get(xml.stem)
        if wanted is not None and split not in wanted:
            continue
        ann = read_voc(xml)
        image = root / "JPEGImages" / Path(ann.filename).name  # a <filename> never leaves JPEGImages/
        if not image.exists() and not image.suffix:
            image = image.with_name(f"{image.name}.jpg")
        if not image.exists():
            raise DatasetError(xml, f"image {ann.filename} not found in {root / 'JPEGImages'}")
        size = image_size(image)
        if size != (ann.width, ann.height):
            raise DatasetError(xml, f"<size> says {ann.width}x{ann.height} but {image.name} is {size[0]}x{size[1]}")
        ref = FrameRef(image, None, ann.width, ann.height)
        present = tuple(dict.fromkeys(i.tool for i in ann.objects))
        case = case_of(xml.stem)
        extra = {"annotation": str(xml)}
        if Task.TOOLS in tasks:
            truth = Truth(tools=present, instruments=ann.objects)
            out.append(Sample(dataset, case, ref, Task.TOOLS, truth, split=split, extra=dict(extra)))
        if Task.LOCALISATION in tasks:
            for tool in present:
                truth = Truth(tools=present, instruments=tuple(i for i in ann.objects if i.tool == tool))
                sample_extra = {**extra, "instrument": tool}
                out.append(Sample(dataset, case, ref, Task.LOCALISATION, truth, split=split, extra=sample_extra))
    return out
