"""A stand-in for an OpenAI-compatible model server under continuous batching (vLLM, SGLang).

Tests and ``bench/served_throughput.py`` need a server that behaves like vLLM for the client's
sake (streamed chunks, a bounded number of sequences decoded at once, a FIFO queue behind them,
generation aborted when the client goes away, error statuses) without a GPU or weights. Time is
simulated: a request waits for one of ``max_num_seqs`` slots, spends ``first_token_s`` in
prefill, then produces one token (about 4 characters of the answer) every ``per_token_s``,
however many sequences run, as continuous batching does until the batch is full.

In-process, for tests::

    with StandinServer(StandinConfig(max_num_seqs=4)) as server:
        ...  # server.url == "http://127.0.0.1:PORT/v1"; server.max_running, server.requests, ...

As a separate process, for benchmarks (the server must not share the client's GIL)::

    python -m bench.openai_standin --port 8000 --max-num-seqs 32 --first-token-s 0.2 --per-token-s 0.01

prints ``ready URL`` once listening, serves its statistics as JSON on ``GET /stats`` and prints
them as one JSON line on stdout when stopped (SIGTERM, SIGINT).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = [
    "DEFAULT_ANSWER",
    "Standin",
    "StandinConfig",
    "StandinServer",
    "capacity_per_s",
    "surg_r1_answer",
    "tokenize",
]

TOKEN_CHARS = 4  # one simulated token: a piece of the answer this long
IMAGE_TOKENS = 256  # what an image adds to the reported prompt tokens (a rough Qwen2.5-VL figure)

# A three-level chain in the Surg-R1 form, exactly 100 tokens of TOKEN_CHARS characters.
DEFAULT_ANSWER = (
    "<think> Level 1: A grasper and a hook are visible; the gallbladder, the liver and the cystic duct are in view. "
    "Level 2: The grasper retracts the gallbladder while the hook dissects the cystic duct. "
    "Level 3: The cystic duct is being dissected in Calot's triangle, so the phase is Calot Triangle Dissection; "
    "the critical view of safety is not yet met. </think><answer>Calot Triangle Dissection</answer>"
)

_SURG_R1_ANSWERS = {
    "which surgical phase": (
        "<think> Level 1: A grasper and a hook are visible; the gallbladder and liver are in view. "
        "Level 2: The hook dissects the cystic duct while the grasper retracts the gallbladder. "
        "Level 3: The cystic duct is being dissected in Calot's triangle, so the phase is Calot Triangle Dissection. "
        "</think><answer>Calot Triangle Dissection</answer>"
    ),
    "complete surgical action": (
        "<think> Level 1: A grasper and a hook are visible; the gallbladder and the cystic duct are in view. "
        "Level 2: The grasper retracts the gallbladder while the hook dissects the cystic duct. "
        "Level 3: Retraction opens Calot's triangle for the hook, so both actions are under way. "
        "</think><answer>Grasper Retract Gallbladder, Hook Dissect Cystic_duct</answer>"
    ),
    "locate all the tools": (
        "<think> Level 1: A grasper at the upper left and a hook lower right of centre are visible. "
        "Level 2: The grasper holds the gallbladder up while the hook works on the tissue below it. "
        "Level 3: Both tools take part in the dissection, so both are located. "
        "</think><answer>Grasper (84,42), (252,210), Hook (420,238), (588,406)</answer>"
    ),
}


def tokenize(text: str) -> list[str]:
    """The answer as the stand-in streams it: pieces of TOKEN_CHARS characters, one token each."""
    return [text[i : i + TOKEN_CHARS] for i in range(0, len(text), TOKEN_CHARS)]


def user_text(body: dict) -> str:
    """The text of the request's user turns (string content or the text parts of a content list)."""
    texts: list[str] = []
    for message in body.get("messages") or []:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "\n".join(texts)


def surg_r1_answer(body: dict) -> str:
    """Answer as the Surg-R1 release's model does, picked by the question (phase, action triplets, tool boxes).

    Tool boxes are in pixels of the 840x476 image that model sees. Any other question gets DEFAULT_ANSWER.
    """
    text = user_text(body).lower()
    for question, answer in _SURG_R1_ANSWERS.items():
        if question in text:
            return answer
    return DEFAULT_ANSWER


