"""scripts/box_diagnostics.py: each gold box is matched to one predicted box of its class on its frame, and the
lines say how many were named, how many reach IoU 0.5, and how far the centres sit."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "box_diagnostics.py"
spec = importlib.util.spec_from_file_location("box_diagnostics_script", SCRIPT)
diagnostics = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = diagnostics
spec.loader.exec_module(diagnostics)


def test_each_gold_box_takes_its_own_prediction_and_the_lines_count_them():
    gold = [
        [("Grasper", (0, 0, 100, 40)), ("Grasper", (200, 200, 300, 240))],  # two graspers
        [("Hook", (10, 10, 70, 40)), ("Clipper", (400, 100, 460, 130))],
    ]
    pred = [
        [("Grasper", (0, 0, 100, 40))],  # one box for two graspers: only one of them is named
        [("Hook", (40, 10, 100, 40)), ("Scissors", (400, 100, 460, 130))],  # hook 30 px off in x; clipper misnamed
    ]
    lines = diagnostics.box_report(gold, pred)
    text = "\n".join(lines)
    assert lines[0] == "4 gold boxes on 2 frames"
    assert "Grasper    gold    2  named 50.0%  IoU >= 0.5 of named 100.0%" in text
    assert "Hook       gold    1  named 100.0%  IoU >= 0.5 of named  0.0%" in text  # IoU 30/90
    assert "Clipper    gold    1  named  0.0%" in text
    assert "IoU >= 0.5 of all named: 50.0%" in text
    assert "centre |dx| px, quartiles and 90th: [7.5, 15.0, 22.5, 27.0]" in text
