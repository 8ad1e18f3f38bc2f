"""``surgview-engine serve``: any local Backend behind an OpenAI-compatible HTTP API.

POST /v1/chat/completions (streamed as server-sent events or whole), GET /v1/models, GET /health.
It takes the message shape :mod:`engine.backends.openai_backend` (and the Surg-R1 release's
clients) send: optional system text, then one user turn of text and at most one inline image.

A Starlette app served by uvicorn (HTTP/1.1, keep-alive, ``Expect: 100-continue`` and the
connection handling are theirs); the backends are synchronous, so parsing, image decoding and
generation run in worker threads and the pieces stream out through ``StreamingResponse``.

Safety: it listens on 127.0.0.1 unless told otherwise, and refuses any other address without a
bearer token (compared in constant time). Without a token it also refuses requests whose Host or
Origin is not loopback (a web page cannot reach it through DNS rebinding) and POST bodies that are
not application/json (a page cannot post a form to it). It never fetches image URLs. Generations
run one at a time (a backend is not assumed thread-safe), ``max_waiting`` queue behind and more
get 503; a client that disconnects (uvicorn's ``http.disconnect``) cancels its generation, queued
or running, streamed or not. Every answer is bounded by ``ServerConfig.limits`` (characters,
bytes, a no-progress deadline and an overall one), whatever the backend: a cut-off answer ends
with finish_reason "length". JSON nested too deeply for the parser is a 400; a body over
``max_body_bytes`` a 413 and a request on a connection over ``max_connections`` a 503 with
Retry-After, each answered after the unread body is read and dropped (so the client sees the
answer, not a reset).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hmac
import io
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import cv2
import numpy as np
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.backends.base import Backend, BackendError, GenerationRequest, StreamLimits, TextStream
from engine.clitools import CliError
from engine.prompts import IMAGE_PLACEHOLDER

__all__ = [
    "TOKEN_ENV",
    "EngineServer",
    "ServerConfig",
    "add_serve_arguments",
    "check_bind_address",
    "decode_image_data_url",
    "serve",
    "serve_main",
]

TOKEN_ENV = "SURGVIEW_SERVER_TOKEN"
MIN_TOKEN_CHARS = 16
log = logging.getLogger("surgview.server")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000  # 0 picks a free port (EngineServer.port says which)
    token: str | None = None  # when set, every request needs "Authorization: Bearer <token>"
    model_name: str | None = None  # the name clients use; default: the backend's model_id
    max_body_bytes: int = 20 << 20  # a request larger than this gets 413
    max_image_pixels: int = 40_000_000  # checked from the header, before decoding
    max_new_tokens_cap: int = 4096  # a client asking for more gets this many
    max_waiting: int = 8  # requests queued behind the running generation; more get 503
    queue_timeout_s: float = 600.0  # a request waiting longer for its turn gets 503
    max_connections: int = 64  # open connections; a request on one beyond them is answered 503
    socket_timeout_s: float = 60.0  # a client silent this long while sending a body gets 408; idle keep-alive ends
    limits: StreamLimits = field(default_factory=StreamLimits)  # every answer's bounds, whatever the client asks


class RequestError(Exception):
    """A request the server answers with an OpenAI-shaped error."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost" (names are not resolved: a name could point anywhere)."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind_address(host: str, token: str | None) -> None:
    """Refuse (ValueError) to listen beyond this machine without a token, or with a guessable one."""
    if token is not None and len(token.strip()) < MIN_TOKEN_CHARS:
        raise ValueError(f"the server token must be at least {MIN_TOKEN_CHARS} characters")
    if not is_loopback(host) and not token:
        raise ValueError(
            f"refusing to listen on {host}: other machines could use the model; "
            f"set a token (--token or {TOKEN_ENV}) or listen on 127.0.0.1"
        )


