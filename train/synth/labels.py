"""Ground truth of synthetic cases, written in the real datasets' own formats.

Cholec80: ``videoNN-phase.txt`` (``Frame\\tPhase``, one row per frame) and ``videoNN-tool.txt``
(one row every 25th frame). CholecT50: ``labels/VIDNN.json`` at 1 fps, each instance
``[triplet, instrument, score, x, y, w, h, verb, target, score, x, y, w, h, phase]`` with boxes
normalised to the frame size and -1 for null. Endoscapes2023: ``all_metadata.csv`` with the
three CVS criteria as rater means.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.ontology import load_ontology
from train.synth.render import TOOL_ORDER, FrameTruth

ENDOSCAPES_COLUMNS = ["vid", "frame", "avg_cvs", "C1", "C2", "C3", "is_ds_keyframe"]


@dataclass
class TruthLog:
    """What the writers need from a case, collected while its frames are rendered."""

    video_id: int
    fps: int
    width: int
    height: int
    phases: list[str] = field(default_factory=list)
    sampled: list[FrameTruth] = field(default_factory=list)  # frames at 1 fps

    def add(self, truth: FrameTruth) -> None:
        self.phases.append(truth.phase)
        if truth.index % self.fps == 0:
            self.sampled.append(truth)


def cholec80_phase_txt(phases: Sequence[str]) -> str:
    lines = ["Frame\tPhase"] + [f"{i}\t{p}" for i, p in enumerate(phases)]
    return "\n".join(lines) + "\n"


def cholec80_tool_txt(log: TruthLog) -> str:
    """One row per second (every 25th frame at Cholec80's 25 fps)."""
    lines = ["Frame\t" + "\t".join(TOOL_ORDER)]
    for t in log.sampled:
        lines.append(f"{t.index}\t" + "\t".join("1" if tool in t.tools else "0" for tool in TOOL_ORDER))
    return "\n".join(lines) + "\n"


def _norm_box(box, width: int, height: int) -> list[float]:
    if box is None:
        return [-1.0, -1.0, -1.0, -1.0]
    x1, y1, x2, y2 = box
    return [round(x1 / width, 4), round(y1 / height, 4), round((x2 - x1) / width, 4), round((y2 - y1) / height, 4)]


def cholect50_json(log: TruthLog) -> dict:
    onto = load_ontology()
    phase_names = [label.extra["cholect50"] for label in onto.phase]
    categories = {
        "instrument": {str(lb.id): lb.name for lb in onto.instrument},
        "verb": {str(lb.id): lb.name for lb in onto.verb},
        "target": {str(lb.id): lb.name for lb in onto.target},
        "triplet": {str(t.id): onto.triplet_name(t.id) for t in onto.triplets},
        "phase": {str(i): name for i, name in enumerate(phase_names)},
    }
    annotations: dict[str, list[list[float]]] = {}
    for second, truth in enumerate(log.sampled):
        phase_id = onto.phase.require(truth.phase).id
        rows = []
        for inst in truth.instances:
            if inst.instrument is None:
                continue
            tid = onto.triplet_id(inst.instrument, inst.verb, inst.target)
            if tid is None:
                raise ValueError(f"synthetic triplet {inst.instrument},{inst.verb},{inst.target} is not in CholecT50")
            i, v, t = (label.id for label in onto.triplet(tid))
            target_box = inst.target_box if inst.target != "null_target" else None
            rows.append(
                [
                    tid,
                    i,
                    1.0,
                    *_norm_box(inst.box, log.width, log.height),
                    v,
                    t,
                    1.0 if target_box else -1.0,
                    *_norm_box(target_box, log.width, log.height),
                    phase_id,
                ]
            )
        if not rows:
            rows.append([-1, -1, -1.0, -1.0, -1.0, -1.0, -1.0, -1, -1, -1.0, -1.0, -1.0, -1.0, -1.0, phase_id])
        annotations[str(second)] = rows
    return {
        "video": log.video_id,
        "fps": 1,
        "num_frames": len(log.sampled),
        "categories": categories,
        "annotations": annotations,
        "info": {
            "description": "surgview synthetic case (CholecT50 label format)",
            "source_fps": log.fps,
            "bbox_format": "x, y, w, h normalised to the frame size",
        },
        "licenses": [],
    }


def endoscapes_rows(log: TruthLog) -> list[dict]:
    rows = []
    for truth in log.sampled:
        c1, c2, c3 = truth.cvs
        rows.append(
            {
                "vid": log.video_id,
                "frame": truth.index,
                "avg_cvs": round((c1 + c2 + c3) / 3, 3),
                "C1": c1,
                "C2": c2,
                "C3": c3,
                "is_ds_keyframe": int(truth.index % (5 * log.fps) == 0),
            }
        )
    return rows


def endoscapes_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, ENDOSCAPES_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def truth_jsonl(log: TruthLog) -> str:
    """surgview's own per-second record (anatomy in view, boxes in pixels): synthetic cases only."""
    lines = []
    for t in log.sampled:
        lines.append(
            json.dumps(
                {
                    "frame": t.index,
                    "phase": t.phase,
                    "tools": list(t.tools),
                    "anatomy": list(t.anatomy),
                    "cvs": list(t.cvs),
                    "instances": [
                        {
                            "tool": i.tool,
                            "instrument": i.instrument,
                            "verb": i.verb,
                            "target": i.target,
                            "box": list(i.box),
                            "target_box": list(i.target_box) if i.target_box else None,
                        }
                        for i in t.instances
                    ],
                }
            )
        )
    return "\n".join(lines) + "\n"
