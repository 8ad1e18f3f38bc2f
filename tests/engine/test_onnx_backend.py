"""The onnxruntime backend: the same tokens as transformers, streaming, cancellation, broken folders."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine.backend_factory import BackendSpec, open_backend
from engine.backends.base import BackendError, GenerationRequest, StreamLimits
from tests.engine.onnx_models import FRAME_SIZES, copy_model, exported_model, request

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return exported_model(tmp_path_factory.getbasetemp() / "onnx-models")


@pytest.fixture(scope="module")
def onnx(model):
    from engine.backends.onnx import OnnxBackend

    backend = OnnxBackend(model, threads=1)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def reference(model):
    from engine.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(model, threads=1)
    yield backend
    backend.close()


def hf_tokens(reference, requests: list[GenerationRequest]) -> list[list[int]]:
    """Greedy token ids from transformers' ``generate`` on the same batch (left padded), cut at each
    row's cap and end token as the ONNX backend cuts them."""
    import torch
    from PIL import Image

    texts = [reference.render(r) for r in requests]
    images = [Image.fromarray(r.image) for r in requests if r.image is not None]
    inputs = reference.processor(
        text=texts, images=images or None, padding=True, padding_side="left", return_tensors="pt"
    )
    eos = set(reference.model.generation_config.eos_token_id)
    with torch.inference_mode():
        out = reference.model.generate(
            **inputs,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            max_new_tokens=max(r.max_new_tokens for r in requests),
            pad_token_id=reference.model.generation_config.pad_token_id,
        )
    rows = []
    for row, r in enumerate(requests):
        tokens = out[row, inputs["input_ids"].shape[1] :].tolist()[: r.max_new_tokens]
        end = next((k for k, t in enumerate(tokens) if t in eos), None)
        rows.append(tokens if end is None else tokens[: end + 1])
    return rows


def test_greedy_tokens_match_transformers_one_frame(onnx, reference):
    req = request(*FRAME_SIZES[2], max_new_tokens=32)  # 480x854: 252 image tokens, several windows
    ours = onnx.generate_tokens([req])
    assert ours == hf_tokens(reference, [req])
    assert len(set(ours[0])) > 3  # varied text, not one token repeated
    stream = onnx.stream(req)
    text = stream.text()
    assert text == reference.generate(req)
    assert stream.stats.tokens == 32 and stream.stats.finish_reason == "length"
    assert stream.stats.first_token_s is not None and stream.stats.first_token_s < stream.stats.total_s


def test_batch_of_different_frames_matches_transformers(onnx, reference):
    requests = [request(h, w, max_new_tokens=20, seed=i) for i, (h, w) in enumerate(FRAME_SIZES[:3])]
    requests.append(request(None, None, max_new_tokens=12))  # a text-only row, shorter cap
    assert onnx.generate_tokens(requests) == hf_tokens(reference, requests)
    texts = onnx.generate_batch(requests)
    assert texts == reference.generate_batch(requests)
    assert texts == [onnx.generate(r) for r in requests]  # batched equals one by one


def test_io_binding_path_gives_the_same_tokens(model, onnx):
    """The CUDA path's IO binding (cache kept as provider values between steps), run on this machine's provider."""
    from engine.backends.onnx import OnnxBackend

    bound = OnnxBackend(model, threads=1, io_binding=True)
    requests = [request(*FRAME_SIZES[1], max_new_tokens=16), request(None, None, max_new_tokens=10)]
    assert bound.generate_tokens(requests) == onnx.generate_tokens(requests)
    assert bound.generate(requests[0]) == onnx.generate(requests[0])


def test_stream_pieces_join_to_the_text_and_cancel_stops_it(onnx):
    req = request(*FRAME_SIZES[1], max_new_tokens=40)
    whole = onnx.generate(req)
    stream = onnx.stream(req)
    pieces = []
    for piece in stream:
        pieces.append(piece)
        if len(pieces) == 3:
            stream.cancel()
    assert stream.stats.finish_reason == "cancelled"
    assert 3 <= stream.stats.tokens < 40
    assert whole.startswith("".join(pieces))
    joined = "".join(onnx.stream(req))
    assert joined == whole


