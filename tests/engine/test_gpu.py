"""On an NVIDIA GPU (``-m gpu``; bench/gpu_check.sh runs every gpu-marked test): the embedded engine runs in
bf16 by default and answers as on the CPU in float32, picks its sweep batch from free GPU memory; onnxruntime's
CUDA provider gives the CPU provider's tokens and runs an fp16 export. Elsewhere they skip, saying why."""

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


def test_the_engine_runs_in_bfloat16_on_cuda_by_default(tiny):
    from engine.backends.base import GenerationRequest
    from engine.backends.transformers_backend import TransformersBackend
    from engine.chain_parser import parse_chain

    backend = TransformersBackend(tiny)  # no device, no dtype: what the viewer and the CLI get
    assert backend.device == "cuda"
    assert {p.dtype for p in backend.model.parameters()} == {torch.bfloat16}
    image = np.random.default_rng(1).integers(0, 255, (180, 320, 3), dtype=np.uint8)
    stream = backend.stream(GenerationRequest("Analyse this frame.", image, max_new_tokens=40))
    text = "".join(stream)
    assert stream.stats.finish_reason in ("stop", "length") and stream.stats.tokens > 0
    parse_chain(text)  # whatever bf16 greedy says, it reaches the parser as text
    backend.close()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA execution provider (install onnxruntime-gpu)")
    pytest.importorskip("onnxscript")  # the exporter (train extra)
    return tmp_path_factory.mktemp("onnx-gpu")


def test_onnxruntime_cuda_provider_gives_the_cpu_providers_tokens(exported):
    from engine.backends.onnx import OnnxBackend
    from tests.engine.onnx_models import FRAME_SIZES, exported_model, request

    model = exported_model(exported)
    cuda, cpu = OnnxBackend(model, device="cuda"), OnnxBackend(model, device="cpu", threads=1)
    try:
        assert cuda.provider == "CUDAExecutionProvider" and cuda.device.startswith("cuda")
        for height, width in FRAME_SIZES[:2]:
            r = request(height, width, max_new_tokens=24)
            assert cuda.generate(r) == cpu.generate(r)
    finally:
        cuda.close()
        cpu.close()


def test_an_fp16_export_runs_on_the_cuda_provider(exported):
    from engine.backends.onnx import OnnxBackend
    from tests.engine.onnx_models import exported_model, request

    backend = OnnxBackend(exported_model(exported, dtype="fp16"), device="cuda")
    try:
        assert backend.model_id.endswith("-onnx-fp16") and backend.provider == "CUDAExecutionProvider"
        stream = backend.stream(request(180, 320, max_new_tokens=16))
        "".join(stream)
        assert stream.stats.tokens > 0 and stream.stats.finish_reason in ("stop", "length")
    finally:
        backend.close()
