"""Surg-R1 / ms-swift JSONL, both directions.

A row is ``{"messages": [{"role": "user", "content": "… <image> …"}, {"role": "assistant", "content": …}],
"images": [path, …]}`` plus, for localisation, ``"objects": {"ref": [...], "bbox": [[x1, y1, x2, y2]], …}``
(ms-swift grounding; ``bbox_type`` ``real`` = pixels, ``norm1000`` = 0..1000). Reading keeps everything a
row holds that the sample has no field for (other messages, other keys, key order) in ``extra``, so a row
read and written back is the same line; question, answer and frame are written from the sample's fields.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from engine.ontology import Ontology, load_ontology
from engine.tasks import Task
from engine.textfiles import parse_json_lines
from train.data.errors import DatasetError
from train.data.media import image_size
from train.data.sample import FrameRef, Instrument, Sample, TripletLabel, Truth

_OPTION = re.compile(r"^\s*([A-Z])[.)]\s+(.+?)\s*$", re.M)
_LETTER = re.compile(r"^\s*\(?([A-Z])[.)]\s*")
_TRIPLE = re.compile(r"([A-Za-z_]+)\s*,\s*([A-Za-z_]+)\s*,\s*([A-Za-z_]+)")


def _options(question: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in _OPTION.finditer(question)}


def answer_text(answer: str, question: str = "") -> str:
    """The answer without its option letter: ``"D. Gallbladder Dissection"`` → ``"Gallbladder Dissection"``;
    a bare letter is looked up among the question's options."""
    answer = answer.strip()
    m = _LETTER.match(answer)
    if m and answer[m.end() :].strip():
        return answer[m.end() :].strip()
    if re.fullmatch(r"\(?[A-Z]\)?\.?", answer):
        return _options(question).get(answer.strip("()."), answer)
    return answer


def _detect_task(row: dict, question: str, answer: str, onto: Ontology) -> Task | None:
    q = question.lower()
    if row.get("objects"):
        return Task.LOCALISATION
    if "triplet" in q:
        return Task.TRIPLET
    if "critical view" in q or "cvs" in q:
        return Task.CVS
    if "phase" in q:
        options = _options(question)
        if options and all(onto.phase.resolve(o) for o in options.values()):
            return Task.PHASE_MCQ
        return Task.PHASE
    if "instrument" in q or "tool" in q:
        return Task.TOOLS
    return None


def _case_and_index(image: str) -> tuple[str, int | None]:
    p = Path(image)
    parent = p.parent.name
    case = f"video{int(parent):02d}" if parent.isdigit() else (parent or p.stem)
    index = int(p.stem) if p.stem.isdigit() else None
    return case, index


def _objects_truth(objects: dict, size: tuple[int, int] | None, onto: Ontology, path: Path, line: int) -> tuple:
    refs, boxes = objects.get("ref") or [], objects.get("bbox") or []
    if not isinstance(refs, list) or not isinstance(boxes, list) or len(refs) != len(boxes):
        raise DatasetError(path, "'objects' needs 'ref' and 'bbox' lists of the same length", line)
    norm = objects.get("bbox_type") == "norm1000"
    instruments, anatomy = [], []
    for ref, box in zip(refs, boxes, strict=True):
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box)):
            raise DatasetError(path, f"bbox {box!r} is not [x1, y1, x2, y2]", line)
        if norm:
            if size is None:
                raise DatasetError(path, "norm1000 boxes need the image to scale them (image not found)", line)
            box = [box[0] * size[0] / 1000, box[1] * size[1] / 1000, box[2] * size[0] / 1000, box[3] * size[1] / 1000]
        tool = onto.tool.resolve(str(ref))
        if tool is None and (inst := onto.instrument.resolve(str(ref))) is not None:
            tool = onto.tool_for_instrument(inst)
        if tool is not None:
            instruments.append(Instrument(tool.name, tuple(float(v) for v in box)))
        elif (organ := onto.anatomy.resolve(str(ref))) is not None:
            anatomy.append(organ.name)
        else:
            raise DatasetError(path, f"object {ref!r} is neither a known instrument nor anatomy", line)
    return tuple(instruments), tuple(anatomy)


