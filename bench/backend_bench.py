"""Streaming overhead of the transformers backend, measured side by side with plain ``generate``.

    .venv/bin/python bench/backend_bench.py [--model DIR] [--tokens 256] [--repeats 9]

Without ``--model`` a tiny Qwen2.5-VL is built in a temporary folder. Each repetition runs, in
alternating order, (a) raw: preprocessing + ``model.generate`` on the calling thread, with a
no-op streamer that only notes when the first new token exists, and (b) streamed:
``TransformersBackend.stream`` consumed to the end (worker thread, ``TextIteratorStreamer``,
queue). Prints medians: total time, time to first token (raw) against time to the first text
piece a consumer holds (streamed), tokens/s, and the ratios DESIGN.md §6 budgets: streaming
adds ≤ 5% to raw generation time; first token on screen ≤ raw first token + 50 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engine.backends.base import GenerationRequest  # noqa: E402
from engine.backends.transformers_backend import TransformersBackend  # noqa: E402
from engine.prompts import build_prompt, load_prompts  # noqa: E402
from engine.tiny_model import build_tiny_model  # noqa: E402


def raw_run(backend: TransformersBackend, request: GenerationRequest) -> tuple[float, float, int]:
    """(total s, first-token s, tokens) of preprocessing + plain generate on this thread."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    class FirstToken(BaseStreamer):
        def __init__(self):
            self.calls, self.first = 0, None

        def put(self, value):
            self.calls += 1
            if self.calls == 2 and self.first is None:  # call 1 is the prompt
                self.first = time.perf_counter()

        def end(self):
            pass

    start = time.perf_counter()
    inputs = backend._inputs([request])
    marker = FirstToken()
    with torch.inference_mode():
        out = backend.model.generate(**inputs, do_sample=False, max_new_tokens=request.max_new_tokens, streamer=marker)
    total = time.perf_counter() - start
    return total, (marker.first or time.perf_counter()) - start, out.shape[1] - inputs["input_ids"].shape[1]


def streamed_run(backend: TransformersBackend, request: GenerationRequest) -> tuple[float, float, int]:
    stream = backend.stream(request)
    for _ in stream:
        pass
    return stream.stats.total_s, stream.stats.first_token_s or stream.stats.total_s, stream.stats.tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model folder (default: a tiny Qwen2.5-VL built now)")
    parser.add_argument("--tokens", type=int, default=256, help="new tokens per run (the token cap)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--task", default="phase_mcq")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model or build_tiny_model(Path(tmp) / "tiny", init_std=0.1)
        backend = TransformersBackend(model_dir)
        image = np.random.default_rng(0).integers(0, 256, (480, 854, 3), dtype=np.uint8)
        fields = {"width": 854, "height": 480, "instrument": "Hook"}
        uses = load_prompts().tasks[args.task].fields
        prompt = build_prompt(args.task, **{k: v for k, v in fields.items() if k in uses})
        request = GenerationRequest(prompt, image=image, max_new_tokens=args.tokens)
        raw_run(backend, request), streamed_run(backend, request)  # warm-up
        raw, streamed = [], []
        for i in range(args.repeats):
            order = (raw_run, streamed_run) if i % 2 == 0 else (streamed_run, raw_run)
            for run in order:
                (raw if run is raw_run else streamed).append(run(backend, request))

    def med(rows, k):
        return statistics.median(r[k] for r in rows)

    tokens = {r[2] for r in raw + streamed}
    import torch

    threads = torch.get_num_threads()
    print(f"model: {backend.model_id} on {backend.device}, {os.cpu_count()} cores, {threads} torch threads")
    print(f"task {args.task}, 854x480 frame, {sorted(tokens)} new tokens, {args.repeats} runs each, medians")
    print(f"{'':32}{'total s':>10}{'first token s':>15}{'tokens/s':>10}")
    for name, rows in (("raw generate (same thread)", raw), ("streamed (backend.stream)", streamed)):
        total, first, n = med(rows, 0), med(rows, 1), med(rows, 2)
        print(f"{name:32}{total:10.4f}{first:15.4f}{(n - 1) / (total - first):10.0f}")
    overhead = med(streamed, 0) / med(raw, 0) - 1
    ttft_gap = (med(streamed, 1) - med(raw, 1)) * 1000
    print(f"streaming overhead on total time: {overhead * 100:+.1f}%  (budget <= +5%)")
    print(f"first piece on screen - raw first token: {ttft_gap:+.1f} ms  (budget <= +50 ms)")


if __name__ == "__main__":
    main()
