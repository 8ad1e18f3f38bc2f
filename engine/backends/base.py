"""The one interface every model backend implements: prompt + frame → a cancellable text stream.

Backends: transformers (embedded, CUDA or CPU), ONNX Runtime, and an OpenAI-compatible HTTP
client. The engine, the scheduler, the server and the trainer only ever see this interface.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Backend", "BackendError", "BackendUnavailable", "GenerationRequest", "GenerationStats", "TextStream"]


class BackendError(Exception):
    """A backend cannot load, connect or generate; the message says why in one line.

    ``retryable``: the same request may succeed later or on another server (a server down, busy or
    killed mid-answer), as opposed to a request that is wrong. ``server``: which server failed."""

    def __init__(self, message: str = "", *, retryable: bool = False, server: str | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.server = server


class BackendUnavailable(BackendError):
    """No model server could be reached for so long that an analysis should stop rather than wait."""


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str  # the user turn; the image goes at its "<image>" placeholder, else before the text
    image: np.ndarray | None = field(default=None, compare=False, repr=False)  # RGB uint8, H x W x 3
    system: str | None = None
    max_new_tokens: int = 768  # the token cap: endless output stops here
    temperature: float = 0.0  # 0 means greedy decoding
    top_p: float = 1.0
    seed: int | None = None


@dataclass
class GenerationStats:
    first_token_s: float | None = None  # from the call to the first piece of text
    total_s: float = 0.0
    tokens: int = 0
    finish_reason: str = ""  # "stop", "length" (token cap), "cancelled", "error"

    @property
    def tokens_per_s(self) -> float:
        gen = self.total_s - (self.first_token_s or 0.0)
        return (self.tokens - 1) / gen if self.tokens > 1 and gen > 0 else 0.0


class TextStream(Iterator[str]):
    """Pieces of generated text as they arrive. ``cancel()`` stops generation early (from any
    thread); ``stats`` is complete once iteration ends. Iterating after cancel ends the stream."""

    def __init__(self, pieces: Iterator[str], cancel_event: threading.Event | None = None):
        self._pieces = pieces
        self.cancel_event = cancel_event or threading.Event()
        self.stats = GenerationStats()
        self._start = time.perf_counter()
        self._done = False

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        if self._done:
            raise StopIteration
        try:
            piece = next(self._pieces)
        except StopIteration:
            self._finish()
            raise
        except BaseException:
            self._finish("error")
            raise
        if self.stats.first_token_s is None:
            self.stats.first_token_s = time.perf_counter() - self._start
        return piece

    def _finish(self, reason: str | None = None) -> None:
        self._done = True
        self.stats.total_s = time.perf_counter() - self._start
        if reason:
            self.stats.finish_reason = reason
        elif self.cancelled:
            self.stats.finish_reason = "cancelled"
        elif not self.stats.finish_reason:
            self.stats.finish_reason = "stop"

    def text(self) -> str:
        """Consume the rest of the stream and return all of it."""
        return "".join(self)


class Backend(ABC):
    """A loaded model that turns requests into text streams."""

    name: str = "backend"
    supports_batching: bool = False
    supports_concurrency: bool = False  # streams may run at once from many threads (a remote server's queue)

    @property
    @abstractmethod
    def model_id(self) -> str:
        """Identity of the model for the case store (name and a content version)."""

    @property
    def device(self) -> str:
        return "cpu"

    @abstractmethod
    def stream(self, request: GenerationRequest, cancel: threading.Event | None = None) -> TextStream:
        """Start generating; the returned stream yields text pieces as they are produced."""

    def generate(self, request: GenerationRequest) -> str:
        return self.stream(request).text()

    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[str]:
        """Several requests at once; backends that gain from batching override this."""
        return [self.generate(r) for r in requests]

    def close(self) -> None:  # noqa: B027 - optional hook; most backends hold nothing to release
        """Release the model (memory, connections)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
