"""Run a model over an evaluation set in the Surg-R1 release's JSONL format.

Input rows (ms-swift style): ``messages`` (a user turn whose text holds an ``<image>``
placeholder, and the reference answer in the assistant turn) and ``images`` (paths relative to
the JSONL file). Output rows: ``response`` (the model's full text) and ``labels`` (the
reference), which the release's own scorer reads, plus the image path for traceability.
"""

from __future__ import annotations

import json
import os
import re
import struct
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from engine.backends.base import Backend, GenerationRequest, StreamLimits
from engine.profiles import ModelProfile
from engine.textfiles import read_json_lines

__all__ = ["MAX_IMAGE_PIXELS", "EvalRow", "EvalSetError", "load_rgb", "read_eval_set", "run_eval"]

MAX_IMAGE_PIXELS = 178_956_970
"""Largest image read (Pillow's decompression-bomb limit, ~537 MB as RGB); the model sees ~1 M pixels."""

_IMAGE_TAG = re.compile(r"\s*<image>\s*")


class EvalSetError(Exception):
    """The evaluation set is missing, malformed, or names an image that is not there."""


@dataclass(frozen=True)
class EvalRow:
    line: int
    prompt: str  # the user text without the image placeholder
    image: Path
    label: str
    system: str | None = None


def _text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI-style parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def read_eval_set(path: Path) -> list[EvalRow]:
    """Rows of the set; every problem is reported with its line number before anything runs."""
    path = Path(path)
    rows = []
    for number, data in read_json_lines(path, EvalSetError):
        where = f"{path}:{number}"
        messages = data.get("messages") if isinstance(data, dict) else None
        images = data.get("images") if isinstance(data, dict) else None
        if not isinstance(messages, list) or not isinstance(images, list) or len(images) != 1:
            raise EvalSetError(f"{where}: expected 'messages' and exactly one entry in 'images'")
        by_role = {m.get("role"): _text(m.get("content")) for m in messages if isinstance(m, dict)}
        if "user" not in by_role or "assistant" not in by_role:
            raise EvalSetError(f"{where}: needs a user turn and an assistant turn (the reference answer)")
        image = Path(str(images[0]))
        image = image if image.is_absolute() else path.parent / image
        if not image.is_file():
            raise EvalSetError(f"{where}: image {image} not found")
        prompt = _IMAGE_TAG.sub(" ", by_role["user"]).strip()
        rows.append(EvalRow(number, prompt, image, by_role["assistant"].strip(), by_role.get("system")))
    if not rows:
        raise EvalSetError(f"{path}: no rows")
    return rows


def _header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) a PNG or JPEG declares, from its header alone (None: not found)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                return struct.unpack(">II", head[16:24])
            if head[:2] != b"\xff\xd8":
                return None
            fh.seek(2)
            while (marker := fh.read(4)) and len(marker) == 4 and marker[0] == 0xFF:
                kind, length = marker[1], struct.unpack(">H", marker[2:])[0]
                if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):  # a start of frame
                    height, width = struct.unpack(">xHH", fh.read(5))
                    return width, height
                fh.seek(length - 2, os.SEEK_CUR)
    except (OSError, struct.error):
        pass
    return None


def _too_big(path: Path) -> str | None:
    """Why the image is too big to read, judged by its header (nothing decoded); None if it is not."""
    size = _header_size(path)
    if size is None:  # another format: Pillow reads its header (it refuses what is far too big)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    size = image.size
        except Image.DecompressionBombError:
            return f"image is larger than the {MAX_IMAGE_PIXELS:,} pixels surgview reads"
        except (OSError, ValueError, SyntaxError, struct.error):
            return None  # not an image Pillow knows: OpenCV may still read it
    w, h = size
    if w * h <= MAX_IMAGE_PIXELS:
        return None
    return f"image is {w}x{h} pixels, larger than the {MAX_IMAGE_PIXELS:,} pixels surgview reads"


def load_rgb(path: Path) -> np.ndarray:
    """The image as RGB. One that declares more than ``MAX_IMAGE_PIXELS`` is refused, saying so,
    before anything is decoded (OpenCV would allocate it, or call it merely "not readable")."""
    reason = _too_big(path)
    if reason is not None:
        raise EvalSetError(f"{path}: {reason}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise EvalSetError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def run_eval(
    rows: list[EvalRow],
    backend: Backend,
    out: Path,
    max_new_tokens: int | None = None,
    progress: Callable[[int], None] | None = None,
    profile: ModelProfile | None = None,
    concurrency: int = 1,
    limits: StreamLimits | None = None,
) -> int:
    """Generate for every row and write the results file (atomically: complete or not at all).

    ``profile`` says how the model is asked (system prompt where a row has none, image size,
    sampling); the question is the row's own. With ``concurrency`` > 1 and a backend that serves
    requests concurrently (a model server), that many rows are in flight at once; rows keep their order.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")

    def answer(row: EvalRow) -> str:
        image = load_rgb(row.image)
        if profile is None:
            request = GenerationRequest(
                row.prompt, image, row.system, max_new_tokens or 768, limits=limits or StreamLimits()
            )
        else:
            request = GenerationRequest(
                prompt=row.prompt,
                image=profile.prepare_image(image),
                system=row.system or profile.system,
                max_new_tokens=max_new_tokens or profile.sampling.max_tokens,
                temperature=profile.sampling.temperature,
                top_p=profile.sampling.top_p,
                limits=limits or StreamLimits(),
            )
        return backend.generate(request)

    workers = max(1, concurrency) if getattr(backend, "supports_concurrency", False) else 1
    try:
        with tmp.open("w", encoding="utf-8") as fh, ThreadPoolExecutor(workers, "surgview-eval") as pool:
            for row, response in zip(rows, pool.map(answer, rows), strict=True):
                fh.write(
                    json.dumps(
                        {"response": response, "labels": row.label, "images": [str(row.image)]}, ensure_ascii=False
                    )
                    + "\n"
                )
                if progress is not None:
                    progress(1)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return len(rows)
