"""``surgview-train export-onnx``: a model folder's Qwen2.5-VL as ONNX graphs for onnxruntime.

No exporter covers this model (optimum-onnx registers no qwen2_vl / qwen2_5_vl and pins an
older transformers), so the parts are exported with ``torch.onnx.export(dynamo=True)``:

- ``vision.onnx``: patches → image embeddings. The grid-dependent indices (rotary positions,
  window order, attention segments) come in as inputs, computed by :mod:`engine.backends.onnx.rope`;
  attention is masked by segment ids in the graph instead of transformers' per-window split,
  whose split sizes are data the graph cannot hold.
- ``decoder.onnx``: the language model with the LM head: ``inputs_embeds``, ``attention_mask``,
  3-D ``position_ids`` and the KV cache in; the last position's logits and the grown cache
  out. One graph serves prefill (an empty cache) and decoding.
- ``embed_tokens.npy``: the embedding table; the runtime looks rows up and places the image
  embeddings itself.

``dtype="fp16"`` converts the model before export (for the CUDA execution provider); fp32 is
for CPU. The folder is written under a temporary name and renamed into place, ``onnx.json``
(sizes, checksums, dims) last; the model's ``surgview.json`` then records the export.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends.onnx.layout import META_NAME, ONNX_DIR, OnnxMeta, file_record
from engine.modeldir import Manifest, ModelDirError, inspect_model_dir

__all__ = ["DTYPES", "OnnxExportError", "export_onnx"]

log = logging.getLogger(__name__)

DTYPES = ("fp32", "fp16")
OPSET = 18


class OnnxExportError(Exception):
    """The export cannot run or failed; the message says why in one line."""


def _vision_module(visual):
    """The vision encoder with grid-dependent indices as inputs and masked (not split) attention."""
    import torch
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    class Vision(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = visual

        def forward(self, pixel_values, rotary_pos_ids, window_index, reverse_index, window_segments, image_segments):
            v = self.visual
            dtype = v.patch_embed.proj.weight.dtype
            hidden = v.patch_embed(pixel_values.to(dtype))
            seq, width = hidden.shape
            unit = v.spatial_merge_unit
            hidden = hidden.reshape(-1, unit, width)[window_index].reshape(seq, width)
            freqs = rotary_pos_ids[..., None].float() * v.rotary_pos_emb.inv_freq.float()  # (seq, 2, dim/4)
            freqs = torch.cat([freqs[:, 0], freqs[:, 1]], dim=-1)
            emb = torch.cat([freqs, freqs], dim=-1)
            cos, sin = emb.cos(), emb.sin()
            masks = {}
            for name, segments in (("full", image_segments), ("window", window_segments)):
                allowed = segments[:, None] == segments[None, :]
                masks[name] = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)
            for index, block in enumerate(v.blocks):
                mask = masks["full" if index in v.fullatt_block_indexes else "window"]
                hidden = hidden + _vision_attention(block.attn, block.norm1(hidden), cos, sin, mask)
                hidden = hidden + block.mlp(block.norm2(hidden))
            return v.merger(hidden)[reverse_index]

    def _vision_attention(attn, hidden, cos, sin, mask):
        seq = hidden.shape[0]
        q, k, val = attn.qkv(hidden).reshape(seq, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
        q, k, val = (t.transpose(0, 1) for t in (q, k, val))  # (heads, seq, head_dim)
        scores = torch.matmul(q, k.transpose(1, 2)) * attn.scaling + mask.to(q.dtype)
        weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(weights, val).transpose(0, 1).reshape(seq, -1)
        return attn.proj(out)

    return Vision().eval()


def _decoder_module(model):
    """Language model + LM head over an explicit KV cache; the mask is built in the graph."""
    import torch
    from transformers import DynamicCache

    text = model.model.language_model
    head = model.lm_head
    config = text.config

    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.text, self.head = text, head

        def forward(self, inputs_embeds, attention_mask, position_ids, past_key_values):
            cache = DynamicCache(config=config)
            for layer, (key, value) in enumerate(past_key_values):
                cache.update(key, value, layer)
            steps = inputs_embeds.shape[1]
            total = attention_mask.shape[1]
            query_pos = torch.arange(steps, device=inputs_embeds.device) + (total - steps)
            key_pos = torch.arange(total, device=inputs_embeds.device)
            allowed = (key_pos[None, :] <= query_pos[:, None])[None] & attention_mask[:, None, :].bool()
            # The dtype's minimum, not -inf: a padding row that sees nothing then softmaxes to a
            # uniform row instead of NaN, which would poison the cache through 0 * NaN.
            mask = torch.where(allowed, 0.0, torch.finfo(inputs_embeds.dtype).min).to(inputs_embeds.dtype)
            out = self.text(
                inputs_embeds=inputs_embeds,
                attention_mask={"full_attention": mask[:, None]},
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
            )
            logits = self.head(out.last_hidden_state[:, -1, :]).float()
            present = []
            for layer in cache.layers:
                present += [layer.keys, layer.values]
            return (logits, *present)

    return Decoder().eval()


def _export(module, args: tuple, path: Path, input_names, output_names, dynamic_shapes, opset: int) -> None:
    import torch

    program = torch.onnx.export(
        module,
        args,
        dynamo=True,
        verbose=False,  # no progress lines on stdout (the CLI and the benchmarks print their own)
        input_names=input_names,
        output_names=output_names,
        dynamic_shapes=dynamic_shapes,
        opset_version=opset,
        optimize=True,
        external_data=True,
    )
    program.save(str(path), external_data=True)


def _export_vision(model, tmp: Path, image_grid: tuple[int, int, int], opset: int) -> None:
    import torch
    from torch.export import Dim

    from engine.backends.onnx.rope import vision_indices

    vcfg = model.config.vision_config
    t, h, w = image_grid
    indices = vision_indices(
        np.array([image_grid, (1, 8, 4)]),
        merge=vcfg.spatial_merge_size,
        window_size=vcfg.window_size,
        patch_size=vcfg.patch_size,
    )
    patches = t * h * w + 32
    dim = vcfg.in_channels * vcfg.temporal_patch_size * vcfg.patch_size**2
    dtype = next(model.parameters()).dtype
    args = (
        torch.randn(patches, dim, dtype=dtype),
        torch.from_numpy(indices.rotary_pos_ids),
        torch.from_numpy(indices.window_index),
        torch.from_numpy(indices.reverse_index),
        torch.from_numpy(indices.window_segments),
        torch.from_numpy(indices.image_segments),
    )
    p, u = Dim.DYNAMIC, Dim.DYNAMIC
    names = ["pixel_values", "rotary_pos_ids", "window_index", "reverse_index", "window_segments", "image_segments"]
    shapes = ({0: p}, {0: p}, {0: u}, {0: u}, {0: p}, {0: p})
    _export(_vision_module(model.model.visual), args, tmp / "vision.onnx", names, ["image_embeds"], shapes, opset)


def _export_decoder(model, tmp: Path, opset: int) -> None:
    import torch
    from torch.export import Dim

    cfg = model.config.text_config
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    dtype = next(model.parameters()).dtype
    batch, steps, past = 2, 3, 5
    cache_shape = (batch, kv_heads, past, head_dim)
    layers = range(cfg.num_hidden_layers)
    past_kv = [(torch.randn(cache_shape, dtype=dtype), torch.randn(cache_shape, dtype=dtype)) for _ in layers]
    args = (
        torch.randn(batch, steps, cfg.hidden_size, dtype=dtype),
        torch.ones(batch, past + steps, dtype=torch.int64),
        torch.arange(steps).view(1, 1, -1).expand(3, batch, steps).contiguous() + past,
        past_kv,
    )
    b, s, p, total = Dim.DYNAMIC, Dim.DYNAMIC, Dim.DYNAMIC, Dim.DYNAMIC
    shapes = (
        {0: b, 1: s},
        {0: b, 1: total},
        {1: b, 2: s},
        [({0: b, 2: p}, {0: b, 2: p}) for _ in range(cfg.num_hidden_layers)],  # *past: one node
    )
    names = ["inputs_embeds", "attention_mask", "position_ids"]
    outputs = ["logits"]
    for layer in range(cfg.num_hidden_layers):
        names += [f"past_key_values.{layer}.key", f"past_key_values.{layer}.value"]
        outputs += [f"present.{layer}.key", f"present.{layer}.value"]
    _export(_decoder_module(model), args, tmp / "decoder.onnx", names, outputs, shapes, opset)


def export_onnx(
    model_dir: str | os.PathLike[str],
    *,
    dtype: str = "fp32",
    opset: int = OPSET,
    example_grid: tuple[int, int, int] = (1, 8, 8),
) -> Path:
    """Export ``model_dir`` to ``model_dir/onnx`` (replacing an earlier export) and return that folder.

    ``dtype`` "fp32" runs on onnxruntime's CPU provider, "fp16" on CUDA. ``example_grid`` is
    the patch grid traced through the vision encoder (any grid works at run time).
    """
    import torch
    import transformers

    if dtype not in DTYPES:
        raise OnnxExportError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    info = inspect_model_dir(model_dir)
    if info.architecture != "Qwen2_5_VLForConditionalGeneration":
        raise OnnxExportError(f"ONNX export supports Qwen2.5-VL models only; {info.path} is {info.architecture}")
    model_class = getattr(transformers, info.architecture)
    torch_dtype = torch.float16 if dtype == "fp16" else torch.float32
    model = model_class.from_pretrained(
        info.path, dtype=torch_dtype, use_safetensors=True, trust_remote_code=False, local_files_only=True
    ).eval()
    final = info.path / ONNX_DIR
    tmp = Path(tempfile.mkdtemp(prefix=f".{ONNX_DIR}.", suffix=".partial", dir=info.path))
    try:
        with torch.inference_mode(False), torch.no_grad():
            _export_vision(model, tmp, example_grid, opset)
            _export_decoder(model, tmp, opset)
        embed = model.model.language_model.embed_tokens.weight.detach().cpu().numpy()
        np.save(tmp / "embed_tokens.npy", embed)
        meta = _meta(model, info.fingerprint, dtype, opset, tmp)
        _write_json(tmp / META_NAME, meta.to_dict())  # last: its presence marks a finished export
        for path in tmp.iterdir():
            path.chmod(0o644)
        tmp.chmod(0o755)
        _swap_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _record_in_manifest(info.path, meta)
    return final


def _meta(model, fingerprint: str, dtype: str, opset: int, folder: Path) -> OnnxMeta:
    import torch
    import transformers

    cfg, vcfg = model.config.text_config, model.config.vision_config
    eos = model.generation_config.eos_token_id
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [cfg.eos_token_id])
    pad = model.generation_config.pad_token_id
    return OnnxMeta(
        dtype=dtype,
        num_layers=cfg.num_hidden_layers,
        num_kv_heads=cfg.num_key_value_heads,
        head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
        hidden_size=cfg.hidden_size,
        vocab_size=cfg.vocab_size,
        image_token_id=int(model.config.image_token_id),
        eos_token_ids=tuple(int(t) for t in eos_ids if t is not None),
        pad_token_id=int(pad if pad is not None else (cfg.pad_token_id or 0)),
        merge_size=vcfg.spatial_merge_size,
        window_size=vcfg.window_size,
        patch_size=vcfg.patch_size,
        source_fingerprint=fingerprint,
        files={p.name: file_record(p) for p in sorted(folder.iterdir()) if p.is_file()},
        exporter={"torch": torch.__version__, "transformers": transformers.__version__, "opset": opset},
    )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        fh.write(json.dumps(data, indent=2) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Rename the finished folder to ``onnx/``; an earlier export is moved aside, then removed."""
    for path in tmp.iterdir():  # the data must be on disk before the rename makes it visible
        with path.open("rb") as fh:
            os.fsync(fh.fileno())
    old = None
    if final.exists():
        old = final.with_name(f".{ONNX_DIR}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _record_in_manifest(model_dir: Path, meta: OnnxMeta) -> None:
    """``surgview.json`` gains an ``onnx`` entry (kept by older readers as an unknown key)."""
    try:
        manifest = Manifest.read(model_dir)
    except ModelDirError as exc:  # a plain Hugging Face folder: no manifest to record in
        log.warning("export not recorded in surgview.json: %s", exc)
        return
    manifest.extra["onnx"] = {
        "path": ONNX_DIR,
        "dtype": meta.dtype,
        "opset": meta.exporter.get("opset"),
        "files": {name: record["bytes"] for name, record in meta.files.items()},
    }
    manifest.write(model_dir)
