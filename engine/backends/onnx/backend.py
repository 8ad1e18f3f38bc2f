"""The ONNX Runtime backend: an exported model folder run without torch or transformers.

``surgview-train export-onnx`` writes ``onnx/`` into the model folder (:mod:`engine.backends.onnx.layout`).
This backend checks that folder (sizes and checksums; a partial or corrupt one is one
:class:`BackendError` line), builds the inputs the way the transformers processor does
(:mod:`engine.backends.onnx.inputs`, :mod:`engine.backends.onnx.rope`) and runs its own decoding loop: vision
graph once, then the decoder graph with an empty KV cache (prefill) and once per token. On an
NVIDIA GPU the CUDA execution provider runs with IO binding, so the cache stays on the device
between steps; otherwise the CPU provider. onnxruntime falls back to CPU silently when the CUDA
provider cannot load, so the provider actually running is read back from the session, logged
and shown in ``device``.

Generation runs in the thread that iterates the stream (one decoder step per loop turn), so a
``cancel()`` from any thread, or a bound of the stream being hit (its deadlines are watched from
another thread), ends it after the step in flight and nothing outlives the stream.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.backends.base import Backend, BackendError, GenerationRequest, GenerationStats, TextStream
from engine.backends.onnx.inputs import ModelInputs, OnnxInputBuilder, check_image
from engine.backends.onnx.layout import OnnxDirError, read_onnx_dir
from engine.backends.onnx.rope import rope_index, vision_indices
from engine.backends.transformers_backend import build_messages
from engine.modeldir import MANIFEST_NAME, Manifest, ModelDirError, check_safe_files
from engine.prompts import system_prompt

__all__ = ["OnnxBackend"]

log = logging.getLogger(__name__)

_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}


class _Text:
    """Token ids → text pieces: each piece is the growth of a short window's decode, held back
    while it ends inside a UTF-8 character, so the pieces always join to the full decode."""

    def __init__(self, decode: Callable[[list[int]], str]):
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = self._read = 0

    def add(self, token: int, final: bool = False) -> str:
        self._ids.append(token)
        return self.flush(final)

    def flush(self, final: bool = True) -> str:
        if self._read == len(self._ids):
            return ""
        sent = self._decode(self._ids[self._prefix : self._read])
        text = self._decode(self._ids[self._prefix :])
        if len(text) > len(sent) and (final or not text.endswith("\ufffd")):
            self._prefix, self._read = self._read, len(self._ids)
            return text[len(sent) :]
        if final:
            self._read = len(self._ids)
        return ""


@dataclass
class _Sampling:
    temperature: float
    top_p: float
    rng: np.random.Generator | None

    def pick(self, logits: np.ndarray) -> np.ndarray:
        """Next token per row: argmax (greedy), or a top-p sample of the tempered softmax."""
        if self.rng is None:
            return logits.argmax(axis=-1)
        scaled = logits.astype(np.float64) / self.temperature
        probs = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        out = np.empty(len(probs), dtype=np.int64)
        for row, p in enumerate(probs):
            order = np.argsort(-p, kind="stable")
            cumulative = np.cumsum(p[order])
            keep = order[: int(np.searchsorted(cumulative, self.top_p)) + 1]
            out[row] = self.rng.choice(keep, p=p[keep] / p[keep].sum())
        return out


class OnnxBackend(Backend):
    """A model folder's ``onnx/`` export run by onnxruntime: CUDA when it loads, else CPU."""

    name = "onnx"
    supports_batching = True

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        device: str | None = None,
        threads: int | None = None,
        verify: bool = True,
        io_binding: bool | None = None,
    ):
        """Open ``model_dir/onnx``; ``device`` "cuda"/"cpu" (default: CUDA when onnxruntime has
        it), ``threads`` the CPU provider's intra-op threads, ``verify`` checks file checksums,
        ``io_binding`` keeps the KV cache in the provider's memory between steps (default: on CUDA)."""
        import onnxruntime as ort

        self.path = Path(model_dir).expanduser()
        try:
            if self.path.is_dir():  # as the transformers path does: no pickle files, no FIFO to hang on
                check_safe_files(self.path)
                if (self.path / "onnx").is_dir():
                    check_safe_files(self.path / "onnx")
            folder, self.meta = read_onnx_dir(self.path, verify=verify)
        except (OnnxDirError, ModelDirError) as exc:
            raise BackendError(str(exc)) from exc
        self._name = self._model_name()
        try:
            self.inputs = OnnxInputBuilder(self.path)
        except (OSError, ValueError) as exc:
            raise BackendError(f"cannot read the tokenizer or processor settings in {self.path}: {exc}") from exc
        if device not in (None, "cuda", "cpu"):
            raise BackendError(f"device must be cuda or cpu, not {device!r}")
        available = ort.get_available_providers()
        if device == "cuda" and _CUDA not in available:
            raise BackendError(
                "the CUDA execution provider is not available (install onnxruntime-gpu with a matching CUDA)"
            )
        want_cuda = device != "cpu" and _CUDA in available
        providers = [_CUDA, _CPU] if want_cuda else [_CPU]
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self._vision = ort.InferenceSession(str(folder / "vision.onnx"), options, providers=providers)
            self._decoder = ort.InferenceSession(str(folder / "decoder.onnx"), options, providers=providers)
            self._embed = np.load(folder / "embed_tokens.npy", mmap_mode="r")
        except Exception as exc:  # onnxruntime raises its own types; one line for the user
            raise BackendError(f"cannot load the ONNX graphs in {folder}: {' '.join(str(exc).split())}") from exc
        self.provider = self._decoder.get_providers()[0]
        self._cuda = self.provider == _CUDA
        self._io_binding = self._cuda if io_binding is None else io_binding
        self._cache_device = "cuda" if self._cuda else "cpu"
        if want_cuda and not self._cuda:
            log.warning("onnxruntime could not start the CUDA execution provider; running on the CPU")
        if self.meta.dtype == "fp16" and not self._cuda:
            log.warning("%s holds an fp16 export, made for CUDA: on the CPU an fp32 export is faster", folder)
        log.info("onnxruntime %s runs %s (%s)", ort.__version__, self._name, self.provider)
        self._types = {i.name: _NP_TYPES.get(i.type, np.float32) for i in self._decoder.get_inputs()}
        self._pixel_type = _NP_TYPES.get(self._vision.get_inputs()[0].type, np.float32)
        self._float = self._types["inputs_embeds"]
        self._past_names = [i.name for i in self._decoder.get_inputs() if i.name.startswith("past_key_values.")]
        self._present_names = [o.name for o in self._decoder.get_outputs() if o.name.startswith("present.")]
        self._eos = set(self.meta.eos_token_ids)
        self._default_system = system_prompt()

    def _model_name(self) -> str:
        if (self.path / MANIFEST_NAME).is_file():
            try:
                return Manifest.read(self.path).name
            except ModelDirError as exc:
                raise BackendError(str(exc)) from exc
        return self.path.name

    @property
    def model_id(self) -> str:
        return f"{self._name}@{self.meta.source_fingerprint[:12]}-onnx-{self.meta.dtype}"

    @property
    def device(self) -> str:
        return f"{'cuda' if self._cuda else 'cpu'} (onnxruntime)"

    # -- requests → inputs ------------------------------------------------------------------

    def render(self, request: GenerationRequest) -> str:
        """The exact text the model is given (chat template applied; image tokens not expanded)."""
        return self.inputs.render(build_messages(request, self._default_system))

    def _build(self, requests: Sequence[GenerationRequest]) -> ModelInputs:
        images = []
        for request in requests:
            if request.image is not None:
                try:
                    images.append(check_image(request.image))
                except ValueError as exc:
                    raise BackendError(str(exc)) from exc
        try:
            return self.inputs.build([self.render(r) for r in requests], images)
        except ValueError as exc:
            raise BackendError(str(exc)) from exc

    def _embeddings(self, inputs: ModelInputs) -> np.ndarray:
        ids = inputs.input_ids
        embeds = np.asarray(self._embed[ids.reshape(-1)], dtype=self._float).reshape(*ids.shape, -1)
        if inputs.pixel_values is None:
            return embeds
        meta = self.meta
        idx = vision_indices(
            inputs.image_grids, merge=meta.merge_size, window_size=meta.window_size, patch_size=meta.patch_size
        )
        feed = {
            "pixel_values": inputs.pixel_values.astype(self._pixel_type),
            "rotary_pos_ids": idx.rotary_pos_ids,
            "window_index": idx.window_index,
            "reverse_index": idx.reverse_index,
            "window_segments": idx.window_segments,
            "image_segments": idx.image_segments,
        }
        (image_embeds,) = self._vision.run(None, feed)
        slots = ids == meta.image_token_id
        if int(slots.sum()) != len(image_embeds):
            raise BackendError(f"{int(slots.sum())} image tokens but {len(image_embeds)} image embeddings")
        embeds[slots] = image_embeds.astype(self._float)
        return embeds

    # -- the decoding loop -------------------------------------------------------------------

    def _decode_steps(
        self, inputs: ModelInputs, max_new_tokens: int, sampling: _Sampling, stop: Callable[[], bool]
    ) -> Iterator[np.ndarray]:
        """Yield the next token of every row, step by step, until every row has ended or the cap."""
        batch = inputs.input_ids.shape[0]
        positions, next_pos = rope_index(
            inputs.input_ids,
            inputs.attention_mask,
            inputs.image_grids,
            image_token_id=self.meta.image_token_id,
            merge=self.meta.merge_size,
        )
        embeds = self._embeddings(inputs)
        mask = inputs.attention_mask
        empty = np.zeros((batch, self.meta.num_kv_heads, 0, self.meta.head_dim), dtype=self._float)
        past: list = [empty] * len(self._past_names)
        done = np.zeros(batch, dtype=bool)
        binding = self._decoder.io_binding() if self._io_binding else None
        for step in range(max_new_tokens):
            if stop():
                return
            logits, past = self._step(binding, embeds, mask, positions, past, first=step == 0)
            tokens = sampling.pick(logits)
            tokens[done] = self.meta.pad_token_id
            yield tokens
            done |= np.isin(tokens, list(self._eos))
            if done.all():
                return
            embeds = np.asarray(self._embed[tokens], dtype=self._float)[:, None, :]
            mask = np.concatenate([mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
            positions = np.broadcast_to((next_pos + step)[None, :, None], (3, batch, 1)).astype(np.int64)

    def _step(self, binding, embeds, mask, positions, past, first: bool):
        feed = {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": positions}
        if binding is None:
            feed.update(zip(self._past_names, past, strict=True))
            logits, *present = self._decoder.run(None, feed)
            return logits, present
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        for name, value in feed.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name, value in zip(self._past_names, past, strict=True):
            if first:  # the empty cache is copied in; later the device's outputs are fed back as they are
                binding.bind_cpu_input(name, value)
            else:
                binding.bind_ortvalue_input(name, value)
        binding.bind_output("logits", "cpu")
        for name in self._present_names:
            binding.bind_output(name, self._cache_device, 0)
        self._decoder.run_with_iobinding(binding)
        logits, *present = binding.get_outputs()
        return logits.numpy(), present

    @staticmethod
    def _sampling(request: GenerationRequest) -> _Sampling:
        if request.temperature and request.temperature > 0:
            return _Sampling(request.temperature, request.top_p, np.random.default_rng(request.seed))
        return _Sampling(0.0, 1.0, None)

    # -- streaming and batches ---------------------------------------------------------------

    def stream(self, request: GenerationRequest, cancel: threading.Event | None = None) -> TextStream:
        if request.image is not None:
            try:
                check_image(request.image)  # a malformed frame is refused here, not mid-stream
            except ValueError as exc:
                raise BackendError(str(exc)) from exc
        cancel = cancel or threading.Event()
        holder: dict[str, TextStream] = {}
        text_stream = TextStream(self._pieces(request, cancel, holder), cancel, request.limits)
        holder["stream"] = text_stream
        return text_stream

    def _pieces(self, request: GenerationRequest, cancel: threading.Event, holder: dict) -> Iterator[str]:
        stream: TextStream = holder["stream"]
        stats: GenerationStats = stream.stats
        halt = stream.halt_event  # a bound of the stream was hit (the stream says which)

        def stop() -> bool:
            return cancel.is_set() or halt.is_set()

        text = _Text(self.inputs.decode)
        try:
            inputs = self._build([request])
            last = None
            for tokens in self._decode_steps(inputs, request.max_new_tokens, self._sampling(request), stop):
                last = int(tokens[0])
                stats.tokens += 1
                piece = text.add(last)
                if piece:
                    yield piece
        except BackendError:
            raise
        except Exception as exc:  # onnxruntime errors: one line, after the text already produced
            raise BackendError(f"generation failed: {type(exc).__name__}: {' '.join(str(exc).split())}") from exc
        if stop():
            return
        piece = text.flush()
        if piece:
            yield piece
        if last is not None and last in self._eos:
            stats.finish_reason = "stop"
        elif stats.tokens >= request.max_new_tokens:
            stats.finish_reason = "length"

    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """Requests in one left-padded batch per sampling setting; each row ends at its own cap."""
        return [self.inputs.decode(tokens) for tokens in self.generate_tokens(requests)]

    def generate_tokens(self, requests: Sequence[GenerationRequest]) -> list[list[int]]:
        """The generated token ids of each request (its end token included), batched like
        :meth:`generate_batch`: the ids to compare with another backend's token for token."""
        results: list[list[int]] = [[] for _ in requests]
        groups: dict[tuple, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault((request.temperature, request.top_p, request.seed), []).append(i)
        for indices in groups.values():
            batch = [requests[i] for i in indices]
            inputs = self._build(batch)
            cap = max(r.max_new_tokens for r in batch)
            rows: list[list[int]] = [[] for _ in batch]
            try:
                for tokens in self._decode_steps(inputs, cap, self._sampling(batch[0]), lambda: False):
                    for row, token in enumerate(tokens.tolist()):
                        rows[row].append(token)
            except Exception as exc:
                raise BackendError(f"generation failed: {type(exc).__name__}: {' '.join(str(exc).split())}") from exc
            for row, (i, request) in enumerate(zip(indices, batch, strict=True)):
                tokens = rows[row][: request.max_new_tokens]
                end = next((k for k, t in enumerate(tokens) if t in self._eos), None)
                results[i] = tokens if end is None else tokens[: end + 1]
        return results

    def close(self) -> None:
        self._vision = self._decoder = None