def test_cancel_from_another_thread_before_iterating(onnx):
    cancel = threading.Event()
    stream = onnx.stream(request(*FRAME_SIZES[0], max_new_tokens=200), cancel)
    threading.Thread(target=cancel.set).start()
    cancel.wait(5)
    assert stream.text() == ""
    assert stream.stats.finish_reason == "cancelled" and stream.stats.tokens == 0


def test_the_bounds_of_the_stream_stop_generation(onnx, monkeypatch):
    capped = dataclasses.replace(request(*FRAME_SIZES[0], max_new_tokens=20_000), limits=StreamLimits(max_chars=30))
    stream = onnx.stream(capped)
    assert len(stream.text()) == 30 and stream.stats.tokens < 100
    assert (stream.stats.finish_reason, stream.stats.cut_off) == ("length", "answer longer than 30 characters")
    step, steps = onnx._step, []

    def slow_step(*args, **kwargs):  # the 13th decoder step takes 2.5 s: past the idle deadline
        steps.append(1)
        if len(steps) == 13:
            time.sleep(2.5)
        return step(*args, **kwargs)

    monkeypatch.setattr(onnx, "_step", slow_step)
    # 1.5 s: longer than the first token takes on a busy machine (the idle clock runs from the request on)
    stream = onnx.stream(dataclasses.replace(capped, limits=StreamLimits(idle_timeout_s=1.5)))
    assert stream.text().strip() and len(steps) == 13  # the loop ended after the step in flight
    assert (stream.stats.finish_reason, stream.stats.cut_off) == ("timeout", "no progress for 1.5 s from the model")
    monkeypatch.undo()
    stream = onnx.stream(dataclasses.replace(capped, limits=StreamLimits(total_timeout_s=0.001)))
    with pytest.raises(BackendError, match=r"^the model sent no answer within 0\.001 s$"):
        stream.text()


def test_a_folder_with_pickle_files_or_a_fifo_is_refused_as_transformers_refuses_it(model, tmp_path):
    broken = copy_model(model, tmp_path / "pickled")
    (broken / "training_args.bin").write_bytes(b"\x80\x04")
    with pytest.raises(BackendError, match=r"holds pickle files \(training_args.bin\)"):
        open_backend(BackendSpec(kind="onnx", model=str(broken)))
    if not hasattr(os, "mkfifo"):
        return
    (broken / "training_args.bin").unlink()
    os.mkfifo(broken / "onnx" / "extra.onnx")
    caught: list[BackendError] = []

    def open_it() -> None:  # in a thread: an open() of the FIFO would block for good
        try:
            open_backend(BackendSpec(kind="onnx", model=str(broken)))
        except BackendError as exc:
            caught.append(exc)

    opening = threading.Thread(target=open_it, daemon=True)
    opening.start()
    opening.join(10)
    assert not opening.is_alive() and len(caught) == 1
    assert str(caught[0]) == f"extra.onnx in {broken / 'onnx'} is a named pipe (FIFO), not a file: refusing the folder"


def test_reports_the_provider_that_runs(onnx):
    import onnxruntime as ort

    assert onnx.provider in ort.get_available_providers()
    assert onnx.device.startswith("cuda" if onnx.provider == "CUDAExecutionProvider" else "cpu")
    assert onnx.model_id.endswith("-onnx-fp32")
    cpu = open_backend(BackendSpec(kind="onnx", model=str(onnx.path), threads=1))
    assert cpu.device in ("cpu (onnxruntime)", "cuda (onnxruntime)")


