"""Model folders, the tiny Qwen2.5-VL, prompts and the transformers backend (CPU, offline)."""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine.backends.base import BackendError, GenerationRequest, StreamLimits
from engine.backends.transformers_backend import TransformersBackend, build_messages
from engine.chain_parser import parse_chain
from engine.modeldir import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    NO_MANIFEST_WARNING,
    Manifest,
    ModelDirError,
    Stage,
    inspect_model_dir,
)
from engine.prompts import PromptError, build_prompt, load_prompts, prompts_version, system_prompt, task_prompt
from engine.tiny_model import SPECIAL_TOKENS, build_tiny_model, chain_corpus, load_processor

SURG_R1_PHASE_MCQ = (
    "Given the laparoscopic cholecystectomy image <image>, which surgical phase is being performed?\n"
    "A. Preparation\nB. Calot Triangle Dissection\nC. Clipping Cutting\nD. Gallbladder Dissection\n"
    "E. Gallbladder Packaging\nF. Cleaning Coagulation\nG. Gallbladder Retraction"
)
TASK_FIELDS = {
    "frame_analysis": {"width": 854, "height": 480},
    "phase": {},
    "phase_mcq": {},
    "tools": {},
    "triplet": {},
    "cvs": {},
    "localisation": {"width": 854, "height": 480, "instrument": "Hook"},
}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    # init_std 0.1: varied greedy text (0.02 repeats one token), so streaming is really tested.
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0, init_std=0.1)


@pytest.fixture(scope="module")
def backend(tiny_dir):
    with TransformersBackend(tiny_dir) as loaded:
        yield loaded


def frame(height=112, width=112, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def copy_model(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# -- the tiny model ------------------------------------------------------------------------


def test_tiny_model_is_a_complete_small_model_folder(tiny_dir):
    info = inspect_model_dir(tiny_dir)
    assert info.warnings == ()
    assert info.architecture == "Qwen2_5_VLForConditionalGeneration"
    names = {p.name for p in tiny_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", MANIFEST_NAME} <= names
    assert not [n for n in names if n.endswith(".partial") or n.startswith(".")]
    manifest = info.manifest
    assert manifest.format_version == FORMAT_VERSION
    assert manifest.prompts_version == prompts_version()
    assert manifest.lineage[0].seed == 0
    assert manifest.lineage[0].details["parameters"] < 5_000_000
    assert info.weight_bytes < 5_000_000


def test_tiny_model_has_under_five_million_parameters_and_matching_token_ids(backend):
    model, tokenizer = backend.model, backend.processor.tokenizer
    assert sum(p.numel() for p in model.parameters()) < 5_000_000
    assert 500 <= len(tokenizer) <= 1000
    assert tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == list(range(len(SPECIAL_TOKENS)))
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    config = model.config
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert config.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert config.vision_end_token_id == tokenizer.convert_tokens_to_ids("<|vision_end|>")
    assert config.text_config.vocab_size == len(tokenizer)


def test_tiny_model_is_deterministic_per_seed(tmp_path, tiny_dir):
    again = build_tiny_model(tmp_path / "again", seed=0, init_std=0.1)
    other = build_tiny_model(tmp_path / "other", seed=1, init_std=0.1)
    for name in ("model.safetensors", "tokenizer.json", "config.json", MANIFEST_NAME):
        assert (again / name).read_bytes() == (tiny_dir / name).read_bytes(), name
    assert inspect_model_dir(again).fingerprint == inspect_model_dir(tiny_dir).fingerprint
    assert (other / "model.safetensors").read_bytes() != (tiny_dir / "model.safetensors").read_bytes()


def test_build_refuses_a_non_empty_target(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        build_tiny_model(tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"


def test_weights_round_trip_save_and_load_exactly(tmp_path, tiny_dir, backend):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    def load(path):
        return Qwen2_5_VLForConditionalGeneration.from_pretrained(path, use_safetensors=True, local_files_only=True)

    first = load(tiny_dir).eval()
    first.save_pretrained(tmp_path / "resaved")
    second = load(tmp_path / "resaved").eval()
    inputs = backend._inputs([GenerationRequest(build_prompt("cvs"), image=frame())])
    with torch.no_grad():
        assert torch.equal(first(**inputs).logits, second(**inputs).logits)
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_tokenizer_round_trips_chain_text(backend):
    tokenizer = backend.processor.tokenizer
    texts = [*chain_corpus(seed=5, chains=40), "⟨grasper, retract, gallbladder⟩ — 12.5 % é 中文 \t\n", ""]
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids, clean_up_tokenization_spaces=False) == text
    # Trained on chains: the chain vocabulary compresses well.
    chain = chain_corpus(seed=5, chains=1)[0]
    assert len(tokenizer(chain)["input_ids"]) < len(chain.encode()) / 2.5


def test_box_coordinates_are_one_token_per_digit_whatever_their_value(backend):
    """A coordinate's digits always fall on the same token boundaries (hundreds, tens, units), as in
    Qwen's tokenizer: merged digits gave 334 as "3"+"34" but 366 as "36"+"6"."""
    tokenizer = backend.processor.tokenizer
    for box in ("[334, 232, 398, 256]", "[366, 192, 439, 225]", "[0, 287, 67, 1080]"):
        pieces = [tokenizer.decode([i]).strip() for i in tokenizer(box, add_special_tokens=False)["input_ids"]]
        numbers = [p for p in pieces if p.isdigit()]
        assert all(len(p) == 1 for p in numbers), pieces
        assert "".join(numbers) == "".join(ch for ch in box if ch.isdigit())


def test_chat_template_marks_what_the_assistant_wrote(backend):
    tokenizer = backend.processor.tokenizer
    template = (backend.path / "chat_template.jinja").read_text()
    assert "{% generation %}" in template and "{% endgeneration %}" in template
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "Which phase?"}]},
        {"role": "assistant", "content": "<answer>B. Calot Triangle Dissection</answer>"},
    ]
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    learned = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert learned == "<answer>B. Calot Triangle Dissection</answer><|im_end|>"
    assert tokenizer.decode(ids).startswith("<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nWhich phase?")


