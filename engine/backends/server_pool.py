"""Several OpenAI-compatible servers serving one model, used as one backend.

A long analysis should not stop because one server restarts, nor wait on the busiest replica:
each stream goes to the reachable server with the fewest requests outstanding (ties in turn),
and a request that fails before its first piece of text for a reason worth retrying (refused,
timed out, busy, killed) is retried with jittered exponential backoff on whichever server can
take it. A server that fails is marked down and left alone for its backoff, then tried with one
request; the first success marks it up again, so a restarted server loses nothing and is used
again. A failure after text was streamed is raised (the caller requeues the frame: a half-told
answer is not silently restarted). Only when every server has been failing for ``give_up_s`` is
:class:`BackendUnavailable` raised, naming each server and its last error.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from engine.backends.base import (
    Backend,
    BackendError,
    BackendUnavailable,
    GenerationRequest,
    StreamLimits,
    TextStream,
)
from engine.backends.openai_backend import OpenAIBackend, OpenAIConfig, ServerBusy

__all__ = ["PoolConfig", "ServerPool", "ServerStateCallback"]

ServerStateCallback = Callable[[str, bool, str], None]  # (server URL, up, one line saying what happened)
_POLL_S = 0.1  # a request waiting for a server looks again this often (servers come up meanwhile)
log = logging.getLogger("surgview.pool")


@dataclass(frozen=True)
class PoolConfig:
    retry_initial_s: float = 0.5  # the first backoff after a failure; it doubles with each failure in a row
    retry_max_s: float = 8.0  # the longest backoff
    give_up_s: float = 120.0  # every server failing this long: BackendUnavailable
    down_after: int = 1  # failures in a row (connection-level, not "busy") that mark a server down


@dataclass
class _Server:
    backend: OpenAIBackend
    outstanding: int = 0  # streams started here and not finished
    up: bool = True
    failures: int = 0  # retryable failures in a row
    failing_since: float | None = None  # monotonic time of the first of them
    retry_at: float = 0.0  # no request is sent here before this (backoff)
    probing: bool = False  # a down server takes one request at a time, to see whether it is back
    last_error: str = ""

    @property
    def url(self) -> str:
        return self.backend.url


class ServerPool(Backend):
    """Replicas of one model behind OpenAI-compatible servers; see the module docstring. Thread-safe."""

    name = "openai"
    supports_concurrency = True

    def __init__(
        self,
        backends: Sequence[OpenAIBackend],
        config: PoolConfig = PoolConfig(),
        on_server_state: ServerStateCallback | None = None,
    ):
        if not backends:
            raise BackendError("give at least one server URL")
        models = {b.config.model for b in backends}
        if len(models) > 1:
            raise BackendError(f"the servers of a pool must serve one model name, got {', '.join(sorted(models))}")
        urls = [b.url for b in backends]
        for url in urls:
            if urls.count(url) > 1:
                raise BackendError(f"the server {url} is given twice")
        self.config = config
        self._servers = [_Server(b) for b in backends]
        self.on_server_state = on_server_state
        self._lock = threading.Lock()
        self._next = 0  # where the round robin among equally loaded servers starts
        self._events: collections.deque[tuple[str, bool, str]] = collections.deque()
        self._notify_lock = threading.Lock()
        self._streams: weakref.WeakSet[_PoolStream] = weakref.WeakSet()

    @classmethod
    def from_urls(
        cls,
        urls: Sequence[str],
        model: str,
        api_key: str | None = None,
        config: PoolConfig = PoolConfig(),
        on_server_state: ServerStateCallback | None = None,
        **options,
    ) -> ServerPool:
        """A pool over ``urls``; ``options`` go to each server's :class:`OpenAIConfig`."""
        backends = [OpenAIBackend(OpenAIConfig(base_url=u, model=model, api_key=api_key, **options)) for u in urls]
        return cls(backends, config, on_server_state)

    @property
    def model_id(self) -> str:
        return self._servers[0].backend.model_id

    @property
    def device(self) -> str:
        return "remote:" + ",".join(s.backend.device.removeprefix("remote:") for s in self._servers)

    def outstanding(self) -> dict[str, int]:
        """Streams in flight per server URL (for tests and benchmarks)."""
        with self._lock:
            return {s.url: s.outstanding for s in self._servers}

    def check(self) -> list[str]:
        """Check every server at once; fail naming each one that fails (one server: its own error)."""
        with ThreadPoolExecutor(len(self._servers), thread_name_prefix="surgview-check") as pool:
            futures = [pool.submit(s.backend.check) for s in self._servers]
        served: list[str] = []
        failed: list[tuple[str, BackendError]] = []
        for server, future in zip(self._servers, futures, strict=True):
            try:
                served += [m for m in future.result() if m not in served]
            except BackendError as exc:
                failed.append((server.url, exc))
        if len(self._servers) == 1 and failed:
            raise failed[0][1]
        if failed:
            said = "; ".join(f"{url}: {exc}" for url, exc in failed)
            raise BackendError(f"{len(failed)} of {len(self._servers)} model servers failed the check: {said}")
        return served

    def stream(self, request: GenerationRequest, cancel: threading.Event | None = None) -> TextStream:
        body = self._servers[0].backend.request_body(request)  # encoded once, sent to whichever server
        stream = _PoolStream(self, body, request.max_new_tokens, cancel, request.limits)
        with self._lock:
            self._streams.add(stream)
        return stream

    def close(self) -> None:
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.cancel()
        for server in self._servers:
            server.backend.close()

    # -- routing and server state (any thread) ---------------------------------------------------

    def _acquire(self, cancel: threading.Event) -> tuple[_Server, bool] | None:
        """A server for one attempt and whether it is a probe of a down server; None when cancelled."""
        while not cancel.is_set():
            with self._lock:
                now = time.monotonic()
                server = self._pick(now)
                if server is not None:
                    server.outstanding += 1
                    probe = not server.up
                    server.probing = server.probing or probe
                    return server, probe
                self._raise_if_given_up(now)
                wake = min((s.retry_at for s in self._servers if not s.probing), default=now + _POLL_S)
            cancel.wait(min(max(wake - now, 0.001), _POLL_S))
        return None

    def _pick(self, now: float) -> _Server | None:
        """The least loaded server that may take a request now; the round robin breaks ties."""
        n = len(self._servers)
        best: tuple[int, int] | None = None  # (outstanding, index)
        for k in range(n):
            i = (self._next + k) % n
            s = self._servers[i]
            if now < s.retry_at or s.probing:
                continue
            if best is None or s.outstanding < best[0]:
                best = (s.outstanding, i)
        if best is None:
            return None
        self._next = (best[1] + 1) % n
        return self._servers[best[1]]

    def _release(self, server: _Server, probe: bool) -> None:
        with self._lock:
            server.outstanding -= 1
            if probe:
                server.probing = False

    def _succeeded(self, server: _Server) -> None:
        with self._lock:
            server.failures, server.failing_since, server.retry_at, server.last_error = 0, None, 0.0, ""
            server.probing = False
            if not server.up:
                server.up = True
                self._events.append((server.url, True, f"the model server at {server.url} is back up"))
        self._deliver()

    def _failed(self, server: _Server, exc: BackendError) -> None:
        cfg = self.config
        with self._lock:
            now = time.monotonic()
            server.failures += 1
            if server.failing_since is None:
                server.failing_since = now
            server.last_error = str(exc)
            server.probing = False
            backoff = min(cfg.retry_max_s, cfg.retry_initial_s * 2 ** min(server.failures - 1, 30))
            server.retry_at = max(server.retry_at, now + backoff * random.uniform(0.5, 1.0))
            if server.up and not isinstance(exc, ServerBusy) and server.failures >= cfg.down_after:
                server.up = False
                self._events.append((server.url, False, f"the model server at {server.url} is down: {exc}"))
        self._deliver()

    def _raise_if_given_up(self, now: float) -> None:
        """Under the lock: every server failing for give_up_s ends the wait."""
        limit = self.config.give_up_s
        if all(s.failing_since is not None and now - s.failing_since >= limit for s in self._servers):
            said = "; ".join(f"{s.url}: {s.last_error}" for s in self._servers)
            raise BackendUnavailable(f"no model server answered for {limit:g} s ({said})")

    def _check_given_up(self) -> None:
        with self._lock:
            self._raise_if_given_up(time.monotonic())

    def _deliver(self) -> None:
        """Report state changes in the order they happened, outside the state lock."""
        with self._notify_lock:
            while True:
                with self._lock:
                    if not self._events:
                        return
                    url, up, message = self._events.popleft()
                if self.on_server_state is not None:
                    try:
                        self.on_server_state(url, up, message)
                    except Exception:  # a report that fails must not fail the request that made it
                        log.exception("the server state callback failed")