@pytest.mark.skipif("CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers(), reason="has CUDA")
def test_asking_for_cuda_without_it_is_one_clear_line(model):
    from engine.backends.onnx import OnnxBackend

    with pytest.raises(BackendError, match="CUDA execution provider is not available"):
        OnnxBackend(model, device="cuda")


def test_bad_frame_is_refused_before_generation(onnx):
    with pytest.raises(BackendError, match="RGB uint8"):
        onnx.stream(GenerationRequest("<image>", image=np.zeros((10, 10), dtype=np.uint8)))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("flip", "corrupt"),
        ("truncate", "truncated"),
        ("no_meta", "incomplete"),
        ("no_folder", "has no onnx/ folder"),
        ("lose_file", "lacks vision.onnx.data"),
    ],
)
def test_broken_onnx_folder_is_one_clear_line(model, tmp_path, damage, message):
    broken = copy_model(model, tmp_path / "model")
    folder = broken / "onnx"
    data = folder / "decoder.onnx.data"
    if damage == "flip":
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))
    elif damage == "truncate":
        data.write_bytes(data.read_bytes()[:-100])
    elif damage == "no_meta":
        (folder / "onnx.json").unlink()
    elif damage == "no_folder":
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    elif damage == "lose_file":
        (folder / "vision.onnx.data").unlink()
    with pytest.raises(BackendError, match=message) as err:
        open_backend(BackendSpec(kind="onnx", model=str(broken)))
    assert "\n" not in str(err.value) and "export-onnx" in str(err.value)


def test_unreadable_meta_is_one_clear_line(model, tmp_path):
    broken = copy_model(model, tmp_path / "model")
    (broken / "onnx" / "onnx.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(BackendError, match="unreadable"):
        open_backend(BackendSpec(kind="onnx", model=str(broken)))


def test_factory_needs_a_model_directory():
    with pytest.raises(BackendError, match="--model DIR"):
        open_backend(BackendSpec(kind="onnx"))


def test_runs_without_torch_or_transformers(model):
    """A workstation without the training stack: the backend never imports torch."""
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from engine.backend_factory import BackendSpec, open_backend
        from engine.backends.base import GenerationRequest
        backend = open_backend(BackendSpec(kind="onnx", model={str(model)!r}, threads=1))
        image = np.random.default_rng(0).integers(0, 255, (180, 320, 3), dtype=np.uint8)
        stream = backend.stream(GenerationRequest("<image> Phase?", image=image, max_new_tokens=8))
        text = stream.text()
        assert stream.stats.tokens == 8, stream.stats
        assert backend.generate_batch([GenerationRequest("a", max_new_tokens=3)] * 2)
        print("loaded:", sorted(m for m in ("torch", "transformers") if m in sys.modules))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "loaded: []" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("size", ["tiny", "small"])
def test_parity_matrix(tmp_path_factory, size):
    """Every frame size, one by one and as one batch, for both model sizes."""
    from engine.backends.onnx import OnnxBackend
    from engine.backends.transformers_backend import TransformersBackend

    model = exported_model(tmp_path_factory.getbasetemp() / "onnx-models", size=size)
    onnx, reference = OnnxBackend(model, threads=1), TransformersBackend(model, threads=1)
    requests = [request(h, w, max_new_tokens=24, seed=i) for i, (h, w) in enumerate(FRAME_SIZES)]
    for req in requests:
        assert onnx.generate_tokens([req]) == hf_tokens(reference, [req])
    assert onnx.generate_tokens(requests) == hf_tokens(reference, requests)
    assert onnx.generate_batch(requests) == reference.generate_batch(requests)
    reference.close()


@pytest.mark.slow
def test_fp16_export_runs_on_the_cpu_provider(tmp_path_factory):
    """The CUDA export (fp16) loads and generates; onnxruntime's CPU kernels run it too."""
    from engine.backends.onnx import OnnxBackend

    model = exported_model(tmp_path_factory.getbasetemp() / "onnx-models", dtype="fp16")
    meta = json.loads((model / "onnx" / "onnx.json").read_text(encoding="utf-8"))
    assert meta["dtype"] == "fp16"
    backend = OnnxBackend(model, device="cpu", threads=1)
    assert backend.model_id.endswith("-onnx-fp16")
    stream = backend.stream(request(*FRAME_SIZES[1], max_new_tokens=10))
    stream.text()
    assert stream.stats.tokens == 10
