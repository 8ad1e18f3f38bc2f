"""On an NVIDIA GPU (``-m gpu``; bench/gpu_check.sh runs these): the embedded engine in bf16 answers
as on the CPU, and picks its sweep batch from free GPU memory."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from engine.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("gpu") / "tiny", seed=0)


def test_cuda_streams_the_same_greedy_answer_as_the_cpu(tiny):
    from engine.backends.base import GenerationRequest
    from engine.backends.transformers_backend import TransformersBackend

    image = np.random.default_rng(0).integers(0, 255, (180, 320, 3), dtype=np.uint8)
    request = GenerationRequest("Analyse this frame.", image, max_new_tokens=40)
    cpu = TransformersBackend(tiny, device="cpu").generate(request)
    gpu = TransformersBackend(tiny, device="cuda", dtype="float32")
    assert gpu.device == "cuda" and gpu.generate(request) == cpu


def test_batch_size_comes_from_free_gpu_memory(tiny):
    from engine.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(tiny, device="cuda")
    assert backend.suggested_batch_size(1024) == 64  # a tiny model's cache fits many times over
    assert TransformersBackend(tiny, device="cpu").suggested_batch_size(1024) == 1
