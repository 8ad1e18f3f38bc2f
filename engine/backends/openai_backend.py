"""A client for an OpenAI-compatible chat-completions server (vLLM, SGLang, ``surgview-engine serve``).

For users who outgrow one machine: the model runs on a GPU server (the Surg-R1 release serves
on port 8000) and surgview streams its answers over HTTP. Standard library only (http.client):
one connection per generation, so cancelling is closing that connection, which a server such
as vLLM takes as the signal to abort the request. Nothing touches the network until a stream
starts or :meth:`OpenAIBackend.check` is called.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import ssl
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import cv2
import numpy as np

from engine.backends.base import Backend, BackendError, GenerationRequest, TextStream

__all__ = ["OpenAIBackend", "OpenAIConfig", "encode_image_data_url"]

MAX_LINE_BYTES = 1 << 20  # one SSE line; a chunk of a few tokens is far smaller
MAX_JSON_BYTES = 16 << 20  # a whole (non-streamed) answer or an error body
_CANCEL_POLL_S = 0.05  # how often a stream notices a cancel event set without stream.cancel()


@dataclass(frozen=True)
class OpenAIConfig:
    base_url: str  # e.g. "http://127.0.0.1:8000/v1"; the API paths are appended to it
    model: str  # the server's name for the model (vLLM: --served-model-name)
    api_key: str | None = None  # sent as "Authorization: Bearer <key>"
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 300.0  # longest silence between bytes (time to first token included)
    jpeg_quality: int = 90
    stream_usage: bool = True  # ask for the server's token count (stream_options.include_usage)


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
    """Streams chat completions from an OpenAI-compatible server; see :class:`OpenAIConfig`."""

    name = "openai"

    def __init__(self, config: OpenAIConfig):
        parts = urlsplit(config.base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BackendError(f"the server URL must look like http://HOST:PORT/v1, got {config.base_url!r}")
        if parts.username or parts.password:
            raise BackendError("put the server's key in the API key setting, not in the URL")
        try:
            self._port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise BackendError(f"bad port in the server URL {config.base_url!r}") from None
        if not config.model.strip():
            raise BackendError("no model name given for the OpenAI-compatible server")
        self.config = config
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._netloc = parts.netloc
        self._prefix = parts.path.rstrip("/")
        self._url = f"{parts.scheme}://{parts.netloc}{self._prefix}"
        self._streams: weakref.WeakSet[_SSEStream] = weakref.WeakSet()

    @property
    def model_id(self) -> str:
        return f"openai:{self.config.model}@{self._netloc}"

    @property
    def device(self) -> str:
        return f"remote:{self._netloc}"

    def check(self) -> list[str]:
        """Ask the server which models it serves (GET /models); fail unless ours is among them."""
        conn = self._connection()
        try:
            conn.request("GET", self._prefix + "/models", headers=self._headers(json_body=False))
            resp = conn.getresponse()
            if resp.status != 200:
                raise self._http_error(resp)
            body = _parse_json(_read_limited(resp, MAX_JSON_BYTES), "the model list")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise self._transport_error(exc) from None
        finally:
            conn.close()
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise BackendError(f"the server at {self._url} sent a malformed model list")
        ids = [str(m["id"]) for m in data if isinstance(m, dict) and "id" in m]
        if self.config.model not in ids:
            served = ", ".join(ids) or "nothing"
            raise BackendError(f"the server at {self._url} does not serve {self.config.model!r}; it serves: {served}")
        return ids

    def stream(self, request: GenerationRequest, cancel: threading.Event | None = None) -> TextStream:
        body = json.dumps(self._payload(request)).encode("utf-8")  # the image is encoded now: errors come early
        stream = _SSEStream(self, body, request.max_new_tokens, cancel)
        self._streams.add(stream)
        return stream

    def close(self) -> None:
        for stream in list(self._streams):
            stream.cancel()

    # -- request -------------------------------------------------------------------------------

    def _payload(self, request: GenerationRequest) -> dict:
        content: list[dict] = []
        if request.image is not None:
            url = encode_image_data_url(request.image, self.config.jpeg_quality)
            content.append({"type": "image_url", "image_url": {"url": url}})
        content.append({"type": "text", "text": request.prompt})
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
        headers = {"Accept": "text/event-stream, application/json", "User-Agent": "surgview"}
        if json_body:
            headers["Content-Type"] = "application/json"
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        return headers

    def _connection(self) -> http.client.HTTPConnection:
        if self._https:
            return _TimedHTTPSConnection(
                self._host,
                self._port,
                timeout=self.config.connect_timeout_s,
                read_timeout=self.config.read_timeout_s,
                context=ssl.create_default_context(),
            )
        return _TimedHTTPConnection(
            self._host, self._port, timeout=self.config.connect_timeout_s, read_timeout=self.config.read_timeout_s
        )

    # -- errors --------------------------------------------------------------------------------

    def _transport_error(self, exc: BaseException) -> BackendError:
        if isinstance(exc, BackendError):
            return exc
        if isinstance(exc, ConnectionRefusedError):
            return BackendError(f"no model server at {self._url} (connection refused)")
        if isinstance(exc, socket.gaierror):
            return BackendError(f"cannot find the model server host {self._host!r} ({exc.strerror or exc})")
        if isinstance(exc, TimeoutError):
            return BackendError(f"the model server at {self._url} did not answer in time")
        if isinstance(exc, ssl.SSLError):
            return BackendError(f"TLS failed with the model server at {self._url}: {exc.reason or exc}")
        if isinstance(exc, http.client.RemoteDisconnected):
            return BackendError(f"the server at {self._url} closed the connection without answering")
        if isinstance(exc, http.client.BadStatusLine | http.client.LineTooLong):
            return BackendError(f"the server at {self._url} does not speak HTTP as expected ({type(exc).__name__})")
        if isinstance(exc, http.client.IncompleteRead | ConnectionResetError | BrokenPipeError):
            return BackendError(f"the model server at {self._url} closed the connection mid-answer")
        if isinstance(exc, OSError):
            return BackendError(f"cannot reach the model server at {self._url}: {exc.strerror or exc}")
        return BackendError(f"the model server at {self._url} sent malformed data: {exc}")

    def _http_error(self, resp: http.client.HTTPResponse) -> BackendError:
        status = resp.status
        try:
            detail = _error_detail(_read_limited(resp, 64 << 10))
        except (OSError, http.client.HTTPException, ValueError):
            detail = ""
        said = f": {detail}" if detail else ""
        if status in (401, 403):
            if self.config.api_key:
                return BackendError(f"the server at {self._url} refused the token (HTTP {status}){said}")
            return BackendError(f"the server at {self._url} requires a token (HTTP {status}); set the API key")
        if status == 404:
            return BackendError(
                f"model {self.config.model!r} not found at {self._url} (HTTP 404){said}; "
                "check the model name and that the URL ends in /v1"
            )
        if status == 413:
            return BackendError(f"the server at {self._url} refused the request as too large (HTTP 413)")
        if 400 <= status < 500:
            return BackendError(f"the server at {self._url} rejected the request (HTTP {status}){said}")
        if status in (502, 503, 504):
            return BackendError(f"the model server at {self._url} is unavailable or busy (HTTP {status}){said}")
        return BackendError(f"the model server at {self._url} failed (HTTP {status}){said}")


class _ReadTimeout:
    """Connect with one timeout, then wait for data with another (a model may think for minutes)."""

    def __init__(self, *args, read_timeout: float, **kwargs):
        super().__init__(*args, **kwargs)
        self._read_timeout = read_timeout

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self._read_timeout)


class _TimedHTTPConnection(_ReadTimeout, http.client.HTTPConnection):
    pass


class _TimedHTTPSConnection(_ReadTimeout, http.client.HTTPSConnection):
    pass


class _SSEStream(TextStream):
    """A TextStream over one HTTP response of server-sent events; cancel shuts its socket down."""

    def __init__(self, backend: OpenAIBackend, body: bytes, max_pieces: int, cancel: threading.Event | None):
        self._backend = backend
        self._body = body
        self._max_pieces = max_pieces
        self._conn: http.client.HTTPConnection | None = None
        self._conn_lock = threading.Lock()
        self._ended = threading.Event()
        self._counting_chunks = True  # until the server reports usage, one content chunk counts as one token
        super().__init__(self._generate(), cancel)

    def cancel(self) -> None:
        super().cancel()
        self._abort()

    def _abort(self) -> None:
        # shutdown() wakes a reader blocked in recv() on another thread; close() alone would not.
        with self._conn_lock:
            sock = self._conn.sock if self._conn is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _watch_cancel(ref: weakref.ref[_SSEStream], cancel: threading.Event, ended: threading.Event) -> None:
        # A caller may set the event it passed to stream() instead of calling cancel(). Only a weak
        # reference is held, so an abandoned stream is still collected (which closes its connection).
        while not ended.is_set():
            if cancel.wait(_CANCEL_POLL_S):
                stream = ref()
                if stream is not None:
                    stream._abort()
                return

    def _generate(self) -> Iterator[str]:
        if self.cancelled:
            return
        backend = self._backend
        conn = backend._connection()
        with self._conn_lock:
            self._conn = conn
        watch_args = (weakref.ref(self), self.cancel_event, self._ended)
        threading.Thread(target=self._watch_cancel, args=watch_args, name="surgview-openai-cancel", daemon=True).start()
        resp = None
        try:
            conn.request("POST", backend._prefix + "/chat/completions", body=self._body, headers=backend._headers())
            self._body = b""
            if self.cancelled:
                return
            resp = conn.getresponse()
            if resp.status != 200:
                raise backend._http_error(resp)
            kind = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
            if kind == "text/event-stream":
                yield from self._read_events(resp)
            elif kind == "application/json":  # a server that ignores "stream": one whole answer
                yield from self._read_whole(resp)
            else:
                raise BackendError(
                    f"the server at {backend._url} sent {kind or 'an untyped body'}, not server-sent events"
                )
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if self.cancelled:
                return
            raise backend._transport_error(exc) from None
        finally:
            self._ended.set()
            with self._conn_lock:
                if resp is not None:
                    resp.close()
                conn.close()

    def _read_events(self, resp: http.client.HTTPResponse) -> Iterator[str]:
        data: list[str] = []
        finish: str | None = None
        pieces = 0
        done = False
        while not done:
            raw = resp.readline(MAX_LINE_BYTES + 1)
            if self.cancelled:
                return
            if len(raw) > MAX_LINE_BYTES:
                raise self._malformed("a line of more than 1 MiB")
            done = not raw  # the end of the body dispatches what is pending, like a blank line
            line = raw.rstrip(b"\r\n").decode("utf-8", errors="replace")
            if line.startswith(":"):  # an SSE comment, e.g. a keep-alive
                continue
            if line:
                field, colon, value = line.partition(":")
                if not colon or field not in ("data", "event", "id", "retry"):
                    raise self._malformed(f"{line[:60]!r} is not a server-sent event")
                if field == "data":
                    data.append(value[1:] if value.startswith(" ") else value)
                continue
            if not data:
                continue
            payload, data = "\n".join(data), []
            if payload == "[DONE]":
                break
            chunk = _parse_json(payload.encode("utf-8"), "an event")
            if not isinstance(chunk, dict):
                raise self._malformed("an event that is not a JSON object")
            _raise_reported_error(chunk, self._backend._url)
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
            if choice.get("finish_reason"):
                finish = _finish_reason(choice["finish_reason"], self._backend._url)
        else:
            if finish is None:  # the body ended with neither [DONE] nor a finish_reason
                raise BackendError(f"the model server at {self._backend._url} closed the stream before the end")
        self.stats.finish_reason = finish or "stop"

    def _read_whole(self, resp: http.client.HTTPResponse) -> Iterator[str]:
        answer = _parse_json(_read_limited(resp, MAX_JSON_BYTES), "the answer")
        if not isinstance(answer, dict):
            raise self._malformed("an answer that is not a JSON object")
        _raise_reported_error(answer, self._backend._url)
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
        self.stats.finish_reason = _finish_reason(choice.get("finish_reason") or "stop", self._backend._url)

    def _take_usage(self, obj: dict) -> None:
        usage = obj.get("usage")
        tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
        if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 0:
            self.stats.tokens = tokens
            self._counting_chunks = False

    def _malformed(self, what: str) -> BackendError:
        return BackendError(f"the model server at {self._backend._url} sent malformed data: {what}")


def _first_choice(obj: dict) -> dict | None:
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return None


def _finish_reason(reason: object, url: str) -> str:
    if reason == "length":
        return "length"
    if reason in ("abort", "error"):
        raise BackendError(f"the model server at {url} aborted the generation")
    return "stop"  # "stop", "eos", a stop string, "tool_calls": the model ended its answer


def _raise_reported_error(obj: dict, url: str) -> None:
    """vLLM and SGLang report a failure inside a 200 stream as an event with an "error" field."""
    if "error" in obj or obj.get("object") == "error":
        raise BackendError(f"the model server at {url} reported an error: {_error_detail(obj) or 'no details'}")


def _read_limited(resp: http.client.HTTPResponse, limit: int) -> bytes:
    body = resp.read(limit + 1)
    if len(body) > limit:
        raise ValueError(f"a body larger than {limit} bytes")
    return body


def _parse_json(raw: bytes, what: str) -> object:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} is not JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from None


def _error_detail(body: bytes | dict) -> str:
    """The message out of an error body, in OpenAI's shape, vLLM's older flat shape or FastAPI's."""
    obj = body
    if isinstance(body, bytes):
        try:
            obj = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            text = body.decode("utf-8", errors="replace").strip()
            return _one_line(text) if text and not text.lstrip().startswith("<") else ""
    message: object = ""
    if isinstance(obj, dict):
        err = obj.get("error")
        if isinstance(err, dict):
            message = err.get("message", "")
        elif isinstance(err, str):
            message = err
        else:
            message = obj.get("message") or obj.get("detail") or ""
    return _one_line(str(message))


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
