"""``surgview-engine serve``: any local Backend behind an OpenAI-compatible HTTP API.

POST /v1/chat/completions (streamed as server-sent events or whole), GET /v1/models, GET /health.
It takes the message shape :mod:`engine.backends.openai_backend` (and the Surg-R1 release's
clients) send: optional system text, then one user turn of text and at most one inline image.

Safety: it listens on 127.0.0.1 unless told otherwise, and refuses any other address without a
bearer token. Without a token it also refuses requests whose Host or Origin is not loopback (a
web page cannot reach it through DNS rebinding) and POST bodies that are not application/json
(a page cannot post a form to it). It never fetches image URLs. Generations run one at a time
(a backend is not assumed thread-safe); a client that disconnects cancels its generation.
Every answer is bounded by ``ServerConfig.limits`` (characters, bytes, a no-progress deadline and
an overall one), whatever the backend: a cut-off answer ends with finish_reason "length". JSON
nested too deeply for the parser is a 400; a connection over ``max_connections`` gets a 503
answer (its request read and dropped first, so the client sees the answer, not a reset).
"""

from __future__ import annotations

import argparse
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
import selectors
import signal
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import cv2
import numpy as np
from PIL import Image

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
    max_connections: int = 64  # open connections (one thread each); more are answered 503
    socket_timeout_s: float = 60.0  # a client silent this long while sending a request is dropped
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
    """An OpenAI-compatible HTTP server over one Backend. ``start()`` serves from a background
    thread; ``serve_forever()`` from the caller's; ``shutdown()`` stops and cancels what runs."""

    def __init__(self, backend: Backend, config: ServerConfig = ServerConfig()):
        check_bind_address(config.host, config.token)
        self.backend = backend
        self.config = config
        self.model_name = config.model_name or backend.model_id
        self._token = config.token.encode("utf-8") if config.token else None
        self._turn = threading.Lock()  # one generation at a time
        self._places = threading.BoundedSemaphore(config.max_waiting + 1)  # the running one and its queue
        self._active: set[threading.Event] = set()
        self._active_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.host = config.host.strip().strip("[]")  # "[::1]" as written in URLs
        server_class = _HTTPServer6 if ":" in self.host else _HTTPServer
        self._httpd = server_class((self.host, config.port), _Handler, engine=self)
        self.port: int = self._httpd.server_address[1]

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
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.1,), name="surgview-server", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def shutdown(self) -> None:
        with self._active_lock:
            for cancel in self._active:
                cancel.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> EngineServer:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # -- requests ------------------------------------------------------------------------------

    def authorize(self, headers) -> None:
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

    def begin(self, request: GenerationRequest, cancel: threading.Event) -> TextStream:
        """Wait for this request's turn and start it; the caller must call :meth:`end`."""
        if not self._places.acquire(blocking=False):
            raise RequestError(503, "the server is busy; try again later", "server_busy")
        try:
            if not self._turn.acquire(timeout=self.config.queue_timeout_s):
                raise RequestError(503, "the server is busy; timed out waiting for a turn", "server_busy")
        except BaseException:
            self._places.release()
            raise
        try:
            if cancel.is_set():
                raise _ClientGone
            with self._active_lock:
                self._active.add(cancel)
            try:
                return _Bounded(self.backend.stream(request, cancel), cancel, self.config.limits)
            except BackendError as exc:
                raise RequestError(500, str(exc), "server_error") from None
        except BaseException:
            self.end(cancel)
            raise

    def end(self, cancel: threading.Event) -> None:
        with self._active_lock:
            self._active.discard(cancel)
        self._turn.release()
        self._places.release()


class _ClientGone(Exception):
    """The client closed its connection: stop working for it."""


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


