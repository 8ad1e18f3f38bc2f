"""Tiny models exported to ONNX once per test process, shared by the ONNX test modules.

The export takes ~20 s on two cores, so both test modules reuse one export per (size, dtype).
The image processor is widened (56² to 448² pixels instead of exactly 112²), so frames of
different shapes give different patch grids, several attention windows and more image tokens.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from engine.backends.base import GenerationRequest

MIN_PIXELS, MAX_PIXELS = 56 * 56, 448 * 448
FRAME_SIZES = ((112, 112), (180, 320), (480, 854), (60, 300))  # (height, width)

_cache: dict[tuple[str, str], Path] = {}


def widen_processor(model_dir: Path) -> None:
    """Let the image processor keep frames up to 448² pixels (the tiny model's default is 112² only)."""
    for name, key in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
        path = model_dir / name
        data = json.loads(path.read_text(encoding="utf-8"))
        settings = data[key] if key else data
        settings["size"] = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def exported_model(root: Path, size: str = "tiny", dtype: str = "fp32") -> Path:
    """A tiny model folder with its ``onnx/`` export, built once per process under ``root``."""
    from engine.tiny_model import build_tiny_model
    from train.onnx_export import export_onnx

    key = (size, dtype)
    if key not in _cache or not _cache[key].exists():
        model = build_tiny_model(root / f"{size}-{dtype}", seed=0, init_std=0.1, size=size)
        widen_processor(model)
        export_onnx(model, dtype=dtype)
        _cache[key] = model
    return _cache[key]


def copy_model(model: Path, dest: Path) -> Path:
    """A private copy of an exported model, for tests that damage it."""
    return Path(shutil.copytree(model, dest))


def frame(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A frame with structure (gradients and blocks), so image embeddings differ between frames."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1)
    noise = rng.integers(0, 60, (height, width, 3))
    return ((image + noise) % 256).astype(np.uint8)


def request(height: int | None, width: int | None, max_new_tokens: int = 24, seed: int = 0) -> GenerationRequest:
    """A frame-analysis-like request; ``height`` None asks without a frame."""
    if height is None or width is None:
        return GenerationRequest("Which phase is this? Answer in one line.", max_new_tokens=max_new_tokens)
    return GenerationRequest(
        "<image> Which phase is this, and which instruments are visible?",
        image=frame(height, width, seed),
        max_new_tokens=max_new_tokens,
    )
