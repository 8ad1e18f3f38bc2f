"""Robotic suturing with exact ground truth: the second synthetic procedure (SAR-RARP50's task).

A case is a running suture of the vesicourethral anastomosis seen through a robotic endoscope:
two tissue margins with a gap between them, a curved needle on a violet thread, a Large Needle
Driver (right arm) and a Prograsp Forceps (left arm), and Monopolar Curved Scissors that come in to
cut. :func:`build_suturing_script` lays out the actions in their natural order (pick up the needle,
position its tip, push it through the tissue, pull it out, for each stitch; then tie a knot, cut the
suture and return the needle; "other" moments between actions), with durations drawn from ranges
that look plausible for robotic suturing. They are written for surgview, not measured from SAR-RARP50.
:class:`SuturingRenderer` draws each frame from the same geometry it reports: the action, every
instrument's box, the needle's and the thread's visibility, and SAR-RARP50's segmentation classes
per pixel (1 clasper, 2 wrist, 3 shaft, 4 needle, 5 thread).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = [
    "ACTION_SECONDS",
    "ActionSpan",
    "SuturingFrame",
    "SuturingRenderer",
    "SuturingScript",
    "build_suturing_script",
]

# (min, max) seconds per action: plausible for robotic suturing, chosen for surgview (not measured).
ACTION_SECONDS: dict[str, tuple[float, float]] = {
    "other": (1.0, 3.0),
    "picking_up_the_needle": (1.5, 3.5),
    "positioning_the_needle_tip": (1.5, 4.0),
    "pushing_the_needle_through_the_tissue": (1.5, 3.5),
    "pulling_the_needle_out_of_the_tissue": (1.5, 4.0),
    "tying_a_knot": (5.0, 10.0),
    "cutting_the_suture": (1.5, 3.0),
    "returning_dropping_the_needle": (1.5, 3.0),
}
CLASSES = {"clasper": 1, "wrist": 2, "shaft": 3, "needle": 4, "thread": 5}  # SAR-RARP50 segmentation ids


@dataclass(frozen=True)
class ActionSpan:
    action: str  # canonical SAR-RARP50 action (engine.procedures, rarp)
    start: int  # first frame
    end: int  # one past the last frame
    stitch: int  # 0-based stitch the action belongs to


@dataclass(frozen=True)
class SuturingScript:
    case: int
    frames: int
    fps: int
    spans: tuple[ActionSpan, ...]
    stitches: int
    seed: int

    def action_at(self, frame: int) -> ActionSpan:
        for span in self.spans:
            if span.start <= frame < span.end:
                return span
        return self.spans[-1]


def _seconds(rng: random.Random, action: str) -> float:
    low, high = ACTION_SECONDS[action]
    return rng.uniform(low, high)


def build_suturing_script(case: int, frames: int, fps: int, seed: int) -> SuturingScript:
    """Actions in their natural order filling ``frames`` frames: as many stitches as fit, each of
    position-push-pull (the needle picked up first, and again now and then), "other" moments between,
    then knot, cut and return; the last action runs to the end."""
    rng = random.Random(f"suturing|{seed}|{case}")
    order: list[tuple[str, int]] = [("other", 0), ("picking_up_the_needle", 0)]
    budget = frames / fps - sum(_seconds(rng, a) for a in ("tying_a_knot", "cutting_the_suture")) - 6.0
    stitch, used = 0, 6.0
    while True:
        cycle = [
            "positioning_the_needle_tip",
            "pushing_the_needle_through_the_tissue",
            "pulling_the_needle_out_of_the_tissue",
        ]
        if stitch and rng.random() < 0.35:
            cycle.insert(0, "picking_up_the_needle")  # a regrasp before the next bite
        if rng.random() < 0.4:
            cycle.append("other")
        need = sum(sum(ACTION_SECONDS[a]) / 2 for a in cycle)
        if stitch and used + need > budget:
            break
        order += [(a, stitch) for a in cycle]
        used += need
        stitch += 1
    order += [
        ("tying_a_knot", stitch - 1),
        ("cutting_the_suture", stitch - 1),
        ("returning_dropping_the_needle", stitch - 1),
    ]
    lengths = [_seconds(rng, a) for a, _ in order]
    scale = (frames / fps) / sum(lengths)
    spans, start = [], 0
    for k, ((action, st), seconds) in enumerate(zip(order, lengths, strict=True)):
        end = frames if k == len(order) - 1 else min(frames, start + max(1, round(seconds * scale * fps)))
        if end > start:
            spans.append(ActionSpan(action, start, end, st))
        start = end
        if start >= frames:
            break
    return SuturingScript(case, frames, fps, tuple(spans), stitch, seed)


@dataclass
class SuturingFrame:
    """What one frame shows, from the geometry that drew it."""

    index: int
    action: str
    boxes: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)  # EndoVis17 tool -> box
    needle_visible: bool = False
    thread_visible: bool = False
    mask: np.ndarray | None = None  # SAR-RARP50 class per pixel (uint8), when asked for


def _lerp(a: tuple[float, float], b: tuple[float, float], t: float) -> tuple[float, float]:
    return a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t


def _ease(t: float) -> float:
    t = min(1.0, max(0.0, t))
    return t * t * (3 - 2 * t)


class SuturingRenderer:
    """Draws a frame of a suturing script: tissue, needle, thread and the robotic instruments."""

    def __init__(self, script: SuturingScript, width: int, height: int):
        self.script, self.w, self.h = script, width, height
        rng = np.random.default_rng(script.seed * 1000 + script.case)
        noise = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), max(2.0, width / 80))
        noise = noise / (np.abs(noise).max() + 1e-6)
        base = np.empty((height, width, 3), np.float32)
        base[..., 0], base[..., 1], base[..., 2] = 150 + 40 * noise, 60 + 25 * noise, 70 + 25 * noise  # RGB tissue
        gap_y = height * 0.52
        for x in range(width):  # the gap between the two margins: darker
            wobble = 0.03 * height * math.sin(x / width * 6 + script.case)
            y0, y1 = int(gap_y - 0.05 * height + wobble), int(gap_y + 0.05 * height + wobble)
            base[max(0, y0) : max(0, y1), x] *= 0.45
        self.background = np.clip(base, 0, 255).astype(np.uint8)
        self.gap_y = gap_y
        self.bites = [
            (width * (0.3 + 0.12 * k) % (width * 0.8) + width * 0.1, gap_y) for k in range(script.stitches + 1)
        ]
        self.rest = (width * 0.78, height * 0.8)  # where the needle lies when dropped

    # ------------------------------------------------------------------ geometry of one frame
    def _poses(self, frame: int) -> tuple[str, dict[str, tuple[float, float]], tuple[float, float], float, str]:
        """(action, tool tips, needle centre, needle angle, needle holder) at ``frame``."""
        span = self.script.action_at(frame)
        t = _ease((frame - span.start) / max(1, span.end - span.start))
        bite = self.bites[min(span.stitch, len(self.bites) - 1)]
        entry, exit_ = (bite[0], bite[1] - 0.09 * self.h), (bite[0] + 0.04 * self.w, bite[1] + 0.09 * self.h)
        park_r, park_l = (self.w * 0.7, self.h * 0.3), (self.w * 0.3, self.h * 0.3)
        sway = 0.01 * self.w * math.sin(frame / 17.0)
        right, left, needle, angle, holder = park_r, park_l, self.rest, 0.0, "none"
        action = span.action
        if action == "picking_up_the_needle":
            right, needle, holder = _lerp(park_r, self.rest, t), self.rest, "right" if t > 0.8 else "none"
        elif action == "positioning_the_needle_tip":
            right = _lerp(
                self.rest if span.stitch == 0 else park_r, (entry[0] + 0.05 * self.w, entry[1] - 0.05 * self.h), t
            )
            needle, angle, holder = right, -0.6 + 0.6 * t, "right"
        elif action == "pushing_the_needle_through_the_tissue":
            right = _lerp((entry[0] + 0.05 * self.w, entry[1] - 0.05 * self.h), (entry[0], bite[1]), t)
            needle, angle, holder = right, 0.0 + 1.2 * t, "right"
            left = _lerp(park_l, (exit_[0] - 0.02 * self.w, exit_[1] + 0.03 * self.h), t)
        elif action == "pulling_the_needle_out_of_the_tissue":
            left = _lerp(
                (exit_[0] - 0.02 * self.w, exit_[1] + 0.03 * self.h),
                (exit_[0] + 0.1 * self.w, exit_[1] + 0.12 * self.h),
                t,
            )
            right = _lerp((entry[0], bite[1]), park_r, t)
            needle, angle, holder = left, 1.2 + 0.8 * t, "left"
        elif action == "tying_a_knot":
            phase = 2 * math.pi * 2.5 * t
            centre = (bite[0] + 0.02 * self.w, bite[1])
            right = (
                centre[0] + 0.08 * self.w * math.cos(phase),
                centre[1] - 0.12 * self.h + 0.06 * self.h * math.sin(phase),
            )
            left = (
                centre[0] - 0.08 * self.w * math.cos(phase),
                centre[1] - 0.12 * self.h - 0.06 * self.h * math.sin(phase),
            )
            needle, angle, holder = (centre[0] + 0.15 * self.w, centre[1] + 0.15 * self.h), 0.3, "none"
        elif action == "cutting_the_suture":
            needle, holder = (bite[0] + 0.15 * self.w, bite[1] + 0.15 * self.h), "none"
        elif action == "returning_dropping_the_needle":
            start = (bite[0] + 0.15 * self.w, bite[1] + 0.15 * self.h)
            right = _lerp(start, (self.w * 0.95, self.h * 0.95), t)
            needle, holder = right, "right"
        else:  # other: instruments idle at their parking positions, the needle where it was left
            needle = self.rest if span.stitch == 0 else (bite[0] + 0.15 * self.w, bite[1] + 0.15 * self.h)
        right = (right[0] + sway, right[1])
        return action, {"right": right, "left": left}, needle, angle, holder

    # ------------------------------------------------------------------ drawing
    def _tool(self, image, mask, port, tip, colour, jaw) -> tuple[float, float, float, float]:
        port_i = (int(port[0]), int(port[1]))
        direction = np.array(tip) - np.array(port)
        length = float(np.linalg.norm(direction)) or 1.0
        unit = direction / length
        wrist = tuple(int(v) for v in np.array(tip) - unit * 0.08 * self.w)
        tip_i = (int(tip[0]), int(tip[1]))
        thick = max(3, self.w // 40)
        cv2.line(image, port_i, wrist, (200, 200, 205), thick)
        cv2.line(mask, port_i, wrist, CLASSES["shaft"], thick)
        cv2.line(image, wrist, tip_i, colour, max(2, thick - 1))
        cv2.line(mask, wrist, tip_i, CLASSES["wrist"], max(2, thick - 1))
        normal = np.array([-unit[1], unit[0]]) * jaw * 0.03 * self.w
        for sign in (1, -1):
            end = tuple(int(v) for v in np.array(tip) + unit * 0.04 * self.w + sign * normal)
            cv2.line(image, tip_i, end, (60, 60, 60), 2)
            cv2.line(mask, tip_i, end, CLASSES["clasper"], 2)
        xs = [port[0], wrist[0], tip[0] + unit[0] * 0.04 * self.w]
        ys = [port[1], wrist[1], tip[1] + unit[1] * 0.04 * self.w]
        return (
            float(max(0, min(xs) - thick)),
            float(max(0, min(ys) - thick)),
            float(min(self.w, max(xs) + thick)),
            float(min(self.h, max(ys) + thick)),
        )

    def render(self, frame: int, with_mask: bool = False) -> tuple[np.ndarray, SuturingFrame]:
        """The RGB image of ``frame`` and what it shows."""
        action, tips, needle, angle, holder = self._poses(frame)
        image = self.background.copy()
        mask = np.zeros((self.h, self.w), np.uint8)
        truth = SuturingFrame(frame, action)
        radius = max(4, int(0.035 * self.w))
        centre = (int(needle[0]), int(needle[1]))
        # The thread runs from the needle's tail back to the last bite (violet, as absorbable sutures are).
        anchor = self.bites[0]
        mid = ((anchor[0] + needle[0]) / 2, (anchor[1] + needle[1]) / 2 + 0.05 * self.h * math.sin(frame / 30))
        points = np.array([anchor, mid, needle], np.int32)
        cv2.polylines(image, [points], False, (120, 60, 170), 2)
        cv2.polylines(mask, [points], False, CLASSES["thread"], 2)
        truth.thread_visible = True
        buried = action == "pushing_the_needle_through_the_tissue"
        sweep = (0, 120) if buried else (0, 200)
        if 0 <= centre[0] < self.w and 0 <= centre[1] < self.h:
            deg = math.degrees(angle)
            cv2.ellipse(image, centre, (radius, radius), deg, *sweep, (225, 225, 235), 2)
            cv2.ellipse(mask, centre, (radius, radius), deg, *sweep, CLASSES["needle"], 2)
            truth.needle_visible = True
        ports = {"right": (self.w * 1.02, -0.05 * self.h), "left": (-0.02 * self.w, -0.05 * self.h)}
        closed = 0.2 if holder != "none" else 0.8
        truth.boxes["Large_Needle_Driver"] = self._tool(
            image, mask, ports["right"], tips["right"], (90, 90, 95), closed
        )
        truth.boxes["Prograsp_Forceps"] = self._tool(image, mask, ports["left"], tips["left"], (70, 70, 80), 0.6)
        if action == "cutting_the_suture":
            span = self.script.action_at(frame)
            t = _ease((frame - span.start) / max(1, span.end - span.start))
            tip = _lerp((self.w * 0.5, self.h * 0.05), (mid[0], mid[1]), min(1.0, 1.5 * t))
            box = self._tool(image, mask, (self.w * 0.5, -0.1 * self.h), tip, (150, 120, 90), 0.5 - 0.4 * t)
            truth.boxes["Monopolar_Curved_Scissors"] = box
        vignette = self._vignette()
        image = (image.astype(np.float32) * vignette[..., None]).astype(np.uint8)
        if with_mask:
            truth.mask = mask
        return image, truth

    def _vignette(self) -> np.ndarray:
        if not hasattr(self, "_vig"):
            y, x = np.mgrid[0 : self.h, 0 : self.w].astype(np.float32)
            r = np.hypot((x - self.w / 2) / (self.w / 2), (y - self.h / 2) / (self.h / 2))
            self._vig = np.clip(1.15 - 0.45 * r**2, 0.35, 1.0)
        return self._vig