def test_processor_is_built_explicitly_and_bounds_the_image_tokens(tiny_dir):
    processor = load_processor(tiny_dir)
    assert type(processor).__name__ == "ImageOnlyQwen2_5_VLProcessor"
    assert getattr(processor, "video_processor", None) is None
    text = ["<|vision_start|><|image_pad|><|vision_end|>hi"]
    out = processor(text=text, images=[frame(112, 112)], return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, 8, 8]]
    assert (out["input_ids"] == processor.image_token_id).sum().item() == 16
    # Larger frames keep their aspect ratio within 112 * 112 pixels: never more than 16 tokens.
    out = processor(text=text, images=[frame(1080, 1920)], return_tensors="pt")
    assert 0 < (out["input_ids"] == processor.image_token_id).sum().item() <= 16
    # Saved under the stock names, so stock tools with torchvision load the folder as usual.
    assert json.loads((tiny_dir / "processor_config.json").read_text())["processor_class"] == "Qwen2_5_VLProcessor"
    assert json.loads((tiny_dir / "tokenizer_config.json").read_text())["processor_class"] == "Qwen2_5_VLProcessor"


# -- the model directory contract ------------------------------------------------------------


def _rewrite_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _no_config(d: Path) -> None:
    (d / "config.json").unlink()


def _no_weights(d: Path) -> None:
    (d / "model.safetensors").unlink()


def _truncated_weights(d: Path) -> None:
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])


def _missing_shard(d: Path) -> None:
    (d / "model.safetensors").rename(d / "model-00001-of-00002.safetensors")
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


def _pickle_weights(d: Path) -> None:
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")


def _nested_pickle(d: Path) -> None:
    (d / "checkpoint-10").mkdir()
    (d / "checkpoint-10" / "optimizer.pt").write_bytes(b"\x80\x04")


def _other_format(d: Path) -> None:
    _rewrite_json(d / MANIFEST_NAME, format_version=99)


