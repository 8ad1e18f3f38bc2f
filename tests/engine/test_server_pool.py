"""The server pool (engine/backends/server_pool.py) over loopback peers that refuse, throttle, die and come back.

Every socket here is on 127.0.0.1; every wait is bounded (socket timeouts, joins, deadlines).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.backend_factory import BackendSpec, add_backend_arguments, open_backend, spec_from_args
from engine.backends.base import BackendError, BackendUnavailable, GenerationRequest, TextStream
from engine.backends.openai_backend import OpenAIBackend, OpenAIConfig
from engine.backends.server_pool import PoolConfig, ServerPool
from tests.engine.loopback import read_request, wait_until

FAST = {"retry_initial_s": 0.05, "retry_max_s": 0.2, "give_up_s": 10.0}


class Peer:
    """A loopback OpenAI-compatible server under the test's control. It answers the first requests
    with ``statuses`` (then ``status``; 200 streams ``pieces``, ``delay`` apart), counts requests,
    open connections and clients that left mid-answer, and can be killed (every socket closed at
    once, as when its process dies) and restarted on the same port. Connections are kept alive."""

    def __init__(self, pieces: int = 3, delay: float = 0.0, statuses: tuple[int, ...] = (), status: int = 200):
        self.pieces, self.delay, self.status = pieces, delay, status
        self.statuses = list(statuses)
        self.requests = 0
        self.disconnects = 0  # clients that closed the connection before the end of an answer
        self.active = 0
        self.max_active = 0
        self.port = 0
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def open_connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def kill(self) -> None:
        self._dead.set()
        self._accepting.join(2)
        self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def restart(self) -> None:
        self._start()

    def _start(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: the same port again
        self._listener.settimeout(0.02)
        self.port = self._listener.getsockname()[1]
        self._dead = threading.Event()
        self._accepting = threading.Thread(target=self._accept, args=(self._listener, self._dead), daemon=True)
        self._accepting.start()

    def _accept(self, listener: socket.socket, dead: threading.Event) -> None:
        while not dead.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(10)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn, dead), daemon=True).start()

    def _serve(self, conn: socket.socket, dead: threading.Event) -> None:
        try:
            while not dead.is_set() and (path := read_request(conn)) is not None:
                if not self._answer(conn, path, dead):
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _answer(self, conn: socket.socket, path: str, dead: threading.Event) -> bool:
        if path.endswith("/models"):
            _send_json(conn, 200, {"object": "list", "data": [{"id": "m", "object": "model"}]})
            return True
        with self._lock:
            self.requests += 1
            status = self.statuses.pop(0) if self.statuses else self.status
        if status != 200:
            _send_json(conn, status, {"error": {"message": f"status {status}", "type": "x", "code": status}})
            return True
        with self._lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(self.pieces):
                if i and self.delay and _gone(conn, self.delay):
                    if not dead.is_set():
                        with self._lock:
                            self.disconnects += 1
                    return False
                _send_chunk(conn, _event({"content": f"p{i} "}))
            _send_chunk(conn, _event({}, "stop"))
            _send_chunk(conn, b"data: [DONE]\n\n")
            _send_chunk(conn, b"")
            return True
        finally:
            with self._lock:
                self.active -= 1


def _gone(conn: socket.socket, wait_s: float) -> bool:
    """Wait up to ``wait_s``; True as soon as the client closes its end."""
    readable, _, _ = select.select([conn], [], [], wait_s)
    if not readable:
        return False
    try:
        return conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _event(delta: dict, finish: str | None = None) -> bytes:
    chunk = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


def _send_chunk(conn: socket.socket, data: bytes) -> None:
    conn.sendall(b"%x\r\n%s\r\n" % (len(data), data))


def _send_json(conn: socket.socket, status: int, obj: dict) -> None:
    body = json.dumps(obj).encode()
    head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    conn.sendall(head.encode() + body)


@pytest.fixture
def peers() -> Iterator[Callable[..., Peer]]:
    made: list[Peer] = []

    def make(**options) -> Peer:
        made.append(Peer(**options))
        return made[-1]

    yield make
    for peer in made:
        peer.kill()


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return probe.getsockname()[1]  # nothing listens once the probe closes: connections are refused


def pool_of(*urls: str, events: list | None = None, **config) -> ServerPool:
    return ServerPool.from_urls(
        urls,
        model="m",
        config=PoolConfig(**(FAST | config)),
        on_server_state=(lambda *e: events.append(e)) if events is not None else None,
        connect_timeout_s=2.0,
        read_timeout_s=5.0,
        max_connections=8,
    )


def ask(pool: ServerPool, prompt: str = "q") -> str:
    return pool.generate(GenerationRequest(prompt))


# -- routing ---------------------------------------------------------------------------------------


def test_least_outstanding_routing_spreads_the_work(peers):
    a, b = peers(pieces=4, delay=0.05), peers(pieces=4, delay=0.05)
    with pool_of(a.url, b.url) as pool:
        # Streams held open one after another alternate: each goes to the less loaded server.
        held = [pool.stream(GenerationRequest("q")) for _ in range(4)]
        for stream in held:
            assert next(stream) == "p0 "
        assert pool.outstanding() == {a.url: 2, b.url: 2}
        assert all(stream.text() == "p1 p2 p3 " for stream in held)
        assert pool.outstanding() == {a.url: 0, b.url: 0}
        # Eight at once from eight threads: both servers work at the same time.
        results: list[str] = []
        threads = [threading.Thread(target=lambda: results.append(ask(pool))) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert results == ["p0 p1 p2 p3 "] * 8
    assert a.requests + b.requests == 12 and a.requests >= 4 and b.requests >= 4
    assert a.max_active >= 2 and b.max_active >= 2


def test_identity_factory_and_arguments(peers):
    a, b = peers(), peers()
    parser = argparse.ArgumentParser()
    add_backend_arguments(parser)
    args = parser.parse_args(["--backend", "openai", "--model", "m", "--url", a.url, "--url", b.url + "/"])
    spec = spec_from_args(args)
    assert (spec.urls, spec.url, spec.give_up_s) == ((a.url, b.url + "/"), a.url, 120.0)
    assert spec_from_args(parser.parse_args(["--model", "x", "--give-up-after", "7.5"])).give_up_s == 7.5
    with pytest.raises(SystemExit):
        parser.parse_args(["--give-up-after", "0"])
    assert BackendSpec(kind="openai", url=a.url).server_urls() == (a.url,)  # the one-URL callers still work
    with open_backend(spec) as pool:
        assert isinstance(pool, ServerPool) and pool.supports_concurrency
        assert pool.model_id == f"openai:m@127.0.0.1:{a.port}"
        assert pool.device == f"remote:127.0.0.1:{a.port},127.0.0.1:{b.port}"
        assert pool.check() == ["m"]
        assert ask(pool) == "p0 p1 p2 "
    with open_backend(BackendSpec(kind="openai", url=a.url, model="m")) as one:
        assert isinstance(one, ServerPool) and one.outstanding() == {a.url: 0}
    with pytest.raises(BackendError, match="given twice"):
        pool_of(a.url, a.url + "/")
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    with pool_of(a.url, dead) as pool, pytest.raises(BackendError, match=r"1 of 2 .*127\.0\.0\.1.*connection refused"):
        pool.check()


# -- failures before the first piece: retried ------------------------------------------------------


def test_a_refusing_server_is_marked_down_once_and_the_others_carry_on(peers):
    live = peers()
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    events: list[tuple[str, bool, str]] = []
    with pool_of(dead, live.url, events=events) as pool:
        started = time.perf_counter()
        assert [ask(pool) for _ in range(12)] == ["p0 p1 p2 "] * 12
        assert time.perf_counter() - started < 5
    assert live.requests == 12
    # Reported once, though probed again meanwhile.
    assert events == [
        (dead, False, f"the model server at {dead} is down: no model server at {dead} (connection refused)")
    ]


def test_a_killed_server_restarted_on_its_port_is_used_again(peers):
    a, b = peers(pieces=6, delay=0.05), peers(pieces=6, delay=0.05)
    events: list[tuple[str, bool, str]] = []
    with pool_of(a.url, b.url, events=events) as pool:
        # Killed mid-answer: the stream raises a retryable error (the caller requeues the frame).
        stream = pool.stream(GenerationRequest("q"))
        assert next(stream) == "p0 "
        assert pool.outstanding()[a.url] == 1
        a.kill()
        with pytest.raises(BackendError, match="closed the connection mid-answer") as info:
            stream.text()
        assert info.value.retryable and info.value.server == a.url
        assert events == [(a.url, False, f"the model server at {a.url} is down: {info.value}")]
        assert ask(pool) == "p0 p1 p2 p3 p4 p5 "  # meanwhile the other server answers
        a.restart()
        served_before = a.requests
        # Every request eventually succeeds, and the restarted server takes work again.
        results: list[str] = []
        deadline = time.monotonic() + 5
        while a.requests == served_before and time.monotonic() < deadline:
            results.append(ask(pool))
        assert a.requests > served_before
        assert set(results) == {"p0 p1 p2 p3 p4 p5 "}
        assert events[1:] == [(a.url, True, f"the model server at {a.url} is back up")]


def test_a_lone_server_that_restarts_loses_nothing(peers):
    a = peers()
    events: list[tuple[str, bool, str]] = []
    with pool_of(a.url, events=events) as pool:
        assert ask(pool) == "p0 p1 p2 "
        a.kill()
        threading.Timer(0.4, a.restart).start()
        started = time.perf_counter()
        assert ask(pool) == "p0 p1 p2 "  # waited in backoff until the server came back
        assert 0.3 < time.perf_counter() - started < 3
    assert [up for _, up, _ in events] == [False, True]


def test_busy_answers_are_retried_with_backoff_without_marking_the_server_down(peers):
    a = peers(statuses=(503, 429, 503))
    events: list[tuple[str, bool, str]] = []
    with pool_of(a.url, events=events, retry_initial_s=0.1, retry_max_s=0.4) as pool:
        started = time.perf_counter()
        stream = pool.stream(GenerationRequest("q"))
        assert stream.text() == "p0 p1 p2 "
        elapsed = time.perf_counter() - started
    assert a.requests == 4
    assert 0.05 + 0.1 + 0.2 <= elapsed < 3  # three backoffs, each at least half of 0.1, 0.2, 0.4 s
    assert stream.stats.finish_reason == "stop"
    assert events == []


def test_a_bad_request_is_not_retried(peers):
    a, b = peers(status=400), peers(status=400)
    with pool_of(a.url, b.url) as pool, pytest.raises(BackendError, match=r"rejected the request \(HTTP 400\)") as info:
        ask(pool)
    assert not info.value.retryable
    assert a.requests + b.requests == 1


def test_when_no_server_answers_for_long_enough_the_pool_gives_up():
    dead = [f"http://127.0.0.1:{closed_port()}/v1" for _ in range(2)]
    with pool_of(*dead, give_up_s=0.3) as pool:
        started = time.perf_counter()
        with pytest.raises(BackendUnavailable, match=r"no model server answered for 0\.3 s") as info:
            ask(pool)
        assert 0.3 <= time.perf_counter() - started < 2
    message = str(info.value)
    assert "\n" not in message
    assert all(f"{url}: no model server at {url} (connection refused)" in message for url in dead)


@pytest.mark.parametrize("how", ["cancel()", "event"])
def test_cancelling_while_waiting_in_backoff_returns_promptly(how):
    with pool_of(f"http://127.0.0.1:{closed_port()}/v1", retry_initial_s=10.0, retry_max_s=10.0) as pool:
        event = threading.Event()
        stream = pool.stream(GenerationRequest("q"), cancel=event if how == "event" else None)
        timer = threading.Timer(0.2, stream.cancel if how == "cancel()" else event.set)
        timer.start()
        started = time.perf_counter()
        assert stream.text() == ""  # the refused attempt, then 5-10 s of backoff, cut short
        assert 0.15 < time.perf_counter() - started < 0.6
        assert stream.stats.finish_reason == "cancelled"
        timer.join(1)


# -- sockets ---------------------------------------------------------------------------------------


def client_sockets_to(port: int) -> int:
    """This process's open TCP connections to ``port`` (established, or closed by the peer but not by us)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                remote_port, state = int(fields[2].rsplit(":", 1)[1], 16), fields[3]
                count += remote_port == port and state in ("01", "08")
    return count


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="counts sockets through /proc/net/tcp (Linux)")
def test_no_socket_leaks_after_many_cancelled_streams(peers):
    a = peers(pieces=50, delay=2.0)  # a first piece at once, then a long wait the cancel cuts short
    limit = 4
    pool = ServerPool.from_urls([a.url], model="m", config=PoolConfig(**FAST), max_connections=limit)
    try:
        streams: list[TextStream] = []
        for i in range(50):
            stream = pool.stream(GenerationRequest("q"))
            assert next(stream) == "p0 "
            (stream.cancel if i % 2 else stream.cancel_event.set)()
            assert stream.text() == ""
            streams.append(stream)
        assert all(s.stats.finish_reason == "cancelled" for s in streams)
        assert wait_until(lambda: a.disconnects == 50), a.disconnects  # the server saw every one leave
        a.pieces, a.delay = 2, 0.0
        assert [ask(pool) for _ in range(10)] == ["p0 p1 "] * 10
        assert wait_until(lambda: a.open_connections() <= limit), a.open_connections()
        assert client_sockets_to(a.port) <= limit
        assert pool.outstanding() == {a.url: 0}
    finally:
        pool.close()
    assert wait_until(lambda: client_sockets_to(a.port) == 0 and a.open_connections() == 0)


def test_closing_the_pool_cancels_its_streams(peers):
    a = peers(pieces=50, delay=2.0)
    backend = OpenAIBackend(OpenAIConfig(base_url=a.url, model="m"))
    pool = ServerPool([backend])
    stream = pool.stream(GenerationRequest("q"))
    assert next(stream) == "p0 "
    threading.Timer(0.1, pool.close).start()
    started = time.perf_counter()
    assert stream.text() == ""
    assert time.perf_counter() - started < 1
    assert stream.stats.finish_reason == "cancelled"
    with pytest.raises(BackendError, match="is closed"):
        backend.generate(GenerationRequest("q"))
