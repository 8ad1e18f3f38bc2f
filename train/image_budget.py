"""How many pixels a model folder reads a frame at: changing it to continue training at a higher resolution.

Qwen2.5-VL's vision tower has only rotary (relative) positions, so its weights read any patch grid; a model
trained at one pixel budget can go on training at a larger one and keep what it learnt. The budget lives in the
processor's files (``preprocessor_config.json``, and the ``image_processor`` section of
``processor_config.json``, which transformers reads first), so both are rewritten together.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["ImageBudgetError", "frame_grid", "set_image_pixels"]

FILES = ("preprocessor_config.json", "processor_config.json")


class ImageBudgetError(ValueError):
    """A pixel budget the model folder's processor cannot use."""


def set_image_pixels(model_dir: Path, pixels: int) -> None:
    """Make the model folder read every frame at ``pixels`` (min = max: a fixed token count per aspect)."""
    model_dir = Path(model_dir)
    found = False
    for name in FILES:
        path = model_dir / name
        if not path.is_file():
            continue
        config = json.loads(path.read_text(encoding="utf-8"))
        nested = name == "processor_config.json"  # there the image processor is one section of several
        if nested and "image_processor" not in config:
            continue
        section = config["image_processor"] if nested else config
        tile = section.get("patch_size", 14) * section.get("merge_size", 2)
        if pixels < tile * tile:
            raise ImageBudgetError(f"image_pixels {pixels} is below one image token ({tile}x{tile} pixels)")
        section["size"] = {"shortest_edge": pixels, "longest_edge": pixels}
        for key in ("min_pixels", "max_pixels"):
            if key in section:
                section[key] = pixels
        path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        found = True
    if not found:
        raise ImageBudgetError(f"{model_dir} has no image processor settings ({' or '.join(FILES)})")


def frame_grid(model_dir: Path, width: int, height: int) -> tuple[int, int]:
    """The image tokens (columns, rows) the folder's processor gives a ``width`` x ``height`` frame."""
    from PIL import Image

    from engine.vlm_processor import load_processor

    processor = load_processor(model_dir)
    merge = processor.image_processor.merge_size
    _, rows, cols = processor.image_processor(Image.new("RGB", (width, height)))["image_grid_thw"][0].tolist()
    return cols // merge, rows // merge
