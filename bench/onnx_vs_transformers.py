"""ONNX Runtime against the transformers backend: same model folder, same request, one run.

    .venv/bin/python bench/onnx_vs_transformers.py [--shape tiny small] [--tokens 128] [--repeats 7] [--threads 1]
    .venv/bin/python bench/onnx_vs_transformers.py --device cuda --shape 3b    # on an NVIDIA GPU

For each shape a model folder is built in a temporary folder (``tiny``/``small``:
``engine.tiny_model``; ``3b``: Qwen2.5-VL-3B's dimensions with random fp16 weights and the tiny
tokenizer) and exported with ``train.onnx_export.export_onnx`` (fp32 for the CPU, fp16 for
CUDA), or ``--model DIR`` is used (exported first if it has no ``onnx/``). Both backends then
stream the same greedy request (an 854x480 frame and the frame-analysis prompt) in alternating
order; the table gives medians of the time to the first text piece and of tokens/s after it
(``GenerationStats``), the ratios, and whether both produced the same text.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engine.backends.base import Backend, GenerationRequest  # noqa: E402
from engine.prompts import frame_prompt  # noqa: E402
from engine.tiny_model import build_tiny_model  # noqa: E402

# Qwen2.5-VL-3B-Instruct's dimensions (its config.json), for a random model of the same cost.
SHAPE_3B_TEXT = {
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 128000,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
}
SHAPE_3B_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "out_hidden_size": 2048,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
}
FRAME_PIXELS = 480 * 854  # the 3b shape's processor keeps an 854x480 frame near full size (510 image tokens)


def shape_3b_config(tiny_folder: Path) -> Any:
    """The Qwen2.5-VL-3B shape over a tiny model folder's config (its vocabulary and special tokens)."""
    from transformers import Qwen2_5_VLConfig

    config = json.loads((tiny_folder / "config.json").read_text(encoding="utf-8"))
    config["text_config"].update(SHAPE_3B_TEXT)
    config["text_config"].pop("layer_types", None)  # the tiny model's one per layer; derived again for 36 layers
    config["vision_config"].update(SHAPE_3B_VISION)
    config["text_config"]["initializer_range"] = config["vision_config"]["initializer_range"] = 0.02
    return Qwen2_5_VLConfig(**{k: v for k, v in config.items() if k not in ("architectures", "transformers_version")})


def build_3b_shaped(out: Path, device: str) -> Path:
    """A Qwen2.5-VL-3B-shaped folder: random fp16 weights, the tiny model's tokenizer and files."""
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    build_tiny_model(out, seed=0)
    config = shape_3b_config(out)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.float16).eval()
    model.generation_config = GenerationConfig.from_pretrained(out)
    for name in out.glob("*.safetensors"):
        name.unlink()
    model.save_pretrained(out, safe_serialization=True)
    for name, key in (("preprocessor_config.json", None), ("processor_config.json", "image_processor")):
        data = json.loads((out / name).read_text(encoding="utf-8"))
        (data[key] if key else data)["size"] = {"shortest_edge": 56 * 56, "longest_edge": FRAME_PIXELS}
        (out / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    del model
    return out


def prepare(shape: str, root: Path, device: str, model: Path | None) -> Path:
    from train.onnx_export import export_onnx

    dtype = "fp16" if device == "cuda" else "fp32"
    if model is None:
        if shape == "3b":
            model = build_3b_shaped(root / shape, device)
        else:
            model = build_tiny_model(root / shape, seed=0, init_std=0.1, size=shape)
    if not (model / "onnx" / "onnx.json").is_file():
        export_onnx(model, dtype=dtype)
    return model


def run_once(backend: Backend, request: GenerationRequest) -> tuple[float, float, int, str]:
    stream = backend.stream(request)
    text = stream.text()
    stats = stream.stats
    return stats.first_token_s or stats.total_s, stats.tokens_per_s, stats.tokens, text


def compare(model: Path, device: str, tokens: int, repeats: int, threads: int | None) -> None:
    from engine.backends.onnx import OnnxBackend
    from engine.backends.transformers_backend import TransformersBackend

    dtype = "float16" if device == "cuda" else None
    onnx = OnnxBackend(model, device=device, threads=threads)
    torch_backend = TransformersBackend(model, device=device, dtype=dtype, threads=threads)
    image = np.random.default_rng(0).integers(0, 256, (480, 854, 3), dtype=np.uint8)
    prompt = frame_prompt("frame_analysis", 854, 480)
    request = GenerationRequest(prompt.text, image=image, system=prompt.system, max_new_tokens=tokens)
    backends = {"transformers": torch_backend, "onnxruntime": onnx}
    results: dict[str, list] = {name: [] for name in backends}
    for backend in backends.values():
        run_once(backend, request)  # warm-up
    for i in range(repeats):
        for name in list(backends)[:: 1 if i % 2 == 0 else -1]:
            results[name].append(run_once(backends[name], request))
    print(f"model: {onnx.model_id}; transformers on {torch_backend.device}, onnxruntime {onnx.provider}")
    print(f"{'':16}{'first token s':>15}{'tokens/s':>10}{'tokens':>8}")
    med = {}
    for name, rows in results.items():
        first = statistics.median(r[0] for r in rows)
        rate = statistics.median(r[1] for r in rows)
        med[name] = (first, rate)
        print(f"{name:16}{first:15.4f}{rate:10.0f}{rows[0][2]:8d}")
    same = results["transformers"][0][3] == results["onnxruntime"][0][3]
    ratio_first = med["transformers"][0] / med["onnxruntime"][0]
    ratio_rate = med["onnxruntime"][1] / med["transformers"][1] if med["transformers"][1] else float("nan")
    print(f"onnxruntime vs transformers: first token {ratio_first:.2f}x sooner, {ratio_rate:.2f}x tokens/s")
    print(f"same text: {'yes' if same else 'NO'}")
    torch_backend.close()
    onnx.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", nargs="+", choices=["tiny", "small", "3b"], default=["tiny", "small"])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--model", type=Path, help="an existing model folder instead of --shape")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per run (the token cap)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, help="CPU threads for both backends (default: their own choice)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores, device {args.device}, {args.tokens} tokens, {args.repeats} runs each, medians")
    with tempfile.TemporaryDirectory() as tmp:
        for shape in [None] if args.model else args.shape:
            print(f"\n== {args.model or shape}")
            model = prepare(shape or "", Path(tmp), args.device, args.model)
            compare(model, args.device, args.tokens, args.repeats, args.threads)


if __name__ == "__main__":
    main()
