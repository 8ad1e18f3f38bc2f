"""Training and inference lay out the user turn identically (frame where the prompt says <image>).

A model trained with the frame before the question but asked with the frame inside it sees a
different prompt; a small model then wrote "Level 2" as its first header in every answer."""

from __future__ import annotations

import json

import numpy as np

from engine.backends.base import GenerationRequest
from engine.backends.transformers_backend import build_messages
from engine.prompts import user_content
from train.sft import load_sft_rows

PROMPT = "Given the laparoscopic cholecystectomy image <image>, which surgical phase is being performed?"


def test_the_frame_goes_where_the_prompt_says():
    assert user_content(PROMPT, 1) == [
        {"type": "text", "text": "Given the laparoscopic cholecystectomy image "},
        {"type": "image"},
        {"type": "text", "text": ", which surgical phase is being performed?"},
    ]
    assert user_content("Which phase?", 1) == [{"type": "image"}, {"type": "text", "text": "Which phase?"}]
    assert user_content("<image>A <image>B", 1) == [{"type": "image"}, {"type": "text", "text": "A B"}]
    assert user_content("see <image>", 0) == [{"type": "text", "text": "see image"}]


def test_sft_rows_and_engine_requests_have_the_same_layout(tmp_path):
    frame = tmp_path / "f.jpg"
    frame.write_bytes(b"jpeg")  # only its existence is checked here
    row = {
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": PROMPT},
            {"role": "assistant", "content": "<answer>Preparation</answer>"},
        ],
        "images": [str(frame)],
    }
    (tmp_path / "sft.jsonl").write_text(json.dumps(row) + "\n")
    trained = load_sft_rows(tmp_path / "sft.jsonl")[0]["messages"][1]
    asked = build_messages(GenerationRequest(PROMPT, np.zeros((8, 8, 3), np.uint8), system="sys"))[1]
    assert trained == asked