def _garbage_manifest(d: Path) -> None:
    (d / MANIFEST_NAME).write_text('{"format_version": 1, "name": ')


def _incomplete_manifest(d: Path) -> None:
    (d / MANIFEST_NAME).write_text(json.dumps({"format_version": 1, "name": "x"}))


def _garbage_config(d: Path) -> None:
    (d / "config.json").write_bytes(b"\x00\x01garbage{{{")


def _not_json_config(d: Path) -> None:
    (d / "config.json").write_text("architectures: [Qwen2_5_VLForConditionalGeneration]\n")


def _unsupported_architecture(d: Path) -> None:
    _rewrite_json(d / "config.json", architectures=["LlamaForCausalLM"])


def _no_tokenizer(d: Path) -> None:
    (d / "tokenizer.json").unlink()


def _no_chat_template(d: Path) -> None:
    (d / "chat_template.jinja").unlink()


def _no_image_processor(d: Path) -> None:
    (d / "preprocessor_config.json").unlink()
    (d / "processor_config.json").unlink()


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_no_config, "no config.json"),
        (_no_weights, "no *.safetensors weights"),
        (_truncated_weights, "truncated"),
        (_missing_shard, "lacks 1 of 2 weight shards"),
        (_pickle_weights, "pickle files (pytorch_model.bin)"),
        (_nested_pickle, "pickle files (checkpoint-10/optimizer.pt)"),
        (_other_format, "format_version 99"),
        (_garbage_manifest, "surgview.json in"),
        (_incomplete_manifest, "lacks the text field(s) base_architecture"),
        (_garbage_config, "config.json in"),
        (_not_json_config, "is not valid JSON"),
        (_unsupported_architecture, "LlamaForCausalLM is not a supported vision-language model"),
        (_no_tokenizer, "no tokenizer files"),
        (_no_chat_template, "no chat template"),
        (_no_image_processor, "no image processor settings"),
    ],
)
def test_a_broken_model_folder_is_refused_with_one_clear_line(tmp_path, tiny_dir, damage, expected):
    broken = copy_model(tiny_dir, tmp_path / "broken")
    damage(broken)
    with pytest.raises(ModelDirError) as caught:
        inspect_model_dir(broken)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message and len(message) < 300


def refused_in_time(work, seconds: float = 10.0) -> BaseException | None:
    """Run ``work`` in a thread (an open() of a FIFO would block it for good); its exception, if any."""
    caught: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # handed to the test
            caught.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "hung opening a FIFO"
    return caught[0] if caught else None


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
@pytest.mark.parametrize("name", ["model.safetensors", "config.json", MANIFEST_NAME, "tokenizer.json", "extra.txt"])
def test_a_fifo_where_a_file_belongs_is_refused_without_hanging(tmp_path, tiny_dir, name):
    broken = copy_model(tiny_dir, tmp_path / "fifo")
    (broken / name).unlink(missing_ok=True)
    os.mkfifo(broken / name)
    error = refused_in_time(lambda: inspect_model_dir(broken))
    assert isinstance(error, ModelDirError)
    assert str(error) == f"{name} in {broken} is a named pipe (FIFO), not a file: refusing the folder"


def test_a_folder_named_like_a_weight_file_is_refused(tmp_path, tiny_dir):
    broken = copy_model(tiny_dir, tmp_path / "dir")
    (broken / "extra.safetensors").mkdir()
    with pytest.raises(ModelDirError, match=r"^extra.safetensors in .* is a directory, not a file$"):
        inspect_model_dir(broken)


def test_deeply_nested_json_in_a_model_folder_is_one_line(tmp_path, tiny_dir):
    broken = copy_model(tiny_dir, tmp_path / "deep")
    (broken / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelDirError, match=r"config.json in .* is not valid JSON \(nested too deeply\)"):
        inspect_model_dir(broken)


def test_missing_and_non_directory_paths_are_refused(tmp_path):
    with pytest.raises(ModelDirError, match="does not exist"):
        inspect_model_dir(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelDirError, match="is not a directory"):
        inspect_model_dir(tmp_path / "file")