@dataclass
class StandinConfig:
    model: str = "standin"
    max_num_seqs: int = 32  # sequences decoded at once; more requests wait in a FIFO queue
    first_token_s: float = 0.2  # prefill, once admitted
    per_token_s: float = 0.01  # per generated token, however many sequences run
    answer: Callable[[dict], str] | str = DEFAULT_ANSWER  # the completion text, or a function of the request body
    # Faults, for tests.
    fail_first: int = 0  # answer the first N requests with HTTP 503
    status_for: Callable[[dict], int | None] | None = None  # an HTTP error status to answer for a body
    garbage: bool = False  # answer 200 with bytes that are neither SSE nor JSON
    stall_s: float = 0.0  # after the headers, send nothing for this long


def capacity_per_s(config: StandinConfig, tokens: int) -> float:
    """Most requests per second the server can finish, all slots busy with ``tokens``-token answers."""
    return config.max_num_seqs / (config.first_token_s + tokens * config.per_token_s)


class _FifoSlots:
    """A FIFO semaphore: the first request queued is the first admitted, as in vLLM's waiting queue."""

    def __init__(self, n: int):
        self.free = n
        self.waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.cancelled():
                with contextlib.suppress(ValueError):
                    self.waiters.remove(fut)
            else:  # granted a slot just as the request went away: hand it on
                self.release()
            raise

    def release(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.free += 1


class Standin:
    """The server's state and Starlette app: admission queue, request log and statistics.

    Counters are changed only on the server's event loop; reading them from another thread is safe.
    """

    def __init__(self, config: StandinConfig):
        self.config = config
        # Each: body, headers, outcome, tokens, and times (monotonic): arrived, queued, admitted, finished.
        self.requests: list[dict[str, Any]] = []
        self.running = 0  # sequences in prefill or decoding
        self.in_flight = 0  # open generation requests: queued + running (+ stalled)
        self.max_running = 0
        self.max_in_flight = 0
        self.completed = 0
        self.cancelled = 0  # the client went away before the answer was complete
        self.rejected = 0  # answered with an HTTP error status
        self.tokens = 0  # generated, over all requests
        self.server: uvicorn.Server | None = None  # set by whoever serves the app
        self._slots: _FifoSlots | None = None  # made on the loop that serves
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/stats", self._stats, methods=["GET"]),
            ]
        )

    def stats(self) -> dict[str, Any]:
        return {
            "requests": len(self.requests),
            "running": self.running,
            "in_flight": self.in_flight,
            "max_running": self.max_running,
            "max_in_flight": self.max_in_flight,
            "completed": self.completed,
            "cancelled": self.cancelled,
            "rejected": self.rejected,
            "tokens": self.tokens,
            "open_connections": self.open_connections(),
            # A sweep's span free of the client's start-up: first request in, last answer out (time.monotonic,
            # one clock for every process on the machine, so spans of several servers can be joined).
            "first_arrived": self.requests[0]["arrived"] if self.requests else None,
            "last_finished": max((r["finished"] for r in self.requests if "finished" in r), default=None),
        }

    def open_connections(self) -> int:
        """TCP connections the server holds open now, idle keep-alive ones included (for socket-leak tests)."""
        return len(self.server.server_state.connections) if self.server else 0

    async def _stats(self, request: Request) -> Response:
        return JSONResponse(self.stats())

    async def _models(self, request: Request) -> Response:
        model = {"id": self.config.model, "object": "model", "created": 0, "owned_by": "standin"}
        return JSONResponse({"object": "list", "data": [model]})

    async def _chat(self, request: Request) -> Response:
        record: dict[str, Any] = {
            "body": None,
            "headers": dict(request.headers),
            "arrived": time.monotonic(),
            "outcome": None,
            "tokens": 0,
        }
        self.requests.append(record)
        nth = len(self.requests)
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        record["body"] = body
        cfg = self.config
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return self._reject(record, 400, "the body must be a JSON object with a list of messages")
        if nth <= cfg.fail_first:
            return self._reject(record, 503, "the server is not ready (fail_first)")
        status = cfg.status_for(body) if cfg.status_for else None
        if status:
            return self._reject(record, status, f"the stand-in was told to answer {status}")
        if body.get("model") != cfg.model:
            return self._reject(record, 404, f"The model `{body.get('model')}` does not exist.")
        stream = body.get("stream") is True
        if cfg.garbage:
            record["outcome"] = "garbage"
            junk = b"\x00\xff<html>not an event stream\r\n\x7f\x80{{{\n\n"
            return Response(junk, media_type="text/event-stream" if stream else "application/json")
        return _Completion(self, body, record, stream)

    def _reject(self, record: dict[str, Any], status: int, message: str) -> Response:
        record["outcome"] = status
        self.rejected += 1
        kind = "BadRequestError" if status < 500 else "ServiceUnavailableError"
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)

    # -- generation ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._slots is None:
            self._slots = _FifoSlots(self.config.max_num_seqs)
        await self._slots.acquire()
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            yield
        finally:
            self.running -= 1
            self._slots.release()

    async def generate(self, body: dict, record: dict[str, Any]) -> AsyncIterator[str]:
        """Queue for a slot, prefill, then yield the answer's tokens on schedule; stops when closed."""
        cfg = self.config
        text = cfg.answer(body) if callable(cfg.answer) else cfg.answer
        pieces = tokenize(text)
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        if isinstance(limit, int) and limit >= 0 and len(pieces) > limit:
            pieces = pieces[:limit]
            record["finish_reason"] = "length"
        else:
            record["finish_reason"] = "stop"
        loop = asyncio.get_running_loop()
        record["queued"] = time.monotonic()
        async with self._slot():
            record["admitted"] = time.monotonic()
            due = loop.time() + cfg.first_token_s
            for piece in pieces:
                # Deadlines, not sleeps: timer lateness does not pile up over a hundred tokens.
                due += cfg.per_token_s
                await asyncio.sleep(max(0.0, due - loop.time()))
                record["tokens"] += 1
                self.tokens += 1
                yield piece


