"""The OpenAI-compatible client against ``engine.server`` over loopback, and both against bad peers.

Every socket here is on 127.0.0.1; every wait is bounded (timeouts on sockets, threads and events).
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from engine.backends.base import Backend, BackendError, GenerationRequest, TextStream
from engine.backends.openai_backend import OpenAIBackend, OpenAIConfig, ServerBusy, encode_image_data_url
from engine.clitools import ArgumentParser, CliError
from engine.server import (
    TOKEN_ENV,
    EngineServer,
    add_serve_arguments,
    check_bind_address,
    is_loopback,
    serve,
    serve_main,
)
from tests.engine.loopback import Hostile, hostile, read_request, wait_until

PIECES = ["Level 1 ", "(Perception): ", "grasper ", "and ", "hook ", "visible. ", "Answer: ", "B"]
TOKEN = "test-token-0123456789abcdef"


class ScriptedBackend(Backend):
    """Yields scripted pieces, one token each, ``delay`` apart; records what it was asked and what it saw."""

    name = "scripted"

    def __init__(self, pieces: list[str] = PIECES, delay: float = 0.0):
        self.pieces = list(pieces)
        self.delay = delay
        self.requests: list[GenerationRequest] = []
        self.produced_at: list[float] = []
        self.cancel_seen = threading.Event()
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return "scripted-v1"

    def stream(self, request: GenerationRequest, cancel: threading.Event | None = None) -> TextStream:
        self.requests.append(request)
        if request.prompt == "explode":
            raise BackendError("the scripted model refuses to start")
        cancel = cancel or threading.Event()

        def pieces() -> Iterator[str]:
            with self._lock:
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            try:
                for i, piece in enumerate(self.pieces):
                    if i >= request.max_new_tokens:
                        stream.stats.finish_reason = "length"
                        return
                    if cancel.wait(self.delay) if self.delay else cancel.is_set():
                        self.cancel_seen.set()
                        return
                    if request.prompt == "fail midway" and i == 2:
                        raise BackendError("the scripted model broke")
                    self.produced_at.append(time.perf_counter())
                    stream.stats.tokens += 1
                    yield piece
            finally:
                with self._lock:
                    self.active -= 1

        stream = TextStream(pieces(), cancel)
        return stream


@pytest.fixture
def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
def server(backend) -> Iterator[EngineServer]:
    srv = serve(backend, "127.0.0.1", 0, model_name="surg-r1-test")
    yield srv
    srv.shutdown()


def client(url: str, model: str = "surg-r1-test", **options) -> OpenAIBackend:
    options = {"connect_timeout_s": 5.0, "read_timeout_s": 10.0} | options
    return OpenAIBackend(OpenAIConfig(base_url=url, model=model, **options))


def http_request(
    server: EngineServer, method: str, path: str, body: bytes | dict | None = None, headers: dict | None = None
) -> tuple[int, bytes, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} | (headers or {}))
        resp = conn.getresponse()
        return resp.status, resp.read(), resp
    finally:
        conn.close()


def chat(server: EngineServer, body: dict, headers: dict | None = None) -> tuple[int, dict | bytes]:
    status, raw, resp = http_request(server, "POST", "/v1/chat/completions", body, headers)
    is_json = (resp.getheader("Content-Type") or "").startswith("application/json")
    return status, json.loads(raw) if is_json else raw


def quadrant_image() -> np.ndarray:
    """Four solid quadrants (red, green, blue, grey), so channel order and values can be checked."""
    image = np.zeros((48, 64, 3), np.uint8)
    image[:24, :32] = (220, 30, 30)
    image[:24, 32:] = (30, 200, 40)
    image[24:, :32] = (20, 40, 210)
    image[24:, 32:] = (128, 128, 128)
    return image


def data_url(image: np.ndarray, ext: str = ".png") -> str:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert ok
    kind = "png" if ext == ".png" else "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(buf.tobytes()).decode()


# -- the client against the server ---------------------------------------------------------------


def test_streamed_pieces_concatenate_to_the_whole_text(server):
    stream = client(server.url).stream(GenerationRequest("What is visible?"))
    pieces = list(stream)
    assert pieces == PIECES
    assert stream.stats.finish_reason == "stop"
    assert stream.stats.tokens == len(PIECES)  # from the server's usage chunk
    assert stream.stats.first_token_s is not None


def test_streaming_really_streams():
    backend = ScriptedBackend([f"piece{i} " for i in range(10)], delay=0.05)
    with serve(backend, "127.0.0.1", 0) as srv:
        stream = client(srv.url, model=backend.model_id).stream(GenerationRequest("go"))
        next(stream)
        first_arrived = time.perf_counter()
        rest = list(stream)
    assert len(rest) == 9
    # The first piece was in the client's hands before the model had produced the last one.
    assert first_arrived < backend.produced_at[-1]


def test_image_arrives_intact(server, backend):
    image = quadrant_image()
    client(server.url).generate(GenerationRequest("Which tools?", image=image))
    got = backend.requests[0].image
    assert got is not None and got.shape == (48, 64, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - image.astype(int)).mean() < 8  # JPEG at quality 90
    red = got[6:18, 6:26].reshape(-1, 3).mean(axis=0)
    assert red[0] > 190 and red[2] < 70  # RGB stayed RGB (no BGR swap on either side)


def test_system_prompt_and_sampling_settings_are_passed(server, backend):
    request = GenerationRequest(
        "Q?", system="You are a surgical assistant.", max_new_tokens=50, temperature=0.3, top_p=0.9, seed=7
    )
    client(server.url).generate(request)
    got = backend.requests[0]
    assert (got.prompt, got.system, got.max_new_tokens) == ("Q?", "You are a surgical assistant.", 50)
    assert (got.temperature, got.top_p, got.seed, got.image) == (0.3, 0.9, 7, None)


def test_token_cap_finishes_with_length(server):
    stream = client(server.url).stream(GenerationRequest("Q?", max_new_tokens=3))
    assert stream.text() == "".join(PIECES[:3])
    assert stream.stats.finish_reason == "length"


@pytest.mark.parametrize("how", ["cancel()", "event"])
def test_cancel_mid_stream_stops_the_server_side_generation(how):
    backend = ScriptedBackend([f"p{i} " for i in range(300)], delay=0.05)
    with serve(backend, "127.0.0.1", 0) as srv:
        api = client(srv.url, model=backend.model_id)
        event = threading.Event()
        stream = api.stream(GenerationRequest("long answer"), cancel=event if how == "event" else None)
        next(stream)
        timer = threading.Timer(0.2, stream.cancel if how == "cancel()" else event.set)
        timer.start()
        started = time.perf_counter()
        rest = list(stream)  # blocks in the socket until the cancel closes it
        assert time.perf_counter() - started < 2.0
        assert len(rest) < 50
        assert stream.stats.finish_reason == "cancelled"
        assert backend.cancel_seen.wait(5), "the server did not cancel the generation"
        # The generation's turn was given back: the next request runs.
        assert api.generate(GenerationRequest("short", max_new_tokens=2)) == "p0 p1 "
        timer.join(1)


def test_generations_run_one_at_a_time():
    backend = ScriptedBackend(["a", "b", "c", "d"], delay=0.02)
    with serve(backend, "127.0.0.1", 0) as srv:
        api = client(srv.url, model=backend.model_id)
        results: list[str] = []
        threads = [
            threading.Thread(target=lambda: results.append(api.generate(GenerationRequest("q")))) for _ in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert results == ["abcd"] * 3
    assert backend.max_active == 1


def test_a_full_queue_answers_busy():
    backend = ScriptedBackend([f"p{i}" for i in range(100)], delay=0.05)
    with serve(backend, "127.0.0.1", 0, max_waiting=0) as srv:
        api = client(srv.url, model=backend.model_id)
        first = api.stream(GenerationRequest("long"))
        next(first)
        with pytest.raises(BackendError, match="busy"):
            api.generate(GenerationRequest("second"))
        first.cancel()


def test_token_is_required_and_checked(backend):
    with serve(backend, "127.0.0.1", 0, token=TOKEN) as srv:
        with pytest.raises(BackendError, match="requires a token"):
            client(srv.url, model=backend.model_id).generate(GenerationRequest("q"))
        with pytest.raises(BackendError, match="refused the token"):
            client(srv.url, model=backend.model_id, api_key="wrong-token-0123456789").generate(GenerationRequest("q"))
        assert client(srv.url, model=backend.model_id, api_key=TOKEN).generate(GenerationRequest("q")) == "".join(
            PIECES
        )
        status, body, resp = http_request(srv, "GET", "/health")
        assert status == 401 and resp.getheader("WWW-Authenticate", "").startswith("Bearer")
        assert json.loads(body)["error"]["type"] == "authentication_error"
        status, _, _ = http_request(srv, "GET", "/health", headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200
    assert len(backend.requests) == 1  # refused requests never reached the model


def test_server_refuses_other_addresses_without_a_token(backend, monkeypatch):
    for host in ("0.0.0.0", "::", "192.168.1.20", "example.org"):
        with pytest.raises(ValueError, match="token"):
            check_bind_address(host, None)
    with pytest.raises(ValueError, match="token"):
        serve(backend, "0.0.0.0", 0)  # refused before any socket is opened
    with pytest.raises(ValueError, match="at least 16"):
        check_bind_address("0.0.0.0", "short")
    check_bind_address("0.0.0.0", TOKEN)  # with a token it may
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"):
        check_bind_address(host, None)
        assert is_loopback(host)
    # The command line refuses too, before it loads the model.
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    parser = ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--model", "some/dir", "--host", "0.0.0.0"])
    loaded = []
    with pytest.raises(CliError, match="token"):
        serve_main(args, lambda path: loaded.append(path))
    assert not loaded


def test_serve_arguments_and_a_model_that_fails_to_load(monkeypatch):
    parser = ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--model", "m"])
    assert (args.model, args.host, args.port, args.token) == ("m", "127.0.0.1", 8000, None)
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "m", "--port", "70000"])

    def fail(path: str) -> Backend:
        raise BackendError(f"no model in {path}")

    monkeypatch.setenv(TOKEN_ENV, TOKEN)  # the variable counts as a token for a non-loopback host
    args = parser.parse_args(["--model", "missing", "--host", "0.0.0.0"])
    with pytest.raises(CliError, match="no model in missing"):
        serve_main(args, fail)


def test_models_health_and_check(server):
    assert client(server.url).check() == ["surg-r1-test"]
    with pytest.raises(BackendError, match="does not serve 'other'"):
        client(server.url, model="other").check()
    status, body, _ = http_request(server, "GET", "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_unknown_model_is_not_found(server):
    with pytest.raises(BackendError, match=r"model 'nope' not found .*HTTP 404.*does not exist"):
        client(server.url, model="nope").generate(GenerationRequest("q"))


def test_backend_errors_reach_the_client_as_one_line(server):
    with pytest.raises(BackendError, match=r"HTTP 500.*refuses to start"):
        client(server.url).generate(GenerationRequest("explode"))
    stream = client(server.url).stream(GenerationRequest("fail midway"))
    got = []
    with pytest.raises(BackendError, match="reported an error: the scripted model broke"):
        for piece in stream:
            got.append(piece)
    assert got == PIECES[:2]
    assert stream.stats.finish_reason == "error"


def test_no_server_running():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # free now, and nothing listens once the probe closes
    with pytest.raises(BackendError, match=r"no model server at http://127\.0\.0\.1:"):
        client(f"http://127.0.0.1:{port}/v1").generate(GenerationRequest("q"))
    with pytest.raises(BackendError, match="no model server"):
        client(f"http://127.0.0.1:{port}/v1").check()


def test_constructing_the_client_validates_and_never_connects():
    api = client("http://127.0.0.1:9/v1/", model="Surg-R1")  # port 9: nothing is contacted
    assert api.model_id == "openai:Surg-R1@127.0.0.1:9"
    for url in ("ftp://127.0.0.1/v1", "127.0.0.1:8000", "http://user:pw@127.0.0.1/v1", "http://127.0.0.1:99999/v1"):
        with pytest.raises(BackendError):
            client(url)
    with pytest.raises(BackendError, match="model name"):
        client("http://127.0.0.1:8000/v1", model=" ")
    with pytest.raises(BackendError, match="RGB uint8"):
        encode_image_data_url(np.zeros((4, 4), np.uint8))
    assert encode_image_data_url(quadrant_image()).startswith("data:image/jpeg;base64,/9j/")


# -- the client against bad servers --------------------------------------------------------------


@contextmanager
def raw_server(reply: bytes, hold_s: float = 0.0) -> Iterator[str]:
    """One connection on 127.0.0.1: read the request, send ``reply`` verbatim, maybe stay silent a while."""

    def script(peer: Hostile, conn: socket.socket) -> None:
        peer.send(conn, reply)
        peer.wait(hold_s)

    with hostile(script) as peer:
        yield peer.url


def sse_reply(body: bytes, content_type: bytes = b"text/event-stream") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\nConnection: close\r\n\r\n" + body


def event(content: str | None = None, finish: str | None = None) -> bytes:
    chunk = {"choices": [{"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (sse_reply(b"this is not SSE at all\r\n"), "is not a server-sent event"),
        (sse_reply(b"<html><body>Welcome</body></html>", b"text/html"), "sent text/html, not server-sent events"),
        (sse_reply(b"data: {not json\n\n"), "not JSON"),
        (sse_reply(b"data: [1, 2]\n\n"), "not a JSON object"),
        (sse_reply(event("half an ans")), "closed the stream before the end"),
        (sse_reply(b'data: {"error": {"message": "CUDA out of memory"}}\n\n'), "reported an error: CUDA out of memory"),
        (sse_reply(b"data: " + b"x" * (1 << 20) + b"\n\n"), "more than 1 MiB"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", "does not speak HTTP"),
        (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", r"unavailable or busy \(HTTP 503\)"),
        (
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 11\r\n\r\nkernel died",
            r"failed \(HTTP 500\): kernel died",
        ),
    ],
    ids=["junk", "html", "bad-json", "not-object", "truncated", "error-event", "huge-line", "not-http", "503", "500"],
)
def test_garbage_from_the_server_is_an_error_not_a_hang(reply, message):
    with raw_server(reply) as url:
        started = time.perf_counter()
        with pytest.raises(BackendError, match=message):
            client(url, model="m").generate(GenerationRequest("q"))
        assert time.perf_counter() - started < 5


def test_a_silent_server_times_out():
    with raw_server(b"", hold_s=5) as url:
        started = time.perf_counter()
        with pytest.raises(BackendError, match="did not answer in time"):
            client(url, model="m", read_timeout_s=0.5).generate(GenerationRequest("q"))
        assert time.perf_counter() - started < 3


def test_a_server_ignoring_the_token_cap_is_cut_off():
    body = b"".join(event(f"t{i} ") for i in range(50)) + event(finish="stop") + b"data: [DONE]\n\n"
    with raw_server(sse_reply(body)) as url:
        stream = client(url, model="m").stream(GenerationRequest("q", max_new_tokens=5))
        assert stream.text() == "t0 t1 t2 t3 t4 "
        assert stream.stats.finish_reason == "length"


def test_a_whole_json_answer_is_accepted():
    answer = {
        "choices": [{"message": {"role": "assistant", "content": "whole"}, "finish_reason": "length"}],
        "usage": {"completion_tokens": 3},
    }
    with raw_server(sse_reply(json.dumps(answer).encode(), b"application/json")) as url:
        stream = client(url, model="m").stream(GenerationRequest("q"))
        assert stream.text() == "whole"
        assert (stream.stats.finish_reason, stream.stats.tokens) == ("length", 3)


# -- the server's side of the protocol -----------------------------------------------------------


def test_non_streaming_request(server):
    status, body = chat(server, {"model": "surg-r1-test", "messages": [{"role": "user", "content": "Q?"}]})
    assert status == 200
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "".join(PIECES)}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == len(PIECES)


def test_surg_r1_request_shape_is_accepted(server, backend):
    # Text-only: system and user content as plain strings, no model field.
    status, body = chat(
        server,
        {
            "messages": [
                {"role": "system", "content": "Think step by step."},
                {"role": "user", "content": "What phase is this?"},
            ]
        },
    )
    assert status == 200, body
    first = backend.requests[-1]
    assert (first.system, first.prompt, first.image) == ("Think step by step.", "What phase is this?", None)
    # Image then text in a parts list, streamed: check the event stream's OpenAI shape.
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "You are Surg-R1."}]},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(quadrant_image())}},
                {"type": "text", "text": "Describe the frame."},
            ],
        },
    ]
    status, raw = chat(server, {"model": "surg-r1-test", "messages": messages, "stream": True, "max_tokens": 64})
    assert status == 200
    events = [line[len("data: ") :] for line in raw.decode().split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "surg-r1-test" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "".join(PIECES)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    got = backend.requests[-1]
    assert (got.system, got.prompt, got.max_new_tokens) == ("You are Surg-R1.", "Describe the frame.", 64)
    assert np.array_equal(got.image, quadrant_image())  # PNG is lossless


def user_with_image(url: str) -> list[dict]:
    return [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "q"}]}
    ]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"messages": user_with_image("http://example.com/frame.jpg")}, 400, "does not fetch image URLs"),
        ({"messages": user_with_image("https://example.com/frame.jpg")}, 400, "does not fetch image URLs"),
        ({"messages": user_with_image("file:///etc/passwd")}, 400, "base64 data URL"),
        ({"messages": user_with_image("data:image/png;base64,@@@")}, 400, "not valid base64"),
        (
            {"messages": user_with_image("data:image/png;base64," + base64.b64encode(b"not an image").decode())},
            400,
            "not a readable",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": data_url(quadrant_image())}},
                            {"type": "image_url", "image_url": {"url": data_url(quadrant_image())}},
                        ],
                    }
                ]
            },
            400,
            "at most one image",
        ),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, 400, "multi-turn"),
        ({"messages": []}, 400, "non-empty list"),
        ({"messages": [{"role": "user", "content": "q"}], "max_tokens": -1}, 400, "max_tokens"),
        ({"messages": [{"role": "user", "content": "q"}], "temperature": "hot"}, 400, "temperature"),
        ({"messages": [{"role": "user", "content": "q"}], "n": 2}, 400, "n=1"),
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": "q"}]}, 404, "does not exist"),
    ],
    ids=[
        "http-url",
        "https-url",
        "file-url",
        "bad-base64",
        "not-image",
        "two-images",
        "multi-turn",
        "no-messages",
        "bad-max-tokens",
        "bad-temperature",
        "n",
        "unknown-model",
    ],
)
def test_bad_requests_get_openai_shaped_errors(server, backend, body, status, message):
    got_status, got = chat(server, body)
    assert got_status == status
    assert set(got["error"]) >= {"message", "type", "code"}
    assert message in got["error"]["message"]
    assert not backend.requests  # nothing reached the model


def test_transport_limits_and_browser_defences(backend):
    with serve(backend, "127.0.0.1", 0, max_body_bytes=2000) as srv:
        ok = {"messages": [{"role": "user", "content": "q"}]}
        assert chat(srv, ok)[0] == 200
        big = {"messages": [{"role": "user", "content": "x" * 5000}]}
        assert chat(srv, big)[0] == 413
        assert (
            http_request(srv, "POST", "/v1/chat/completions", json.dumps(ok).encode(), {"Content-Type": "text/plain"})[
                0
            ]
            == 415
        )
        assert http_request(srv, "POST", "/v1/chat/completions", b"{oops")[0] == 400
        # A page on another site reaching the loopback server (DNS rebinding, cross-site fetch) is refused.
        assert chat(srv, ok, {"Host": "attacker.example:8000"})[0] == 403
        assert chat(srv, ok, {"Origin": "http://attacker.example"})[0] == 403
        assert chat(srv, ok, {"Host": "localhost:8000", "Origin": "http://127.0.0.1:3000"})[0] == 200
        assert http_request(srv, "GET", "/v1/nothing")[0] == 404
        assert http_request(srv, "DELETE", "/v1/models")[0] == 405
    assert len(backend.requests) == 2


def test_a_client_that_disconnects_cancels_a_non_streaming_generation():
    backend = ScriptedBackend([f"p{i}" for i in range(300)], delay=0.05)
    with serve(backend, "127.0.0.1", 0) as srv:
        body = json.dumps({"messages": [{"role": "user", "content": "q"}]}).encode()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            deadline = time.monotonic() + 5
            while not backend.produced_at and time.monotonic() < deadline:
                time.sleep(0.01)
        assert backend.cancel_seen.wait(5)


# -- cancellation, retryable errors, many threads over kept-alive connections ---------------------


@pytest.mark.parametrize("how", ["cancel()", "event"])
def test_cancel_wakes_a_reader_waiting_for_the_response_headers(how):
    # A server that queues the request (ours, vLLM under load) sends no headers until its turn.
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    closed = threading.Event()

    def run() -> None:
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(5)
                read_request(conn)
                if conn.recv(1) == b"":  # blocks until the client closes its end
                    closed.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    api = client(f"http://127.0.0.1:{listener.getsockname()[1]}/v1", model="m")
    event = threading.Event()
    stream = api.stream(GenerationRequest("q"), cancel=event if how == "event" else None)
    timer = threading.Timer(0.2, stream.cancel if how == "cancel()" else event.set)
    timer.start()
    started = time.perf_counter()
    assert list(stream) == []
    assert 0.15 < time.perf_counter() - started < 0.5
    assert stream.stats.finish_reason == "cancelled"
    assert closed.wait(2), "the server did not see the connection closed"
    thread.join(2)
    timer.join(1)
    api.close()


def _reply_status(status: int) -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: 2\r\n\r\n{}" % status


@pytest.mark.parametrize(
    ("reply", "retryable"),
    [
        (_reply_status(503), True),
        (_reply_status(429), True),
        (_reply_status(502), True),
        (_reply_status(504), True),
        (_reply_status(400), False),
        (_reply_status(401), False),
        (_reply_status(404), False),
        (_reply_status(500), False),
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\ndata:", True),
        (sse_reply(event("half an ans")), True),  # a server killed between events
        (b"", True),  # closed without a word
        (sse_reply(b"data: {not json\n\n"), False),
        (b"SSH-2.0-OpenSSH_9.6\r\n", False),
    ],
    ids=["503", "429", "502", "504", "400", "401", "404", "500", "cut-chunk", "cut-stream", "no-answer", "bad", "ssh"],
)
def test_errors_say_whether_a_retry_may_help(reply, retryable):
    with raw_server(reply) as url, pytest.raises(BackendError) as info:
        client(url, model="m").generate(GenerationRequest("q"))
    assert (info.value.retryable, info.value.server) == (retryable, url)
    assert isinstance(info.value, ServerBusy) == (reply[:12] in (b"HTTP/1.1 503", b"HTTP/1.1 429"))


def test_refused_and_timed_out_connections_are_retryable():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    with pytest.raises(BackendError, match="connection refused") as info:
        client(url).generate(GenerationRequest("q"))
    assert info.value.retryable and info.value.server == url
    with raw_server(b"", hold_s=3) as silent, pytest.raises(BackendError, match="did not answer in time") as info:
        client(silent, read_timeout_s=0.3).generate(GenerationRequest("q"))
    assert info.value.retryable


class StreamingPeer:
    """A Starlette app behind uvicorn (what vLLM runs on): keep-alive connections, streamed answers.
    It records the client port of every request (one port per TCP connection) and answers cut short."""

    def __init__(self, pieces: int = 4, delay: float = 0.0):
        self.pieces, self.delay = pieces, delay
        self.ports: set[int] = set()
        self.requests = 0
        self.aborted = 0
        self.app = Starlette(routes=[Route("/v1/chat/completions", self.chat, methods=["POST"])])

    async def chat(self, request: Request) -> StreamingResponse | JSONResponse:
        body = await request.json()
        self.ports.add(request.scope["client"][1])
        self.requests += 1
        pieces = min(self.pieces, body["max_tokens"])

        async def events() -> Iterator[str]:
            done = False
            try:
                for i in range(pieces):
                    if i and self.delay:
                        await asyncio.sleep(self.delay)
                    chunk = {"choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n"
                usage = {"choices": [], "usage": {"completion_tokens": pieces}}
                yield f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n"
                done = True
            finally:
                if not done:
                    self.aborted += 1

        return StreamingResponse(events(), media_type="text/event-stream")


@contextmanager
def uvicorn_server(app) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: server.started, 10), "uvicorn did not start"
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(5)


def client_sockets_to(port: int) -> int:
    """This process's open TCP connections to ``port`` (established, or closed by the peer but not by us)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if Path(table).exists():
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                count += int(fields[2].rsplit(":", 1)[1], 16) == port and fields[3] in ("01", "08")
    return count


