"""``surgview-train export-onnx``: the folder it writes, atomicity, and the numpy twins of
transformers' grid-dependent code (inputs, rope index, window order) that the runtime relies on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.backends.onnx.layout import read_onnx_dir
from engine.modeldir import Manifest, inspect_model_dir
from tests.engine.onnx_models import FRAME_SIZES, copy_model, exported_model, frame, request


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return exported_model(tmp_path_factory.getbasetemp() / "onnx-models")


def test_export_writes_a_checked_folder_and_records_it(model):
    folder, meta = read_onnx_dir(model)
    names = {p.name for p in folder.iterdir()}
    assert {"vision.onnx", "decoder.onnx", "embed_tokens.npy", "onnx.json"} <= names
    assert set(meta.files) == names - {"onnx.json"}
    assert all(record["bytes"] == (folder / name).stat().st_size for name, record in meta.files.items())
    assert meta.dtype == "fp32" and meta.num_layers == 2 and meta.image_token_id == 5
    assert not [p for p in model.iterdir() if p.name.startswith(".onnx")]  # no temporary folders left
    manifest = Manifest.read(model)
    assert manifest.extra["onnx"]["dtype"] == "fp32"
    assert manifest.extra["onnx"]["files"]["decoder.onnx"] == meta.files["decoder.onnx"]["bytes"]
    info = inspect_model_dir(model)  # the model folder is still a valid transformers folder
    assert info.manifest is not None and info.manifest.lineage[0].name == "init"


def test_an_old_manifest_without_onnx_still_loads(model, tmp_path):
    data = json.loads((model / "surgview.json").read_text(encoding="utf-8"))
    data.pop("onnx")
    (tmp_path / "surgview.json").write_text(json.dumps(data), encoding="utf-8")
    assert "onnx" not in Manifest.read(tmp_path).extra


def test_a_failed_export_keeps_the_previous_one_and_leaves_nothing_half(model, tmp_path, monkeypatch):
    import train.onnx_export as onnx_export

    copy = copy_model(model, tmp_path / "model")
    before = read_onnx_dir(copy)[1].files

    def vision(model, tmp, *args):  # a graph written ...
        (tmp / "vision.onnx").write_bytes(b"a finished graph")

    def broken(model, tmp, *args):  # ... and one cut off by a crash
        (tmp / "decoder.onnx").write_bytes(b"half a gra")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(onnx_export, "_export_vision", vision)
    monkeypatch.setattr(onnx_export, "_export_decoder", broken)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        onnx_export.export_onnx(copy)
    assert read_onnx_dir(copy)[1].files == before  # the earlier export is untouched and valid
    assert sorted(p.name for p in copy.iterdir() if p.name.startswith(".")) == []


def test_bad_inputs_are_refused(tmp_path):
    from train.cli import main
    from train.onnx_export import OnnxExportError, export_onnx

    with pytest.raises(OnnxExportError, match="dtype"):
        export_onnx(tmp_path, dtype="int3")
    assert main(["export-onnx", str(tmp_path / "missing")]) == 1


@pytest.mark.parametrize("sizes", [FRAME_SIZES, FRAME_SIZES[1:2]])
def test_inputs_match_the_transformers_processor(model, sizes):
    """Prompt text, token ids, padding and pixels equal transformers', built without torch."""
    from PIL import Image

    from engine.backends.onnx.inputs import OnnxInputBuilder
    from engine.backends.transformers_backend import build_messages
    from engine.prompts import system_prompt
    from engine.vlm_processor import load_processor

    requests = [request(h, w, seed=i) for i, (h, w) in enumerate(sizes)] + [request(None, None)]
    messages = [build_messages(r, system_prompt()) for r in requests]
    processor = load_processor(model)
    builder = OnnxInputBuilder(model)
    texts = [builder.render(m) for m in messages]
    assert texts == [processor.apply_chat_template(m, add_generation_prompt=True, tokenize=False) for m in messages]
    images = [r.image for r in requests if r.image is not None]
    ours = builder.build(texts, images)
    theirs = processor(
        text=texts, images=[Image.fromarray(i) for i in images], padding=True, padding_side="left", return_tensors="np"
    )
    np.testing.assert_array_equal(ours.input_ids, theirs["input_ids"])
    np.testing.assert_array_equal(ours.attention_mask, theirs["attention_mask"])
    np.testing.assert_array_equal(ours.image_grids, theirs["image_grid_thw"])
    np.testing.assert_allclose(ours.pixel_values, theirs["pixel_values"], atol=1e-6)


