"""Model inputs without torch or transformers: chat template, tokens and image patches.

The ONNX backend runs on machines with no training stack, so it cannot use the transformers
processor (which imports torch). This module rebuilds what ``Qwen2_5_VLProcessor`` gives
``generate`` from the model folder's own files: the chat template rendered by jinja2 the way
transformers renders it (sandboxed, ``trim_blocks``, ``{% generation %}`` accepted), the
``tokenizers`` tokenizer from ``tokenizer.json``, ``<|image_pad|>`` expanded to one token per
merged patch, and the Qwen2-VL image processor (smart resize, Pillow bicubic, rescale,
normalise, patchify) in numpy. Tests check token ids and pixels against transformers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ImageSettings", "ModelInputs", "OnnxInputBuilder", "check_image", "grid_resize", "smart_resize"]

_IMAGE_PAD = "<|image_pad|>"


def check_image(image: Any) -> np.ndarray:
    """An RGB uint8 H x W x 3 array, or a ValueError saying what is wrong with it."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, not {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"image must be RGB uint8 of shape H x W x 3; got {image.dtype} {image.shape}")
    return image


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL's resize rule: sides multiples of ``factor``, area within bounds, aspect kept;
    a ValueError for an aspect ratio over 200, as the processor raises."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"image aspect ratio must be below 200; got {height} x {width}")
    return grid_resize(height, width, factor, min_pixels, max_pixels)