def _prompt_tokens(body: dict) -> int:
    chars = 0
    images = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "text":
                    chars += len(str(part.get("text", "")))
                elif isinstance(part, dict) and part.get("type") == "image_url":
                    images += 1
    return -(-chars // TOKEN_CHARS) + images * IMAGE_TOKENS


class _Completion(Response):
    """One chat completion as a raw ASGI response, so that a client disconnect stops the generation at once.

    uvicorn silently drops what is sent after a disconnect; only ``receive()`` tells, so it is watched
    alongside the generation, and whichever ends first decides.
    """

    def __init__(self, standin: Standin, body: dict, record: dict[str, Any], stream: bool):
        self.standin = standin
        self.body_json = body
        self.record = record
        self.stream = stream
        nth = len(standin.requests)
        self.id = f"chatcmpl-standin-{nth}"
        self.created = int(time.time())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        st = self.standin
        st.in_flight += 1
        st.max_in_flight = max(st.max_in_flight, st.in_flight)
        work = asyncio.ensure_future(self._respond(send))
        watch = asyncio.ensure_future(_disconnected(receive))
        try:
            await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            if not work.done():
                work.cancel()
                self._end("cancelled")
            await asyncio.gather(work, watch, return_exceptions=True)
            self._end("failed")  # only if neither answered nor cancelled: an exception, raised below
        if not work.cancelled() and work.exception() is not None:
            raise work.exception()  # type: ignore[misc]

    def _end(self, outcome: str) -> None:
        """Count the request done once, before its last byte goes out: a client that has its whole answer
        and sends the next request is then never seen with one request too many in flight."""
        if "finished" in self.record:
            return
        st = self.standin
        self.record["outcome"] = outcome
        self.record["finished"] = time.monotonic()
        st.in_flight -= 1
        if outcome == "completed":
            st.completed += 1
        elif outcome == "cancelled":
            st.cancelled += 1

    async def _respond(self, send: Any) -> None:
        st, body, record = self.standin, self.body_json, self.record
        if self.stream:
            headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
        if st.config.stall_s > 0:
            await asyncio.sleep(st.config.stall_s)
        pieces: list[str] = []
        # aclosing: a cancel that lands in send() still closes the generator, and so frees its slot, at once.
        async with contextlib.aclosing(st.generate(body, record)) as tokens:
            async for piece in tokens:
                if self.stream:
                    delta = {"content": piece} if pieces else {"role": "assistant", "content": piece}
                    await send(self._event(self._chunk(delta, None)))
                pieces.append(piece)
        usage = {
            "prompt_tokens": _prompt_tokens(body),
            "completion_tokens": len(pieces),
            "total_tokens": _prompt_tokens(body) + len(pieces),
        }
        finish = record["finish_reason"]
        if self.stream:
            out = self._event(self._chunk({}, finish))["body"]
            options = body.get("stream_options")
            if isinstance(options, dict) and options.get("include_usage"):
                out += self._event({**self._chunk({}, None), "choices": [], "usage": usage})["body"]
            out += b"data: [DONE]\n\n"
            self._end("completed")
            await send({"type": "http.response.body", "body": out, "more_body": False})
        else:
            message = {"role": "assistant", "content": "".join(pieces)}
            answer = {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": st.config.model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
                "usage": usage,
            }
            data = json.dumps(answer).encode("utf-8")
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
            self._end("completed")
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": data, "more_body": False})

    def _chunk(self, delta: dict, finish: str | None) -> dict:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.standin.config.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    @staticmethod
    def _event(obj: dict) -> dict:
        data = b"data: " + json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n\n"
        return {"type": "http.response.body", "body": data, "more_body": True}


async def _disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _listening_socket(port: int) -> socket.socket:
    """A loopback listening socket; SO_REUSEADDR lets a restarted server take the same port at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _uvicorn(app: Any, log_level: str) -> uvicorn.Server:
    config = uvicorn.Config(app, log_config=None, log_level=log_level, access_log=False, lifespan="off", http="h11")
    return uvicorn.Server(config)


class StandinServer(Standin):
    """The stand-in served by uvicorn on a background thread of this process, on 127.0.0.1.

    ``stop()`` drops every open connection, as a crashed or restarted server would; ``start()`` again
    serves on the same port. The request log and statistics carry over a restart.
    """

    def __init__(self, config: StandinConfig | None = None, port: int = 0):
        super().__init__(config or StandinConfig())
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 10.0) -> StandinServer:
        if self._thread is not None:
            raise RuntimeError("the stand-in server is already running")
        sock = _listening_socket(self.port)
        self.port = sock.getsockname()[1]
        server = _uvicorn(self.app, "warning")
        self._slots = None  # slots belong to one event loop
        ready = threading.Event()
        failure: list[BaseException] = []

        async def serve() -> None:
            self._loop = asyncio.get_running_loop()
            ready_task = asyncio.ensure_future(_when(lambda: server.started, ready.set))
            try:
                await server.serve(sockets=[sock])
            finally:
                ready_task.cancel()

        def run() -> None:
            try:
                asyncio.run(serve())
            except BaseException as exc:  # reported by start()
                failure.append(exc)
            finally:
                sock.close()
                ready.set()

        self.server = server
        self._thread = threading.Thread(target=run, name=f"standin-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout) or failure or not server.started:
            self.stop()
            raise RuntimeError(f"the stand-in server did not start: {failure[0] if failure else 'timeout'}")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        thread, server, loop = self._thread, self.server, self._loop
        if thread is None or server is None:
            return
        if loop is not None and thread.is_alive():

            def drop_all() -> None:
                for conn in list(server.server_state.connections):
                    transport = getattr(conn, "transport", None)
                    if transport is not None:
                        transport.abort()
                server.should_exit = server.force_exit = True

            with contextlib.suppress(RuntimeError):  # the loop has just closed
                loop.call_soon_threadsafe(drop_all)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError("the stand-in server did not stop in time")
        self._thread = self.server = self._loop = None

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _when(condition: Callable[[], bool], then: Callable[[], None]) -> None:
    while not condition():
        await asyncio.sleep(0.005)
    then()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--model", default=StandinConfig.model)
    parser.add_argument("--max-num-seqs", type=int, default=StandinConfig.max_num_seqs)
    parser.add_argument("--first-token-s", type=float, default=StandinConfig.first_token_s)
    parser.add_argument("--per-token-s", type=float, default=StandinConfig.per_token_s)
    parser.add_argument("--answer", choices=["default", "surg-r1"], default="default")
    args = parser.parse_args(argv)
    config = StandinConfig(
        model=args.model,
        max_num_seqs=args.max_num_seqs,
        first_token_s=args.first_token_s,
        per_token_s=args.per_token_s,
        answer=surg_r1_answer if args.answer == "surg-r1" else DEFAULT_ANSWER,
    )
    standin = Standin(config)
    sock = _listening_socket(args.port)
    server = _uvicorn(standin.app, "warning")
    server.config.timeout_graceful_shutdown = 5
    standin.server = server

    async def serve() -> None:
        ready = asyncio.ensure_future(
            _when(lambda: server.started, lambda: print(f"ready http://127.0.0.1:{sock.getsockname()[1]}/v1"))
        )
        try:
            # uvicorn takes SIGTERM and SIGINT as "stop gracefully" while it serves.
            await server.serve(sockets=[sock])
        finally:
            ready.cancel()
            print(json.dumps(standin.stats()), flush=True)

    def stop(signum: int, frame: object) -> None:
        server.should_exit = True

    # uvicorn swaps in its own handlers while serving and re-raises the signal afterwards: with ours
    # installed, that re-raise is harmless and the statistics still get printed.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    asyncio.run(serve())


if __name__ == "__main__":
    main()
