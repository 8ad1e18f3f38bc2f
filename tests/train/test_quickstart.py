"""The one-command path on a small budget: synthetic cases → adapters → CoT → SFT → held-out report."""

from __future__ import annotations

import json

from engine.modeldir import Manifest
from train.quickstart import QuickstartConfig, run_quickstart


def test_sft_synthetic_runs_end_to_end_and_resumes(tmp_path):
    config = QuickstartConfig(train_cases=1, test_cases=1, minutes=1.0, steps=20, batch_size=4, max_new_tokens=48)
    lines: list[str] = []
    report = run_quickstart(tmp_path, config, say=lines.append)
    assert any(line.startswith("5/6") for line in lines)
    assert (tmp_path / "sft.jsonl").read_text().count("\n") == 60  # one PHASE sample per second
    manifest = Manifest.read(tmp_path / "sft" / "model")
    assert manifest.lineage[-1].name == "sft" and manifest.lineage[-1].details["steps"] == 20
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert saved["n"] == 60 and "phase" in saved["tasks"] and 0.0 <= report["format_ok"] <= 1.0
    assert (tmp_path / "eval" / "report.md").read_text().startswith("| task |")
    again: list[str] = []
    run_quickstart(tmp_path, config, say=again.append)  # everything exists: nothing is redone
    assert Manifest.read(tmp_path / "sft" / "model").lineage == manifest.lineage