def read_jsonl(
    path: str | Path,
    *,
    image_root: str | Path | None = None,
    task: Task | None = None,
    dataset: str = "surgr1",
    split: str | None = None,
    read_sizes: bool = True,
) -> list[Sample]:
    """One sample per row. Images resolve against ``image_root`` (default: the file's folder). The task is
    ``task`` when given, else recognised from the row (objects → localisation; the question's wording)."""
    path = Path(path)
    base = Path(image_root) if image_root else path.parent
    onto = load_ontology()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DatasetError(path, exc.strerror or str(exc)) from exc
    except UnicodeDecodeError:
        raise DatasetError(path, "not a UTF-8 text file") from None
    out: list[Sample] = []

    def bad_json(line: int, exc: json.JSONDecodeError) -> DatasetError:
        return DatasetError(path, f"invalid JSON: {exc.msg} (column {exc.colno})", line)

    for line, row in parse_json_lines(lines, path, ValueError, on_bad_json=bad_json):
        if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
            raise DatasetError(path, "expected an object with a 'messages' list", line)
        messages = row["messages"]
        if not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
            raise DatasetError(path, "every message needs a 'role' and a string 'content'", line)
        users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        if not users:
            raise DatasetError(path, "no user message", line)
        u = users[-1]
        a = next((i for i in range(u + 1, len(messages)) if messages[i].get("role") == "assistant"), None)
        question = messages[u]["content"]
        answer = messages[a]["content"] if a is not None else None
        images = row.get("images") or []
        if not isinstance(images, list) or not images or not all(isinstance(i, str) for i in images):
            raise DatasetError(path, "expected 'images': a non-empty list of paths", line)
        image = base / images[0]
        size = image_size(image) if read_sizes and image.exists() else None
        kind = Task(task) if task else _detect_task(row, question, answer or "", onto)
        if kind is None:
            raise DatasetError(path, "cannot tell the task from the question; pass task=", line)
        truth = Truth()
        if kind in (Task.PHASE, Task.PHASE_MCQ) and answer is not None:
            label = onto.phase.resolve(answer_text(answer, question))
            if label is None:
                raise DatasetError(path, f"answer {answer[:60]!r} is not a surgical phase", line)
            truth = Truth(phase=label.name)
        elif kind is Task.LOCALISATION:
            instruments, anatomy = _objects_truth(row["objects"], size, onto, path, line)
            tools = tuple(dict.fromkeys(i.tool for i in instruments))
            truth = Truth(tools=tools or None, instruments=instruments, anatomy=anatomy)
        elif kind is Task.TRIPLET and answer is not None:
            triplets = []
            for m in _TRIPLE.finditer(answer_text(answer, question)):
                tid = onto.triplet_id(*m.groups())
                if tid is not None:
                    i, v, t = onto.triplet(tid)
                    triplets.append(TripletLabel(i.name, v.name, t.name, tid))
            truth = Truth(triplets=tuple(triplets) or None)
        elif kind is Task.TOOLS and answer is not None:
            found = [label.name for label, _, _ in onto.tool.find(answer_text(answer, question))]
            truth = Truth(tools=tuple(dict.fromkeys(found)))
        case, index = _case_and_index(images[0])
        extra = {
            "line": line,
            "images": list(images),
            "keys": list(row),
            "messages_before": messages[:u],
            "messages_after": messages[a + 1 :] if a is not None else messages[u + 1 :],
            "user_message": {k: v for k, v in messages[u].items() if k != "content"},
            "assistant_message": {k: v for k, v in messages[a].items() if k != "content"} if a is not None else None,
            "fields": {k: v for k, v in row.items() if k not in ("messages", "images")},
        }
        if index is not None:
            extra["frame_index"] = index
        ref = FrameRef(image, None, *(size or (None, None)))
        out.append(Sample(dataset, case, ref, kind, truth, question, answer, split, extra))
    return out


def to_row(sample: Sample, image_root: str | Path | None = None) -> dict:
    """The ms-swift row of a sample (question and answer are required; the frame must be an image)."""
    if sample.question is None or sample.answer is None:
        raise ValueError(f"{sample.case}: a JSONL row needs the sample's question and answer")
    extra = sample.extra
    images = list(extra.get("images") or [])
    if sample.frame.index is not None:
        raise ValueError(f"{sample.case}: frame {sample.frame.index} is inside a video; extract frames first")
    path = sample.frame.path.as_posix()
    if image_root is not None:
        path = Path(os.path.relpath(sample.frame.path.absolute(), Path(image_root).absolute())).as_posix()
    if not images or (image_root is not None and Path(image_root) / images[0] != sample.frame.path):
        images[:1] = [path]
    user = {**(extra.get("user_message") or {"role": "user"}), "content": sample.question}
    messages = [*extra.get("messages_before", []), user]
    messages.append({**(extra.get("assistant_message") or {"role": "assistant"}), "content": sample.answer})
    messages.extend(extra.get("messages_after", []))
    fields = dict(extra.get("fields") or {})
    if sample.task is Task.LOCALISATION and "objects" not in fields:
        boxed = [i for i in sample.truth.instruments if i.box is not None]
        fields["objects"] = {"ref": [i.tool for i in boxed], "bbox": [[round(v, 1) for v in i.box] for i in boxed]}
    values = {"messages": messages, "images": images, **fields}
    order = [k for k in extra.get("keys", []) if k in values] + [k for k in values if k not in extra.get("keys", [])]
    return {k: values[k] for k in order}


def write_jsonl(samples: Iterable[Sample], path: str | Path, image_root: str | Path | None = None) -> int:
    """Write rows (one JSON object per line, UTF-8, as the release writes them); returns the row count.
    The file is written under a temporary name and renamed when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    count = 0
    with tmp.open("w", encoding="utf-8") as handle:
        for sample in samples:
            row = to_row(sample, image_root if image_root is not None else path.parent)
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(path)
    return count
