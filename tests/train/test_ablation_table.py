"""The multi-seed ablation table (scripts/ablation.py): means with Student-t intervals over seeds, and the
chain's paired difference from the direct answer, read from the runs' own evaluation reports."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ablation.py"
spec = importlib.util.spec_from_file_location("ablation_script", SCRIPT)
ablation = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = ablation  # dataclasses look their module up while the file runs
spec.loader.exec_module(ablation)


def report(cvs_map: float, ivt: float, accuracy=(0.9, 0.8, 0.7)) -> dict:
    return {
        "n": 300,
        "format_ok": 1.0,
        "arena_score": (cvs_map + ivt) / 2,
        "tasks": {"cvs": {"mAP": cvs_map, "accuracy": list(accuracy)}, "triplet": {"mAP_ivt": ivt}},
    }


def write_run(out: Path, seed: int, reports: dict[str, dict]) -> None:
    for key, rep in reports.items():
        folder = out / f"seed{seed}" / "eval" / key.replace("/", "-")
        folder.mkdir(parents=True)
        (folder / "report.json").write_text(json.dumps(rep))


def test_the_interval_is_student_t_over_seeds_and_absent_for_one_run():
    got = ablation.t_interval([0.50, 0.60, 0.70])
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2 df) * sd / sqrt(n)
    assert got.mean == pytest.approx(0.6) and got.low == pytest.approx(0.6 - half) and got.n == 3
    assert got.text() == f"60.0 [{100 * (0.6 - half):.1f}, {100 * (0.6 + half):.1f}]"
    clipped = ablation.t_interval([0.90, 1.0, 0.98], bounds=(0.0, 1.0))  # a share's interval stops at 1
    assert clipped.high == 1.0 and clipped.low < clipped.mean == pytest.approx(0.96)
    one = ablation.t_interval([0.4])
    assert one.text() == "40.0" and ablation.t_interval([]) is None


def test_the_table_reads_every_seed_and_pairs_chain_with_direct(tmp_path):
    chain = [0.70, 0.74, 0.72]
    direct = [0.60, 0.66, 0.60]
    for seed, (c, d) in enumerate(zip(chain, direct, strict=True)):
        write_run(tmp_path, seed, {"chain/sft": report(c, 0.3), "direct/sft": report(d, 0.2)})
    write_run(tmp_path, 7, {"chain/sft": report(0.9, 0.9)})  # a seed not asked for is not read
    reports = ablation.seed_reports(tmp_path, [0, 1, 2])
    table, rows = ablation.ablation_table(reports)
    lines = table.splitlines()
    assert lines[0].startswith("| variant | stage | seeds | CVS mAP | CVS accuracy | triplet ivt mAP | arena |")
    assert lines[2].startswith("| direct answer | SFT | 3 | 62.0 [")  # direct first, as the paper's table
    assert lines[3].startswith("| hierarchical chain | SFT | 3 | 72.0 [")
    paired = next(r for r in rows if r["variant"] == "chain - direct")
    expected = ablation.t_interval([c - d for c, d in zip(chain, direct, strict=True)])
    assert paired["CVS mAP"]["mean"] == pytest.approx(0.10)
    assert paired["CVS mAP"]["low"] == pytest.approx(expected.low)
    assert paired["CVS mAP"]["low"] > 0  # told from noise: the interval excludes 0
    assert paired["triplet ivt mAP"]["low"] == pytest.approx(0.1) == paired["triplet ivt mAP"]["high"]
    assert "held-out samples per evaluation: 300" in table
    assert "hierarchical chain | SFT | 3 | 72.0 [" in table and paired["CVS mAP"]["high"] < 1


def test_a_missing_task_is_left_out_of_the_columns(tmp_path):
    rep = {"n": 10, "format_ok": 1.0, "arena_score": 0.5, "tasks": {"triplet": {"mAP_ivt": 0.5}}}
    write_run(tmp_path, 0, {"chain/sft": rep})
    table, _ = ablation.ablation_table(ablation.seed_reports(tmp_path, [0]))
    assert "CVS" not in table.splitlines()[0] and "| hierarchical chain | SFT | 1 | 50.0 | 50.0 | 100.0 |" in table


def test_validation_reports_stay_out_of_the_table_and_each_seeds_chosen_rate_is_listed(tmp_path):
    for seed, rate in ((0, 1e-4), (1, 3e-5)):
        write_run(
            tmp_path, seed, {"chain/iter1": report(0.7, 0.3), "validation/chain-iter1-sft-lr0.0003": report(0.1, 0.1)}
        )
        chosen = tmp_path / f"seed{seed}" / "chain" / "iter1" / "learning-rate.json"
        chosen.parent.mkdir(parents=True)
        chosen.write_text(json.dumps({"chosen": rate, "validation_arena": {}}))
    table, _ = ablation.ablation_table(ablation.seed_reports(tmp_path, [0, 1]))
    assert "direct answer" not in table and table.count("| hierarchical chain |") == 1
    note = ablation.rates_note(tmp_path, [0, 1])
    assert "- hierarchical chain, iter1: seed 0: 0.0001, seed 1: 3e-05" in note
    assert ablation.rates_note(tmp_path / "none", [0]) == ""
