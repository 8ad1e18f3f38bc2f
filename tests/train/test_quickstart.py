"""The one-command path on a small budget: synthetic cases → adapters → CoT → SFT → held-out report."""

from __future__ import annotations

import json

from engine.modeldir import Manifest
from train.quickstart import QuickstartConfig, run_quickstart


def test_sft_synthetic_runs_end_to_end_and_resumes(tmp_path):
    config = QuickstartConfig(
        train_cases=1, test_cases=1, minutes=1.0, steps=20, batch_size=4, max_new_tokens=48, model_size="tiny"
    )
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


def test_eval_command_scores_a_model_on_a_surg_r1_set(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import cv2
    import numpy as np

    from engine.tiny_model import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny", seed=0)
    question = (
        "Given the laparoscopic cholecystectomy image <image>, which surgical phase is being performed?\n"
        "A. Preparation\nB. Calot Triangle Dissection"
    )
    rows = []
    for i, answer in enumerate(["A. Preparation", "B. Calot Triangle Dissection"]):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), np.full((90, 160, 3), 60 * i, np.uint8))
        rows.append(
            json.dumps(
                {
                    "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                    "images": [f"{i}.jpg"],
                }
            )
        )
    (tmp_path / "set.jsonl").write_text("\n".join(rows) + "\n")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "train.cli",
            "eval",
            str(model),
            "--surgr1",
            str(tmp_path / "set.jsonl"),
            "--task",
            "phase_mcq",
            "--out",
            str(tmp_path / "eval"),
            "--max-tokens",
            "8",
            "--quiet",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "MCQ accuracy" in done.stdout
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["n"] == 2 and "arena_score" in report
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "train.cli",
            "eval",
            str(model),
            "--surgr1",
            str(tmp_path / "no.jsonl"),
            "--out",
            str(tmp_path / "e2"),
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "no.jsonl" in bad.stderr
