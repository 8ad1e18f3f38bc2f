"""The ``onnx/`` folder of a model directory: what it holds and how a broken one is recognised.

``surgview-train export-onnx`` writes, beside the safetensors weights::

    onnx/vision.onnx (+ .data)    pixels + grid indices → image embeddings
    onnx/decoder.onnx (+ .data)   inputs_embeds, attention_mask, 3-D position_ids, KV cache → last logits, new cache
    onnx/embed_tokens.npy         the token embedding table (the runtime looks rows up itself)
    onnx/onnx.json                written last: dims, token ids, and each file's size and sha256

The folder is assembled under a temporary name and renamed into place, and ``onnx.json`` is
its last file, so a folder without it is an export that did not finish. :func:`read_onnx_dir`
checks every file's size, and its sha256 (whole for files up to 256 MiB, sampled beyond, so a
7 GB model opens in well under a second), and says in one line what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "LAYOUT_VERSION",
    "META_NAME",
    "ONNX_DIR",
    "OnnxDirError",
    "OnnxMeta",
    "file_record",
    "read_onnx_dir",
]

ONNX_DIR = "onnx"
META_NAME = "onnx.json"
LAYOUT_VERSION = 1
_WHOLE_HASH_BYTES = 256 << 20
_SAMPLES, _SAMPLE_BYTES = 64, 64 << 10


class OnnxDirError(Exception):
    """A missing, partial or corrupt ``onnx/`` folder; the message says which and what to do."""


@dataclass(frozen=True)
class OnnxMeta:
    """``onnx/onnx.json``: everything the runtime needs besides the graphs and the tokenizer."""

    dtype: str  # "fp32" or "fp16"
    num_layers: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    image_token_id: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    merge_size: int
    window_size: int
    patch_size: int
    source_fingerprint: str  # the model folder's fingerprint when exported
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # name → {"bytes", "sha256"}
    exporter: dict[str, Any] = field(default_factory=dict)  # versions, opset
    layout_version: int = LAYOUT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["eos_token_ids"] = list(self.eos_token_ids)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OnnxMeta:
        data = dict(data)
        data["eos_token_ids"] = tuple(int(t) for t in data["eos_token_ids"])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def _digest(path: Path, size: int) -> str:
    """sha256 of the whole file, or of its size and 64 evenly spaced 64 KiB samples when large."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        if size <= _WHOLE_HASH_BYTES:
            return hashlib.file_digest(fh, "sha256").hexdigest()
        digest.update(f"sampled\0{size}\0".encode())
        span = size - _SAMPLE_BYTES
        for i in range(_SAMPLES):
            fh.seek(span * i // (_SAMPLES - 1))
            digest.update(fh.read(_SAMPLE_BYTES))
    return digest.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """What ``onnx.json`` records of one file (its size and digest)."""
    size = path.stat().st_size
    return {"bytes": size, "sha256": _digest(path, size)}


def read_onnx_dir(model_dir: str | os.PathLike[str], *, verify: bool = True) -> tuple[Path, OnnxMeta]:
    """The ``onnx/`` folder of ``model_dir`` and its metadata, after checking every file."""
    folder = Path(model_dir).expanduser() / ONNX_DIR
    again = f"export it again (surgview-train export-onnx {Path(model_dir)})"
    if not folder.is_dir():
        raise OnnxDirError(f"{Path(model_dir)} has no onnx/ folder: export it (surgview-train export-onnx {model_dir})")
    meta_path = folder / META_NAME
    if not meta_path.is_file():
        raise OnnxDirError(f"{folder} is incomplete (no {META_NAME}; an export that did not finish?): {again}")
    try:
        meta = OnnxMeta.from_dict(json.loads(meta_path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise OnnxDirError(f"{meta_path} is unreadable ({type(exc).__name__}: {exc}): {again}") from exc
    if meta.layout_version != LAYOUT_VERSION:
        raise OnnxDirError(f"{folder} has layout version {meta.layout_version}; this surgview reads {LAYOUT_VERSION}")
    for name in ("vision.onnx", "decoder.onnx", "embed_tokens.npy"):
        if name not in meta.files:
            raise OnnxDirError(f"{meta_path} lists no {name}: {again}")
    for name, record in meta.files.items():
        path = folder / name
        if not path.is_file():
            raise OnnxDirError(f"{folder} lacks {name}: a partial copy? {again}")
        size = path.stat().st_size
        if size != record.get("bytes"):
            expected = record.get("bytes")
            raise OnnxDirError(f"{name} in {folder} has {size} bytes, {expected} expected (truncated?): {again}")
        if verify and _digest(path, size) != record.get("sha256"):
            raise OnnxDirError(f"{name} in {folder} is corrupt (checksum differs from the export's): {again}")
    return folder, meta