def test_backend_turns_a_bad_folder_into_a_backend_error(tmp_path):
    with pytest.raises(BackendError, match="does not exist") as caught:
        TransformersBackend(tmp_path / "nowhere")
    assert isinstance(caught.value.__cause__, ModelDirError)


def test_a_plain_hugging_face_folder_loads_with_default_prompts_and_says_so(tmp_path, tiny_dir):
    plain = copy_model(tiny_dir, tmp_path / "Qwen2.5-VL-plain")
    (plain / MANIFEST_NAME).unlink()
    info = inspect_model_dir(plain)
    assert info.manifest is None
    assert info.warnings == (NO_MANIFEST_WARNING,)
    assert info.name == "Qwen2.5-VL-plain"
    with TransformersBackend(plain) as loaded:
        assert loaded.model_id.startswith("Qwen2.5-VL-plain@")
        assert loaded.info.warnings == (NO_MANIFEST_WARNING,)
        assert loaded.generate(GenerationRequest("hi", max_new_tokens=4)) is not None


def test_manifest_versions_that_differ_from_this_surgview_are_reported(tmp_path, tiny_dir):
    older = copy_model(tiny_dir, tmp_path / "older")
    _rewrite_json(older / MANIFEST_NAME, prompts_version="0.1", ontology_version="0.9")
    warnings = inspect_model_dir(older).warnings
    assert any("prompts 0.1" in w for w in warnings) and any("ontology 0.9" in w for w in warnings)


def test_manifest_writes_atomically_and_round_trips(tmp_path):
    manifest = Manifest(
        name="surg-sft",
        base_architecture="Qwen2_5_VLForConditionalGeneration",
        ontology_version="1.0",
        prompts_version="1.0",
        lineage=[Stage("sft", ["cholec80:train", "cholect50:train"], seed=7, details={"steps": 800})],
        evaluation={"phase_accuracy": 0.74},
        extra={"future_key": [1, 2]},
    )
    path = manifest.write(tmp_path)
    assert path == tmp_path / MANIFEST_NAME
    assert [p.name for p in tmp_path.iterdir()] == [MANIFEST_NAME]  # no temporary file left behind
    assert Manifest.read(tmp_path) == manifest
    manifest.evaluation["phase_accuracy"] = 0.8
    manifest.write(path)
    assert Manifest.read(path).evaluation == {"phase_accuracy": 0.8}
    assert json.loads(path.read_text())["future_key"] == [1, 2]


def test_fingerprint_follows_content_not_location(tmp_path, tiny_dir, monkeypatch):
    import engine.modeldir as modeldir

    copy = copy_model(tiny_dir, tmp_path / "copy")
    assert inspect_model_dir(copy).fingerprint == inspect_model_dir(tiny_dir).fingerprint

    def fingerprints(path: Path) -> tuple[str, str]:
        whole = inspect_model_dir(path).fingerprint
        monkeypatch.setattr(modeldir, "_HASH_WHOLE_BYTES", 0)  # the sampling path for large weights
        sampled = inspect_model_dir(path).fingerprint
        monkeypatch.undo()
        return whole, sampled

    before = fingerprints(copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-3] ^= 0xFF  # one weight byte (the end of the file is always sampled)
    (copy / "model.safetensors").write_bytes(bytes(data))
    after = fingerprints(copy)
    assert before[0] != after[0] and before[1] != after[1]
    _rewrite_json(copy / MANIFEST_NAME, name="renamed")
    assert inspect_model_dir(copy).fingerprint != after[0]


# -- prompts -------------------------------------------------------------------------------


def test_every_task_prompt_builds_from_the_ontology():
    prompts = load_prompts()
    assert set(prompts.tasks) == set(TASK_FIELDS)
    for task, fields in TASK_FIELDS.items():
        text = build_prompt(task, **fields)
        assert "{" not in text.replace("{{", "") and text.strip()
    assert "Level 1 (Perception)" in prompts.system and "<answer>" in prompts.system
    analysis = build_prompt("frame_analysis", width=1920, height=1080)
    assert "1920x1080" in analysis and "Calot Triangle Dissection" in analysis and "cystic plate" in analysis


