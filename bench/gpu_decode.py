"""The embedded engine at GPU speed: a Qwen2.5-VL-3B-shaped model in bf16, one frame at a time and in
the batch the backend picks from free GPU memory, side by side in one run.

    python bench/gpu_decode.py [--tokens 128] [--frames 32]      # needs an NVIDIA GPU

Prints tokens/s and frames/s at batch 1 and at ``TransformersBackend.suggested_batch_size``, the
speed-up, and the weight bandwidth batch 1 achieves (decode reads every weight once per token),
which is what bounds one-at-a-time decoding on any GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.onnx_vs_transformers import build_3b_shaped  # noqa: E402
from engine.backends.base import GenerationRequest  # noqa: E402
from engine.backends.transformers_backend import TransformersBackend  # noqa: E402
from engine.profiles import get_profile  # noqa: E402


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--frames", type=int, default=32)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return 1
    rng = np.random.default_rng(0)
    profile = get_profile("surg-r1")
    frames = [rng.integers(0, 255, (476, 840, 3), dtype=np.uint8) for _ in range(args.frames)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_3b_shaped(Path(tmp) / "3b", "cuda")
        backend = TransformersBackend(folder, device="cuda", dtype="bfloat16")
        weights = sum(p.numel() * p.element_size() for p in backend.model.parameters())
        batch = backend.suggested_batch_size(args.tokens)
        requests = [profile.request("phase", f, 840, 476, max_tokens=args.tokens) for f in frames]
        # Sampling would stop early at random; greedy decoding of random weights runs to the cap.
        requests = [GenerationRequest(r.prompt, r.image, r.system, args.tokens) for r in requests]
        backend.generate_batch(requests[:2])  # warm-up: kernels, allocator
        torch.cuda.synchronize()
        start = time.perf_counter()
        for r in requests[:4]:
            backend.generate(r)
        one = (time.perf_counter() - start) / 4
        start = time.perf_counter()
        for i in range(0, len(requests), batch):
            backend.generate_batch(requests[i : i + batch])
        batched = (time.perf_counter() - start) / len(requests)
        backend.close()
    print(f"weights {weights / 1e9:.2f} GB bf16; batch picked from free memory: {batch}")
    print("| | s per frame | frames/s | tokens/s |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| one at a time | {one:.3f} | {1 / one:.2f} | {args.tokens / one:.0f} |")
    print(f"| batch {batch} | {batched:.3f} | {1 / batched:.2f} | {args.tokens / batched:.0f} |")
    print(f"speed-up {one / batched:.1f}x; batch-1 weight bandwidth ≈ {weights * args.tokens / one / 1e9:.0f} GB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
