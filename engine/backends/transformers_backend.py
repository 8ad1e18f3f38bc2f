"""The embedded backend: a Qwen-VL model folder run by transformers, on CUDA when present.

The folder is checked by :mod:`engine.modeldir` first (safetensors only, no remote code,
local files only). ``stream`` returns at once: preprocessing and ``model.generate`` run in a
worker thread whose streamer decodes each token into a queue; the consuming thread reads that
queue with a short timeout, so it notices a cancel at once, and the worker always ends the
queue (in ``finally``), so an exception there is re-raised in the consumer as
:class:`BackendError`, after the text already produced, instead of a hang. A stopping
criterion polls the cancel event, so generation ends within one decoding step of
``TextStream.cancel()`` or of a bound of the stream (:class:`~engine.backends.base.StreamLimits`)
being hit. One generation runs at a time per model (a lock); a stream that is dropped unread is
cancelled when it is garbage-collected.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.backends.base import Backend, BackendError, GenerationRequest, GenerationStats, TextStream
from engine.modeldir import ModelDirError, ModelInfo, inspect_model_dir
from engine.prompts import system_prompt, user_content
from engine.terminal import one_line

__all__ = ["TokenProbs", "TransformersBackend", "build_messages"]

TokenProbs = list[tuple[str, float]]  # each generated token's text and the probability the model gave it

log = logging.getLogger(__name__)

_POLL_S = 0.05  # how often a consumer waiting for text looks at the cancel event
_EXIT_WAIT_S = 5.0
# Exiting while a worker is inside a torch op aborts the process ("terminate called without an
# active exception", exit 134): at exit, every live backend stops its workers and waits.
_LIVE: weakref.WeakSet[TransformersBackend] = weakref.WeakSet()
_exit_hook = threading.Lock()
_exit_hook_registered = False


def _stop_all_workers() -> None:
    for backend in list(_LIVE):
        backend._stop_workers(_EXIT_WAIT_S)


def _register_exit_hook() -> None:
    # Registered after torch and transformers are imported, so it runs before their own hooks.
    global _exit_hook_registered
    with _exit_hook:
        if not _exit_hook_registered:
            atexit.register(_stop_all_workers)
            _exit_hook_registered = True


def build_messages(request: GenerationRequest, default_system: str | None = None) -> list[dict[str, Any]]:
    """Chat messages for a request: system, then the user turn with the frame and the prompt.

    The frame goes where the prompt says ``<image>`` (the Surg-R1 / ms-swift convention, so a
    model trained on that data sees the layout it was trained on), otherwise before the text.
    """
    system = request.system if request.system is not None else default_system
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    content = user_content(request.prompt, 0 if request.image is None else 1)
    messages.append({"role": "user", "content": content})
    return messages


def _to_pil(image: np.ndarray):
    """An RGB uint8 H x W x 3 array as a PIL image; anything else is a BackendError."""
    from PIL import Image

    if not isinstance(image, np.ndarray):
        raise BackendError(f"image must be a numpy array, not {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise BackendError(f"image must be RGB uint8 of shape H x W x 3; got {image.dtype} {image.shape}")
    return Image.fromarray(np.ascontiguousarray(image), mode="RGB")


_END = object()  # end of a stream, put on its queue by the worker once everything is recorded


class _PieceDecoder:
    """Generated token ids → the text each batch of them adds.

    Each token is decoded within a short window (the previous piece's tokens plus the new
    ones) and the growth of that text is the piece: linear in the output, where
    ``TextIteratorStreamer`` re-decodes the whole line at every token (about 20% of the time
    of a tiny model on CPU). A piece is held back while it ends inside a UTF-8 character (the
    decoder shows U+FFFD), so the pieces always join to the full decode.
    """

    def __init__(self, decode: Callable[[list[int]], str]):
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = self._read = 0  # window start; end of what has been sent

    def feed(self, ids: list[int], final: bool = False) -> str:
        """The text ``ids`` add (with any held back before); "" while it ends inside a character."""
        self._ids += ids
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


class _PieceStreamer:
    """Generated token ids → text pieces on a queue (the ``streamer`` protocol of ``generate``)."""

    def __init__(self, decode: Callable[[list[int]], str]):
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        self._pieces = _PieceDecoder(decode)
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate() hands over the prompt first
            self._prompt_seen = True
            return
        self._send(self._pieces.feed(value.reshape(-1).tolist()))

    def end(self) -> None:
        self._send(self._pieces.feed([], final=True))

    def _send(self, piece: str) -> None:
        if piece:
            self.queue.put(piece)


@dataclass(eq=False)
class _Run:
    """One streamed generation, shared by the worker thread and the consuming generator."""

    request: GenerationRequest
    cancel: threading.Event
    streamer: _PieceStreamer
    stats: GenerationStats
    abandoned: threading.Event = field(default_factory=threading.Event)
    halt: threading.Event = field(default_factory=threading.Event)  # the stream's: a size or time bound was hit
    error: BaseException | None = None
    finish_reason: str = ""
    thread: threading.Thread | None = None

    def stopped(self) -> bool:
        return self.cancel.is_set() or self.abandoned.is_set() or self.halt.is_set()


class TransformersBackend(Backend):
    """A model folder loaded with transformers: CUDA in bfloat16 when available, else CPU float32."""

    name = "transformers"
    supports_batching = True

    def __init__(
        self,
        model_dir: str | os.PathLike[str],
        device: str | None = None,
        dtype: str | None = None,
        threads: int | None = None,
    ):
        """Load ``model_dir``; ``device`` "cuda"/"cpu" (default: CUDA when available), ``dtype`` a
        torch dtype name (default: bfloat16 on GPU, float32 on CPU). ``threads`` sets torch's CPU
        threads, process-wide: on a small machine leave a core for the consumer and the UI (on 2
        cores, streaming costs +60% with 2 torch threads and +8% with 1; bench/backend_bench.py).
        """
        import torch
        import transformers

        transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bars in the CLI or logs

        from engine.vlm_processor import load_processor

        try:
            self.info: ModelInfo = inspect_model_dir(model_dir)
        except ModelDirError as exc:
            raise BackendError(str(exc)) from exc
        for warning in self.info.warnings:
            log.warning("%s: %s", self.info.path.name, warning)
        if threads:
            torch.set_num_threads(threads)
        self._device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if self._device != "cpu" else torch.float32)
        model_class = getattr(transformers, self.info.architecture)
        try:
            self.processor = load_processor(self.info.path)
            model = model_class.from_pretrained(
                self.info.path,
                dtype=self._dtype,
                use_safetensors=True,
                trust_remote_code=False,
                local_files_only=True,
            )
            self.model = model.to(self._device).eval()
        except Exception as exc:  # transformers raises many types; one line for the user
            raise BackendError(f"cannot load the model in {self.info.path}: {exc}") from exc
        tokenizer = self.processor.tokenizer
        config = self.model.generation_config
        eos = config.eos_token_id if config.eos_token_id is not None else tokenizer.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        self._pad_id = config.pad_token_id if config.pad_token_id is not None else tokenizer.pad_token_id
        self._default_system = system_prompt()
        self._lock = threading.Lock()  # one generation at a time
        self._active: set[_Run] = set()  # streams whose worker may still run (close() waits for them)
        _LIVE.add(self)
        _register_exit_hook()

    @property
    def model_id(self) -> str:
        return self.info.model_id

    @property
    def device(self) -> str:
        return self._device

    @property
    def path(self) -> Path:
        return self.info.path

    def render(self, request: GenerationRequest) -> str:
        """The exact text the model is given (chat template applied; image tokens not expanded)."""
        return self.processor.apply_chat_template(
            build_messages(request, self._default_system), add_generation_prompt=True, tokenize=False
        )

    # -- streaming ---------------------------------------------------------------------------

    def stream(self, request: GenerationRequest, cancel: threading.Event | None = None) -> TextStream:
        if request.image is not None:
            _to_pil(request.image)  # reject a malformed frame here, before any thread starts
        cancel = cancel or threading.Event()
        run = _Run(request, cancel, _PieceStreamer(self._decode), GenerationStats())
        text_stream = TextStream(self._pieces(run), cancel, request.limits)
        run.stats, run.halt = text_stream.stats, text_stream.halt_event
        weakref.finalize(text_stream, run.abandoned.set)  # dropped unread: stop the worker
        run.thread = threading.Thread(target=self._work, args=(run,), name="surgview-generate", daemon=True)
        self._active.add(run)
        run.thread.start()
        return text_stream

    def _work(self, run: _Run) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        prompt_len = 0

        class Stop(StoppingCriteria):
            """Counts the tokens made so far and ends generation once the stream is cancelled."""

            def __call__(self, input_ids, scores, **kwargs):
                run.stats.tokens = input_ids.shape[1] - prompt_len
                return torch.full((input_ids.shape[0],), run.stopped(), dtype=torch.bool, device=input_ids.device)

        try:
            with self._lock:
                if run.stopped():
                    return
                inputs = self._inputs([run.request])
                prompt_len = inputs["input_ids"].shape[1]
                with torch.inference_mode():
                    out = self.model.generate(
                        **inputs,
                        **self._sampling(run.request),
                        max_new_tokens=run.request.max_new_tokens,
                        streamer=run.streamer,
                        stopping_criteria=StoppingCriteriaList([Stop()]),
                    )
                new = out[0, prompt_len:].tolist()
                run.stats.tokens = len(new)
                if new and new[-1] in self._eos_ids:
                    run.finish_reason = "stop"
                elif len(new) >= run.request.max_new_tokens:
                    run.finish_reason = "length"
                elif run.stopped():  # dropped or closed; a caller's cancel shows as "cancelled" anyway
                    run.finish_reason = "cancelled"
        except BaseException as exc:  # handed to the consumer, which raises it as BackendError
            run.error = exc
        finally:
            try:
                run.streamer.end()
            finally:  # the consumer always gets the end signal, after everything above is recorded
                self._active.discard(run)
                run.streamer.queue.put(_END)

    def _pieces(self, run: _Run) -> Iterator[str]:
        try:
            while not (run.cancel.is_set() or run.halt.is_set()):  # halted: the stream says why
                try:
                    piece = run.streamer.queue.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                pieces = [piece]
                while pieces[-1] is not _END:  # a consumer that fell behind takes what is waiting at once
                    try:
                        pieces.append(run.streamer.queue.get_nowait())
                    except queue.Empty:
                        break
                end = pieces[-1] is _END
                text = "".join(pieces[:-1] if end else pieces)
                if text:
                    yield text
                if end:
                    run.thread.join()  # it has only to return: no thread outlives its stream
                    if run.error is not None:
                        raise BackendError(f"generation failed: {one_line(run.error)}") from run.error
                    if run.finish_reason:
                        run.stats.finish_reason = run.finish_reason
                    return
        except GeneratorExit:
            run.abandoned.set()
            raise

    # -- batches -----------------------------------------------------------------------------

    def suggested_batch_size(self, max_new_tokens: int, prompt_tokens: int = 1024, cap: int = 64) -> int:
        """Sweep frames per batch: 1 on the CPU (a batch gains nothing on a few cores and delays the
        frame on screen); on CUDA as many as the free memory holds the key/value cache of."""
        if not self._device.startswith("cuda"):
            return 1
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(self._device))
        text = getattr(self.model.config, "text_config", self.model.config)
        per_sequence = kv_cache_bytes(
            layers=text.num_hidden_layers,
            kv_heads=getattr(text, "num_key_value_heads", None) or text.num_attention_heads,
            head_dim=getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads,
            tokens=prompt_tokens + max_new_tokens,
            dtype_bytes=torch.finfo(self._dtype).bits // 8,
        )
        return batch_size_for_memory(free, per_sequence, cap)

    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """Greedy or sampled requests in one padded batch per sampling setting (left padding)."""
        return [text for text, _ in self._generate_batch(requests, with_probs=False)]

    def generate_batch_with_probs(self, requests: Sequence[GenerationRequest]) -> list[tuple[str, TokenProbs]]:
        """:meth:`generate_batch`, with each generated token's text and the probability the model gave it.

        Evaluation ranks detections and triplets by these (a chain the model writes states no confidence
        of its own), as detection metrics need. The pieces joined are the text. Holds every step's logits
        for the batch: keep batches small for a large vocabulary."""
        return self._generate_batch(requests, with_probs=True)

    def _generate_batch(self, requests: Sequence[GenerationRequest], with_probs: bool) -> list[tuple[str, TokenProbs]]:
        import torch

        results: list[tuple[str, TokenProbs]] = [("", [])] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, request in enumerate(requests):
            if request.image is not None:
                _to_pil(request.image)
            groups.setdefault((request.temperature, request.top_p, request.seed), []).append(i)
        for indices in groups.values():
            batch = [requests[i] for i in indices]
            cap = max(r.max_new_tokens for r in batch)
            try:
                with self._lock:
                    inputs = self._inputs(batch)
                    with torch.inference_mode():
                        out = self.model.generate(
                            **inputs,
                            **self._sampling(batch[0]),
                            max_new_tokens=cap,
                            output_scores=with_probs,
                            return_dict_in_generate=True,
                        )
                        chosen = self._chosen_probs(out, inputs["input_ids"].shape[1]) if with_probs else None
            except Exception as exc:
                raise BackendError(f"generation failed: {one_line(exc)}") from exc
            prompt_len = inputs["input_ids"].shape[1]
            for row, (i, request) in enumerate(zip(indices, batch, strict=True)):
                tokens = out.sequences[row, prompt_len:].tolist()[: request.max_new_tokens]
                end = next((k for k, t in enumerate(tokens) if t in self._eos_ids), None)
                tokens = tokens if end is None else tokens[: end + 1]
                pieces: TokenProbs = []
                if chosen is not None:  # a token whose text is held back (inside a character) gets ""
                    decoder = _PieceDecoder(self._decode)
                    last = len(tokens) - 1
                    pieces = [(decoder.feed([t], k == last), float(chosen[row, k])) for k, t in enumerate(tokens)]
                results[i] = (self._decode(tokens), pieces)
        return results

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _chosen_probs(out: Any, prompt_len: int) -> Any:
        """(batch, steps): the probability each generated token had at its step."""
        import torch

        generated = out.sequences[:, prompt_len:]
        probs = [
            torch.softmax(step.float(), dim=-1).gather(1, generated[:, k : k + 1])[:, 0]
            for k, step in enumerate(out.scores)
        ]
        return torch.stack(probs, dim=1) if probs else torch.zeros(generated.shape)

    def _decode(self, tokens: list[int]) -> str:
        return self.processor.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _inputs(self, requests: Sequence[GenerationRequest]) -> dict[str, Any]:
        texts = [self.render(r) for r in requests]
        images = [_to_pil(r.image) for r in requests if r.image is not None]
        inputs = self.processor(
            text=texts, images=images or None, padding=True, padding_side="left", return_tensors="pt"
        )
        inputs = {k: v.to(self._device) if hasattr(v, "to") else v for k, v in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self._dtype)
        return inputs

    def _sampling(self, request: GenerationRequest) -> dict[str, Any]:
        import torch

        kwargs: dict[str, Any] = {"pad_token_id": self._pad_id}
        if request.temperature and request.temperature > 0:
            if request.seed is not None:
                torch.manual_seed(request.seed)
            # top_k off: Qwen's shipped generation configs set top_k=1, which would make sampling greedy.
            kwargs.update(do_sample=True, temperature=request.temperature, top_p=request.top_p, top_k=None)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    def close(self, timeout: float = 10.0) -> None:
        """Stop any generation still running, wait for it (a thread killed mid-step by the
        interpreter's exit can abort the process), and release the model."""
        import torch

        self._stop_workers(timeout)
        with self._lock:
            self.model = None
        if self._device.startswith("cuda"):
            torch.cuda.empty_cache()

    def _stop_workers(self, timeout: float) -> None:
        for run in list(self._active):
            run.abandoned.set()
        for run in list(self._active):
            run.thread.join(timeout)


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, tokens: int, dtype_bytes: int) -> int:
    """Bytes of one sequence's key/value cache: keys and values, per layer, per KV head, per token."""
    return 2 * layers * kv_heads * head_dim * tokens * dtype_bytes


def batch_size_for_memory(free_bytes: int, per_sequence_bytes: int, cap: int = 64, headroom: float = 0.5) -> int:
    """Sequences whose cache fits in ``headroom`` of the free memory (the rest: activations, the vision
    encoder's work, the allocator's slack), between 1 and ``cap``."""
    if per_sequence_bytes <= 0:
        return 1
    return max(1, min(cap, int(free_bytes * headroom // per_sequence_bytes)))