def test_phase_mcq_is_worded_as_in_the_surg_r1_release():
    assert build_prompt("phase_mcq") == SURG_R1_PHASE_MCQ


def test_a_task_prompt_carries_what_results_are_keyed_on():
    prompt = task_prompt("localisation", width=854, height=480, instrument="Clipper")
    assert prompt.task == "localisation" and prompt.version == prompts_version() and prompt.system == system_prompt()
    assert "where is the Clipper?" in prompt.text


def test_prompt_errors_name_the_problem():
    with pytest.raises(PromptError, match="no prompt for task 'nope'"):
        build_prompt("nope")
    with pytest.raises(PromptError, match="needs field"):
        build_prompt("localisation", width=10, height=10)
    with pytest.raises(PromptError, match="has no field"):
        build_prompt("cvs", widht=3)


def test_messages_put_the_frame_where_the_prompt_says():
    image = frame(8, 8)
    surg_r1 = build_messages(GenerationRequest(SURG_R1_PHASE_MCQ, image=image), "sys")
    assert surg_r1[0] == {"role": "system", "content": [{"type": "text", "text": "sys"}]}
    kinds = [c["type"] for c in surg_r1[1]["content"]]
    assert kinds == ["text", "image", "text"]
    assert surg_r1[1]["content"][0]["text"] == "Given the laparoscopic cholecystectomy image "
    plain = build_messages(GenerationRequest("Which phase?", image=image, system="own"), "sys")
    assert plain[0]["content"][0]["text"] == "own"
    assert plain[1]["content"] == [{"type": "image"}, {"type": "text", "text": "Which phase?"}]
    assert build_messages(GenerationRequest("hi"), None) == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    ]


# -- the transformers backend --------------------------------------------------------------


def _raw_greedy(backend, request) -> str:
    """Plain ``model.generate`` without streamer or threads: the reference output."""
    import torch

    inputs = backend._inputs([request])
    with torch.inference_mode():
        out = backend.model.generate(**inputs, do_sample=False, max_new_tokens=request.max_new_tokens)
    return backend._decode(out[0, inputs["input_ids"].shape[1] :].tolist())


def test_backend_identity(backend, tiny_dir):
    info = inspect_model_dir(tiny_dir)
    assert backend.model_id == f"tiny-qwen2.5-vl-s0@{info.fingerprint[:12]}"
    assert backend.device == "cpu" and backend.supports_batching


def test_streamed_pieces_join_to_the_plain_greedy_output(backend):
    request = GenerationRequest(build_prompt("frame_analysis", width=112, height=112), image=frame(), max_new_tokens=80)
    stream = backend.stream(request)
    pieces = list(stream)
    assert len(pieces) > 3
    assert "".join(pieces) == _raw_greedy(backend, request)
    assert stream.stats.tokens == 80 and stream.stats.finish_reason == "length"
    assert 0 < stream.stats.first_token_s <= stream.stats.total_s
    chain = parse_chain("".join(pieces))  # random weights: any status, but never an exception
    assert chain.status in {"complete", "partial", "malformed"}


def test_the_token_cap_ends_generation(backend):
    stream = backend.stream(GenerationRequest("Which phase?", image=frame(seed=3), max_new_tokens=5))
    text = stream.text()
    assert stream.stats.tokens == 5 and stream.stats.finish_reason == "length"
    assert text == _raw_greedy(backend, GenerationRequest("Which phase?", image=frame(seed=3), max_new_tokens=5))


def test_an_end_token_finishes_with_stop(backend, monkeypatch):
    import torch

    request = GenerationRequest("Which phase?", image=frame(seed=3), max_new_tokens=40)
    inputs = backend._inputs([request])
    with torch.inference_mode():
        first = backend.model.generate(**inputs, do_sample=False, max_new_tokens=3)[0, inputs["input_ids"].shape[1] :]
    end = int(first[2])  # pretend the third token is the end token
    monkeypatch.setattr(backend.model.generation_config, "eos_token_id", [end])
    monkeypatch.setattr(backend, "_eos_ids", {end})
    stream = backend.stream(request)
    stream.text()
    assert stream.stats.finish_reason == "stop" and stream.stats.tokens == 3


