"""The one interface every model backend implements: prompt + frame → a cancellable text stream.

Backends: transformers (embedded, CUDA or CPU), ONNX Runtime, and an OpenAI-compatible HTTP
client. The engine, the scheduler, the server and the trainer only ever see this interface.

Every stream is bounded here, whatever produces it (:class:`StreamLimits`): in characters and
UTF-8 bytes of text, by a no-progress deadline and by an overall one. A model or a server that
talks forever, floods, or goes silent mid-answer (keep-alives only, one byte a second) costs at
most those bounds: the stream stops its producer (a backend watches :attr:`TextStream.halt_event`;
the HTTP client shuts its socket down, so the server sees the disconnect), keeps the text up to
the bound and says why in ``stats``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import numpy as np

__all__ = [
    "Backend",
    "BackendError",
    "BackendUnavailable",
    "GenerationRequest",
    "GenerationStats",
    "StreamLimits",
    "TextStream",
]

log = logging.getLogger(__name__)


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
class StreamLimits:
    """What one answer may cost. The size caps sit far above a 1024-token chain (a few thousand
    characters) and end a flood; the deadlines end a producer that stalls or only sends keep-alives."""

    max_chars: int = 64_000  # characters of generated text kept
    max_bytes: int = 256 << 10  # the same text as UTF-8 (a flood of 4-byte characters)
    idle_timeout_s: float = 60.0  # longest wait for new content (keep-alives, blank pieces are not progress)
    total_timeout_s: float = 600.0  # the whole answer, from the request on

    def __post_init__(self) -> None:
        for name in ("max_chars", "max_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        for name in ("idle_timeout_s", "total_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str  # the user turn; the image goes at its "<image>" placeholder, else before the text
    image: np.ndarray | None = field(default=None, compare=False, repr=False)  # RGB uint8, H x W x 3
    system: str | None = None
    max_new_tokens: int = 768  # the token cap: endless output stops here
    temperature: float = 0.0  # 0 means greedy decoding
    top_p: float = 1.0
    seed: int | None = None
    limits: StreamLimits = StreamLimits()  # size and time bounds of the answer, whatever the backend


@dataclass
class GenerationStats:
    first_token_s: float | None = None  # from the call to the first piece of text
    total_s: float = 0.0
    tokens: int = 0
    # "stop", "length" (token cap or a size bound), "timeout" (a deadline), "cancelled", "error"
    finish_reason: str = ""
    cut_off: str = ""  # one line when a StreamLimits bound ended the answer, e.g. "answer longer than 64000 characters"

    @property
    def tokens_per_s(self) -> float:
        gen = self.total_s - (self.first_token_s or 0.0)
        return (self.tokens - 1) / gen if self.tokens > 1 and gen > 0 else 0.0


@dataclass(frozen=True)
class _Cut:
    reason: str  # the finish reason: "length" or "timeout"
    message: str  # stats.cut_off
    empty_message: str | None  # the BackendError when nothing but blanks had come (a deadline)


class TextStream(Iterator[str]):
    """Pieces of generated text as they arrive. ``cancel()`` stops generation early (from any
    thread); ``stats`` is complete once iteration ends. Iterating after cancel ends the stream.

    ``limits`` bound the text and the time (see :class:`StreamLimits`). A bound that is hit halts
    the producer (:meth:`_halt`, which subclasses extend; backends watch :attr:`halt_event`),
    never the caller's cancel event: the answer ends with finish reason "length" or "timeout" and
    ``stats.cut_off`` saying why, keeping the text up to the bound. A deadline passing before any
    content came raises a :class:`BackendError` instead (an empty answer is no answer), not retryable.
    ``source`` names the producer in those lines; ``server`` goes on the error."""

    def __init__(
        self,
        pieces: Iterator[str],
        cancel_event: threading.Event | None = None,
        limits: StreamLimits | None = None,
        *,
        source: str = "the model",
        server: str | None = None,
    ):
        self._pieces = pieces
        self.cancel_event = cancel_event or threading.Event()
        self.limits = limits or StreamLimits()
        self.source = source
        self.server = server
        self.stats = GenerationStats()
        self._start = time.perf_counter()
        self._deadline = time.monotonic() + self.limits.total_timeout_s
        self._done = False
        self.halt_event = threading.Event()  # set when a bound stops the stream; producers watch it
        self._cut: _Cut | None = None
        self._cut_lock = threading.Lock()
        self._chars = self._bytes = 0
        self._idle_s = 0.0  # time spent waiting for a piece since the last one with content
        self._content = False  # a piece with a non-blank character has come

    def cancel(self) -> None:
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    @property
    def halted(self) -> bool:
        """A bound was hit: the producer should stop (as on cancel, but the caller did not ask)."""
        return self.halt_event.is_set()

    @property
    def finished(self) -> bool:
        """Iteration has ended: ``stats`` are complete."""
        return self._done

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        if self._done:
            raise StopIteration
        if self._cut is None:
            self._check_deadlines()  # the consumer may have held the last piece past one
        if self._cut is not None:
            self._close_source()
            self._end()
        entered = time.monotonic()
        self._arm(entered)
        try:
            piece = next(self._pieces)
        except StopIteration:
            piece = None
        except BaseException:
            if self._cut is None or self.cancelled:
                self._finish("error")
                raise
            piece = None  # the halt broke the producer (a socket shut down): the cut says why
        finally:
            _WATCHDOG.disarm(self)
        if piece is None or self._cut is not None:  # a piece that came after a deadline is past it
            self._close_source()
            self._end()
        return self._admit(piece, time.monotonic() - entered)

    def _admit(self, piece: str, waited: float) -> str:
        """Count ``piece`` against the size bounds (cutting it to fit) and the idle deadline."""
        if not piece:
            self._idle_s += waited
            return piece
        limits = self.limits
        size = len(piece) if piece.isascii() else len(piece.encode("utf-8", "surrogatepass"))
        if self._chars + len(piece) > limits.max_chars or self._bytes + size > limits.max_bytes:
            room = limits.max_chars - self._chars
            fitted = _fit(piece, room, limits.max_bytes - self._bytes)
            by_bytes = len(fitted) < min(len(piece), room)  # the byte cap is the one that cut it
            piece, size = fitted, len(fitted.encode("utf-8", "surrogatepass"))
            said = f"{limits.max_bytes} bytes" if by_bytes else f"{limits.max_chars} characters"
            self._cut_short("length", f"answer longer than {said}")
            self._close_source()
            if not piece:
                self._end()
        self._chars += len(piece)
        self._bytes += size
        if piece.isspace():
            self._idle_s += waited  # a blank heartbeat is not progress
        else:
            self._idle_s = 0.0
            self._content = True
        if self.stats.first_token_s is None:
            self.stats.first_token_s = time.perf_counter() - self._start
        return piece

    # -- bounds ------------------------------------------------------------------------------

    def _arm(self, now: float) -> None:
        """Have the watchdog wake this stream if the producer keeps the reader waiting past a deadline."""
        idle = now + self.limits.idle_timeout_s - self._idle_s
        deadline = min(idle, self._deadline)
        if deadline < math.inf:
            _WATCHDOG.arm(self, deadline, "idle" if idle < self._deadline else "total")

    def _check_deadlines(self) -> None:
        if time.monotonic() >= self._deadline:
            self._expire("total")
        elif self._idle_s >= self.limits.idle_timeout_s:
            self._expire("idle")

    def _expire(self, kind: str) -> None:
        """A deadline passed (called by the watchdog thread or the consumer)."""
        if kind == "idle":
            seconds = f"{self.limits.idle_timeout_s:g} s"
            self._cut_short(
                "timeout", f"no progress for {seconds} from {self.source}", f"{self.source} sent nothing for {seconds}"
            )
        else:
            seconds = f"{self.limits.total_timeout_s:g} s"
            self._cut_short(
                "timeout",
                f"no complete answer within {seconds} from {self.source}",
                f"{self.source} sent no answer within {seconds}",
            )

    def _cut_short(self, reason: str, message: str, empty_message: str | None = None) -> None:
        """Record why the answer ends early (the first reason wins) and halt the producer. Any thread."""
        with self._cut_lock:
            if self._cut is not None:
                return
            self._cut = _Cut(reason, message, empty_message)
        try:
            self._halt()
        except Exception:  # a halt that fails must not kill the watchdog; the producer ends at its next piece
            log.exception("halting a stream failed")

    def _halt(self) -> None:
        """Stop the producer without the caller's cancel; subclasses add what wakes theirs at once."""
        self.halt_event.set()

    def _close_source(self) -> None:
        """Close a generator producer (its ``finally`` releases a connection or a worker)."""
        close = getattr(self._pieces, "close", None)
        if close is not None:
            try:
                close()
            except Exception:  # the answer is being cut off; its producer's last errors are of no use
                log.debug("closing a cut-off stream's producer failed", exc_info=True)

    def _end(self) -> NoReturn:
        cut = self._cut
        if cut is None or self.cancelled:
            self._finish()
            raise StopIteration
        self.stats.cut_off = cut.message
        self._finish(cut.reason)
        if cut.empty_message is not None and not self._content:
            raise BackendError(cut.empty_message, retryable=False, server=self.server)
        raise StopIteration

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