_REFUSERS = 16  # connections over the limit being answered 503 at once; beyond that they are just closed
_REFUSE_LINGER_S = 2.0
_BUSY_BODY = json.dumps(
    {"error": {"message": "the server is busy (too many connections); try again later", "type": "server_busy"}}
).encode()
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address, handler, engine: EngineServer):
        self.engine = engine
        self._connections = threading.BoundedSemaphore(engine.config.max_connections)
        self._refusers = threading.BoundedSemaphore(_REFUSERS)
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host up in DNS (getfqdn); nothing here needs the name.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def process_request(self, request, client_address) -> None:
        if not self._connections.acquire(blocking=False):
            if self._refusers.acquire(blocking=False):
                threading.Thread(target=self._refuse, args=(request,), name="surgview-server-busy", daemon=True).start()
            else:  # a flood: answer what fits in the socket buffer and close
                with contextlib.suppress(OSError):
                    request.setblocking(False)
                    request.sendall(_BUSY)
                self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def _refuse(self, request: socket.socket) -> None:
        """503, then read and drop the request a while before closing: closing a socket with unread
        data sends a reset, which can destroy the answer before the client reads it."""
        try:
            request.settimeout(0.5)
            request.sendall(_BUSY)
            request.shutdown(socket.SHUT_WR)
            deadline, left = time.monotonic() + _REFUSE_LINGER_S, 4 * self.engine.config.max_body_bytes
            while time.monotonic() < deadline and left > 0:
                data = request.recv(1 << 16)
                if not data:  # the client read the answer and closed
                    break
                left -= len(data)
        except OSError:
            pass
        finally:
            self.shutdown_request(request)
            self._refusers.release()

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._connections.release()


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "surgview-engine"
    sys_version = ""

    def setup(self) -> None:
        self.timeout = self.server.engine.config.socket_timeout_s
        super().setup()
        self._responded = False
        self._body_read = False

    @property
    def engine(self) -> EngineServer:
        return self.server.engine

    def log_message(self, format: str, *args) -> None:
        log.info("%s %s", self.address_string(), format % args)

    # -- routing -------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch(self._get)

    def do_POST(self) -> None:
        self._dispatch(self._post)

    def _not_allowed(self) -> None:
        self._dispatch(lambda: self._raise(RequestError(405, f"{self.command} is not supported here")))

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _not_allowed

    def handle_expect_100(self) -> bool:
        # Refuse before the client sends a large body it may not send.
        self._body_read = False
        try:
            self.engine.authorize(self.headers)
            self._content_length()
        except RequestError as exc:
            self._send_error(exc)
            return False
        return super().handle_expect_100()

    def _dispatch(self, route: Callable[[], None]) -> None:
        self._body_read = False
        try:
            self.engine.authorize(self.headers)
            route()
        except RequestError as exc:
            self._send_error(exc)
        except _ClientGone:
            self.close_connection = True
        except RecursionError:  # a value nested just below the parser's limit, shown in a message
            self._send_error(RequestError(400, "the request is nested too deeply"))
        except Exception:
            log.exception("internal error answering %s %s", self.command, self.path)
            self._send_error(RequestError(500, "internal server error", "server_error"))

    @staticmethod
    def _raise(exc: Exception) -> None:
        raise exc

    def _get(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/health":
            self._send_json(200, {"status": "ok", "model": self.engine.model_name})
        elif path == "/v1/models":
            model = {"id": self.engine.model_name, "object": "model", "created": 0, "owned_by": "surgview"}
            self._send_json(200, {"object": "list", "data": [model]})
        elif path == "/v1/chat/completions":
            raise RequestError(405, "use POST for chat completions")
        else:
            raise RequestError(404, f"no such endpoint: {path}")

    def _post(self) -> None:
        path = self.path.split("?", 1)[0]
        if path != "/v1/chat/completions":
            self.close_connection = True  # its body stays unread
            raise RequestError(404, f"no such endpoint: {path}")
        body = self._read_json()
        request, streaming, usage = self.engine.parse_chat(body)
        cancel = threading.Event()
        watcher = _DisconnectWatcher(self.connection, cancel)
        try:
            stream = self.engine.begin(request, cancel)
            try:
                watcher.stream = stream
                if streaming:
                    self._stream_answer(stream, usage)
                else:
                    self._whole_answer(stream)
            except BaseException:
                # Stopped early (client gone, a failed write): let the backend wind down before the
                # next request takes its turn.
                stream.cancel()
                _drain(stream)
                raise
            finally:
                self.engine.end(cancel)
        finally:
            watcher.stop()

    # -- bodies --------------------------------------------------------------------------------

    def _content_length(self) -> int:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise RequestError(411, "send the body with a Content-Length (chunked uploads are not supported)")
        raw = self.headers.get("Content-Length")
        if raw is None or not raw.strip().isdigit():
            self.close_connection = True
            raise RequestError(411, "a Content-Length is required")
        length = int(raw)
        if length > self.engine.config.max_body_bytes:
            self.close_connection = True
            raise RequestError(413, f"the request is larger than {self.engine.config.max_body_bytes} bytes")
        return length

    def _read_json(self) -> dict:
        kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if kind != "application/json":
            self.close_connection = True
            raise RequestError(415, "the body must be application/json")
        length = self._content_length()
        self._body_read = True
        try:
            raw = self.rfile.read(length)
        except OSError:
            raise _ClientGone from None
        if len(raw) < length:
            raise _ClientGone
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RequestError(400, "the body is not valid JSON") from None
        except RecursionError:
            raise RequestError(400, "the body is JSON nested too deeply") from None
        if not isinstance(body, dict):
            raise RequestError(400, "the body must be a JSON object")
        return body

    def _whole_answer(self, stream: TextStream) -> None:
        try:
            text = "".join(stream)
        except BackendError as exc:
            raise RequestError(500, str(exc), "server_error") from None
        if stream.cancelled:
            raise _ClientGone
        tokens = stream.stats.tokens or (1 if text else 0)
        self._send_json(
            200,
            {
                "id": _completion_id(),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.engine.model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": _finish(stream),
                    }
                ],
                # The Backend interface does not report prompt length; 0 says "not counted".
                "usage": {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens},
            },
        )

    def _stream_answer(self, stream: TextStream, usage: bool) -> None:
        ident, created, model = _completion_id(), int(time.time()), self.engine.model_name

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        self._responded = True
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Accel-Buffering", "no")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self._end_headers()
        self._event(chunk({"role": "assistant", "content": ""}))
        pieces = 0
        try:
            for piece in stream:
                if piece:
                    pieces += 1
                    self._event(chunk({"content": piece}))
        except BackendError as exc:
            self._event({"error": {"message": str(exc), "type": "server_error", "param": None, "code": None}})
            self._write_chunk(b"")
            return
        except Exception:
            log.exception("the backend failed mid-stream")
            self._event(
                {"error": {"message": "internal server error", "type": "server_error", "param": None, "code": None}}
            )
            self._write_chunk(b"")
            return
        if stream.cancelled:
            raise _ClientGone
        self._event(chunk({}, _finish(stream)))
        if usage:
            tokens = stream.stats.tokens or pieces
            final = chunk({})
            final["choices"] = []
            final["usage"] = {"prompt_tokens": 0, "completion_tokens": tokens, "total_tokens": tokens}
            self._event(final)
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")

    # -- writing -------------------------------------------------------------------------------

    def _event(self, obj: dict) -> None:
        self._write_chunk(b"data: " + json.dumps(obj, ensure_ascii=False).encode("utf-8") + b"\n\n")

    def _write_chunk(self, data: bytes) -> None:
        """One piece of a chunked body (empty: the last one). A write that fails means the client left."""
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        except OSError:
            raise _ClientGone from None

    def _end_headers(self) -> None:
        try:
            self.end_headers()
        except OSError:
            raise _ClientGone from None

    def _send_json(self, status: int, obj: dict) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self._responded = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="surgview"')
        if self.close_connection:
            self.send_header("Connection", "close")
        self._end_headers()
        try:
            self.wfile.write(data)
        except OSError:
            raise _ClientGone from None

    def _send_error(self, exc: RequestError) -> None:
        self.close_connection = True  # simplest after an error: nothing half-read is left to confuse
        if self._responded:  # the status line is out; closing is all that is left to do
            return
        error = {"message": exc.message, "type": exc.kind, "param": None, "code": exc.code}
        try:
            self._send_json(exc.status, {"error": error})
        except _ClientGone:
            return
        if not self._body_read and (self.headers.get("Content-Length") or self.headers.get("Transfer-Encoding")):
            self._linger()

    def _linger(self) -> None:
        """Let a client still sending the body we refused read our answer: closing a socket with
        unread data resets the connection, and the reset can destroy the answer in flight."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(1.0)
            deadline, discarded = time.monotonic() + 2.0, 0
            while time.monotonic() < deadline and discarded < 4 * self.engine.config.max_body_bytes:
                data = self.rfile.read1(1 << 16)
                if not data:
                    break
                discarded += len(data)
        except OSError:
            pass


class _DisconnectWatcher:
    """Cancels the generation when the client closes its connection, without waiting for a write to fail."""

    def __init__(self, sock: socket.socket, cancel: threading.Event):
        self._sock = sock
        self._cancel = cancel
        self._stop = threading.Event()
        self.stream: TextStream | None = None
        self._thread = threading.Thread(target=self._run, name="surgview-server-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._sock, selectors.EVENT_READ)
            while not self._stop.is_set():
                if not sel.select(timeout=0.05):
                    continue
                try:
                    gone = self._sock.recv(1, socket.MSG_PEEK) == b""
                except BlockingIOError:
                    continue
                except OSError:
                    gone = True
                if gone:
                    self._cancel.set()
                    if self.stream is not None:
                        self.stream.cancel()
                return  # a pipelined request waits in the socket: nothing more to learn here

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)


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
