"""Helpers of the tests that talk HTTP to servers of their own on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator


def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    """Poll ``condition`` every 10 ms; whether it came true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def read_request(conn: socket.socket) -> str | None:
    """The path of the next request on ``conn`` (body read and dropped); None when the client closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next((int(v.split(b":")[1]) for v in lines if v.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    return lines[0].split(b" ")[1].decode()


class Hostile:
    """One loopback connection: read the request, then ``script(conn)`` sends what it likes until the
    client goes (a send fails) or the test ends. ``gone_at`` is when the send failed."""

    def __init__(self, script: Callable[[socket.socket], None]):
        self.script = script
        self.gone_at: float | None = None
        self.sent = 0
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(5)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1"

    def send(self, conn: socket.socket, data: bytes) -> None:
        if self._stop.is_set():
            raise OSError("the test is over")
        conn.sendall(data)
        self.sent += len(data)

    def wait(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise OSError("the test is over")

    def _run(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            try:
                read_request(conn)
                self.script(conn)
            except OSError:
                self.gone_at = time.monotonic()

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(6)


@contextlib.contextmanager
def hostile(script: Callable[[Hostile, socket.socket], None]) -> Iterator[Hostile]:
    peer = Hostile(lambda conn: script(peer, conn))
    try:
        yield peer
    finally:
        peer.close()