def decode_image_data_url(url: str, max_pixels: int = 40_000_000) -> np.ndarray:
    """An inline ``data:image/...;base64,`` URL → an RGB uint8 array. Remote URLs are refused, never fetched."""
    scheme = url[:8].lower()
    if scheme.startswith(("http:", "https:")):
        raise RequestError(400, "the server does not fetch image URLs; send the image inline as a base64 data URL")
    if not scheme.startswith("data:"):
        raise RequestError(400, "an image must be a base64 data URL (data:image/jpeg;base64,...)")
    header, comma, data = url.partition(",")
    media = header[5:].split(";")
    if not comma or "base64" not in (p.strip().lower() for p in media[1:]) or not media[0].lower().startswith("image/"):
        raise RequestError(400, "an image must be a base64 data URL (data:image/jpeg;base64,...)")
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, "the image data URL is not valid base64") from None
    try:
        with Image.open(io.BytesIO(raw)) as probe:  # reads the header only: a size check before decoding
            width, height = probe.size
    except Exception:  # Pillow raises several kinds for unreadable data (and its own bomb check)
        raise RequestError(400, "the image is not a readable JPEG, PNG or WebP") from None
    if width * height > max_pixels:
        raise RequestError(413, f"the image is {width}x{height}; the limit is {max_pixels} pixels")
    bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise RequestError(400, "the image is not a readable JPEG, PNG or WebP")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class EngineServer:
    """An OpenAI-compatible HTTP server over one Backend: a Starlette app (:attr:`app`) served by
    uvicorn. ``start()`` serves from a background thread; ``serve_forever()`` from the caller's;
    ``shutdown()`` stops and cancels what runs. The port is bound on construction (OSError there)."""

    def __init__(self, backend: Backend, config: ServerConfig = ServerConfig()):
        check_bind_address(config.host, config.token)
        self.backend = backend
        self.config = config
        self.model_name = config.model_name or backend.model_id
        self._token = config.token.encode("utf-8") if config.token else None
        self._turn = asyncio.Lock()  # one generation at a time (used on the server's event loop only)
        self._places = 0  # the running generation and those queued behind it
        self._active: set[threading.Event] = set()  # cancel events of every request past its body
        self._active_lock = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.host = config.host.strip().strip("[]")  # "[::1]" as written in URLs
        self.app = self._build_app()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._socket = socket.create_server((self.host, config.port), family=family, backlog=2048)
        self.port: int = self._socket.getsockname()[1]
        self._uvicorn = _Uvicorn(
            self,
            uvicorn.Config(
                self.app,
                http="h11",  # its unread-body handling is what _Guard relies on
                ws="none",
                lifespan="off",
                log_config=None,  # leave the process's logging alone
                log_level="warning",
                server_header=False,
                headers=[("server", "surgview-engine")],
                timeout_keep_alive=max(1, round(config.socket_timeout_s)),
                timeout_graceful_shutdown=5,
            ),
        )

    @property
    def origin(self) -> str:
        """``http://host:port``, where /health lives."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI base URL clients configure: ``http://host:port/v1``."""
        return self.origin + "/v1"

    def start(self) -> EngineServer:
        self._thread = threading.Thread(target=self.serve_forever, name="surgview-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._uvicorn.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        return self

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (or, in the main thread, SIGINT/SIGTERM: uvicorn stops
        gracefully and raises the signal again, so Ctrl-C ends as KeyboardInterrupt)."""
        self._uvicorn.run(sockets=[self._socket])

    def shutdown(self) -> None:
        self.cancel_all()
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._socket.close()

    def cancel_all(self) -> None:
        """Cancel every generation, running or queued (shutting down)."""
        self._stopping = True
        with self._active_lock:
            for cancel in self._active:
                cancel.set()

    def __enter__(self) -> EngineServer:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # -- requests ------------------------------------------------------------------------------

    def authorize(self, headers: Mapping[str, str]) -> None:
        """Check the token, or (without one) that the request comes from this machine's own pages."""
        if self._token is not None:
            scheme, _, given = (headers.get("Authorization") or "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("utf-8"), self._token):
                raise RequestError(401, "a valid bearer token is required", "authentication_error", "invalid_api_key")
            return
        host = headers.get("Host")
        if host is not None and not is_loopback(_host_part(host)):
            raise RequestError(403, "this server answers only requests addressed to localhost", "permission_error")
        origin = headers.get("Origin")
        if origin is not None and not is_loopback(urlsplit(origin).hostname or ""):  # "null" too (sandboxed pages)
            raise RequestError(403, "requests from web pages of other sites are refused", "permission_error")

    def check_capacity(self) -> None:
        """503 for a request on a connection beyond ``max_connections`` (uvicorn counts them open)."""
        if len(self._uvicorn.server_state.connections) > self.config.max_connections:
            raise RequestError(503, "the server is busy (too many connections); try again later", "server_busy")

    def parse_chat(self, body: dict) -> tuple[GenerationRequest, bool, bool]:
        """A chat-completions body → (request, stream?, include usage in the stream?)."""
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise RequestError(400, "model must be a string")
        if model not in (None, "", self.model_name, self.backend.model_id):
            raise RequestError(
                404, f"the model {model!r} does not exist; this server has {self.model_name!r}", code="model_not_found"
            )
        n = body.get("n", 1)
        if n not in (None, 1):
            raise RequestError(400, "only n=1 is supported")
        system, prompt, image = _parse_messages(body.get("messages"), self.config.max_image_pixels)
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is None:
            max_tokens = GenerationRequest.max_new_tokens
        elif not _is_int(max_tokens) or max_tokens < 1:
            raise RequestError(400, "max_tokens must be a positive integer")
        temperature = _number(body, "temperature", 0.0, 0.0, 2.0)
        top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
        if top_p <= 0:
            raise RequestError(400, "top_p must be greater than 0")
        seed = body.get("seed")
        if seed is not None and not _is_int(seed):
            raise RequestError(400, "seed must be an integer")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise RequestError(400, "stream must be true or false")
        options = body.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        request = GenerationRequest(
            prompt=prompt,
            image=image,
            system=system,
            max_new_tokens=min(max_tokens, self.config.max_new_tokens_cap),
            temperature=float(temperature),
            top_p=float(top_p),
            seed=seed,
            limits=self.config.limits,
        )
        return request, stream, usage

    def parse_body(self, raw: bytes) -> tuple[GenerationRequest, bool, bool]:
        """The raw body → :meth:`parse_chat`'s answer (JSON, images decoded: run in a worker thread)."""
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RequestError(400, "the body is not valid JSON") from None
        except RecursionError:
            raise RequestError(400, "the body is JSON nested too deeply") from None
        if not isinstance(body, dict):
            raise RequestError(400, "the body must be a JSON object")
        return self.parse_chat(body)

    # -- the app ---------------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        async def health(request: Request) -> JSONResponse:
            return JSONResponse({"status": "ok", "model": self.model_name})

        async def models(request: Request) -> JSONResponse:
            model = {"id": self.model_name, "object": "model", "created": 0, "owned_by": "surgview"}
            return JSONResponse({"object": "list", "data": [model]})

        async def not_routed(request: Request, exc: Exception) -> None:
            # Starlette's 404 / 405 become OpenAI-shaped errors (answered by _Guard).
            if isinstance(exc, HTTPException) and exc.status_code == 405:
                raise RequestError(405, f"{request.method} is not supported here")
            raise RequestError(404, f"no such endpoint: {request.url.path}")

        return Starlette(
            routes=[
                Route("/health", health, methods=["GET"]),
                Route("/v1/models", models, methods=["GET"]),
                Route("/v1/chat/completions", _ChatCompletions(self)),
            ],
            middleware=[Middleware(_Guard, engine=self)],
            exception_handlers={HTTPException: not_routed},
        )

    async def answer(
        self, scope: Scope, receive: Receive, send: Send, request: GenerationRequest, streaming: bool, usage: bool
    ) -> None:
        """Wait for this request's turn, generate in a worker thread, and send the answer; a client
        that disconnects (seen by a task awaiting uvicorn's ``http.disconnect``) cancels it."""
        cancel = threading.Event()
        current: list[TextStream] = []
        watcher = asyncio.ensure_future(_watch_disconnect(receive, cancel, current))
        with self._active_lock:
            self._active.add(cancel)
        try:
            await self._take_turn(watcher)
            try:
                if cancel.is_set():
                    raise self._cancelled()
                stream = await anyio.to_thread.run_sync(self._begin, request, cancel)
                current.append(stream)
                try:
                    if streaming:
                        await _stream_answer(self.model_name, stream, usage)(scope, receive, send)
                    else:
                        await self._whole_answer(scope, receive, send, stream)
                finally:
                    if not stream.finished:
                        # Stopped early (client gone, shutdown, a failed write): let the backend wind
                        # down before the next request takes its turn.
                        stream.cancel()
                        with anyio.CancelScope(shield=True):
                            await anyio.to_thread.run_sync(_drain, stream)
            finally:
                self._turn.release()
                self._places -= 1
        finally:
            watcher.cancel()
            with self._active_lock:
                self._active.discard(cancel)

    async def _take_turn(self, watcher: asyncio.Future) -> None:
        """Queue for the model (503 when the queue is full or the wait too long; _ClientGone when
        the client leaves while queued). On return this request holds the turn and a place."""
        if self._places > self.config.max_waiting:
            raise RequestError(503, "the server is busy; try again later", "server_busy")
        self._places += 1
        acquire = asyncio.ensure_future(self._turn.acquire())
        try:
            await asyncio.wait(
                {acquire, watcher}, timeout=self.config.queue_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not acquire.done():
                acquire.cancel()  # asyncio.Lock: a cancelled acquire never holds the lock
            elif not acquire.cancelled() and acquire.exception() is None and not watcher.done():
                return  # the turn is ours
            elif not acquire.cancelled() and acquire.exception() is None:
                self._turn.release()  # got it as the client left
            self._places -= 1
        if watcher.done():
            raise _ClientGone
        raise RequestError(503, "the server is busy; timed out waiting for a turn", "server_busy")

    def _cancelled(self) -> Exception:
        """Why a cancelled request ends: the client left (nothing to answer), or the server is stopping."""
        if self._stopping:
            return RequestError(503, "the server is shutting down; try again later", "server_busy")
        return _ClientGone()

    def _begin(self, request: GenerationRequest, cancel: threading.Event) -> TextStream:
        try:
            return _Bounded(self.backend.stream(request, cancel), cancel, self.config.limits)
        except BackendError as exc:
            raise RequestError(500, str(exc), "server_error") from None

    async def _whole_answer(self, scope: Scope, receive: Receive, send: Send, stream: TextStream) -> None:
        try:
            text = await anyio.to_thread.run_sync(_join, stream)
        except BackendError as exc:
            raise RequestError(500, str(exc), "server_error") from None
        if stream.cancelled:
            raise self._cancelled()
        tokens = stream.stats.tokens or (1 if text else 0)
        body = {
            "id": _completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": _finish(stream)}
            ],
            # The Backend interface does not report prompt length; 0 says "not counted".
            "usage": {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens},
        }
        await JSONResponse(body)(scope, receive, send)


class _Uvicorn(uvicorn.Server):
    def __init__(self, engine: EngineServer, config: uvicorn.Config):
        super().__init__(config)
        self._engine = engine

    async def shutdown(self, sockets=None) -> None:
        self._engine.cancel_all()  # generations end now rather than at the graceful-shutdown timeout
        await super().shutdown(sockets)


class _ClientGone(Exception):
    """The client closed its connection: stop working for it."""


_DRAIN_S = 2.0  # how long a refused request's body is read (and dropped) before the answer


class _Guard:
    """ASGI middleware in front of every route: the connection limit, the token or loopback-only
    check, methods, and every error as an OpenAI-shaped JSON answer. A refused request whose body
    was not read is read and dropped first (bounded in bytes and time; not under ``Expect:
    100-continue``, whose client has not sent it): closing a socket with unread data resets the
    connection, and the reset can destroy the answer before the client reads it."""

    def __init__(self, app: ASGIApp, engine: EngineServer):
        self.app = app
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = {"started": False, "received": False, "body_done": False}

        async def tracked_receive() -> Message:
            message = await receive()
            state["received"] = True
            if message["type"] != "http.request" or not message.get("more_body", False):
                state["body_done"] = True
            return message

        async def tracked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        headers = Headers(scope=scope)
        try:
            try:
                self.engine.check_capacity()
                self.engine.authorize(headers)
                if scope["method"] not in ("GET", "POST"):
                    raise RequestError(405, f"{scope['method']} is not supported here")
                await self.app(scope, tracked_receive, tracked_send)
            except RecursionError:  # a value nested just below the parser's limit, shown in a message
                raise RequestError(400, "the request is nested too deeply") from None
            except (RequestError, _ClientGone):
                raise
            except Exception:
                log.exception("internal error answering %s %s", scope["method"], scope["path"])
                raise RequestError(500, "internal server error", "server_error") from None
        except _ClientGone:
            return
        except RequestError as exc:
            if state["started"]:  # the status line is out; closing is all that is left to do
                return
            if not state["received"] and _has_body(headers) and "100-continue" not in headers.get("expect", "").lower():
                await self._discard_body(receive)
            await _error_response(exc)(scope, receive, send)

    async def _discard_body(self, receive: Receive) -> None:
        left = 4 * self.engine.config.max_body_bytes
        with anyio.move_on_after(_DRAIN_S):
            while left > 0:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
                left -= len(message.get("body", b""))


class _ChatCompletions:
    """POST /v1/chat/completions (an ASGI endpoint: it reads the body itself, with its limits)."""

    def __init__(self, engine: EngineServer):
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            raise RequestError(405, "use POST for chat completions")
        headers = Headers(scope=scope)
        kind = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind != "application/json":
            raise RequestError(415, "the body must be application/json")
        length = _content_length(headers, self.engine.config.max_body_bytes)
        raw = await _read_body(receive, length, self.engine.config.socket_timeout_s)
        request, streaming, usage = await anyio.to_thread.run_sync(self.engine.parse_body, raw)
        await self.engine.answer(scope, receive, send, request, streaming, usage)


def _has_body(headers: Headers) -> bool:
    return bool(headers.get("Transfer-Encoding")) or (headers.get("Content-Length") or "0").strip() not in ("", "0")


def _content_length(headers: Headers, max_body: int) -> int:
    if headers.get("Transfer-Encoding"):
        raise RequestError(411, "send the body with a Content-Length (chunked uploads are not supported)")
    raw = headers.get("Content-Length")
    if raw is None or not raw.strip().isdigit():
        raise RequestError(411, "a Content-Length is required")
    length = int(raw)
    if length > max_body:
        raise RequestError(413, f"the request is larger than {max_body} bytes")
    return length


async def _read_body(receive: Receive, length: int, timeout_s: float) -> bytes:
    """The whole body (h11 holds the client to its Content-Length); a client silent for
    ``timeout_s`` while sending it gets 408, one that leaves is gone."""
    parts: list[bytes] = []
    while True:
        with anyio.move_on_after(timeout_s) as waited:
            message = await receive()
        if waited.cancelled_caught:
            raise RequestError(408, f"the request body did not arrive within {timeout_s:g} s")
        if message["type"] == "http.disconnect":
            raise _ClientGone
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _watch_disconnect(receive: Receive, cancel: threading.Event, current: list[TextStream]) -> None:
    """Cancel the generation when the client closes its connection, without waiting for a write
    (uvicorn drops writes to a closed connection silently). After the body, uvicorn's receive()
    returns only ``http.disconnect``: on a disconnect, or once the response is complete."""
    while (await receive())["type"] != "http.disconnect":
        pass
    cancel.set()
    for stream in current:
        stream.cancel()


def _error_response(exc: RequestError) -> JSONResponse:
    error = {"message": exc.message, "type": exc.kind, "param": None, "code": exc.code}
    headers = {"Connection": "close"}  # simplest after an error: nothing half-read is left to confuse
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="surgview"'
    if exc.status == 503:
        headers["Retry-After"] = "1"
    return JSONResponse({"error": error}, exc.status, headers)


def _stream_answer(model: str, stream: TextStream, usage: bool) -> StreamingResponse:
    """The answer as server-sent events; each piece is taken from the stream in a worker thread."""
    ident, created = _completion_id(), int(time.time())

    def chunk(delta: dict, finish: str | None = None) -> dict:
        return {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def event(obj: dict) -> bytes:
        return b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n"

    def error(message: str) -> bytes:
        return event({"error": {"message": message, "type": "server_error", "param": None, "code": None}})

    async def events() -> AsyncIterator[bytes]:
        yield event(chunk({"role": "assistant", "content": ""}))
        pieces = 0
        while True:
            try:
                piece = await anyio.to_thread.run_sync(next, stream, None)
            except BackendError as exc:
                yield error(str(exc))
                return
            except Exception:
                log.exception("the backend failed mid-stream")
                yield error("internal server error")
                return
            if piece is None:
                break
            if piece:
                pieces += 1
                yield event(chunk({"content": piece}))
        if stream.cancelled:  # the client left (its writes go nowhere) or the server is stopping
            return  # no finish reason and no [DONE]: the client reads the answer as cut short
        yield event(chunk({}, _finish(stream)))
        if usage:
            tokens = stream.stats.tokens or pieces
            final = chunk({})
            final["choices"] = []
            final["usage"] = {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens}
            yield event(final)
        yield b"data: [DONE]\n\n"

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), headers=headers, media_type="text/event-stream; charset=utf-8")


class _Bounded(TextStream):
    """The server's bounds over whatever the backend streams: a backend of ours applies the
    request's limits itself, another one may not. It shares the request's cancel event (a client
    gone or a shutdown still reads as cancelled); a bound that is hit halts the backend's stream."""

    def __init__(self, inner: TextStream, cancel: threading.Event, limits: StreamLimits):
        self._inner = inner
        super().__init__(self._relay(), cancel, limits, source=inner.source, server=inner.server)

    def cancel(self) -> None:
        super().cancel()
        self._inner.cancel()

    def _halt(self) -> None:
        super()._halt()
        self._inner._halt()

    def _relay(self) -> Iterator[str]:
        inner = self._inner
        try:
            yield from inner
        finally:
            self.stats.tokens = inner.stats.tokens
            if not inner.finished:  # cut here: release the backend's producer now
                inner._halt()
                inner._close_source()
        self.stats.finish_reason, self.stats.cut_off = inner.stats.finish_reason, inner.stats.cut_off


def _parse_messages(messages: object, max_pixels: int) -> tuple[str | None, str, np.ndarray | None]:
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages must be a non-empty list")
    system: list[str] = []
    user: list[str] | None = None
    image: np.ndarray | None = None
    for message in messages:
        if not isinstance(message, dict):
            raise RequestError(400, "each message must be an object")
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            if user is not None:
                raise RequestError(400, "system messages must come before the user message")
            system.extend(_text_parts(content, role, allow_image=False)[0])
        elif role == "user":
            if user is not None:
                raise RequestError(400, "one user message per request: the engine answers one question about one frame")
            user, images = _text_parts(content, role, allow_image=True)
            user = _with_image_placeholder(content, user, images)
            if len(images) > 1:
                raise RequestError(400, "at most one image per request")
            image = decode_image_data_url(images[0], max_pixels) if images else None
        elif role == "assistant":
            raise RequestError(400, "multi-turn chats are not supported: send a system and a user message")
        else:
            raise RequestError(400, f"unsupported message role {_shown(role)}")
    if user is None:
        raise RequestError(400, "no user message")
    return ("\n".join(system) or None), "\n".join(user), image


def _with_image_placeholder(content: object, texts: list[str], images: list[str]) -> list[str]:
    """The user's text with "<image>" where the image part stands (the Surg-R1 release asks
    "Given the ... image <image>, which ..."), so the model sees the frame where it was trained to.
    An image before all text needs no marker: the backend puts a frame without one first."""
    if not images or not isinstance(content, list) or content[0].get("type") == "image_url":
        return texts
    joined = ""
    for part in content:
        if part.get("type") == "text":
            joined += part["text"]
        else:
            joined += IMAGE_PLACEHOLDER
    return [joined]


def _text_parts(content: object, role: str, allow_image: bool) -> tuple[list[str], list[str]]:
    """A message's content (a string, or a list of text and image_url parts) → (texts, image URLs)."""
    if isinstance(content, str):
        return [content], []
    if not isinstance(content, list):
        raise RequestError(400, f"the {role} message's content must be a string or a list of parts")
    texts: list[str] = []
    images: list[str] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and allow_image:
            ref = part.get("image_url")
            url = ref.get("url") if isinstance(ref, dict) else ref
            if not isinstance(url, str):
                raise RequestError(400, "an image_url part needs a url")
            images.append(url)
        elif kind == "image_url":
            raise RequestError(400, f"images belong in the user message, not the {role} message")
        else:
            raise RequestError(400, f"unsupported content part {_shown(kind)}; use text and image_url parts")
    return texts, images


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(body: dict, name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise RequestError(400, f"{name} must be a number from {low:g} to {high:g}")
    return float(value)


def _shown(value: object) -> str:
    """A client's value for an error message: short, and never repr() of a hostile nested structure."""
    if value is None or isinstance(value, bool | int | float):
        return repr(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "…")
    return f"of type {type(value).__name__}"


def _host_part(host: str) -> str:
    """The host name of a Host header, without the port ("[::1]:8000" → "::1")."""
    host = host.strip()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() else host


def _finish(stream: TextStream) -> str:
    """OpenAI's finish reasons: a cut-off answer (token cap, a size bound, a deadline) is "length"."""
    return "length" if stream.stats.finish_reason in ("length", "timeout") else "stop"


def _completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def _join(stream: TextStream) -> str:
    return "".join(stream)


def _drain(stream: TextStream) -> None:
    try:
        for _ in stream:
            pass
    except Exception:  # the generation is being abandoned; its errors are of no use now
        pass


def serve(
    backend: Backend,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    **options,
) -> EngineServer:
    """Serve ``backend`` from a background thread and return the running server.

    ``options`` are further :class:`ServerConfig` fields. Raises ValueError for an address that
    needs a token, OSError when the port cannot be bound."""
    return EngineServer(backend, ServerConfig(host=host, port=port, token=token, **options)).start()


# -- command line ------------------------------------------------------------------------------


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` subcommand's options (the caller sets ``func``; see :func:`serve_main`)."""
    parser.add_argument("--model", required=True, metavar="DIR", help="the model directory to serve")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0 picks a free one)")
    parser.add_argument(
        "--token",
        default=None,
        help=f"require 'Authorization: Bearer TOKEN' (needed for a non-loopback --host); "
        f"prefer the environment variable {TOKEN_ENV}, which other users cannot see in the process list",
    )
    parser.add_argument(
        "--served-model-name",
        default=None,
        metavar="NAME",
        help="the model name clients send (default: the backend's model id)",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=ServerConfig.max_new_tokens_cap,
        metavar="N",
        help=f"cap on max_tokens a client may ask for (default {ServerConfig.max_new_tokens_cap})",
    )


def serve_main(args: argparse.Namespace, load_backend: Callable[[str], Backend]) -> int:
    """Run ``serve`` until Ctrl-C or SIGTERM. ``load_backend`` turns --model into a loaded Backend."""
    token = args.token or os.environ.get(TOKEN_ENV) or None
    try:
        check_bind_address(args.host, token)  # before the model loads: fail in a second, not a minute
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.max_tokens < 1:
        raise CliError("--max-tokens must be at least 1")
    try:
        backend = load_backend(args.model)
    except BackendError as exc:
        raise CliError(str(exc)) from None
    try:
        config = ServerConfig(
            host=args.host,
            port=args.port,
            token=token,
            model_name=args.served_model_name,
            max_new_tokens_cap=args.max_tokens,
        )
        try:
            server = EngineServer(backend, config)
        except OSError as exc:
            raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
        _stop_on_sigterm()
        print(f"serving {server.model_name} at {server.url} (Ctrl-C to stop)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
        print("stopped", flush=True)
        return 0
    finally:
        backend.close()


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {port}")
    return port


def _stop_on_sigterm() -> None:
    """Let a service manager's SIGTERM stop the server as Ctrl-C does."""

    def _interrupt(signum, frame):
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not the main thread (e.g. called from a test): leave signals alone
        signal.signal(signal.SIGTERM, _interrupt)