def test_one_client_serves_many_threads_over_few_kept_alive_connections():
    peer = StreamingPeer(pieces=4, delay=0.01)
    with uvicorn_server(peer.app) as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        api = client(url, model="m", max_connections=4)
        results: list[tuple[str, int, str]] = []
        lock = threading.Lock()

        def work(n: int) -> None:
            for _ in range(n):
                stream = api.stream(GenerationRequest("q"))
                text = stream.text()
                with lock:
                    results.append((text, stream.stats.tokens, stream.stats.finish_reason))

        def run(threads: int, each: int) -> None:
            workers = [threading.Thread(target=work, args=(each,)) for _ in range(threads)]
            for t in workers:
                t.start()
            for t in workers:
                t.join(20)

        run(4, 8)  # as many threads as connections: each connection carries answer after answer
        assert results == [("t0 t1 t2 t3 ", 4, "stop")] * 32
        assert len(peer.ports) <= 4
        run(16, 3)  # more threads than connections: they wait their turn for one
        assert results == [("t0 t1 t2 t3 ", 4, "stop")] * 80
        assert peer.requests == 80
        assert client_sockets_to(port) <= 4
        api.close()


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="counts sockets through /proc/net/tcp (Linux)")
def test_cancelled_streams_close_their_connections_and_leak_none():
    peer = StreamingPeer(pieces=100, delay=0.05)
    with uvicorn_server(peer.app) as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        api = client(url, model="m", max_connections=4)
        for i in range(30):
            stream = api.stream(GenerationRequest("q", max_new_tokens=100), cancel=threading.Event())
            assert next(stream) == "t0 "
            if i % 3 == 0:  # blocked in the socket when cancelled
                threading.Timer(0.02, stream.cancel).start()
            elif i % 3 == 1:
                stream.cancel_event.set()
            else:
                stream.cancel()
            assert stream.text() in ("", "t1 ")
            assert stream.stats.finish_reason == "cancelled"
        peer.pieces = 2
        assert [api.generate(GenerationRequest("q")) for _ in range(5)] == ["t0 t1 "] * 5
        assert wait_until(lambda: peer.aborted == 30), peer.aborted  # the server saw each cancelled one go
        assert client_sockets_to(port) <= 4
        api.close()
        assert wait_until(lambda: client_sockets_to(port) == 0)


def test_the_frame_goes_where_the_prompt_says_image():
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(5)
    bodies: list[dict] = []

    def run() -> None:
        with listener:
            for _ in range(2):
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(5)
                    data = b""
                    while b"\r\n\r\n" not in data:
                        data += conn.recv(65536)
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = int(next(v for v in head.split(b"\r\n") if v.lower().startswith(b"content-length:"))[15:])
                    while len(body) < length:
                        body += conn.recv(65536)
                    bodies.append(json.loads(body))
                    conn.sendall(sse_reply(event(finish="stop") + b"data: [DONE]\n\n"))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    api = client(f"http://127.0.0.1:{listener.getsockname()[1]}/v1", model="m")
    api.generate(GenerationRequest("Given the image <image>, which phase?", image=quadrant_image()))
    api.generate(GenerationRequest("Which phase?", image=quadrant_image()))
    thread.join(5)
    api.close()
    mid, first = (b["messages"][-1]["content"] for b in bodies)
    assert [p["type"] for p in mid] == ["text", "image_url", "text"]
    assert (mid[0]["text"], mid[2]["text"]) == ("Given the image ", ", which phase?")
    assert [p["type"] for p in first] == ["image_url", "text"] and first[1]["text"] == "Which phase?"