def test_cancel_stops_generation_mid_way(backend):
    stream = backend.stream(GenerationRequest("Describe the frame.", image=frame(), max_new_tokens=20_000))
    pieces = []
    for piece in stream:
        pieces.append(piece)
        if len(pieces) == 3:
            cancelled_at = time.perf_counter()
            stream.cancel()
    assert time.perf_counter() - cancelled_at < 0.5
    assert len(pieces) == 3 and stream.stats.finish_reason == "cancelled"
    start = time.perf_counter()  # the model is free again at once
    assert backend.generate(GenerationRequest("hi", max_new_tokens=3)) is not None
    assert time.perf_counter() - start < 2.0


def test_cancel_from_another_thread(backend):
    cancel = threading.Event()
    stream = backend.stream(GenerationRequest("hi", max_new_tokens=20_000), cancel=cancel)
    threading.Timer(0.1, cancel.set).start()
    start = time.perf_counter()
    stream.text()
    assert time.perf_counter() - start < 1.5
    assert stream.stats.finish_reason == "cancelled" and stream.stats.tokens < 20_000


def test_a_dropped_stream_stops_its_worker(backend):
    stream = backend.stream(GenerationRequest("hi", max_new_tokens=20_000))
    next(stream)
    del stream
    gc.collect()
    start = time.perf_counter()
    backend.generate(GenerationRequest("hi", max_new_tokens=3))
    assert time.perf_counter() - start < 2.0


def test_close_stops_a_running_generation_and_waits_for_it(tiny_dir):
    closing = TransformersBackend(tiny_dir)
    stream = closing.stream(GenerationRequest("hi", max_new_tokens=20_000))
    next(stream)
    (worker,) = [run.thread for run in closing._active]
    start = time.perf_counter()
    closing.close()
    assert time.perf_counter() - start < 2.0
    assert not worker.is_alive() and not closing._active
    stream.text()
    assert stream.stats.finish_reason == "cancelled"
    with pytest.raises(BackendError):
        closing.generate(GenerationRequest("hi", max_new_tokens=3))


def test_exiting_with_a_generation_in_flight_does_not_abort(tiny_dir):
    # Without the exit hook the interpreter kills the worker inside a torch op: exit code 134.
    script = (
        "import sys\n"
        "from engine.backends.base import GenerationRequest\n"
        "from engine.backends.transformers_backend import TransformersBackend\n"
        "backend = TransformersBackend(sys.argv[1])\n"
        "stream = backend.stream(GenerationRequest('hi', max_new_tokens=20_000))\n"
        "next(stream)\n"
        "stream.cancel()\n"
        "kept = backend.stream(GenerationRequest('hi', max_new_tokens=20_000))\n"
        "next(kept)\n"
        "print('exiting')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tiny_dir)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-500:]
    assert "exiting" in out.stdout and "terminate called" not in out.stderr


def test_the_character_cap_of_the_stream_stops_generation(backend):
    limits = StreamLimits(max_chars=40)
    stream = backend.stream(
        GenerationRequest("Describe the frame.", image=frame(), max_new_tokens=20_000, limits=limits)
    )
    assert len(stream.text()) == 40
    assert (stream.stats.finish_reason, stream.stats.cut_off) == ("length", "answer longer than 40 characters")
    start = time.perf_counter()  # the worker stopped: the model is free again at once
    assert backend.generate(GenerationRequest("hi", max_new_tokens=3)) is not None
    assert time.perf_counter() - start < 2.0


def test_the_deadlines_of_the_stream_stop_generation(backend, monkeypatch):
    model = backend.model
    forward, calls, release = model.forward, [], threading.Event()

    @functools.wraps(forward)  # generate() checks its arguments against forward's signature
    def stalling_forward(*args, **kwargs):
        calls.append(1)
        if len(calls) > 12:
            release.wait(10)  # a device that stops answering mid-answer
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", stalling_forward)
    endless = GenerationRequest("Describe the frame.", image=frame(), max_new_tokens=20_000)
    # 2.5 s: longer than a first token takes on a busy machine (the idle clock runs from the request on)
    stream = backend.stream(dataclasses.replace(endless, limits=StreamLimits(idle_timeout_s=2.5)))
    text = stream.text()
    assert text.strip() and (stream.stats.finish_reason, stream.stats.cut_off) == (
        "timeout",
        "no progress for 2.5 s from the model",
    )
    release.set()
    monkeypatch.undo()
    stream = backend.stream(dataclasses.replace(endless, limits=StreamLimits(total_timeout_s=0.01)))
    with pytest.raises(BackendError, match=r"^the model sent no answer within 0\.01 s$"):
        stream.text()  # whatever the model makes after the deadline is past it
    assert stream.stats.finish_reason == "timeout"
    start = time.perf_counter()  # the workers stopped: the model is free again
    assert backend.generate(GenerationRequest("hi", max_new_tokens=3)) is not None
    assert time.perf_counter() - start < 5.0


def test_a_malformed_frame_is_refused_at_once(backend):
    for bad in (np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), np.zeros((0, 4, 3), np.uint8)):
        with pytest.raises(BackendError, match="RGB uint8"):
            backend.stream(GenerationRequest("hi", image=bad))


