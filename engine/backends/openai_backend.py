"""A client for an OpenAI-compatible chat-completions server (vLLM, SGLang, ``surgview-engine serve``).

For users who outgrow one machine: the model runs on a GPU server (the Surg-R1 release serves
on port 8000) and surgview streams its answers over HTTP. One ``httpx.Client`` per backend keeps
a pool of keep-alive connections shared by every thread (the scheduler keeps many streams in
flight). Cancelling a stream shuts its socket down, which wakes the reader at once and which a
server such as vLLM takes as the signal to abort the request; a connection is pooled again only
after a complete answer. Nothing touches the network until a stream starts or
:meth:`OpenAIBackend.check` is called.

Errors are :class:`BackendError` lines; those worth retrying (a server down, busy, silent or
killed mid-answer) say so with ``retryable`` and name the ``server``, for :mod:`server_pool`.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import re
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import cv2
import httpcore
import httpx
import numpy as np

# SSEDecoder is the event assembler behind httpx_sse.EventSource; EventSource itself reads lines of
# any length, so lines are split here (with a cap) and handed to the decoder one by one.
from httpx_sse._decoders import SSEDecoder

from engine.backends.base import Backend, BackendError, GenerationRequest, StreamLimits, TextStream
from engine.prompts import user_content
from engine.terminal import one_line

__all__ = ["OpenAIBackend", "OpenAIConfig", "ServerBusy", "encode_image_data_url"]

MAX_LINE_BYTES = 1 << 20  # one SSE line; a chunk of a few tokens is far smaller
MAX_JSON_BYTES = 16 << 20  # a whole (non-streamed) answer or the model list
# A body is read no further than its text may need (StreamLimits.max_bytes of text): an event
# wraps a token of a few bytes in a few hundred bytes of JSON; a whole answer escapes each byte
# in at most 6 (\uXXXX), plus its envelope.
SSE_BYTES_PER_TEXT_BYTE = 64
JSON_BYTES_PER_TEXT_BYTE, JSON_ENVELOPE_BYTES = 6, 64 << 10
MAX_ERROR_BYTES = 64 << 10  # an error body read for its message
MAX_DRAIN_BYTES = 64 << 10  # read after [DONE] so the connection can be pooled again
DRAIN_TIMEOUT_S = 1.0  # a server that sends [DONE] but never ends the body is not waited on
KEEPALIVE_S = 4.0  # below uvicorn's 5 s: the client drops an idle connection before the server does
_CANCEL_POLL_S = 0.05  # how often a cancel event set without stream.cancel() is noticed
_SSE_FIELDS = ("data", "event", "id", "retry")
_NEWLINE = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True)
class OpenAIConfig:
    base_url: str  # e.g. "http://127.0.0.1:8000/v1"; the API paths are appended to it
    model: str  # the server's name for the model (vLLM: --served-model-name)
    api_key: str | None = None  # sent as "Authorization: Bearer <key>"
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 300.0  # longest silence between bytes (time to first token included)
    jpeg_quality: int = 90
    stream_usage: bool = True  # ask for the server's token count (stream_options.include_usage)
    max_connections: int = 64  # open connections to the server; more streams wait for a free one


class ServerBusy(BackendError):
    """HTTP 429 or 503: the server is up but will not take the request now (back off, do not mark it down)."""


def encode_image_data_url(image: np.ndarray, quality: int = 90) -> str:
    """An RGB uint8 frame as a ``data:image/jpeg;base64,...`` URL, the form vision servers accept inline."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        what = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise BackendError(f"the image must be an RGB uint8 array H x W x 3, got {what}")
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise BackendError(f"cannot encode a {image.shape[1]}x{image.shape[0]} image as JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


class OpenAIBackend(Backend):
    """Streams chat completions from an OpenAI-compatible server; see :class:`OpenAIConfig`. Thread-safe."""

    name = "openai"
    supports_concurrency = True

    def __init__(self, config: OpenAIConfig):
        parts = urlsplit(config.base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BackendError(f"the server URL must look like http://HOST:PORT/v1, got {config.base_url!r}")
        if parts.username or parts.password:
            raise BackendError("put the server's key in the API key setting, not in the URL")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise BackendError(f"bad port in the server URL {config.base_url!r}") from None
        if not config.model.strip():
            raise BackendError("no model name given for the OpenAI-compatible server")
        if config.max_connections < 1:
            raise BackendError("max_connections must be at least 1")
        self.config = config
        self._host = parts.hostname
        self._netloc = parts.netloc
        self._url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._lock = threading.Lock()
        self._streams: weakref.WeakSet[_SSEStream] = weakref.WeakSet()
        self._watch = _CancelWatch()
        self._closed = False
        ssl_context = ssl.create_default_context() if parts.scheme == "https" else None
        limits = httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=config.max_connections,  # as many as run at once stay open for reuse
            keepalive_expiry=KEEPALIVE_S,
        )
        self._client = httpx.Client(
            transport=_Transport(limits, ssl_context),
            timeout=httpx.Timeout(
                connect=config.connect_timeout_s,
                read=config.read_timeout_s,
                write=config.read_timeout_s,
                pool=config.read_timeout_s,  # waiting for one of max_connections to come free
            ),
            follow_redirects=False,
            trust_env=False,  # a model server on the LAN is not reached through the environment's proxy
        )
        weakref.finalize(self, self._client.close)  # a backend dropped without close() closes its idle connections

    @property
    def model_id(self) -> str:
        return f"openai:{self.config.model}@{self._netloc}"

    @property
    def device(self) -> str:
        return f"remote:{self._netloc}"

    @property
    def url(self) -> str:
        """The base URL, normalised (no trailing slash); errors name the server by it."""
        return self._url

    def check(self) -> list[str]:
        """Ask the server which models it serves (GET /models); fail unless ours is among them."""
        client = self._open_client()
        exchange = _Exchange()
        answered = False
        try:
            with exchange.sending():
                request = client.build_request("GET", self._url + "/models", headers=self._headers(json_body=False))
                resp = client.send(request, stream=True)
            answered = True
            if resp.status_code != 200:
                raise self._http_error(resp)
            body = _parse_json(_read_limited(resp.iter_bytes(), MAX_JSON_BYTES), "the model list")
        except (httpx.HTTPError, RuntimeError, OSError, ValueError) as exc:
            raise self._transport_error(exc, answered, exchange.heard) from None
        finally:
            exchange.detach()
            if answered:
                with contextlib.suppress(httpx.HTTPError, OSError):
                    resp.close()
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise BackendError(f"the server at {self._url} sent a malformed model list")
        ids = [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]
        if self.config.model not in ids:
            served = ", ".join(ids) or "nothing"
            raise BackendError(f"the server at {self._url} does not serve {self.config.model!r}; it serves: {served}")
        return ids

    def stream(self, request: GenerationRequest, cancel: threading.Event | None = None) -> TextStream:
        return self.stream_body(self.request_body(request), request.max_new_tokens, cancel, request.limits)

    def request_body(self, request: GenerationRequest) -> bytes:
        """The JSON body for ``request``; the image is encoded now, so its errors come early."""
        return json.dumps(self._payload(request)).encode("utf-8")

    def stream_body(
        self,
        body: bytes,
        max_new_tokens: int,
        cancel: threading.Event | None = None,
        limits: StreamLimits | None = None,
    ) -> TextStream:
        """A stream for a body from :meth:`request_body` (a server pool encodes once, sends to any replica)."""
        stream = _SSEStream(self, body, max_new_tokens, cancel, limits or StreamLimits())
        with self._lock:
            self._streams.add(stream)
        return stream

    def close(self) -> None:
        """Cancel the live streams and close every connection."""
        with self._lock:
            self._closed = True
            streams = list(self._streams)
        for stream in streams:
            stream.cancel()
        self._client.close()

    # -- request -------------------------------------------------------------------------------

    def _payload(self, request: GenerationRequest) -> dict:
        # The frame goes where the prompt says "<image>" (the Surg-R1 release asks "... image <image>,
        # which ..."), else before the text: the layout every backend and the training rows share.
        content = user_content(request.prompt, 0 if request.image is None else 1)
        if request.image is not None:
            url = encode_image_data_url(request.image, self.config.jpeg_quality)
            content = [p if p["type"] == "text" else {"type": "image_url", "image_url": {"url": url}} for p in content]
        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages.append({"role": "user", "content": content})
        payload = {
            "model": self.config.model,
            "messages": messages,
            "stream": True,
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
        }
        if request.seed is not None:
            payload["seed"] = request.seed
        if self.config.stream_usage:
            payload["stream_options"] = {"include_usage": True}
        return payload

    def _headers(self, json_body: bool = True) -> dict[str, str]:
        headers = {
            "Accept": "text/event-stream, application/json",
            "Accept-Encoding": "identity",  # the byte caps apply to what is read, not to what it inflates to
            "User-Agent": "surgview",
        }
        if json_body:
            headers["Content-Type"] = "application/json"
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        return headers

    def _open_client(self) -> httpx.Client:
        if self._closed:
            raise BackendError(f"the client for the model server at {self._url} is closed")
        return self._client

    # -- errors --------------------------------------------------------------------------------

    def _error(self, message: str, retryable: bool = False) -> BackendError:
        return BackendError(message, retryable=retryable, server=self._url)

    def _transport_error(self, exc: BaseException, answered: bool, heard: bool) -> BackendError:
        """One line for a failed exchange; ``answered``: the response headers had arrived; ``heard``:
        the server sent anything at all."""
        if isinstance(exc, BackendError):
            return exc
        url = self._url
        cause = _os_cause(exc)
        if isinstance(exc, httpx.PoolTimeout):
            return self._error(f"all {self.config.max_connections} connections to {url} stayed busy too long")
        if isinstance(exc, httpx.TimeoutException):
            return self._error(f"the model server at {url} did not answer in time", retryable=True)
        if isinstance(exc, httpx.ConnectError):
            if isinstance(cause, ssl.SSLError):  # the handshake: a certificate or protocol problem, not an outage
                return self._error(f"TLS failed with the model server at {url}: {cause.reason or cause}")
            if isinstance(cause, ConnectionRefusedError):
                return self._error(f"no model server at {url} (connection refused)", retryable=True)
            if isinstance(cause, socket.gaierror):
                return self._error(f"cannot find the model server host {self._host!r} ({cause.strerror or cause})")
            return self._error(f"cannot reach the model server at {url}: {_strerror(cause, exc)}", retryable=True)
        if isinstance(exc, httpx.RemoteProtocolError):
            text = str(exc)
            if text.startswith("Server disconnected") and heard:  # bytes, but never an HTTP response
                return self._error(f"the server at {url} does not speak HTTP as expected (no HTTP response)")
            if text.startswith("Server disconnected"):  # httpcore: closed before the status line
                return self._error(f"the server at {url} closed the connection without answering", retryable=True)
            if text.startswith("peer closed connection"):  # h11: the body ended early
                return self._error(f"the model server at {url} closed the connection mid-answer", retryable=True)
            return self._error(f"the server at {url} does not speak HTTP as expected ({one_line(text, limit=80)})")
        if isinstance(exc, httpx.NetworkError | OSError):  # ReadError, WriteError: reset, broken pipe, ...
            if isinstance(cause, ConnectionResetError | BrokenPipeError | ConnectionAbortedError) or cause is None:
                if answered:
                    return self._error(f"the model server at {url} closed the connection mid-answer", retryable=True)
                return self._error(f"the server at {url} closed the connection without answering", retryable=True)
            return self._error(f"cannot reach the model server at {url}: {_strerror(cause, exc)}", retryable=True)
        if isinstance(exc, RuntimeError) and not isinstance(exc, httpx.StreamError):  # closed under the request
            return self._error(f"the client for the model server at {url} is closed")
        return self._error(f"the model server at {url} sent malformed data: {exc}")

    def _http_error(self, resp: httpx.Response) -> BackendError:
        status = resp.status_code
        try:
            detail = _error_detail(_read_limited(resp.iter_bytes(), MAX_ERROR_BYTES))
        except (httpx.HTTPError, OSError, ValueError):
            detail = ""
        said = f": {detail}" if detail else ""
        url = self._url
        if status in (401, 403):
            if self.config.api_key:
                return self._error(f"the server at {url} refused the token (HTTP {status}){said}")
            return self._error(f"the server at {url} requires a token (HTTP {status}); set the API key")
        if status == 404:
            return self._error(
                f"model {self.config.model!r} not found at {url} (HTTP 404){said}; "
                "check the model name and that the URL ends in /v1"
            )
        if status == 413:
            return self._error(f"the server at {url} refused the request as too large (HTTP 413)")
        if status in (429, 503):
            message = f"the model server at {url} is unavailable or busy (HTTP {status}){said}"
            return ServerBusy(message, retryable=True, server=url)
        if 400 <= status < 500:
            return self._error(f"the server at {url} rejected the request (HTTP {status}){said}")
        if status in (502, 504):  # a gateway in front of a server that is down or stuck
            return self._error(f"the model server at {url} is unavailable or busy (HTTP {status}){said}", True)
        return self._error(f"the model server at {url} failed (HTTP {status}){said}")


# -- the transport: pooled connections whose sockets a cancelling thread can shut down -----------

_claim = threading.local()  # .exchange: the _Exchange whose request this thread is sending right now


class _Exchange:
    """One request's hold on the connection it goes out on, known from its first write."""

    def __init__(self) -> None:
        self.conn: _ClaimedStream | None = None
        self._lock = threading.Lock()
        self._aborted = False

    def attach(self, conn: _ClaimedStream) -> None:
        with self._lock:
            self.conn = conn
            conn.claim()
            if self._aborted:  # cancelled before the connection was known
                conn.shutdown()

    def abort(self) -> None:
        with self._lock:
            self._aborted = True
            if self.conn is not None:
                self.conn.shutdown()

    def detach(self) -> None:
        """From here the connection may serve another request: hands off."""
        with self._lock:
            conn, self.conn = self.conn, None
        if conn is not None:
            conn.release()

    @property
    def heard(self) -> bool:
        """Whether the server sent anything at all (garbage that never became an HTTP response, say)."""
        conn = self.conn
        return conn is not None and conn.received > 0

    @contextlib.contextmanager
    def sending(self) -> Iterator[None]:
        _claim.exchange = self
        try:
            yield
        finally:
            _claim.exchange = None


class _ClaimedStream(httpcore.NetworkStream):
    """A connection that tells the stream sending on it that it is its own: before the response
    headers arrive there is no response object to reach the socket through, and a server that
    queues requests (ours, vLLM under load) may keep the client waiting right there.

    It also shields a request from httpcore's sync pool, which may close a connection another
    thread is using (a pass in one thread reads "idle" just before another thread sends on it, then
    finds the answer readable and takes it for a hang-up; encode/httpcore#1110 is a sibling race):
    while claimed, the connection is never "readable" to the pool and a close waits for the release."""

    def __init__(self, inner: httpcore.NetworkStream):
        self._inner = inner
        self._lock = threading.Lock()
        self._busy = False  # a request of ours is on it
        self._close_pending = False
        self.read_cap_s: float | None = None  # a shorter read timeout, while the rest of a body is drained
        self.received = 0  # bytes read since the current request was sent

    def claim(self) -> None:
        with self._lock:
            self._busy = True
            self.received = 0

    def release(self) -> None:
        with self._lock:
            self._busy = False
            pending, self._close_pending = self._close_pending, False
        if pending:
            self._inner.close()

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        cap = self.read_cap_s
        data = self._inner.read(max_bytes, timeout if cap is None else min(cap, timeout or cap))
        self.received += len(data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        exchange = getattr(_claim, "exchange", None)
        if exchange is not None:
            exchange.attach(self)
        self._inner.write(buffer, timeout)

    def shutdown(self) -> None:
        """Wake a reader blocked on another thread (close() alone would not); the plain-socket call
        also suits TLS, where SSLSocket.shutdown would drop the SSL object under the reader."""
        sock = self._inner.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def close(self) -> None:
        with self._lock:
            if self._busy:
                self._close_pending = True
                return
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _ClaimedStream(self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> object:
        if info == "is_readable" and self._busy:
            return False  # mid-request, readable means the answer has come, not that the server hung up
        return self._inner.get_extra_info(info)


class _Network(httpcore.SyncBackend):
    def connect_tcp(self, *args, **kwargs) -> httpcore.NetworkStream:
        return _ClaimedStream(super().connect_tcp(*args, **kwargs))


class _Transport(httpx.HTTPTransport):
    """httpx's own transport on an httpcore pool with :class:`_Network` (HTTPTransport keeps it in ``_pool``)."""

    def __init__(self, limits: httpx.Limits, ssl_context: ssl.SSLContext | None):
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_Network(),
        )


class _CancelWatch:
    """One thread per backend, only while needed, notices cancel events that callers set directly
    (instead of calling stream.cancel()) and shuts those streams' sockets down. Weak references:
    an abandoned stream is still collected, which closes its connection."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: dict[int, weakref.ref[_SSEStream]] = {}
        self._running = False

    def add(self, stream: _SSEStream) -> None:
        with self._lock:
            self._streams[id(stream)] = weakref.ref(stream)
            if not self._running:
                self._running = True
                threading.Thread(target=self._run, name="surgview-openai-cancel", daemon=True).start()

    def discard(self, stream: _SSEStream) -> None:
        with self._lock:
            ref = self._streams.get(id(stream))
            if ref is not None and ref() is stream:
                del self._streams[id(stream)]

    def _run(self) -> None:
        while True:
            time.sleep(_CANCEL_POLL_S)
            with self._lock:
                if not self._streams:
                    self._running = False
                    return
                watched = list(self._streams.items())
            for key, ref in watched:
                stream = ref()
                if stream is not None and not stream.cancel_event.is_set():
                    continue
                if stream is not None:
                    stream._abort()
                with self._lock:
                    if self._streams.get(key) is ref:
                        del self._streams[key]


# -- one generation --------------------------------------------------------------------------------


class _SSEStream(TextStream):
    """A TextStream over one HTTP response of server-sent events; cancel, or a bound of the stream
    being hit (a deadline fires even while the reader is blocked in a socket read), shuts its socket down."""

    def __init__(
        self,
        backend: OpenAIBackend,
        body: bytes,
        max_pieces: int,
        cancel: threading.Event | None,
        limits: StreamLimits,
    ):
        self._backend = backend
        self._body = body
        self._max_pieces = max_pieces
        self._watched = cancel is not None  # an event the caller may set without calling cancel()
        self._exchange = _Exchange()
        self._counting_chunks = True  # until the server reports usage, one content chunk counts as one token
        source = f"the model server at {backend._url}"
        super().__init__(self._generate(), cancel, limits, source=source, server=backend._url)

    def cancel(self) -> None:
        super().cancel()
        self._abort()

    def _halt(self) -> None:
        super()._halt()
        self._abort()

    def _abort(self) -> None:
        self._exchange.abort()

    @property
    def _stopping(self) -> bool:
        return self.cancelled or self.halted

    def _generate(self) -> Iterator[str]:
        if self._stopping:
            return
        backend = self._backend
        client = backend._open_client()
        request = client.build_request(
            "POST", backend._url + "/chat/completions", content=self._body, headers=backend._headers()
        )
        self._body = b""
        if self._watched:
            backend._watch.add(self)
        response: httpx.Response | None = None
        try:
            with self._exchange.sending():
                response = client.send(request, stream=True)
            if self._stopping:
                return
            if response.status_code != 200:
                raise backend._http_error(response)
            kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if kind == "text/event-stream":
                yield from self._read_events(response)
            elif kind == "application/json":  # a server that ignores "stream": one whole answer
                yield from self._read_whole(response)
            else:
                raise backend._error(
                    f"the server at {backend._url} sent {kind or 'an untyped body'}, not server-sent events"
                )
        except (httpx.HTTPError, RuntimeError, OSError, ValueError) as exc:  # RuntimeError: httpx.StreamError
            if self._stopping:  # the socket was shut down on purpose; a halted stream says why
                return
            raise backend._transport_error(exc, response is not None, self._exchange.heard) from None
        finally:
            backend._watch.discard(self)
            self._exchange.detach()
            if response is not None:
                with contextlib.suppress(httpx.HTTPError, OSError):
                    response.close()  # pooled again only when the whole body was read, else closed

    def _read_events(self, response: httpx.Response) -> Iterator[str]:
        limit = SSE_BYTES_PER_TEXT_BYTE * self.limits.max_bytes
        try:
            yield from self._events(_capped(response.iter_bytes(), limit))
        except _BodyTooLong:  # endless events without (much) text: cut, not read on
            self._cut_short(
                "length",
                f"a response larger than {limit} bytes from {self.source}",
                f"{self.source} sent {limit} bytes of events without an answer",
            )

    def _events(self, chunks: Iterator[bytes]) -> Iterator[str]:
        url = self._backend._url
        decoder = SSEDecoder()
        finish: str | None = None
        pieces = 0
        # The end of the body dispatches what is pending, like a blank line.
        for line in itertools.chain(_lines(chunks, MAX_LINE_BYTES), [""]):
            if self._stopping:
                return
            if line and not line.startswith(":"):  # ":" starts an SSE comment, e.g. a keep-alive
                field, colon, _ = line.partition(":")
                if not colon or field not in _SSE_FIELDS:
                    raise self._malformed(f"{line[:60]!r} is not a server-sent event")
            event = decoder.decode(line)
            if event is None or not event.data:
                continue
            if event.data == "[DONE]":
                self._drain(chunks)
                break
            chunk = _parse_json(event.data.encode("utf-8"), "an event")
            if not isinstance(chunk, dict):
                raise self._malformed("an event that is not a JSON object")
            _raise_reported_error(chunk, url)
            self._take_usage(chunk)
            choice = _first_choice(chunk)
            if choice is None:
                continue
            delta = choice.get("delta")
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and content:
                pieces += 1
                if pieces > self._max_pieces:  # each chunk holds at least one token: the cap was ignored
                    finish = "length"
                    break
                if self._counting_chunks:
                    self.stats.tokens += 1
                yield content
                if self._stopping:  # while the caller held the piece: leave without reading on
                    return
            if choice.get("finish_reason"):
                finish = _finish_reason(choice["finish_reason"], url)
        else:
            if finish is None:  # the body ended with neither [DONE] nor a finish_reason: a killed server?
                raise BackendError(
                    f"the model server at {url} closed the stream before the end", retryable=True, server=url
                )
        self.stats.finish_reason = finish or "stop"

    def _read_whole(self, response: httpx.Response) -> Iterator[str]:
        url = self._backend._url
        limit = min(MAX_JSON_BYTES, JSON_BYTES_PER_TEXT_BYTE * self.limits.max_bytes + JSON_ENVELOPE_BYTES)
        try:
            raw = _read_limited(response.iter_bytes(), limit)
        except ValueError:  # a JSON prefix cannot be decoded: no part of it can be kept
            raise self._backend._error(f"the model server at {url} sent an answer larger than {limit} bytes") from None
        answer = _parse_json(raw, "the answer")
        if not isinstance(answer, dict):
            raise self._malformed("an answer that is not a JSON object")
        _raise_reported_error(answer, url)
        choice = _first_choice(answer)
        message = choice.get("message") if choice else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise self._malformed("an answer without choices[0].message.content")
        self._take_usage(answer)
        if self._counting_chunks:
            self.stats.tokens = 1 if content else 0
        if content:
            yield content
        self.stats.finish_reason = _finish_reason(choice.get("finish_reason") or "stop", url)

    def _drain(self, chunks: Iterator[bytes]) -> None:
        """Read the few bytes after [DONE] (the end of a chunked body) so the connection can be pooled
        again; a server that never ends the body is not waited on long (then the connection is closed)."""
        conn = self._exchange.conn
        if conn is not None:
            conn.read_cap_s = DRAIN_TIMEOUT_S
        left = MAX_DRAIN_BYTES
        try:
            for chunk in chunks:
                left -= len(chunk)
                if left < 0:
                    return
        except (httpx.HTTPError, httpx.StreamError, OSError, _BodyTooLong):
            return
        finally:
            if conn is not None:
                conn.read_cap_s = None

    def _take_usage(self, obj: dict) -> None:
        usage = obj.get("usage")
        tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
        if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0:
            self.stats.tokens = tokens
            self._counting_chunks = False

    def _malformed(self, what: str) -> BackendError:
        return self._backend._error(f"the model server at {self._backend._url} sent malformed data: {what}")


# -- helpers ---------------------------------------------------------------------------------------


def _lines(chunks: Iterable[bytes], limit: int) -> Iterator[str]:
    """The body's lines (split at CRLF, CR or LF, as SSE says); a line longer than ``limit`` bytes is refused."""
    too_long = f"a line of more than {limit >> 20} MiB"
    buf = bytearray()
    for chunk in chunks:
        pos = max(0, len(buf) - 1)  # what was kept holds no line end, but its last CR may pair with an LF
        buf += chunk
        start = 0
        while (end := _NEWLINE.search(buf, max(start, pos))) is not None:
            if end.group() == b"\r" and end.end() == len(buf):
                break  # the LF of a CRLF may come in the next chunk
            if end.start() - start > limit:
                raise ValueError(too_long)
            yield buf[start : end.start()].decode("utf-8", errors="replace")
            start = end.end()
        del buf[:start]
        if len(buf) > limit + 1:  # + 1: a CR waiting for its LF
            raise ValueError(too_long)
    line = buf[:-1] if buf.endswith(b"\r") else buf
    if len(line) > limit:
        raise ValueError(too_long)
    if buf:
        yield line.decode("utf-8", errors="replace")


class _BodyTooLong(Exception):
    """A response body went past what the stream's limits allow."""


def _capped(chunks: Iterable[bytes], limit: int) -> Iterator[bytes]:
    """The body's chunks up to ``limit`` bytes in all; the chunk that would pass it raises :class:`_BodyTooLong`."""
    left = limit
    for chunk in chunks:
        left -= len(chunk)
        if left < 0:
            raise _BodyTooLong
        yield chunk


def _read_limited(chunks: Iterable[bytes], limit: int) -> bytes:
    body = bytearray()
    for chunk in chunks:
        body += chunk
        if len(body) > limit:
            raise ValueError(f"a body larger than {limit} bytes")
    return bytes(body)


def _os_cause(exc: BaseException) -> OSError | None:
    """The OSError under httpx's and httpcore's wrappers (refused, reset, DNS, TLS), if any."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _strerror(cause: OSError | None, exc: BaseException) -> str:
    return (cause.strerror if cause is not None else None) or str(cause or exc) or type(exc).__name__


def _first_choice(obj: dict) -> dict | None:
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return None


def _finish_reason(reason: object, url: str) -> str:
    if reason == "length":
        return "length"
    if reason in ("abort", "error"):
        raise BackendError(f"the model server at {url} aborted the generation", server=url)
    return "stop"  # "stop", "eos", a stop string, "tool_calls": the model ended its answer


def _raise_reported_error(obj: dict, url: str) -> None:
    """vLLM and SGLang report a failure inside a 200 stream as an event with an "error" field."""
    if "error" in obj or obj.get("object") == "error":
        detail = _error_detail(obj) or "no details"
        raise BackendError(f"the model server at {url} reported an error: {detail}", server=url)


def _parse_json(raw: bytes, what: str) -> object:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} is not JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from None
    except RecursionError:  # [[[[...]]]] deeper than the interpreter's stack: hostile, not a model's answer
        raise ValueError(f"{what} is JSON nested too deeply") from None


def _error_detail(body: bytes | dict) -> str:
    """The message out of an error body, in OpenAI's shape, vLLM's older flat shape or FastAPI's."""
    obj = body
    if isinstance(body, bytes):
        try:
            obj = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            text = body.decode("utf-8", errors="replace").strip()
            return one_line(text, limit=200) if text and not text.lstrip().startswith("<") else ""
    message: object = ""
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict):
            message = err.get("message", "")
        elif isinstance(err, str):
            message = err
        else:
            message = obj.get("message") or obj.get("detail") or ""
    return one_line(message, limit=200) if isinstance(message, str) else ""  # never str() of a hostile nested value
