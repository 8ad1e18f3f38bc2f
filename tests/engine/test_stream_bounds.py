"""Every model stream bounded in characters, bytes and time (base.StreamLimits), against hostile peers.

Every socket here is on 127.0.0.1 and every wait is bounded; deadlines are set short (0.5-1.5 s).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from engine.backends.base import Backend, BackendError, GenerationRequest, StreamLimits, TextStream
from engine.backends.openai_backend import OpenAIBackend, OpenAIConfig, ServerBusy
from engine.backends.server_pool import PoolConfig, ServerPool
from engine.server import serve
from tests.engine.loopback import Hostile, hostile

CHUNK = 900_000  # characters of content in one event: under the 1 MiB line cap


def client(url: str, **options) -> OpenAIBackend:
    return OpenAIBackend(OpenAIConfig(base_url=url, model="m", connect_timeout_s=5.0, read_timeout_s=10.0, **options))


def ask(url: str, **limits) -> TextStream:
    return client(url).stream(GenerationRequest("q", max_new_tokens=10_000, limits=StreamLimits(**limits)))


def event(content: str | None = None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    return (
        b"data: " + json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}).encode() + b"\n\n"
    )


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"


# -- TextStream's own bounds, any producer ---------------------------------------------------------


def test_a_flood_of_huge_pieces_keeps_only_the_character_cap_and_closes_the_producer():
    closed = threading.Event()

    def flood() -> Iterator[str]:
        try:
            while True:
                yield "x" * CHUNK
        finally:
            closed.set()

    cancel = threading.Event()
    stream = TextStream(flood(), cancel)
    text = stream.text()
    assert len(text) == 64_000 and closed.is_set()
    assert (stream.stats.finish_reason, stream.stats.cut_off) == ("length", "answer longer than 64000 characters")
    assert not cancel.is_set()  # a bound is not the caller's cancel (the scheduler would requeue the frame)


def test_the_byte_cap_never_splits_a_character():
    stream = TextStream(iter(["ab", "€" * 100, "😀" * 100_000]), limits=StreamLimits(max_bytes=1001))
    text = stream.text()
    assert text.startswith("ab" + "€" * 100) and set(text[102:]) == {"😀"}
    assert len(text.encode()) == 2 + 300 + 4 * 174 and stream.stats.cut_off == "answer longer than 1001 bytes"
    lone = TextStream(iter(["\ud800" * 10]), limits=StreamLimits(max_bytes=7))  # lone surrogates count, never raise
    assert lone.text() == "\ud800" * 2 and lone.stats.finish_reason == "length"


def test_blank_heartbeats_are_not_progress():
    def heartbeats() -> Iterator[str]:
        while True:
            time.sleep(0.05)
            yield " "

    stream = TextStream(heartbeats(), limits=StreamLimits(idle_timeout_s=0.4))
    started = time.monotonic()
    with pytest.raises(BackendError, match=r"^the model sent nothing for 0\.4 s$") as caught:
        stream.text()
    assert time.monotonic() - started < 1.5 and not caught.value.retryable
    assert stream.stats.finish_reason == "timeout"


def test_a_stall_after_content_ends_with_timeout_and_keeps_the_text():
    release = threading.Event()

    def stalls() -> Iterator[str]:
        yield "Level 1: grasper"
        release.wait(10)  # a producer that cannot be woken: the stream ends at its next piece
        yield " and hook"

    stream = TextStream(stalls(), limits=StreamLimits(idle_timeout_s=0.3))
    assert next(stream) == "Level 1: grasper"
    threading.Timer(0.6, release.set).start()
    assert list(stream) == []  # " and hook" came after the deadline: past the bound, dropped
    assert stream.stats.finish_reason == "timeout"
    assert stream.stats.cut_off == "no progress for 0.3 s from the model"


def test_a_slow_consumer_is_not_blamed_for_the_producer():
    stream = TextStream(iter(["a", "b", "c"]), limits=StreamLimits(idle_timeout_s=0.1))
    pieces = []
    for piece in stream:
        pieces.append(piece)
        time.sleep(0.15)  # longer than the idle deadline, but spent holding a piece, not waiting for one
    assert pieces == ["a", "b", "c"] and stream.stats.finish_reason == "stop"


def test_limits_are_checked():
    for bad in ({"max_chars": 0}, {"max_bytes": -1}, {"idle_timeout_s": 0}, {"total_timeout_s": True}):
        with pytest.raises(ValueError):
            StreamLimits(**bad)


# -- the OpenAI client against hostile servers -----------------------------------------------------


def test_endless_huge_chunks_are_cut_at_the_bound_and_the_server_sees_the_disconnect():
    def flood(peer: Hostile, conn: socket.socket) -> None:
        peer.send(conn, SSE_HEAD)
        chunk = event("y" * CHUNK)
        while True:
            peer.send(conn, chunk)

    with hostile(flood) as peer:
        tracemalloc.start()
        try:
            started = time.monotonic()
            stream = ask(peer.url)
            text = stream.text()
            elapsed = time.monotonic() - started
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(text) == 64_000 and stream.stats.finish_reason == "length"
        assert stream.stats.cut_off == "answer longer than 64000 characters"
        assert elapsed < 2.5 and peak < 32 << 20, (elapsed, peak)
        deadline = time.monotonic() + 3
        while peer.gone_at is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert peer.gone_at is not None and peer.sent < 64 << 20  # it stopped reading; the server noticed


@pytest.mark.parametrize("headers", [True, False], ids=["keep-alives", "no-headers"])
def test_a_server_that_only_keeps_alive_ends_at_the_idle_deadline(headers):
    def pings(peer: Hostile, conn: socket.socket) -> None:
        if not headers:  # silent: waits for the client to hang up
            if conn.recv(1) == b"":
                raise OSError("the client hung up")
            return
        peer.send(conn, SSE_HEAD + event(""))  # an empty delta: not progress either
        while True:
            peer.send(conn, b": ping\n\n")
            peer.wait(0.1)

    with hostile(pings) as peer:
        started = time.monotonic()
        with pytest.raises(BackendError) as caught:
            ask(peer.url, idle_timeout_s=1.0).text()
        assert 0.9 < time.monotonic() - started < 2.5
        assert str(caught.value) == f"the model server at {peer.url} sent nothing for 1 s"
        assert not caught.value.retryable and caught.value.server == peer.url
        deadline = time.monotonic() + 3
        while peer.gone_at is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert peer.gone_at is not None  # the server saw the disconnect (vLLM aborts the request there)


def test_a_trickle_ends_at_the_total_deadline_with_what_came():
    def trickle(peer: Hostile, conn: socket.socket) -> None:
        peer.send(conn, SSE_HEAD + event("Level 1: grasper"))
        for byte in event(" and hook" * 1000):
            peer.send(conn, bytes([byte]))
            peer.wait(0.1)

    with hostile(trickle) as peer:
        started = time.monotonic()
        stream = ask(peer.url, total_timeout_s=1.5)
        assert stream.text() == "Level 1: grasper"
        assert 1.4 < time.monotonic() - started < 2.5
        assert stream.stats.finish_reason == "timeout"
        assert stream.stats.cut_off == f"no complete answer within 1.5 s from the model server at {peer.url}"


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    "reply",
    [
        SSE_HEAD + b"data: " + DEEP + b"\n\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(DEEP), DEEP),
    ],
    ids=["event", "whole"],
)
def test_deeply_nested_json_is_one_line_of_malformed_data(reply):
    with hostile(lambda peer, conn: peer.send(conn, reply)) as peer:
        with pytest.raises(BackendError, match="malformed data") as caught:
            ask(peer.url).text()
        assert "\n" not in str(caught.value) and "nested too deeply" in str(caught.value)
        assert not caught.value.retryable


def _status(status: int, body: bytes) -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        status,
        len(body),
        body,
    )


@pytest.mark.parametrize(
    ("reply", "said"),
    [
        (_status(500, b'{"error": {"message": ' + b"[" * 900 + b"]" * 900 + b"}}"), r"HTTP 500\)$"),
        (_status(400, b"[" * 30_000 + b"]" * 30_000), r"HTTP 400\): \[\[\[\["),  # read: under 64 KiB
    ],
    ids=["nested-message", "deep-body"],
)
def test_deeply_nested_error_bodies_still_give_the_status(reply, said):
    with hostile(lambda peer, conn: peer.send(conn, reply)) as peer, pytest.raises(BackendError, match=said) as caught:
        ask(peer.url).text()
    assert len(str(caught.value)) < 400


def test_a_body_of_events_without_text_is_cut_at_its_bound():
    def empty_deltas(peer: Hostile, conn: socket.socket) -> None:
        peer.send(conn, SSE_HEAD)
        while True:
            peer.send(conn, event() * 100)

    limits = {"max_bytes": 1024}  # events: at most 64 KiB
    with (
        hostile(empty_deltas) as peer,
        pytest.raises(BackendError, match="sent 65536 bytes of events without an answer"),
    ):
        ask(peer.url, **limits).text()

    def text_then_nothing(peer: Hostile, conn: socket.socket) -> None:
        peer.send(conn, SSE_HEAD + event("Level 1"))
        while True:
            peer.send(conn, event() * 100)

    with hostile(text_then_nothing) as peer:
        stream = ask(peer.url, **limits)
        assert stream.text() == "Level 1" and stream.stats.finish_reason == "length"
        assert stream.stats.cut_off == f"a response larger than 65536 bytes from the model server at {peer.url}"


def test_a_whole_answer_larger_than_the_limits_is_not_read_on():
    answer = json.dumps({"choices": [{"message": {"content": "z" * 200_000}, "finish_reason": "stop"}]}).encode()
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer)
    with hostile(lambda peer, conn: peer.send(conn, reply)) as peer:
        with pytest.raises(BackendError, match=r"sent an answer larger than 71680 bytes") as caught:
            ask(peer.url, max_bytes=1024).text()
        assert not caught.value.retryable


def test_the_pool_reports_a_stalled_server_once_instead_of_retrying_it():
    def pings(peer: Hostile, conn: socket.socket) -> None:
        peer.send(conn, SSE_HEAD)
        while True:
            peer.send(conn, b": ping\n\n")
            peer.wait(0.1)

    with hostile(pings) as peer:
        states: list[tuple[str, bool, str]] = []
        pool = ServerPool(
            [client(peer.url)], PoolConfig(retry_initial_s=0.05, give_up_s=10), lambda *state: states.append(state)
        )
        started = time.monotonic()
        with pytest.raises(BackendError, match=r"sent nothing for 0\.5 s$") as caught:
            pool.stream(GenerationRequest("q", limits=StreamLimits(idle_timeout_s=0.5))).text()
        assert time.monotonic() - started < 2.0 and not caught.value.retryable and states == []
        pool.close()


# -- surgview-engine serve -------------------------------------------------------------------------


class Endless(Backend):
    """Streams "abcdefghij" for ever, or one piece then nothing (``stall``); it honours only the cancel
    event and (like every backend of ours) the halt of its stream."""

    def __init__(self, stall: bool = False, honour_limits: bool = True):
        self.stall, self.honour_limits = stall, honour_limits
        self.closed = threading.Event()

    @property
    def model_id(self) -> str:
        return "endless"

    def stream(self, request: GenerationRequest, cancel: threading.Event | None = None) -> TextStream:
        cancel = cancel or threading.Event()

        def pieces() -> Iterator[str]:
            try:
                yield "abcdefghij"
                while not cancel.is_set() and not stream.halted:
                    if self.stall:
                        stream.halt_event.wait(0.05)
                    else:
                        yield "abcdefghij"
            finally:
                self.closed.set()

        stream = TextStream(pieces(), cancel, request.limits if self.honour_limits else None)
        return stream


def post(port: int, body: bytes | dict, timeout: float = 10) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        conn.request("POST", "/v1/chat/completions", body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.parametrize("honour", [True, False], ids=["backend-applies-them", "server-applies-them"])
def test_the_server_bounds_what_it_generates(honour):
    backend = Endless(honour_limits=honour)
    with serve(backend, "127.0.0.1", 0, model_name="m", limits=StreamLimits(max_chars=25)) as srv:
        stream = client(srv.url).stream(GenerationRequest("q", max_new_tokens=10_000))
        assert stream.text() == "abcdefghij" * 2 + "abcde" and stream.stats.finish_reason == "length"
        assert backend.closed.wait(2)
        status, raw = post(srv.port, {"messages": [{"role": "user", "content": "q"}]})
        answer = json.loads(raw)["choices"][0]
        assert status == 200 and answer["message"]["content"] == "abcdefghij" * 2 + "abcde"
        assert answer["finish_reason"] == "length"


def test_the_server_ends_a_stalled_generation_at_its_deadline():
    backend = Endless(stall=True)
    with serve(backend, "127.0.0.1", 0, model_name="m", limits=StreamLimits(total_timeout_s=1.0)) as srv:
        started = time.monotonic()
        stream = client(srv.url).stream(GenerationRequest("q"))
        assert stream.text() == "abcdefghij" and stream.stats.finish_reason == "length"
        assert time.monotonic() - started < 2.5 and backend.closed.wait(2)
        # the next request gets its turn (the stalled one let go of the model)
        assert client(srv.url).stream(GenerationRequest("q")).text() == "abcdefghij"


def test_deeply_nested_requests_get_400_not_500():
    with serve(Endless(), "127.0.0.1", 0) as srv:
        status, raw = post(srv.port, DEEP)
        assert status == 400 and json.loads(raw)["error"]["message"] == "the body is JSON nested too deeply"
        nested = json.dumps({"messages": [{"role": json.loads("[" * 950 + "]" * 950), "content": "q"}]})
        status, raw = post(srv.port, nested.encode())
        assert status == 400 and "of type list" in json.loads(raw)["error"]["message"]
        status, raw = post(srv.port, {"model": [[["x"]]], "messages": [{"role": "user", "content": "q"}]})
        assert status == 400


def test_connections_over_the_limit_get_503_not_a_reset():
    with serve(Endless(), "127.0.0.1", 0, model_name="m", max_connections=2) as srv:
        held = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(2)]
        try:
            time.sleep(0.1)  # both accepted: every further connection is over the limit
            body = {"messages": [{"role": "user", "content": "q" * 100_000}]}
            statuses = [post(srv.port, body)[0] for _ in range(20)]
            assert statuses == [503] * 20
            with pytest.raises(ServerBusy, match=r"HTTP 503\): the server is busy") as caught:
                client(srv.url).stream(GenerationRequest("q")).text()
            assert caught.value.retryable
        finally:
            for sock in held:
                sock.close()
