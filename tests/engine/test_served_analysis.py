"""``surgview-engine`` against a server that answers as the Surg-R1 release does (a replay stand-in on
127.0.0.1): what each request carried, the merged records it exports, N requests in flight, and a
server killed and restarted mid-case losing no frame."""

from __future__ import annotations

import base64
import json
import threading
import time

import cv2
import numpy as np
import pytest

from bench.openai_standin import StandinConfig, StandinServer, surg_r1_answer
from engine.cli import main as engine_main
from engine.profiles import SURG_R1_QUESTIONS, SURG_R1_SYSTEM
from engine.store import CaseStore

W, H = 320, 180  # the synthetic case's frame size


def _image_size(body: dict) -> tuple[int, int]:
    content = body["messages"][-1]["content"]
    url = next(part["image_url"]["url"] for part in content if part["type"] == "image_url")
    data = base64.b64decode(url.split(",", 1)[1])
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return image.shape[1], image.shape[0]


def _user_turn(body: dict) -> str:
    """The user turn with "<image>" where the image part stands (the release puts it mid-sentence)."""
    content = body["messages"][-1]["content"]
    return "".join(part["text"] if part["type"] == "text" else "<image>" for part in content)


def test_surg_r1_profile_asks_the_release_questions_and_exports_merged_records(video, data_home, tmp_path, capsys):
    config = StandinConfig(model="surg-r1", answer=surg_r1_answer, first_token_s=0.01, per_token_s=0.0)
    with StandinServer(config) as server:
        served = ["--backend", "openai", "--url", server.url, "--model", "surg-r1", "--profile", "surg-r1"]
        code = engine_main(["analyze", str(video), *served, "--stride", "20", "--concurrency", "4", "--quiet"])
        assert code == 0
        bodies = [r["body"] for r in server.requests]
    assert len(bodies) == 3 * 3  # frames 0, 500, 1000; three questions each
    for body in bodies:
        assert body["messages"][0] == {"role": "system", "content": SURG_R1_SYSTEM}
        assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.1, 0.95, 1024)
        assert _image_size(body) == (840, 476)
    assert sorted(_user_turn(b) for b in bodies) == sorted([q for _, _, q in SURG_R1_QUESTIONS] * 3)

    out = tmp_path / "case.jsonl"
    assert engine_main(["export", str(video), "--jsonl", str(out)]) == 0
    frames = [json.loads(line) for line in out.read_text().splitlines()]
    frames = [f for f in frames if f["type"] == "frame"]
    assert [f["frame"] for f in frames] == [0, 500, 1000]
    row = frames[0]
    assert row["profile"] == "surg-r1" and set(row["tasks"]) == {"phase", "triplet", "localisation"}
    assert row["phase"] == "CalotTriangleDissection"
    assert row["triplets"] == ["grasper retract gallbladder", "hook dissect cystic_duct"]
    sx, sy = W / 840, H / 476
    expected = [[84 * sx, 42 * sy, 252 * sx, 210 * sy], [420 * sx, 238 * sy, 588 * sx, 406 * sy]]
    assert [i["label"] for i in row["instruments"]] == ["Grasper", "Hook"]
    for got, want in zip((i["box"] for i in row["instruments"]), expected, strict=True):
        assert got == pytest.approx(want, abs=0.06)  # source pixels, not the 840x476 the model saw
    assert all(t["raw_text"].startswith("<think>") for t in row["tasks"].values())


def test_many_requests_in_flight_finish_at_least_four_times_sooner_than_one_at_a_time(video, data_home):
    config = StandinConfig(model="m", max_num_seqs=16, first_token_s=0.15, per_token_s=0.0)
    common = ["--backend", "openai", "--model", "m", "--profile", "surgview", "--stride", "1", "--quiet"]
    with StandinServer(config) as server:
        started = time.perf_counter()
        assert engine_main(["analyze", str(video), "--url", server.url, "--concurrency", "16", *common]) == 0
        wall = time.perf_counter() - started
        peak = server.max_in_flight
    assert peak >= 12
    assert wall < 60 * 0.15 / 4  # 60 frames of 0.15 s: 9 s one at a time


def test_a_server_killed_and_restarted_mid_case_loses_no_frame(video, data_home, capsys):
    config = StandinConfig(model="m", max_num_seqs=8, first_token_s=0.05, per_token_s=0.002)
    with StandinServer(config) as server:

        def restart() -> None:
            time.sleep(0.6)
            server.stop()
            time.sleep(1.0)
            server.start()

        chaos = threading.Thread(target=restart)
        chaos.start()
        served = ["--backend", "openai", "--url", server.url, "--model", "m", "--profile", "surgview"]
        code = engine_main(["analyze", str(video), *served, "--stride", "0.5", "--concurrency", "8", "--quiet"])
        chaos.join()
    assert code == 0
    with CaseStore.for_video(video, readonly=True) as store:
        (analysis,) = store.analyses()
        assert analysis.frames == 125  # every frame of the sweep (1500 frames at 0.5 s), each once
    err = capsys.readouterr().err
    assert "down" in err.lower() or "restarted" in err.lower() or "back" in err.lower()