def _fit(piece: str, chars: int, size: int) -> str:
    """The longest prefix of ``piece`` within ``chars`` characters and ``size`` UTF-8 bytes."""
    piece = piece[: max(chars, 0)]
    data = piece.encode("utf-8", "surrogatepass")
    if len(data) <= size:
        return piece
    end = max(size, 0)
    while end > 0 and data[end] & 0xC0 == 0x80:  # not inside a character
        end -= 1
    return data[:end].decode("utf-8", "surrogatepass")


class _Watchdog:
    """One thread for every stream: when a reader waits past its deadline (blocked in a socket read
    that may never return, a model stuck in a step), it halts that stream's producer, which wakes
    the reader. Streams are armed only while their reader waits, so a slow consumer is not blamed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[float, TextStream, str]] = {}
        self._wake = math.inf  # when the thread means to look next
        self._thread: threading.Thread | None = None

    def arm(self, stream: TextStream, deadline: float, kind: str) -> None:
        with self._cond:
            self._armed[id(stream)] = (deadline, stream, kind)
            if self._thread is None or not self._thread.is_alive():  # first use, or a forked child
                self._thread = threading.Thread(target=self._run, name="surgview-stream-deadlines", daemon=True)
                self._thread.start()
            if deadline < self._wake:
                self._cond.notify()

    def disarm(self, stream: TextStream) -> None:
        with self._cond:
            self._armed.pop(id(stream), None)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                expired = [(s, kind) for d, s, kind in self._armed.values() if d <= now]
                for stream, _ in expired:
                    del self._armed[id(stream)]
                self._wake = min((d for d, _, _ in self._armed.values()), default=math.inf)
                if not expired:
                    self._cond.wait(None if self._wake == math.inf else self._wake - now)
                    continue
            for stream, kind in expired:
                stream._expire(kind)


_WATCHDOG = _Watchdog()


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
