"""Self-iteration: only chains that pass the reward thresholds become data, each once per row."""

from __future__ import annotations

import json

from train.iterate import SelfSample, write_iteration_set


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_kept_chains_join_the_original_set_once_each(tmp_path):
    prompt = [{"role": "system", "content": "sys"}, {"role": "user", "content": "<image>Which phase?"}]
    grpo = _jsonl(
        tmp_path / "grpo.jsonl",
        [{"prompt": prompt, "images": [f"/f/{k}.jpg"], "phase": "Preparation"} for k in range(2)],
    )
    original = _jsonl(
        tmp_path / "sft.jsonl",
        [{"messages": [*prompt, {"role": "assistant", "content": "orig"}], "images": ["/f/0.jpg"]}],
    )
    samples = [
        SelfSample(0, "<answer>A</answer>", {"accuracy": 1.0}, True),
        SelfSample(0, "<answer>A</answer>  ", {"accuracy": 1.0}, True),  # same text, other whitespace
        SelfSample(0, "<answer>B</answer>", {"accuracy": 0.0}, False),  # failed the threshold
        SelfSample(1, "<answer>A</answer>", {"accuracy": 1.0}, True),  # same text, another frame: kept
    ]
    stats = write_iteration_set(samples, grpo, original, tmp_path / "mixed.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "mixed.jsonl").read_text().splitlines()]
    assert stats == {
        "sampled": 4,
        "kept": 3,
        "kept_unique": 2,
        "pass_rate": 0.75,
        "rows_written": 3,
        "original_rows": 1,
    }
    assert rows[0]["messages"][-1]["content"] == "orig"
    assert [r["messages"][-1]["content"] for r in rows[1:]] == ["<answer>A</answer>", "<answer>A</answer>"]
    assert [r["images"] for r in rows[1:]] == [["/f/0.jpg"], ["/f/1.jpg"]]
    assert rows[1]["messages"][:2] == prompt  # the prompt the model answered, unchanged