def test_a_failure_inside_generation_surfaces_as_backend_error(backend):
    # A 1 x 500 frame passes the array checks but the image processor rejects it in the worker.
    stream = backend.stream(GenerationRequest("hi", image=np.zeros((1, 500, 3), np.uint8)))
    start = time.perf_counter()
    with pytest.raises(BackendError, match="aspect ratio"):
        stream.text()
    assert time.perf_counter() - start < 2.0 and stream.stats.finish_reason == "error"


def test_an_exception_mid_stream_keeps_the_text_then_raises(backend, monkeypatch):
    model = backend.model
    forward, calls = model.forward, []

    @functools.wraps(forward)  # generate() checks its arguments against forward's signature
    def failing_forward(*args, **kwargs):
        calls.append(1)
        if len(calls) > 30:
            raise RuntimeError("device lost")
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", failing_forward)
    stream = backend.stream(GenerationRequest("hi", image=frame(), max_new_tokens=500))
    pieces = []
    with pytest.raises(BackendError, match="RuntimeError: device lost"):
        for piece in stream:
            pieces.append(piece)
    assert pieces and stream.stats.finish_reason == "error"
    monkeypatch.undo()
    assert backend.generate(GenerationRequest("hi", max_new_tokens=3)) is not None


def test_batch_output_equals_one_by_one_greedy_output(backend):
    requests = [
        GenerationRequest(build_prompt("cvs"), image=frame(seed=1), max_new_tokens=30),
        GenerationRequest(build_prompt("phase_mcq"), image=frame(480, 854, seed=2), max_new_tokens=20),
        GenerationRequest(
            build_prompt("localisation", width=160, height=90, instrument="Hook"),
            image=frame(90, 160),
            max_new_tokens=40,
        ),
        GenerationRequest("Say hi", max_new_tokens=12),
        GenerationRequest(build_prompt("triplet"), image=frame(seed=4), max_new_tokens=25, system="Short answers."),
    ]
    assert backend.generate_batch(requests) == [backend.generate(r) for r in requests]
    assert backend.generate_batch([]) == []


def test_batch_with_probabilities_gives_the_same_text_spelt_token_by_token(backend):
    requests = [
        GenerationRequest(build_prompt("triplet"), image=frame(seed=4), max_new_tokens=25),
        GenerationRequest("Say hi", max_new_tokens=12),
    ]
    scored = backend.generate_batch_with_probs(requests)
    assert [text for text, _ in scored] == backend.generate_batch(requests)
    for text, pieces in scored:
        assert "".join(piece for piece, _ in pieces) == text
        assert pieces and all(0.0 < p <= 1.0 for _, p in pieces)
        assert len(pieces) <= 25
