"""The continuous-batching stand-in server (bench/openai_standin.py), checked with plain httpx.

Other tests and the served-throughput bench trust its timing, limits and fault switches, so they are
pinned here. Every socket is on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.openai_standin import (
    DEFAULT_ANSWER,
    StandinConfig,
    StandinServer,
    capacity_per_s,
    surg_r1_answer,
    tokenize,
    user_text,
)
from tests.engine.loopback import wait_until

ROOT = Path(__file__).resolve().parents[2]
ANSWER = "<think> Level 1: x. </think><answer>B</answer>"  # 12 tokens
CHAIN = re.compile(r"<think> Level 1: .+ Level 2: .+ Level 3: .+ </think><answer>(.+)</answer>", re.S)


def body(text: str = "which surgical phase is being performed?", **extra: object) -> dict:
    content = [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
        {"type": "text", "text": text},
    ]
    return {"model": "standin", "messages": [{"role": "user", "content": content}], "stream": True, **extra}


def events(response: httpx.Response) -> Iterator[dict | str]:
    """The SSE data payloads of a streamed answer: parsed chunks, then the string "[DONE]"."""
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            yield data if data == "[DONE]" else json.loads(data)


def test_streams_the_answer_token_by_token_and_honours_max_tokens():
    config = StandinConfig(answer=ANSWER, first_token_s=0.05, per_token_s=0.01)
    with StandinServer(config) as server, httpx.Client(base_url=server.url, timeout=5) as client:
        assert client.get("/models").json()["data"][0]["id"] == "standin"
        arrivals, chunks = [], []
        with client.stream("POST", "/chat/completions", json=body(stream_options={"include_usage": True})) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            for event in events(r):
                arrivals.append(time.monotonic())
                chunks.append(event)
        assert chunks[-1] == "[DONE]"
        deltas = [c["choices"][0]["delta"] for c in chunks[:-1] if c["choices"]]
        pieces = [d["content"] for d in deltas if "content" in d]
        assert pieces == tokenize(ANSWER) and "".join(pieces) == ANSWER
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert [c["choices"][0]["finish_reason"] for c in chunks[-3:-2]] == ["stop"]
        assert chunks[-2]["usage"]["completion_tokens"] == 12 and chunks[-2]["usage"]["prompt_tokens"] > 256
        assert arrivals[11] - arrivals[0] >= 10 * 0.01  # one event per token, on the token clock

        short = client.post("/chat/completions", json=body(stream=False, max_tokens=3)).json()
        assert short["choices"][0]["message"]["content"] == ANSWER[:12]
        assert short["choices"][0]["finish_reason"] == "length" and short["usage"]["completion_tokens"] == 3
        assert client.post("/chat/completions", json={**body(), "model": "other"}).status_code == 404
        assert server.completed == 2 and server.requests[0]["body"]["stream_options"] == {"include_usage": True}
        assert server.requests[0]["arrived"] < server.requests[1]["arrived"]


def test_continuous_batching_runs_at_most_max_num_seqs_and_queues_the_rest_fifo():
    config = StandinConfig(answer=ANSWER[:40], max_num_seqs=4, first_token_s=0.1, per_token_s=0.02)  # 0.3 s each
    latency = config.first_token_s + 10 * config.per_token_s

    async def one(client: httpx.AsyncClient, i: int) -> str:
        async with client.stream("POST", "/chat/completions", json=body(f"request {i}")) as r:
            return "".join([line async for line in r.aiter_lines()])

    async def sixteen(url: str) -> float:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            t0 = time.monotonic()
            texts = await asyncio.gather(*(one(client, i) for i in range(16)))
            assert all(t.endswith("[DONE]") for t in texts)
            return time.monotonic() - t0

    with StandinServer(config) as server:
        wall = asyncio.run(sixteen(server.url))
        assert server.max_running == 4 and server.max_in_flight == 16 and server.completed == 16
        assert 4 * latency * 0.95 <= wall < 5.5 * latency, wall  # four waves of four
        assert capacity_per_s(config, 10) == pytest.approx(4 / latency)
        by_admission = sorted(server.requests, key=lambda r: r["admitted"])
        assert [r["queued"] for r in by_admission] == sorted(r["queued"] for r in server.requests)


def test_a_client_that_goes_away_is_cancelled_and_its_generation_stops():
    config = StandinConfig(max_num_seqs=1, first_token_s=0.01, per_token_s=0.01)  # 100 tokens: 1 s
    with StandinServer(config) as server, httpx.Client(base_url=server.url, timeout=5) as client:
        with client.stream("POST", "/chat/completions", json=body()) as r:
            for n, _ in enumerate(events(r)):
                if n == 2:
                    break
        assert wait_until(lambda: server.cancelled == 1 and server.running == 0 and server.in_flight == 0)
        made = server.requests[0]["tokens"]
        time.sleep(0.1)
        assert server.requests[0]["tokens"] == made < 50 and server.requests[0]["outcome"] == "cancelled"

        # One running, one queued that leaves while waiting: the queue forgets it, the next one runs.
        config.answer, config.per_token_s = ANSWER, 0.03  # the first one runs 0.37 s
        with client.stream("POST", "/chat/completions", json=body("first")) as first:
            with client.stream("POST", "/chat/completions", json=body("queued")):
                assert wait_until(lambda: server.in_flight == 2)
            assert wait_until(lambda: server.cancelled == 2)
            assert list(events(first))[-1] == "[DONE]"
        assert "admitted" not in server.requests[2]
        assert client.post("/chat/completions", json=body(stream=False)).status_code == 200
        assert server.max_running == 1 and server.completed == 2


def test_stop_drops_open_streams_and_start_serves_again_on_the_same_port():
    config = StandinConfig(answer=ANSWER, first_token_s=0.01, per_token_s=0.05)
    server = StandinServer(config).start()
    try:
        url, port = server.url, server.port
        with httpx.Client(base_url=url, timeout=5) as client:
            with client.stream("POST", "/chat/completions", json=body()) as r:
                stream = events(r)
                next(stream)
                assert server.open_connections() == 1
                server.stop()
                with pytest.raises(httpx.TransportError):
                    list(stream)
            with pytest.raises(httpx.ConnectError):
                client.get("/models")
            server.start()
            assert (server.url, server.port) == (url, port)
            answer = client.post("/chat/completions", json=body(stream=False, max_tokens=1)).json()
            assert answer["choices"][0]["message"]["content"] == ANSWER[:4]
            assert server.open_connections() == 1
        assert wait_until(lambda: server.open_connections() == 0)
    finally:
        server.stop()


def test_fault_switches():
    def status_for(b: dict) -> int | None:
        return 500 if "boom" in user_text(b) else None

    config = StandinConfig(answer=ANSWER, first_token_s=0.0, per_token_s=0.0, fail_first=2, status_for=status_for)
    with StandinServer(config) as server, httpx.Client(base_url=server.url, timeout=5) as client:
        first = [client.post("/chat/completions", json=body()) for _ in range(3)]
        assert [r.status_code for r in first] == [503, 503, 200]
        assert "fail_first" in first[0].json()["error"]["message"]
        assert client.post("/chat/completions", json=body("boom")).status_code == 500

        config.garbage = True
        junk = client.post("/chat/completions", json=body())
        assert junk.status_code == 200 and not junk.content.startswith(b"data:")
        config.garbage, config.stall_s = False, 1.0
        t0 = time.monotonic()
        timeout = httpx.Timeout(5, read=0.2)
        with (
            pytest.raises(httpx.ReadTimeout),
            client.stream("POST", "/chat/completions", json=body(), timeout=timeout) as r,
        ):
            assert r.status_code == 200  # the headers come at once, then nothing
            list(r.iter_lines())
        assert time.monotonic() - t0 < 0.9
        assert wait_until(lambda: server.cancelled == 1 and server.in_flight == 0)


def test_surg_r1_answer_picks_the_answer_by_question():
    def answer(question: str) -> str:
        match = CHAIN.fullmatch(surg_r1_answer(body(question)))
        assert match, question
        return match.group(1)

    assert answer("Given the image <image>, which surgical phase is being performed?") == "Calot Triangle Dissection"
    assert answer("What is the complete surgical action in this image?") == (
        "Grasper Retract Gallbladder, Hook Dissect Cystic_duct"
    )
    assert (
        answer("Please locate all the tools in the image.") == "Grasper (84,42), (252,210), Hook (420,238), (588,406)"
    )
    assert surg_r1_answer(body("Describe the frame.")) == DEFAULT_ANSWER
    assert CHAIN.fullmatch(DEFAULT_ANSWER) and len(tokenize(DEFAULT_ANSWER)) == 100
    phase = surg_r1_answer(body("which surgical phase"))
    assert phase.startswith("<think> Level 1: A grasper and a hook are visible; the gallbladder and liver are in view.")

    config = StandinConfig(answer=surg_r1_answer, first_token_s=0.0, per_token_s=0.0)
    with StandinServer(config) as server, httpx.Client(base_url=server.url, timeout=5) as client:
        got = client.post("/chat/completions", json=body("Locate all the tools.", stream=False)).json()
        assert got["choices"][0]["message"]["content"].endswith("Hook (420,238), (588,406)</answer>")


def test_runs_as_a_separate_process_and_prints_its_statistics_when_stopped():
    args = ["--port", "0", "--max-num-seqs", "2", "--first-token-s", "0", "--per-token-s", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.openai_standin", *args], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert select.select([proc.stdout], [], [], 10)[0], "no ready line in 10 s"
        line = proc.stdout.readline()
        assert line.startswith("ready http://127.0.0.1:"), line
        url = line.split()[1]
        with httpx.Client(base_url=url, timeout=5) as client:
            assert client.post("/chat/completions", json=body(stream=False)).status_code == 200
            assert client.get(url.removesuffix("/v1") + "/stats").json()["completed"] == 1
        proc.terminate()
        out, _ = proc.communicate(timeout=5)
        stats = json.loads(out.strip().splitlines()[-1])
        assert stats["completed"] == 1 and stats["max_in_flight"] == 1
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