def grid_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """:func:`smart_resize`'s arithmetic, without its aspect check: (height, width)."""
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class ImageSettings:
    """The image processor's settings (``preprocessor_config.json``)."""

    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    resample: int = 3  # PIL.Image.BICUBIC
    rescale_factor: float = 1 / 255
    image_mean: tuple[float, ...] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, ...] = (0.26862954, 0.26130258, 0.27577711)

    @classmethod
    def read(cls, model_dir: Path) -> ImageSettings:
        path = model_dir / "preprocessor_config.json"
        data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        if not data and (model_dir / "processor_config.json").is_file():
            data = json.loads((model_dir / "processor_config.json").read_text(encoding="utf-8")).get(
                "image_processor", {}
            )
        size = data.get("size") or {}
        default = cls()
        return cls(
            min_pixels=int(size.get("shortest_edge", data.get("min_pixels", default.min_pixels))),
            max_pixels=int(size.get("longest_edge", data.get("max_pixels", default.max_pixels))),
            patch_size=int(data.get("patch_size", default.patch_size)),
            temporal_patch_size=int(data.get("temporal_patch_size", default.temporal_patch_size)),
            merge_size=int(data.get("merge_size", default.merge_size)),
            resample=int(data.get("resample", default.resample)),
            rescale_factor=float(data.get("rescale_factor", default.rescale_factor)),
            image_mean=tuple(float(x) for x in data.get("image_mean", default.image_mean)),
            image_std=tuple(float(x) for x in data.get("image_std", default.image_std)),
        )

    def patches(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
        """One RGB frame → flat patches ``(h*w, 3*T*P*P)`` float32 and its grid ``(1, h, w)``."""
        from PIL import Image

        height, width = image.shape[:2]
        factor = self.patch_size * self.merge_size
        new_h, new_w = smart_resize(height, width, factor, self.min_pixels, self.max_pixels)
        resized = np.asarray(Image.fromarray(image, mode="RGB").resize((new_w, new_h), resample=self.resample))
        pixels = resized.astype(np.float64).transpose(2, 0, 1) * self.rescale_factor
        pixels = pixels.astype(np.float32)
        mean = np.asarray(self.image_mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.image_std, dtype=np.float32)[:, None, None]
        pixels = ((pixels - mean) / std).astype(np.float32)
        p, m, t = self.patch_size, self.merge_size, self.temporal_patch_size
        gh, gw = new_h // p, new_w // p
        patches = pixels.reshape(3, gh // m, m, p, gw // m, m, p).transpose(1, 4, 2, 5, 0, 3, 6)
        patches = np.broadcast_to(patches[:, :, :, :, :, None], (*patches.shape[:5], t, p, p))
        return np.ascontiguousarray(patches.reshape(gh * gw, 3 * t * p * p)), (1, gh, gw)


@dataclass
class ModelInputs:
    """A left-padded batch: what the vision and decoder graphs are fed."""

    input_ids: np.ndarray  # (batch, seq) int64
    attention_mask: np.ndarray  # (batch, seq) int64, 0 on the left padding
    pixel_values: np.ndarray | None  # (patches, 3*T*P*P) float32, all images of the batch
    image_grids: np.ndarray | None  # (images, 3) int64


class OnnxInputBuilder:
    """Chat messages + frames → token ids and patches, as the model folder's processor would."""

    def __init__(self, model_dir: Path):
        from tokenizers import Tokenizer

        self.model_dir = Path(model_dir)
        self.tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        self.image = ImageSettings.read(self.model_dir)
        config = self._json("tokenizer_config.json")
        self._special = {k: _token_text(v) for k, v in config.items() if k.endswith("_token") and v is not None}
        pad = self._special.get("pad_token")
        pad_id = self.tokenizer.token_to_id(pad) if pad else None
        self.pad_id = int(pad_id if pad_id is not None else 0)
        image_id = self.tokenizer.token_to_id(_IMAGE_PAD)
        if image_id is None:
            raise ValueError(f"the tokenizer in {self.model_dir} has no {_IMAGE_PAD} token")
        self.image_token_id = int(image_id)
        self._template = _compile_template(self._chat_template(config))

    def _json(self, name: str) -> dict[str, Any]:
        path = self.model_dir / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def _chat_template(self, tokenizer_config: dict[str, Any]) -> str:
        jinja = self.model_dir / "chat_template.jinja"
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8")
        legacy = self._json("chat_template.json").get("chat_template")
        template = legacy or tokenizer_config.get("chat_template")
        if not isinstance(template, str):
            raise ValueError(f"no chat template in {self.model_dir}")
        return template

    def render(self, messages: list[dict[str, Any]]) -> str:
        """The prompt text with the generation prompt (image tokens not yet expanded)."""
        return self._template.render(messages=messages, add_generation_prompt=True, **self._special)

    def build(self, texts: list[str], images: list[np.ndarray]) -> ModelInputs:
        """Rendered prompts (one per row) and their frames in order → a left-padded batch."""
        patches, grids = [], []
        for image in images:
            flat, grid = self.image.patches(image)
            patches.append(flat)
            grids.append(grid)
        unit = self.image.merge_size**2
        counts = iter([t * h * w // unit for t, h, w in grids])
        expanded = []
        for text in texts:
            pieces = text.split(_IMAGE_PAD)
            out = [pieces[0]]
            for piece in pieces[1:]:
                try:
                    out.append(_IMAGE_PAD * next(counts))
                except StopIteration:
                    raise ValueError("more <|image_pad|> tokens in the prompts than images") from None
                out.append(piece)
            expanded.append("".join(out))
        if next(counts, None) is not None:
            raise ValueError("more images than <|image_pad|> tokens in the prompts")
        encodings = self.tokenizer.encode_batch(expanded, add_special_tokens=True)
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(texts), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, width - n :] = encoding.ids
            mask[row, width - n :] = 1
        return ModelInputs(
            input_ids=ids,
            attention_mask=mask,
            pixel_values=np.concatenate(patches) if patches else None,
            image_grids=np.asarray(grids, dtype=np.int64) if grids else None,
        )

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def _token_text(value: Any) -> Any:
    return value.get("content") if isinstance(value, dict) else value


def _compile_template(source: str):
    """jinja2 set up as transformers sets it up for chat templates (sandbox, trimming, tags)."""
    import jinja2
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(Extension):
        """``{% generation %}…{% endgeneration %}`` marks training targets; rendering keeps the body."""

        tags = frozenset({"generation"})

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)