class _PoolStream(TextStream):
    """One request, tried on servers until it streams, fails for good, or is cancelled.

    Each attempt is bounded by the request's limits (its own deadlines: a server that stalls is
    one attempt's failure, raised, not retried). The pool stream itself keeps the size caps but
    no deadline, so waiting for a restarting server is bounded by ``give_up_s`` as before."""

    def __init__(
        self,
        pool: ServerPool,
        body: bytes,
        max_new_tokens: int,
        cancel: threading.Event | None,
        limits: StreamLimits,
    ):
        self._pool = pool
        self._body = body
        self._max_new_tokens = max_new_tokens
        self._limits = limits
        self._inner: TextStream | None = None
        self._inner_lock = threading.Lock()
        untimed = dataclasses.replace(limits, idle_timeout_s=math.inf, total_timeout_s=math.inf)
        super().__init__(self._generate(), cancel, untimed, source="the model servers")

    def cancel(self) -> None:
        super().cancel()
        with self._inner_lock:
            inner = self._inner
        if inner is not None:
            inner.cancel()  # at once; the inner stream also watches the shared event

    def _halt(self) -> None:
        super()._halt()
        with self._inner_lock:
            inner = self._inner
        if inner is not None:
            inner._halt()  # not cancel(): the caller's event is the caller's

    def _generate(self) -> Iterator[str]:
        pool = self._pool
        while not self.halted:
            chosen = pool._acquire(self.cancel_event)
            if chosen is None:
                return
            server, probe = chosen
            inner = server.backend.stream_body(self._body, self._max_new_tokens, self.cancel_event, self._limits)
            with self._inner_lock:
                self._inner = inner
            started = False
            try:
                for piece in inner:
                    if not started:
                        started = True
                        pool._succeeded(server)
                    self.stats.tokens = inner.stats.tokens
                    yield piece
            except BackendError as exc:
                if self.cancelled:
                    return
                if not exc.retryable:
                    raise
                pool._failed(server, exc)
                if started:
                    raise
                pool._check_given_up()
                continue
            finally:
                pool._release(server, probe)
                with self._inner_lock:
                    self._inner = None
            if self.cancelled:
                return
            if not started:
                pool._succeeded(server)  # an empty answer proves the server as well
            self.stats.tokens = inner.stats.tokens
            self.stats.finish_reason = inner.stats.finish_reason
            self.stats.cut_off = inner.stats.cut_off
            return