def test_rope_index_matches_get_rope_index(model):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from engine.backends.onnx.inputs import OnnxInputBuilder
    from engine.backends.onnx.rope import rope_index

    builder = OnnxInputBuilder(model)
    requests = [request(h, w) for h, w in FRAME_SIZES] + [request(None, None)]
    texts = [builder.render([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}])] * 4
    texts.append(builder.render([{"role": "user", "content": "text only, longer than the others by far"}]))
    inputs = builder.build(texts, [r.image for r in requests if r.image is not None])
    hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(model).model
    ids = torch.from_numpy(inputs.input_ids)
    positions, deltas = hf.get_rope_index(
        ids,
        mm_token_type_ids=(ids == builder.image_token_id).int(),
        image_grid_thw=torch.from_numpy(inputs.image_grids),
        attention_mask=torch.from_numpy(inputs.attention_mask),
    )
    ours, next_pos = rope_index(
        inputs.input_ids, inputs.attention_mask, inputs.image_grids, image_token_id=builder.image_token_id, merge=2
    )
    np.testing.assert_array_equal(ours, positions.numpy())
    np.testing.assert_array_equal(next_pos, inputs.attention_mask.sum(1) + deltas.numpy()[:, 0])


@pytest.mark.parametrize("grids", [[[1, 4, 4]], [[1, 8, 20]], [[1, 34, 60], [1, 4, 10]], [[2, 12, 8]]])
def test_vision_indices_match_transformers(grids):
    import torch
    from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids, get_vision_window_index

    from engine.backends.onnx.rope import vision_indices

    g = torch.tensor(grids)
    window_index, cu_window = get_vision_window_index(g, 2, 112, 14)
    ours = vision_indices(np.array(grids), merge=2, window_size=112, patch_size=14)
    np.testing.assert_array_equal(ours.window_index, window_index.numpy())
    np.testing.assert_array_equal(ours.reverse_index, torch.argsort(window_index).numpy())
    positions = get_vision_position_ids(g, 2).numpy().reshape(-1, 4, 2)[window_index.numpy()].reshape(-1, 2)
    np.testing.assert_array_equal(ours.rotary_pos_ids, positions)
    np.testing.assert_array_equal(np.bincount(ours.window_segments), np.diff(cu_window.numpy()))
    np.testing.assert_array_equal(np.bincount(ours.image_segments), np.diff(get_vision_cu_seqlens(g).numpy()))


def test_vision_graph_matches_the_torch_encoder(model):
    """Masked attention over segment ids gives the embeddings of transformers' split attention."""
    import onnxruntime as ort
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from engine.backends.onnx.inputs import ImageSettings
    from engine.backends.onnx.rope import vision_indices

    settings = ImageSettings.read(model)
    patches, grids = zip(*(settings.patches(frame(h, w, seed=i)) for i, (h, w) in enumerate(FRAME_SIZES)), strict=True)
    pixels, grids = np.concatenate(patches), np.array(grids)
    hf = Qwen2_5_VLForConditionalGeneration.from_pretrained(model).model
    with torch.inference_mode():
        expected = hf.visual(torch.from_numpy(pixels), grid_thw=torch.from_numpy(grids)).pooler_output.numpy()
    idx = vision_indices(grids, merge=2, window_size=112, patch_size=14)
    session = ort.InferenceSession(str(model / "onnx" / "vision.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"pixel_values": pixels, **idx.__dict__})
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
