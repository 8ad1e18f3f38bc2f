"""The script of a synthetic cholecystectomy: phases, instrument activities and anatomy state.

Everything the renderer draws and every label the writers emit come from :class:`CaseScript`,
so the pixels and the ground truth cannot disagree. A case moves through the seven Cholec80
phases in clinical order; which instruments act on which structure follows the phase (the
clipper clips the cystic duct and artery in ClippingCutting, the specimen bag appears in
GallbladderPackaging, ...), and the Critical View of Safety criteria become met as the Calot
fat is cleared, before clipping. Deterministic per seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

PHASES = (
    "Preparation",
    "CalotTriangleDissection",
    "ClippingCutting",
    "GallbladderDissection",
    "GallbladderPackaging",
    "CleaningCoagulation",
    "GallbladderRetraction",
)
# Mean share of the case per phase (from Cholec80's mean phase durations, rounded).
PHASE_SHARE = (0.06, 0.33, 0.08, 0.30, 0.06, 0.10, 0.07)
# Shortest phase (seconds); clipping needs time for five clips and two cuts to be seen.
MIN_PHASE_SECONDS = (4.0, 6.0, 14.0, 6.0, 4.0, 9.0, 4.0)

TOOLS = ("Grasper", "Bipolar", "Hook", "Scissors", "Clipper", "Irrigator", "SpecimenBag")

# Anatomical anchor points in normalised world coordinates (x right, y down).
ANCHORS: dict[str, tuple[float, float]] = {
    "fundus": (0.66, 0.21),
    "gb_body": (0.58, 0.33),
    "gb_neck": (0.47, 0.47),
    "cystic_duct": (0.37, 0.61),
    "cystic_artery": (0.445, 0.555),
    "peritoneum": (0.50, 0.57),
    "adhesion": (0.60, 0.43),
    "omentum": (0.70, 0.58),
    "cystic_plate": (0.53, 0.37),
    "liver": (0.34, 0.27),
    "liver_bed": (0.56, 0.34),
    "fluid": (0.44, 0.58),
    "blood_vessel": (0.52, 0.40),
    "bag": (0.70, 0.62),
}
# Trocar ports (outside the camera's view): assistant (top left), left hand, right hand.
PORTS = {"assistant": (-0.05, -0.05), "left": (-0.12, 0.82), "right": (1.12, 0.70), "top": (0.95, -0.12)}

# What must be exposed for each CVS criterion, the same threshold for the raters and for Level 1's anatomy list
# (train.synth.render), so a chain's perception carries the evidence for its CVS calls: C1 (two structures) once
# the cystic duct and artery are seen, C2 (hepatocystic triangle cleared) once the Calot fat is no longer seen, C3
# (cystic plate exposed) once the plate is seen. Shares of the fat cleared, and of the plate window opened.
STRUCTURES_SEEN = 0.45
TRIANGLE_CLEARED = 0.9
PLATE_SEEN = 0.5

ENTER_SECONDS = 0.8
LEAVE_SECONDS = 0.6


@dataclass(frozen=True)
class Activity:
    """One instrument doing one thing from ``start`` to ``end`` (frames, end exclusive)."""

    tool: str  # Cholec80 tool name
    port: str
    start: int
    end: int
    verb: str  # CholecT50 verb, or "null_verb"
    target: str  # CholecT50 target, or "null_target"
    anchor: str
    motion: str = "hold"  # hold | stroke | clip | cut | sweep | pull
    seed: int = 0


@dataclass(frozen=True)
class ToolPose:
    """Where one instrument is in a frame (world coordinates) and what it is doing."""

    tool: str
    port: tuple[float, float]
    tip: tuple[float, float]
    verb: str
    target: str
    jaw: float  # 0 closed .. 1 open
    activity: Activity


@dataclass
class CaseScript:
    case_id: int
    seed: int
    fps: int
    n_frames: int
    phase_bounds: list[tuple[str, int, int]]
    activities: list[Activity]
    c3_missed: bool
    clip_times: dict[str, list[int]] = field(default_factory=dict)
    cut_times: dict[str, int] = field(default_factory=dict)

    # ------------------------------------------------------------------ phases
    def phase_at(self, frame: int) -> str:
        for name, start, end in self.phase_bounds:
            if start <= frame < end:
                return name
        return self.phase_bounds[-1][0]

    def phase_span(self, phase: str) -> tuple[int, int]:
        for name, start, end in self.phase_bounds:
            if name == phase:
                return start, end
        raise KeyError(phase)

    def progress(self, phase: str, frame: int) -> float:
        """0 before ``phase``, rising to 1 at its end, 1 after."""
        start, end = self.phase_span(phase)
        return float(np.clip((frame - start) / max(1, end - start), 0.0, 1.0))

    # ------------------------------------------------------------------ anatomy state
    def fat_cleared(self, frame: int) -> float:
        """Share of the Calot-triangle fat removed (0..1)."""
        p = self.progress("CalotTriangleDissection", frame)
        return float(np.clip((p - 0.05) / 0.8, 0.0, 1.0))

    def adhesions_cleared(self, frame: int) -> float:
        return float(np.clip(self.progress("Preparation", frame) / 0.9, 0.0, 1.0))

    def plate_exposed(self, frame: int) -> float:
        """Window onto the cystic plate behind the lower gallbladder (criterion C3)."""
        if self.c3_missed and self.progress("ClippingCutting", frame) <= 0:
            p = self.progress("CalotTriangleDissection", frame)
            return float(np.clip((p - 0.7) / 0.3, 0.0, 0.35))
        p = self.progress("CalotTriangleDissection", frame)
        return float(np.clip((p - 0.7) / 0.22, 0.0, 1.0))

    def gb_detached(self, frame: int) -> float:
        return self.progress("GallbladderDissection", frame)

    def clips(self, frame: int) -> dict[str, int]:
        return {s: sum(1 for t in times if t <= frame) for s, times in self.clip_times.items()}

    def cut(self, frame: int) -> dict[str, bool]:
        return {s: t <= frame for s, t in self.cut_times.items()}

    def gb_in_bag(self, frame: int) -> float:
        return self.progress("GallbladderPackaging", frame)

    def bag_state(self, frame: int) -> tuple[bool, float, float]:
        """(visible, openness, extraction progress)."""
        pack0, pack1 = self.phase_span("GallbladderPackaging")
        ret0, ret1 = self.phase_span("GallbladderRetraction")
        if frame < pack0 or frame >= ret1:
            return False, 0.0, 0.0
        if frame < pack1:
            p = self.progress("GallbladderPackaging", frame)
            return True, 1.0 - max(0.0, (p - 0.85) / 0.15), 0.0
        if frame < ret0:
            return True, 0.0, 0.0
        return True, 0.0, self.progress("GallbladderRetraction", frame)

    def fluid(self, frame: int) -> float:
        p = self.progress("CleaningCoagulation", frame)
        if p <= 0:
            return 0.0
        return float(np.clip(1.0 - p / 0.6, 0.05, 1.0)) if p < 1 else 0.0

    def cvs_raters(self, frame: int) -> tuple[float, float, float]:
        """Mean of three raters per criterion, as Endoscapes reports it (0, 1/3, 2/3, 1): the raters' thresholds
        lie 5% either side of what must be exposed, so the mean reaches 2/3 (met) exactly where Level 1 starts
        listing the structure (the duct and artery, the plate) or stops listing the Calot fat."""
        clearing = self.fat_cleared(frame)
        plate = self.plate_exposed(frame)
        measures = (clearing / STRUCTURES_SEEN, clearing / TRIANGLE_CLEARED, plate / PLATE_SEEN)
        values = []
        for m in measures:
            votes = sum(1 for delta in (-0.05, 0.0, 0.05) if m >= 1.0 + delta)
            values.append(round(votes / 3, 2))
        return values[0], values[1], values[2]

    def cvs(self, frame: int) -> tuple[bool, bool, bool]:
        c1, c2, c3 = self.cvs_raters(frame)
        return c1 >= 0.5, c2 >= 0.5, c3 >= 0.5

    # ------------------------------------------------------------------ instruments
    def poses(self, frame: int) -> list[ToolPose]:
        poses = []
        for act in self.activities:
            if act.start <= frame < act.end:
                poses.append(_pose(act, frame, self.fps))
        return poses

    def smoke(self, frame: int) -> float:
        level = 0.0
        for act in self.activities:
            if (
                act.tool in ("Hook", "Bipolar")
                and act.verb in ("dissect", "coagulate")
                and act.start <= frame < act.end
            ):
                t = (frame - act.start) / self.fps
                level = max(level, 0.35 * (0.6 + 0.4 * math.sin(t * 1.7 + act.seed)) * min(1.0, t / 2.0))
        return level


def _ease(x: float) -> float:
    x = min(1.0, max(0.0, x))
    return x * x * (3 - 2 * x)


def _pose(act: Activity, frame: int, fps: int) -> ToolPose:
    t = (frame - act.start) / fps
    remaining = (act.end - frame) / fps
    rng = np.random.default_rng(act.seed)
    phases = rng.uniform(0, 2 * math.pi, 6)
    ax, ay = ANCHORS[act.anchor]
    wobble = 0.006
    x = ax + wobble * math.sin(0.7 * t + phases[0]) + 0.004 * math.sin(1.9 * t + phases[1])
    y = ay + wobble * math.sin(0.5 * t + phases[2]) + 0.004 * math.sin(2.3 * t + phases[3])
    jaw = 0.0
    if act.motion == "stroke":  # hook dissection: short strokes along the tissue
        s = math.sin(2 * math.pi * 1.1 * t + phases[4])
        x += 0.018 * s
        y += 0.008 * s
    elif act.motion == "cut":
        jaw = 0.5 + 0.5 * math.sin(2 * math.pi * 0.8 * t)
    elif act.motion == "clip":
        jaw = 0.6 if (t % 3.0) < 1.5 else 0.1
    elif act.motion == "sweep":
        x += 0.03 * math.sin(0.9 * t + phases[5])
        y += 0.01 * math.cos(0.9 * t + phases[5])
    elif act.motion == "pull":
        span = max(1e-6, (act.end - act.start) / fps)
        px, py = PORTS[act.port]
        k = _ease(t / span) * 0.55
        x, y = x + (px - x) * k, y + (py - y) * k
    px, py = PORTS[act.port]
    enter = _ease(t / ENTER_SECONDS)
    leave = _ease(remaining / LEAVE_SECONDS)
    reach = min(enter, leave)
    # Approach from the port: start 45% of the way out along the shaft axis.
    out = 0.45 * (1 - reach)
    x, y = x + (px - x) * out, y + (py - y) * out
    acting = enter >= 1.0 and leave >= 1.0
    verb, target = (act.verb, act.target) if acting else ("null_verb", "null_target")
    if act.tool == "Grasper" and not acting:
        jaw = 0.6
    return ToolPose(act.tool, (px, py), (x, y), verb, target, jaw, act)


def _phase_bounds(n_frames: int, fps: int, rng: np.random.Generator) -> list[tuple[str, int, int]]:
    shares = np.array(PHASE_SHARE) * rng.uniform(0.75, 1.3, len(PHASE_SHARE))
    minimum = np.array(MIN_PHASE_SECONDS) * fps / n_frames
    shares = shares / shares.sum()
    # Lift short phases to their minimum and take the time from the others, keeping the total.
    for _ in range(8):
        short = shares < minimum
        shares = np.where(short, minimum, shares)
        spare = 1.0 - shares[short].sum()
        shares[~short] *= spare / shares[~short].sum()
    ends = np.round(np.cumsum(shares) * n_frames).astype(int)
    ends[-1] = n_frames
    bounds, start = [], 0
    for name, end in zip(PHASES, ends, strict=False):
        bounds.append((name, start, int(end)))
        start = int(end)
    return bounds


class _Planner:
    """Lays out instrument activities phase by phase."""

    def __init__(self, fps: int, rng: np.random.Generator):
        self.fps = fps
        self.rng = rng
        self.activities: list[Activity] = []

    def sec(self, s: float) -> int:
        return max(1, round(s * self.fps))

    def add(
        self, tool: str, port: str, start: int, end: int, verb: str, target: str, anchor: str, motion: str = "hold"
    ) -> None:
        if end - start >= self.sec(1.6):
            self.activities.append(
                Activity(tool, port, start, end, verb, target, anchor, motion, int(self.rng.integers(0, 2**31)))
            )

    def sequence(
        self,
        port: str,
        start: int,
        end: int,
        options: list[tuple[str, str, str, str, str]],
        mean_s: float = 6.0,
        gap_s: tuple[float, float] = (0.4, 1.6),
    ) -> None:
        """Alternate tasks of one hand; short gaps while the instrument is withdrawn or swapped."""
        t = start + self.sec(float(self.rng.uniform(0.1, 0.6)))
        while t < end - self.sec(1.6):
            tool, verb, target, anchor, motion = options[int(self.rng.integers(len(options)))]
            length = self.sec(float(self.rng.uniform(0.6, 1.4) * mean_s))
            stop = min(end, t + length)
            self.add(tool, port, t, stop, verb, target, anchor, motion)
            t = stop + self.sec(float(self.rng.uniform(*gap_s)))


def build_script(case_id: int, n_frames: int, fps: int, seed: int) -> CaseScript:
    """The whole case: phase boundaries, instrument activities, clip and cut times."""
    rng = np.random.default_rng([seed, case_id])
    bounds = _phase_bounds(n_frames, fps, rng)
    span = {name: (s, e) for name, s, e in bounds}
    plan = _Planner(fps, rng)
    sec = plan.sec

    s, e = span["Preparation"]
    plan.add("Grasper", "assistant", s + sec(0.3), e + sec(0.5), "grasp", "gallbladder", "fundus")
    plan.sequence("right", s + sec(0.5), e, [("Hook", "dissect", "omentum", "adhesion", "stroke")], mean_s=5)
    if e - s > sec(6):
        plan.add("Grasper", "left", s + sec(2), e - sec(1), "retract", "omentum", "omentum", "sweep")

    s, e = span["CalotTriangleDissection"]
    plan.add("Grasper", "assistant", s, e + sec(0.5), "retract", "gallbladder", "fundus")
    plan.add("Grasper", "left", s + sec(0.5), e - sec(0.5), "retract", "gallbladder", "gb_neck")
    plan.sequence(
        "right",
        s + sec(0.5),
        e,
        [
            ("Hook", "dissect", "cystic_duct", "cystic_duct", "stroke"),
            ("Hook", "dissect", "cystic_artery", "cystic_artery", "stroke"),
            ("Hook", "dissect", "peritoneum", "peritoneum", "stroke"),
        ],
        mean_s=7,
    )

    s, e = span["ClippingCutting"]
    plan.add("Grasper", "assistant", s, e + sec(0.5), "retract", "gallbladder", "fundus")
    enter = sec(ENTER_SECONDS)
    clip_times: dict[str, list[int]] = {}
    cut_times: dict[str, int] = {}
    steps = [
        ("Clipper", "clip", "cystic_duct", 0.02, 0.31, 3),
        ("Clipper", "clip", "cystic_artery", 0.33, 0.56, 2),
        ("Scissors", "cut", "cystic_artery", 0.58, 0.78, 0),
        ("Scissors", "cut", "cystic_duct", 0.79, 0.99, 0),
    ]
    for tool, verb, target, a, b, n_clips in steps:
        start, end = s + int((e - s) * a), s + int((e - s) * b)
        plan.activities.append(
            Activity(tool, "right", start, end, verb, target, target, verb, int(rng.integers(0, 2**31)))
        )
        if n_clips:
            first, last = start + enter + sec(0.3), max(start + enter + sec(0.3), end - sec(0.7))
            clip_times[target] = np.linspace(first, last, n_clips).astype(int).tolist()
        else:
            cut_times[target] = (start + end) // 2

    s, e = span["GallbladderDissection"]
    plan.add("Grasper", "assistant", s, e + sec(0.5), "retract", "gallbladder", "fundus")
    plan.add("Grasper", "left", s + sec(1), e - sec(0.5), "retract", "gallbladder", "gb_neck", "pull")
    plan.sequence(
        "right",
        s + sec(0.5),
        e,
        [
            ("Hook", "dissect", "gallbladder", "gb_body", "stroke"),
            ("Hook", "dissect", "cystic_plate", "cystic_plate", "stroke"),
            ("Hook", "coagulate", "liver", "liver_bed", "hold"),
        ],
        mean_s=7,
    )

    s, e = span["GallbladderPackaging"]
    plan.add("SpecimenBag", "top", s, e, "null_verb", "null_target", "bag")
    plan.add("Grasper", "left", s + sec(0.3), e - sec(0.3), "pack", "gallbladder", "bag", "hold")
    plan.add("Grasper", "assistant", s + sec(0.6), e, "grasp", "specimen_bag", "bag", "hold")

    s, e = span["CleaningCoagulation"]
    half = s + (e - s) // 2
    plan.sequence(
        "right",
        s + sec(0.3),
        half,
        [
            ("Irrigator", "aspirate", "fluid", "fluid", "sweep"),
            ("Irrigator", "irrigate", "liver", "liver_bed", "sweep"),
        ],
        mean_s=6,
        gap_s=(0.1, 0.4),
    )
    plan.sequence(
        "right",
        half + sec(0.5),
        e,
        [
            ("Bipolar", "coagulate", "liver", "liver_bed", "hold"),
            ("Bipolar", "coagulate", "blood_vessel", "blood_vessel", "hold"),
        ],
        mean_s=5,
    )
    plan.add("Grasper", "left", s + sec(1), e - sec(1), "retract", "liver", "liver", "hold")

    s, e = span["GallbladderRetraction"]
    plan.add("SpecimenBag", "top", s, e, "null_verb", "null_target", "bag", "pull")
    plan.add("Grasper", "top", s + sec(0.2), e, "grasp", "specimen_bag", "bag", "pull")

    activities = sorted(plan.activities, key=lambda a: (a.start, a.tool))
    return CaseScript(
        case_id, seed, fps, n_frames, bounds, activities, bool(rng.random() < 0.25), clip_times, cut_times
    )
