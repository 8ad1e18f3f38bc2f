"""Build a Qwen-VL processor (image processor + tokenizer + chat template) from a model folder.

Two traps make ``AutoProcessor.from_pretrained`` unusable here (FIELD-NOTES):

- The Qwen-VL processors require a video processor, and the video processors need torchvision,
  of which no CPU build exists. The classes below take no video processor (surgview analyses
  still frames), and the image processor is the Pillow one.
- Without torchvision ``AutoProcessor`` silently returns only the tokenizer; anything that
  then feeds it images fails far from the cause.

So the processor is always built explicitly by :func:`load_processor` and passed explicitly
(to the backend, and to trl as ``processing_class``). When saved, these processors write the
standard class names, so a folder stays loadable by stock tools on machines with torchvision.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from transformers import (
    AutoTokenizer,
    ProcessorMixin,
    Qwen2_5_VLProcessor,
    Qwen2VLImageProcessorPil,
    Qwen2VLProcessor,
)

__all__ = [
    "ImageOnlyQwen2VLProcessor",
    "ImageOnlyQwen2_5_VLProcessor",
    "load_processor",
    "processor_class_for",
]


class _ImageOnly:
    """Mixin: a Qwen-VL processor built without a video processor; saved under its stock name."""

    stock_name: str

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["processor_class"] = self.stock_name
        return data

    def save_pretrained(self, save_directory: str | os.PathLike[str], **kwargs) -> list[str]:
        files = super().save_pretrained(save_directory, **kwargs)
        # Older loaders (and vLLM) read the image settings from preprocessor_config.json.
        self.image_processor.save_pretrained(save_directory)
        config = Path(save_directory) / "tokenizer_config.json"
        if config.is_file():
            data = json.loads(config.read_text(encoding="utf-8"))
            if data.get("processor_class") == type(self).__name__:
                data["processor_class"] = self.stock_name
                config.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return files


class ImageOnlyQwen2_5_VLProcessor(_ImageOnly, Qwen2_5_VLProcessor):
    stock_name = "Qwen2_5_VLProcessor"


class ImageOnlyQwen2VLProcessor(_ImageOnly, Qwen2VLProcessor):
    stock_name = "Qwen2VLProcessor"


@cache  # one class, so isinstance checks and pickling see the same type every time
def _qwen3_processor() -> type[ProcessorMixin]:
    from transformers import Qwen3VLProcessor

    class ImageOnlyQwen3VLProcessor(_ImageOnly, Qwen3VLProcessor):
        stock_name = "Qwen3VLProcessor"

    return ImageOnlyQwen3VLProcessor


def processor_class_for(architecture: str) -> type[ProcessorMixin]:
    """The image-only processor class of a supported architecture (``config.json`` name)."""
    if architecture == "Qwen2_5_VLForConditionalGeneration":
        return ImageOnlyQwen2_5_VLProcessor
    if architecture == "Qwen2VLForConditionalGeneration":
        return ImageOnlyQwen2VLProcessor
    if architecture == "Qwen3VLForConditionalGeneration":
        return _qwen3_processor()
    raise ValueError(f"no processor for architecture {architecture}")


def load_processor(model_dir: str | os.PathLike[str]) -> ProcessorMixin:
    """The processor of a model folder, built from its files only (offline, no remote code)."""
    model_dir = Path(model_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    architecture = (config.get("architectures") or [""])[0]
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(model_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    return processor_class_for(architecture)(
        image_processor, tokenizer, chat_template=_chat_template(model_dir, tokenizer)
    )


def _chat_template(model_dir: Path, tokenizer) -> str | None:
    jinja = model_dir / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    legacy = model_dir / "chat_template.json"
    if legacy.is_file():
        return json.loads(legacy.read_text(encoding="utf-8")).get("chat_template")
    return getattr(tokenizer, "chat_template", None)
