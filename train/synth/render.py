"""Render frames of a synthetic laparoscopic cholecystectomy, with exact per-frame ground truth.

The world is a painted abdomen (liver, gallbladder, Calot-triangle fat over the cystic duct
and artery, omentum, bowel) kept as small RGBA sprites over a textured background. Anatomy
state (fat cleared, clips, cut structures, gallbladder detached or bagged, fluid) comes from
:class:`~train.synth.script.CaseScript`; the world picture is recomposed only when that state
changes visibly. Each frame is one affine warp of that picture through a moving camera, then
instruments drawn from their trocar ports, specular highlights, smoke and the circular
endoscope field. Boxes are computed from the same geometry the pixels are drawn from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from train.synth.script import (
    ANCHORS,
    PHASES,
    PLATE_SEEN,
    PORTS,
    STRUCTURES_SEEN,
    TRIANGLE_CLEARED,
    CaseScript,
    ToolPose,
)

Box = tuple[float, float, float, float]

# The fat lying on the cystic duct and artery (a band this wide at 960 pixels, over tubes 15 and 8 wide) clears
# between these shares of STRUCTURES_SEEN: both structures come into view just as the truth lists them.
STRUCTURE_COVER_PX = 28
STRUCTURES_UNCOVER = (0.88, 0.98)
# The rest of the Calot fat clears nearest the structures first, its share left falling as 1 - (cleared / gone)^2
# (slowly at first, the last of it quickly), and its last lobule goes at this share of TRIANGLE_CLEARED: fat is in
# view for as long as the truth lists the triangle as not cleared (C2 not met), and gone just as it is met.
TRIANGLE_FAT_GONE = 0.97
# The cystic plate lies under the gallbladder's lower end. As it is exposed (criterion C3) the gallbladder turns about
# its fundus, lifting its neck off the bed, and the pale plate shows below it: the turn (up to PLATE_LIFT_DEG) and
# the plate's opacity grow from 0 to full between these shares of the exposure, which span the truth's three raters
# (script.cvs_raters: 0.475, 0.5 and 0.525 for C3): none of the plate shows before the first rater calls it exposed,
# a sliver while only one does, and it is plainly in view once two do. Without the lift the plate lay wholly under
# the gallbladder and no picture before gallbladder dissection showed C3; with a lift over (0.3, 0.6) a tenth of it
# showed before any rater called it exposed, and a model reading the picture called C3 a frame early.
PLATE_LIFT_DEG = 15.0
PLATE_LIFT = (0.45, 0.55)

# CholecT50 instrument for each Cholec80 tool (the specimen bag is not a triplet instrument).
TOOL_TO_INSTRUMENT = {
    "Grasper": "grasper",
    "Bipolar": "bipolar",
    "Hook": "hook",
    "Scissors": "scissors",
    "Clipper": "clipper",
    "Irrigator": "irrigator",
}

# Camera focus (normalised world x, y) and zoom per phase.
FOCUS = {
    "Preparation": (0.58, 0.40, 1.00),
    "CalotTriangleDissection": (0.47, 0.50, 1.22),
    "ClippingCutting": (0.43, 0.54, 1.30),
    "GallbladderDissection": (0.55, 0.39, 1.10),
    "GallbladderPackaging": (0.62, 0.50, 1.00),
    "CleaningCoagulation": (0.48, 0.46, 1.05),
    "GallbladderRetraction": (0.62, 0.42, 0.95),
}
# World-space extent (normalised x0, y0, x1, y1) of each CholecT50 target, for target boxes.
TARGET_EXTENT = {
    "gallbladder": (0.45, 0.12, 0.75, 0.50),
    "cystic_duct": (0.29, 0.46, 0.48, 0.69),
    "cystic_artery": (0.39, 0.45, 0.48, 0.63),
    "cystic_plate": (0.47, 0.30, 0.62, 0.46),
    "liver": (0.10, 0.05, 0.90, 0.42),
    "omentum": (0.58, 0.50, 0.95, 0.72),
    "peritoneum": (0.42, 0.50, 0.58, 0.64),
    "fluid": (0.36, 0.52, 0.54, 0.65),
    "blood_vessel": (0.48, 0.36, 0.56, 0.44),
}


@dataclass(frozen=True)
class Instance:
    """One instrument in one frame: what it does to what, and where (pixels)."""

    tool: str
    instrument: str | None
    verb: str
    target: str
    box: Box
    target_box: Box | None


@dataclass(frozen=True)
class FrameTruth:
    index: int
    phase: str
    tools: tuple[str, ...]
    instances: tuple[Instance, ...]
    cvs: tuple[float, float, float]
    anatomy: tuple[str, ...]


# ---------------------------------------------------------------------------- textures
def fractal_noise(
    rng: np.random.Generator, h: int, w: int, octaves: int = 5, base: int = 3, persistence: float = 0.55
) -> np.ndarray:
    total = np.zeros((h, w), np.float32)
    amp = 1.0
    for octave in range(octaves):
        cells = base * 2**octave
        small = rng.random((max(2, cells * h // max(w, 1)), cells)).astype(np.float32)
        total += amp * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        amp *= persistence
    total -= total.min()
    return total / max(float(total.max()), 1e-6)


def _tint(noise: np.ndarray, color: tuple[int, int, int], spread: float = 0.45) -> np.ndarray:
    c = np.array(color, np.float32)
    img = c[None, None, :] * (1.0 - spread / 2 + spread * noise[..., None])
    return np.clip(img, 0, 255).astype(np.uint8)


def _draw_vessels(
    img: np.ndarray,
    rng: np.random.Generator,
    count: int,
    color,
    width: int,
    region: tuple[int, int, int, int],
    mask: np.ndarray | None = None,
) -> None:
    x0, y0, x1, y1 = region
    layer = img.copy()
    for _ in range(count):
        x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
        angle = rng.uniform(0, 2 * math.pi)
        pts = []
        for _ in range(int(rng.integers(6, 14))):
            pts.append((x, y))
            angle += rng.normal(0, 0.45)
            step = rng.uniform(6, 16)
            x, y = x + step * math.cos(angle), y + step * math.sin(angle)
        cv2.polylines(layer, [np.array(pts, np.int32)], False, color, width, cv2.LINE_AA)
    if mask is None:
        img[:] = cv2.addWeighted(img, 0.45, layer, 0.55, 0)
    else:
        blended = cv2.addWeighted(img, 0.45, layer, 0.55, 0)
        img[mask] = blended[mask]


def _tube(img: np.ndarray, pts: np.ndarray, width: int, color: tuple[int, int, int]) -> None:
    """A shaded cylinder along a polyline: dark rim, bright crest (ducts, vessels, bowel)."""
    pts_i = pts.astype(np.int32)
    steps = 6
    for k in range(steps):
        w = max(1, int(width * (1 - k / (steps + 1))))
        shade = 0.62 + 0.55 * k / steps
        c = tuple(int(min(255, ch * shade)) for ch in color)
        offset = np.array([0, -int(width * 0.06 * k)])
        cv2.polylines(img, [pts_i + offset], False, c, w, cv2.LINE_AA)


def _organic_mask(
    rng: np.random.Generator,
    h: int,
    w: int,
    center: tuple[float, float],
    radii: tuple[float, float],
    roughness: float = 0.8,
) -> np.ndarray:
    """A lobulated blob (fat, omentum): an ellipse whose edge is broken up by noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = np.sqrt(((xx - center[0]) / radii[0]) ** 2 + ((yy - center[1]) / radii[1]) ** 2)
    noise = fractal_noise(rng, h, w, octaves=4, base=6)
    return ((1.0 - d) + roughness * (noise - 0.5)) > 0.15


def _scatter(
    rng: np.random.Generator, center: tuple[float, float], spread: tuple[float, float], count: int
) -> list[tuple[float, float]]:
    return [(rng.normal(center[0], spread[0] * 0.5), rng.normal(center[1], spread[1] * 0.5)) for _ in range(count)]


def _lobules(
    rng: np.random.Generator,
    h: int,
    w: int,
    centers: list[tuple[float, float]],
    size: float,
    color: tuple[int, int, int] = (230, 190, 94),
) -> tuple[np.ndarray, np.ndarray]:
    """Fat as a cluster of rounded lobules, each lit at its crest: (rgb, mask)."""
    rgb = _texture(rng, h, w, color, 0.3, grain=0.4)
    shade = np.full((h, w), 0.78, np.float32)
    mask = np.zeros((h, w), np.uint8)
    for cx, cy in centers:
        cx, cy = int(cx), int(cy)
        r = rng.uniform(0.6, 1.3) * size
        for k in range(5):
            rr = max(1, int(r * (1 - k / 6)))
            cv2.circle(shade, (cx, cy - int(r * 0.08 * k)), rr, 0.78 + 0.07 * k, -1, cv2.LINE_AA)
        cv2.circle(mask, (cx, cy), int(r), 255, -1, cv2.LINE_AA)
    rgb = (rgb * shade[..., None]).clip(0, 255).astype(np.uint8)
    return rgb, mask > 0


@dataclass
class Sprite:
    """An RGBA picture placed at (x, y) on the world canvas; alpha in 0..1."""

    rgb: np.ndarray
    alpha: np.ndarray
    x: int
    y: int
    order: np.ndarray | None = None  # reveal/clear order per pixel, 0..1


def _blend(canvas: np.ndarray, rgb: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    h, w = alpha.shape
    cx0, cy0 = max(0, x), max(0, y)
    cx1, cy1 = min(canvas.shape[1], x + w), min(canvas.shape[0], y + h)
    if cx0 >= cx1 or cy0 >= cy1:
        return
    sx0, sy0 = cx0 - x, cy0 - y
    a = alpha[sy0 : sy0 + cy1 - cy0, sx0 : sx0 + cx1 - cx0, None]
    src = rgb[sy0 : sy0 + cy1 - cy0, sx0 : sx0 + cx1 - cx0].astype(np.float32)
    dst = canvas[cy0:cy1, cx0:cx1].astype(np.float32)
    canvas[cy0:cy1, cx0:cx1] = (dst + (src - dst) * a).astype(np.uint8)


def _smooth_mask(mask: np.ndarray, blur: float) -> np.ndarray:
    m = mask.astype(np.float32)
    if blur > 1:
        m = cv2.GaussianBlur(m, (0, 0), blur)
    return np.clip(m, 0, 1)


def _border_fade(alpha: np.ndarray, width: int = 12) -> np.ndarray:
    """Fade alpha to zero at the sprite's edges so no sprite ever shows a straight cut."""
    h, w = alpha.shape
    ramp_y = np.clip(np.minimum(np.arange(h), np.arange(h)[::-1]) / width, 0, 1)
    ramp_x = np.clip(np.minimum(np.arange(w), np.arange(w)[::-1]) / width, 0, 1)
    return (alpha * ramp_y[:, None] * ramp_x[None, :]).astype(np.float32)


def _texture(
    rng: np.random.Generator, h: int, w: int, color: tuple[int, int, int], spread: float = 0.45, grain: float = 0.18
) -> np.ndarray:
    """Tissue colour with coarse mottling and fine grain (laparoscopic images are never flat)."""
    coarse = fractal_noise(rng, h, w, octaves=4, base=3)
    fine = fractal_noise(rng, h, w, octaves=3, base=24)
    noise = np.clip(coarse * (1 - grain) + fine * grain, 0, 1)
    return _tint(noise, color, spread)


class CaseRenderer:
    """Draws the frames of one scripted case at a given output size."""

    def __init__(self, script: CaseScript, width: int = 640, height: int = 360):
        self.script = script
        self.w, self.h = width, height
        self.W, self.H = round(width * 1.5), round(height * 1.5)
        self.rng = np.random.default_rng([script.seed, script.case_id, 7])
        self._build_world()
        self._build_overlays()
        self._world_key: tuple | None = None
        self._world: np.ndarray | None = None
        cam_rng = np.random.default_rng([script.seed, script.case_id, 11])
        self._cam_freq = cam_rng.uniform(0.03, 0.12, 6)
        self._cam_phase = cam_rng.uniform(0, 2 * math.pi, 6)

    # ------------------------------------------------------------------ world
    def px(self, u: float, v: float) -> tuple[int, int]:
        return round(u * self.W), round(v * self.H)

    def _build_world(self) -> None:
        rng, W, H = self.rng, self.W, self.H
        s = W / 960.0
        # Peritoneum and abdominal wall: pink-red, textured, with small vessels.
        base = _texture(rng, H, W, (192, 98, 84), 0.5)
        _draw_vessels(base, rng, 40, (128, 36, 38), max(1, int(2 * s)), (0, 0, W, H))
        # Depth: the scene darkens away from the light, toward the bottom and the sides.
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        depth = 1.0 - 0.35 * (yy / H) ** 2 - 0.15 * np.abs(xx / W - 0.5)
        base = (base * depth[..., None]).clip(0, 255).astype(np.uint8)
        # Bowel loops at the bottom: shaded tubes.
        for _ in range(6):
            x0, y0 = rng.uniform(0.0, 1.0) * W, rng.uniform(0.84, 1.0) * H
            angle = rng.uniform(-0.4, 0.4)
            pts = []
            for _ in range(9):
                angle = float(np.clip(angle + rng.normal(0, 0.3), -0.35, 0.35))
                x0, y0 = x0 + 22 * s * math.cos(angle), y0 + 22 * s * math.sin(angle)
                pts.append((x0, y0))
            _tube(base, np.array(pts), int(rng.uniform(38, 55) * s), (208, 128, 116))
        # Omentum: lobulated yellow fat, lower right.
        fat, omentum = _lobules(rng, H, W, _scatter(rng, (0.74 * W, 0.63 * H), (0.15 * W, 0.09 * H), 34), 26 * s)
        m = _smooth_mask(omentum, 1.5)
        base = (base * (1 - m[..., None]) + fat * m[..., None]).astype(np.uint8)
        # Liver: dark red-brown lobe across the top, with a wavy lower edge.
        xs = np.arange(W)
        edge = (0.40 + 0.035 * np.sin(xs / W * 7.0 + rng.uniform(0, 6)) + 0.02 * np.sin(xs / W * 17.0)) * H
        liver_mask = np.arange(H)[:, None] < edge[None, :]
        liver = _texture(rng, H, W, (98, 30, 30), 0.5, grain=0.35)
        # Rounded lobe: brighter where its surface faces the scope, darker toward the top.
        dist = np.clip((edge[None, :] - yy) / (0.25 * H), 0, 1)
        lobe = 0.75 + 0.45 * np.sin(np.clip(dist, 0, 1) * math.pi * 0.75) - 0.25 * (1 - yy / H) ** 3
        liver = (liver * lobe[..., None]).clip(0, 255).astype(np.uint8)
        m = _smooth_mask(liver_mask, 1.5)
        base = (base * (1 - m[..., None]) + liver * m[..., None]).astype(np.uint8)
        self.gb = self._gallbladder_sprite()
        # Gallbladder bed (cystic plate): raw, pale red, exactly under the gallbladder's footprint.
        bed = np.zeros((H, W), np.float32)
        g = self.gb
        bed[g.y : g.y + g.alpha.shape[0], g.x : g.x + g.alpha.shape[1]] = cv2.erode(
            (g.alpha > 0.5).astype(np.uint8), np.ones((9, 9), np.uint8)
        ).astype(np.float32)
        m = _smooth_mask(bed, 3)
        raw = _texture(rng, H, W, (176, 96, 84), 0.35, grain=0.4)
        self.base = (base * (1 - m[..., None]) + raw * m[..., None]).astype(np.uint8)

        self.ducts = {cut: self._duct_sprite(cut) for cut in (False, True)}
        self.fat = self._fat_sprite()
        self.adhesions = self._adhesion_sprite()
        self.window = self._plate_window_sprite()
        self.burns = self._burn_sprite()
        self.fluid = self._fluid_sprite()

    def _region(self, u0: float, v0: float, u1: float, v1: float) -> tuple[int, int, int, int]:
        x0, y0 = self.px(u0, v0)
        x1, y1 = self.px(u1, v1)
        return x0, y0, x1 - x0, y1 - y0

    def _gallbladder_sprite(self) -> Sprite:
        x, y, w, h = self._region(0.40, 0.08, 0.80, 0.54)
        mask = np.zeros((h, w), np.uint8)
        fx, fy = self.px(*ANCHORS["fundus"])
        nx, ny = self.px(*ANCHORS["gb_neck"])
        fx, fy, nx, ny = fx - x, fy - y, nx - x, ny - y
        length = math.hypot(fx - nx, fy - ny)
        angle = math.degrees(math.atan2(fy - ny, fx - nx))
        cx, cy = (fx + 2 * nx) / 3 + (fx - nx) * 0.15, (fy + 2 * ny) / 3 + (fy - ny) * 0.15
        cv2.ellipse(mask, (int(cx), int(cy)), (int(length * 0.62), int(length * 0.27)), angle, 0, 360, 255, -1)
        cv2.ellipse(
            mask,
            (int(nx + (fx - nx) * 0.1), int(ny + (fy - ny) * 0.1)),
            (int(length * 0.2), int(length * 0.11)),
            angle,
            0,
            360,
            255,
            -1,
        )
        rgb = _texture(self.rng, h, w, (112, 136, 108), 0.45, grain=0.25)
        # Bluish-white serosa sheen and small wall vessels.
        shade = _smooth_mask(mask > 0, 12)
        rgb = (rgb.astype(np.float32) * (0.75 + 0.35 * shade[..., None])).clip(0, 255).astype(np.uint8)
        _draw_vessels(rgb, self.rng, 14, (150, 70, 72), 1, (0, 0, w, h), mask > 0)
        return Sprite(rgb, _smooth_mask(mask > 0, 1.5), x, y)

    def _tube_points(self, points: list[tuple[float, float]], x: int, y: int, n: int = 40) -> np.ndarray:
        pts = np.array([self.px(*p) for p in points], np.float32) - (x, y)
        t = np.linspace(0, 1, len(pts))
        tt = np.linspace(0, 1, n)
        return np.stack([np.interp(tt, t, pts[:, 0]), np.interp(tt, t, pts[:, 1])], 1)

    def duct_path(self) -> list[tuple[float, float]]:
        return [ANCHORS["gb_neck"], (0.42, 0.54), ANCHORS["cystic_duct"], (0.31, 0.68)]

    def artery_path(self) -> list[tuple[float, float]]:
        return [(0.475, 0.455), ANCHORS["cystic_artery"], (0.405, 0.625)]

    def tubes(self) -> tuple[tuple[list[tuple[float, float]], int], ...]:
        """The cystic duct's and the artery's paths with their widths in pixels at 960 wide."""
        return (self.duct_path(), 15), (self.artery_path(), 8)

    def _duct_sprite(self, cut: bool) -> Sprite:
        x, y, w, h = self._region(0.26, 0.42, 0.52, 0.72)
        rgb = np.zeros((h, w, 3), np.uint8)
        mask = np.zeros((h, w), np.uint8)
        s = self.W / 960.0
        colors = ((228, 214, 176), (196, 86, 84))
        for (path, width), color in zip(self.tubes(), colors, strict=True):
            pts = self._tube_points(path, x, y)
            if cut:
                gap = slice(int(len(pts) * 0.52), int(len(pts) * 0.60))
                segments = [pts[: gap.start], pts[gap.stop :]]
            else:
                segments = [pts]
            for seg in segments:
                _tube(rgb, seg, int((width + 2) * s), color)
                cv2.polylines(mask, [seg.astype(np.int32)], False, 255, int((width + 2) * s), cv2.LINE_AA)
        return Sprite(rgb, _smooth_mask(mask > 0, 1), x, y)

    def _fat_sprite(self) -> Sprite:
        x, y, w, h = self._region(0.24, 0.38, 0.60, 0.76)
        s = self.W / 960.0
        cx, cy = self.px(0.41, 0.565)
        centers = _scatter(self.rng, (cx - x, cy - y), (0.10 * self.W, 0.10 * self.H), 14)
        for path, _ in self.tubes():
            centers += [tuple(p) for p in self._tube_points(path, x, y, 9)[1:]]
        rgb, lobes = _lobules(self.rng, h, w, centers, 20 * s, (234, 198, 112))
        mask = lobes.astype(np.uint8) * 255
        # Clearing order: close to the duct and artery first, then the rest, with texture ...
        near = np.zeros((h, w), np.uint8)
        over = np.zeros((h, w), np.uint8)
        for path, _ in self.tubes():
            points = [self._tube_points(path, x, y).astype(np.int32)]
            cv2.polylines(near, points, False, 255, int(10 * s))
            cv2.polylines(over, points, False, 255, int(STRUCTURE_COVER_PX * s))
        dist = cv2.distanceTransform(255 - near, cv2.DIST_L2, 3)
        noise = fractal_noise(self.rng, h, w, base=4)
        order = 0.55 * (dist / max(float(dist.max()), 1.0)) + 0.45 * noise
        # Ranked over the fat itself (not the sprite's rectangle, most of which holds no fat), so the share of fat
        # left is what the script's fat_cleared says: once a rectangle-wide ramp had removed 90% of the fat by 45%
        # cleared, and none was left from 60%, while the truth said "triangle not cleared" until 90%.
        fat = mask > 0
        rank = np.zeros_like(order)
        rank[fat] = np.argsort(np.argsort(order[fat], kind="stable"), kind="stable") / max(int(fat.sum()) - 1, 1)
        order = TRIANGLE_CLEARED * TRIANGLE_FAT_GONE * np.sqrt(rank)
        # ... but the fat lying on the structures themselves goes just before the truth lists them (C1 met at
        # STRUCTURES_SEEN): neither structure shows before the anatomy list and the raters say it is seen.
        lo, hi = STRUCTURES_UNCOVER
        order = np.where(over > 0, STRUCTURES_SEEN * (lo + (hi - lo) * noise), order)  # fractal_noise spans 0..1
        return Sprite(rgb, _border_fade(_smooth_mask(fat, 2)), x, y, order.astype(np.float32))

    def _adhesion_sprite(self) -> Sprite:
        x, y, w, h = self._region(0.46, 0.26, 0.86, 0.70)
        mask = np.zeros((h, w), np.uint8)
        s = self.W / 960.0
        for _ in range(9):
            a = np.array(self.px(self.rng.uniform(0.54, 0.66), self.rng.uniform(0.34, 0.44))) - (x, y)
            b = np.array(self.px(self.rng.uniform(0.64, 0.78), self.rng.uniform(0.52, 0.62))) - (x, y)
            cv2.line(
                mask,
                tuple(int(v) for v in a),
                tuple(int(v) for v in b),
                255,
                int(self.rng.uniform(6, 14) * s),
                cv2.LINE_AA,
            )
        rgb = _tint(fractal_noise(self.rng, h, w, base=6), (236, 214, 150), 0.3)
        order = fractal_noise(self.rng, h, w, base=3)
        return Sprite(rgb, _border_fade(_smooth_mask(mask > 0, 1.5) * 0.9), x, y, order)

    def _plate_window_sprite(self) -> Sprite:
        x, y, w, h = self._region(0.44, 0.38, 0.58, 0.52)
        mask = np.zeros((h, w), np.uint8)
        cx, cy = self.px(0.505, 0.445)
        cv2.ellipse(mask, (cx - x, cy - y), (int(0.035 * self.W), int(0.045 * self.H)), -30, 0, 360, 255, -1)
        rgb = _tint(fractal_noise(self.rng, h, w, base=6), (226, 178, 164), 0.25)
        return Sprite(rgb, _smooth_mask(mask > 0, 2), x, y)

    def _burn_sprite(self) -> Sprite:
        x, y, w, h = self._region(0.46, 0.22, 0.66, 0.48)
        mask = np.zeros((h, w), np.uint8)
        s = self.W / 960.0
        for _ in range(40):
            u, v = self.rng.normal(0.56, 0.035), self.rng.normal(0.34, 0.05)
            px, py = self.px(u, v)
            cv2.ellipse(
                mask,
                (px - x, py - y),
                (int(self.rng.uniform(3, 9) * s), int(self.rng.uniform(2, 5) * s)),
                self.rng.uniform(0, 180),
                0,
                360,
                255,
                -1,
                cv2.LINE_AA,
            )
        rgb = _tint(fractal_noise(self.rng, h, w, base=8), (70, 42, 30), 0.5)
        return Sprite(rgb, _border_fade(_smooth_mask(mask > 0, 1) * 0.85), x, y, fractal_noise(self.rng, h, w, base=3))

    def _fluid_sprite(self) -> Sprite:
        x, y, w, h = self._region(0.34, 0.50, 0.56, 0.67)
        mask = np.zeros((h, w), np.uint8)
        cx, cy = self.px(*ANCHORS["fluid"])
        cv2.ellipse(mask, (cx - x, cy - y), (int(0.08 * self.W), int(0.06 * self.H)), 8, 0, 360, 255, -1)
        rgb = _tint(fractal_noise(self.rng, h, w, base=5), (118, 18, 22), 0.35)
        cv2.ellipse(
            rgb,
            (cx - x - int(0.02 * self.W), cy - y - int(0.02 * self.H)),
            (int(0.02 * self.W), int(0.006 * self.H)),
            8,
            0,
            360,
            (200, 120, 120),
            -1,
            cv2.LINE_AA,
        )
        return Sprite(rgb, _smooth_mask(mask > 0, 4), x, y)

    # ------------------------------------------------------------------ world state
    def plate_lift(self, frame: int) -> float:
        """How far (0..1) the gallbladder's neck is lifted off the cystic plate, and how opaque the plate shows."""
        lo, hi = PLATE_LIFT
        return float(np.clip((self.script.plate_exposed(frame) - lo) / (hi - lo), 0.0, 1.0))

    def _gb_transform(self, frame: int) -> tuple[np.ndarray, float] | None:
        """Affine (sprite → world canvas) of the gallbladder and its opacity, or None if gone."""
        sc = self.script
        detach = sc.gb_detached(frame)
        bag = sc.gb_in_bag(frame)
        if bag >= 1.0:
            return None
        pivot = np.array(self.px(*ANCHORS["fundus"]), np.float32)
        lift = np.array([0.02 * self.W, -0.06 * self.H], np.float32) * detach
        angle = -PLATE_LIFT_DEG * self.plate_lift(frame) - 12.0 * detach
        scale = 1.0 - 0.12 * detach
        opacity = 1.0
        if bag > 0:
            target = np.array(self.px(*ANCHORS["bag"]), np.float32)
            k = min(1.0, bag / 0.8)
            lift = lift + (target - pivot - lift) * k
            scale *= 1.0 - 0.55 * k
            opacity = 1.0 - max(0.0, (bag - 0.6) / 0.4)
        M = cv2.getRotationMatrix2D((float(pivot[0] - self.gb.x), float(pivot[1] - self.gb.y)), angle, scale)
        M[:, 2] += (self.gb.x + lift[0], self.gb.y + lift[1])
        return M, opacity

    def _world_state(self, frame: int) -> tuple:
        sc = self.script
        q = 40.0  # quantisation: recompose the world at most 40 times per unit of progress
        clips = sc.clips(frame)
        gb = sc.gb_in_bag(frame)
        return (
            round(sc.adhesions_cleared(frame) * q),
            round(sc.fat_cleared(frame) * q),
            round(sc.plate_exposed(frame) * q),
            tuple(sorted(clips.items())),
            tuple(sorted(sc.cut(frame).items())),
            round(sc.gb_detached(frame) * q),
            round(gb * q),
            round(sc.fluid(frame) * q),
            sc.phase_at(frame) in PHASES[5:],
        )

    def world(self, frame: int) -> np.ndarray:
        key = self._world_state(frame)
        if key != self._world_key:
            self._world = self._compose(frame)
            self._world_key = key
        return self._world

    def _compose(self, frame: int) -> np.ndarray:
        sc = self.script
        canvas = self.base.copy()
        detach = sc.gb_detached(frame)
        burns = self.burns
        reveal = (burns.order < detach * 1.1).astype(np.float32)
        _blend(canvas, burns.rgb, burns.alpha * reveal, burns.x, burns.y)
        if sc.fluid(frame) > 0:
            f = self.fluid
            _blend(canvas, f.rgb, f.alpha * min(1.0, sc.fluid(frame) * 1.2), f.x, f.y)
        cut = sc.cut(frame)
        ducts = self.ducts[bool(cut.get("cystic_duct"))]
        _blend(canvas, ducts.rgb, ducts.alpha, ducts.x, ducts.y)
        self._draw_clips(canvas, sc.clips(frame))
        fat = self.fat
        keep = (fat.order >= sc.fat_cleared(frame)).astype(np.float32)
        _blend(canvas, fat.rgb, fat.alpha * cv2.GaussianBlur(keep, (0, 0), 1.2), fat.x, fat.y)
        plate = self.plate_lift(frame)
        if plate > 0 and detach <= 0:
            win = self.window
            _blend(canvas, win.rgb, win.alpha * plate, win.x, win.y)
        gb = self._gb_transform(frame)
        if gb is not None:
            M, opacity = gb
            self._blend_warped(canvas, self.gb, M, opacity)
        adh = self.adhesions
        keep = (adh.order >= sc.adhesions_cleared(frame)).astype(np.float32)
        _blend(canvas, adh.rgb, adh.alpha * keep, adh.x, adh.y)
        return canvas

    def _blend_warped(self, canvas: np.ndarray, sprite: Sprite, M: np.ndarray, opacity: float) -> None:
        h, w = sprite.alpha.shape
        corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float32) @ M.T
        x0, y0 = np.floor(corners.min(0)).astype(int)
        x1, y1 = np.ceil(corners.max(0)).astype(int)
        M2 = M.copy()
        M2[:, 2] -= (x0, y0)
        size = (int(x1 - x0), int(y1 - y0))
        rgb = cv2.warpAffine(sprite.rgb, M2, size, flags=cv2.INTER_LINEAR)
        alpha = cv2.warpAffine(sprite.alpha, M2, size, flags=cv2.INTER_LINEAR) * opacity
        _blend(canvas, rgb, alpha, int(x0), int(y0))

    def _draw_clips(self, canvas: np.ndarray, clips: dict[str, int]) -> None:
        s = self.W / 960.0
        for structure, count in clips.items():
            path = self.duct_path() if structure == "cystic_duct" else self.artery_path()
            pts = self._tube_points(path, 0, 0, 100)
            spots = [0.40, 0.47, 0.66] if structure == "cystic_duct" else [0.42, 0.70]
            for k in range(count):
                i = int(spots[k] * (len(pts) - 1))
                p, q = pts[i], pts[min(i + 1, len(pts) - 1)]
                d = (q - p) / max(float(np.hypot(*(q - p))), 1e-6)
                n = np.array([-d[1], d[0]])
                half_len = (13 if structure == "cystic_duct" else 9) * s
                a, b = p - n * half_len, p + n * half_len
                cv2.line(canvas, tuple(a.astype(int)), tuple(b.astype(int)), (90, 90, 96), int(6 * s), cv2.LINE_AA)
                cv2.line(canvas, tuple(a.astype(int)), tuple(b.astype(int)), (214, 214, 222), int(4 * s), cv2.LINE_AA)

    # ------------------------------------------------------------------ camera and overlays
    def camera(self, frame: int) -> tuple[float, float, float, float]:
        """(centre x, centre y, zoom, roll in degrees), smoothly blended across phase changes."""
        sc = self.script
        t = frame / sc.fps
        blend = 3.0 * sc.fps
        weights, total = np.zeros(3), 0.0
        for name, start, end in sc.phase_bounds:
            lo, hi = start - blend / 2, end + blend / 2
            wgt = max(0.0, min(frame - lo, hi - frame, blend)) / blend
            if wgt > 0:
                weights += wgt * np.array(FOCUS[name])
                total += wgt
        cx, cy, zoom = weights / max(total, 1e-6)
        f, ph = self._cam_freq, self._cam_phase
        cx += 0.018 * math.sin(2 * math.pi * f[0] * t + ph[0]) + 0.006 * math.sin(2 * math.pi * f[1] * t + ph[1])
        cy += 0.014 * math.sin(2 * math.pi * f[2] * t + ph[2]) + 0.005 * math.sin(2 * math.pi * f[3] * t + ph[3])
        zoom *= 1.0 + 0.04 * math.sin(2 * math.pi * f[4] * t + ph[4])
        roll = 2.5 * math.sin(2 * math.pi * f[5] * t + ph[5])
        return float(cx), float(cy), float(zoom), float(roll)

    def view_matrix(self, frame: int) -> np.ndarray:
        """Affine mapping world canvas pixels to frame pixels."""
        cx, cy, zoom, roll = self.camera(frame)
        M = cv2.getRotationMatrix2D((cx * self.W, cy * self.H), roll, zoom)
        M[:, 2] += (self.w / 2 - cx * self.W, self.h / 2 - cy * self.H)
        return M

    def _build_overlays(self) -> None:
        w, h = self.w, self.h
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        self.radius = 0.56 * w
        r = np.hypot(xx - w / 2, yy - h / 2) / self.radius
        field = np.clip((1.0 - r) / 0.03, 0, 1)
        vignette = np.clip(1.15 - 0.65 * r**2.2, 0, 1)
        self.mask = (np.clip(field * vignette, 0, 1) * 255).astype(np.uint8)
        self.mask3 = cv2.merge([self.mask] * 3)
        smoke_rng = np.random.default_rng([self.script.seed, self.script.case_id, 13])
        smoke = fractal_noise(smoke_rng, h, w * 2, base=3)
        self.smoke = cv2.merge([(200 + 40 * smoke).astype(np.uint8)] * 3)
        glint = np.zeros((33, 33), np.float32)
        cv2.ellipse(glint, (16, 16), (6, 2), 0, 0, 360, 1.0, -1)
        cv2.ellipse(glint, (11, 18), (3, 1), 20, 0, 360, 0.8, -1)
        glint = cv2.GaussianBlur(glint, (0, 0), 1.6)
        self.glint = (glint / glint.max() * 255).astype(np.uint8)
        rng = np.random.default_rng([self.script.seed, self.script.case_id, 17])
        self.glints = [(rng.uniform(0.2, 0.8), rng.uniform(0.33, 0.38), 0.0) for _ in range(5)]
        self.glints += [(rng.uniform(0.55, 0.64), rng.uniform(0.24, 0.36), 0.0) for _ in range(3)]

    def _to_frame(self, M: np.ndarray, u: float, v: float) -> np.ndarray:
        return M @ np.array([u * self.W, v * self.H, 1.0])

    def visible(self, p: np.ndarray, margin: float = 0.0) -> bool:
        inside_frame = -margin <= p[0] < self.w + margin and -margin <= p[1] < self.h + margin
        return inside_frame and math.hypot(p[0] - self.w / 2, p[1] - self.h / 2) < self.radius * 0.97

    def anchor_in_view(self, view: np.ndarray, anchor: str) -> bool:
        """Whether an anatomical anchor lies in the endoscope's field under ``view`` (``view_matrix(frame)``): what
        the anatomy list requires before it names a structure."""
        return self.visible(self._to_frame(view, *ANCHORS[anchor]))

    # ------------------------------------------------------------------ frames
    def render(self, frame: int) -> tuple[np.ndarray, FrameTruth]:
        """The RGB frame and its ground truth."""
        sc = self.script
        M = self.view_matrix(frame)
        img = cv2.warpAffine(
            self.world(frame), M, (self.w, self.h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        self._draw_glints(img, M, frame)
        instances, tools = [], set()
        bag_visible = self._draw_bag(img, M, frame)
        if bag_visible:
            tools.add("SpecimenBag")
        for pose in sorted(sc.poses(frame), key=lambda p: p.port):
            if pose.tool == "SpecimenBag":
                continue
            box = self._draw_tool(img, M, pose, frame)
            if box is None:
                continue
            tools.add(pose.tool)
            instances.append(
                Instance(
                    pose.tool,
                    TOOL_TO_INSTRUMENT.get(pose.tool),
                    pose.verb,
                    pose.target,
                    box,
                    self._target_box(M, pose.target),
                )
            )
        smoke = sc.smoke(frame)
        if smoke > 0:
            off = int(frame * 2) % self.w
            haze = self.smoke[:, off : off + self.w]
            img = cv2.addWeighted(img, 1 - smoke, haze, smoke, 0)
        img = cv2.multiply(img, self.mask3, scale=1 / 255)
        truth = FrameTruth(
            frame,
            sc.phase_at(frame),
            tuple(t for t in TOOL_ORDER if t in tools),
            tuple(instances),
            sc.cvs_raters(frame),
            self._anatomy(M, frame),
        )
        return img, truth

    def _draw_glints(self, img: np.ndarray, M: np.ndarray, frame: int) -> None:
        g = self.glint
        for i, (u, v, _) in enumerate(self.glints):
            p = self._to_frame(M, u, v)
            x, y = int(p[0]) - 16, int(p[1]) - 16
            if 0 <= x < self.w - 33 and 0 <= y < self.h - 33:
                flicker = 0.65 + 0.35 * math.sin(frame * 0.21 + i)
                roi = img[y : y + 33, x : x + 33]
                add = (g.astype(np.float32) * flicker).astype(np.uint8)
                img[y : y + 33, x : x + 33] = cv2.add(roi, cv2.merge([add] * 3))

    def _target_box(self, M: np.ndarray, target: str) -> Box | None:
        ext = TARGET_EXTENT.get(target)
        if ext is None:
            return None
        u0, v0, u1, v1 = ext
        pts = np.array([self._to_frame(M, u, v) for u, v in ((u0, v0), (u1, v0), (u0, v1), (u1, v1))])
        return _clip_box(pts.min(0), pts.max(0), self.w, self.h)

    def _anatomy(self, M: np.ndarray, frame: int) -> tuple[str, ...]:
        sc = self.script
        seen = []

        def shows(anchor: str) -> bool:
            return self.anchor_in_view(M, anchor)

        if sc.gb_in_bag(frame) < 0.9 and shows("gb_body"):
            seen.append("gallbladder")
        if shows("liver"):
            seen.append("liver")
        # The thresholds of the CVS criteria (train.synth.script): what is listed here is the criteria's evidence.
        if sc.fat_cleared(frame) >= STRUCTURES_SEEN and not sc.cut(frame).get("cystic_duct") and shows("cystic_duct"):
            seen += ["cystic_duct", "cystic_artery"]
        if (sc.plate_exposed(frame) >= PLATE_SEEN or sc.gb_detached(frame) > 0.3) and shows("cystic_plate"):
            seen.append("cystic_plate")
        if sc.fat_cleared(frame) < TRIANGLE_CLEARED and shows("peritoneum"):
            seen.append("calot_triangle")
        if shows("omentum"):
            seen.append("omentum")
        if sc.fluid(frame) > 0.1 and shows("fluid"):
            seen.append("fluid")
        return tuple(seen)

    def _draw_bag(self, img: np.ndarray, M: np.ndarray, frame: int) -> bool:
        visible, openness, out = self.script.bag_state(frame)
        if not visible:
            return False
        u, v = ANCHORS["bag"]
        pu, pv = PORTS["top"]
        k = out * 0.9
        u, v = u + (pu - u) * k, v + (pv - v) * k
        c = self._to_frame(M, u, v)
        if not self.visible(c, margin=-10):
            return False
        zoom = _zoom(M)
        s = self.w / 640.0 * zoom * (1.0 - 0.3 * out)
        full = self.script.gb_in_bag(frame)
        body = (int(58 * s), int(44 * s + 8 * s * full))
        center = (int(c[0]), int(c[1]))
        overlay = img.copy()
        cv2.ellipse(overlay, center, body, 25, 0, 360, (214, 216, 210), -1, cv2.LINE_AA)
        if full > 0.5:
            cv2.ellipse(
                overlay, center, (int(body[0] * 0.6), int(body[1] * 0.55)), 25, 0, 360, (150, 170, 130), -1, cv2.LINE_AA
            )
        for k2 in range(3):
            cv2.ellipse(
                overlay,
                center,
                (int(body[0] * (0.5 + 0.15 * k2)), int(body[1] * 0.9)),
                25 + 10 * k2,
                200,
                320,
                (170, 172, 168),
                2,
                cv2.LINE_AA,
            )
        mouth = (int(c[0] - 30 * s), int(c[1] - 34 * s))
        if openness > 0.05:
            cv2.ellipse(
                overlay, mouth, (int(34 * s), int(14 * s * openness) + 1), 25, 0, 360, (70, 40, 40), -1, cv2.LINE_AA
            )
            cv2.ellipse(
                overlay,
                mouth,
                (int(34 * s), int(14 * s * openness) + 1),
                25,
                0,
                360,
                (235, 235, 232),
                max(1, int(4 * s)),
                cv2.LINE_AA,
            )
        else:
            cv2.line(
                overlay,
                mouth,
                (int(mouth[0] - 40 * s), int(mouth[1] - 30 * s)),
                (230, 230, 225),
                max(1, int(3 * s)),
                cv2.LINE_AA,
            )
        img[:] = cv2.addWeighted(img, 0.18, overlay, 0.82, 0)
        return True

    def _draw_tool(self, img: np.ndarray, M: np.ndarray, pose: ToolPose, frame: int) -> Box | None:
        P = self._to_frame(M, *pose.port)
        T = self._to_frame(M, *pose.tip)
        if not self.visible(T):
            return None
        d = T - P
        length = float(np.hypot(*d))
        if length < 1:
            return None
        d /= length
        n = np.array([-d[1], d[0]])
        s = self.w / 640.0 * _zoom(M)
        tip_len = 26 * s
        E = T - d * tip_len  # end of shaft, start of the working tip
        w_port, w_tip = 20 * s, 8.5 * s
        thick = {"Irrigator": 1.15, "Clipper": 1.2, "Bipolar": 1.0}.get(pose.tool, 1.0)
        shaft = np.array([P + n * w_port * thick, E + n * w_tip * thick, E - n * w_tip * thick, P - n * w_port * thick])
        cv2.fillConvexPoly(img, shaft.astype(np.int32), (34, 35, 40), cv2.LINE_AA)
        hi = np.array([P + n * w_port * 0.45, E + n * w_tip * 0.45])
        cv2.line(
            img, tuple(hi[0].astype(int)), tuple(hi[1].astype(int)), (128, 130, 140), max(1, int(3 * s)), cv2.LINE_AA
        )
        collar_a, collar_b = E + n * w_tip * thick, E - n * w_tip * thick
        cv2.line(
            img,
            tuple(collar_a.astype(int)),
            tuple(collar_b.astype(int)),
            (150, 150, 158),
            max(1, int(3 * s)),
            cv2.LINE_AA,
        )
        pts = [E - d * tip_len * 1.2, E + n * w_tip * thick, E - n * w_tip * thick, T]
        metal, lw = (188, 188, 196), max(1, int(3.5 * s))
        if pose.tool in ("Grasper", "Bipolar", "Clipper"):
            spread = (0.12 + 0.35 * pose.jaw) * tip_len
            color = metal if pose.tool != "Bipolar" else (70, 100, 205)
            for sign in (1, -1):
                jaw_end = T + n * spread * sign
                cv2.line(img, tuple(E.astype(int)), tuple(jaw_end.astype(int)), color, lw + 1, cv2.LINE_AA)
                if pose.tool == "Bipolar":
                    tip0 = E + (jaw_end - E) * 0.6
                    cv2.line(img, tuple(tip0.astype(int)), tuple(jaw_end.astype(int)), metal, lw, cv2.LINE_AA)
                pts.append(jaw_end)
            if pose.tool == "Clipper":
                clip_a, clip_b = T + n * spread * 0.7 - d * 4 * s, T - n * spread * 0.7 - d * 4 * s
                cv2.line(img, tuple(clip_a.astype(int)), tuple(clip_b.astype(int)), (205, 176, 92), lw, cv2.LINE_AA)
        elif pose.tool == "Hook":
            cv2.line(img, tuple(E.astype(int)), tuple(T.astype(int)), (25, 25, 28), max(1, int(4 * s)), cv2.LINE_AA)
            bend = T + n * tip_len * 0.38
            cv2.line(
                img,
                tuple((E + d * tip_len * 0.55).astype(int)),
                tuple(T.astype(int)),
                metal,
                max(1, int(2.5 * s)),
                cv2.LINE_AA,
            )
            cv2.line(img, tuple(T.astype(int)), tuple(bend.astype(int)), metal, max(1, int(2.5 * s)), cv2.LINE_AA)
            pts.append(bend)
        elif pose.tool == "Scissors":
            spread = (0.05 + 0.3 * pose.jaw) * tip_len
            for sign in (1, -1):
                mid = E + d * tip_len * 0.5 + n * spread * 0.6 * sign
                end = T + n * spread * sign + n * 4 * s
                blade = np.array([E, mid, end], np.int32)
                cv2.polylines(img, [blade], False, (196, 178, 126), lw + 1, cv2.LINE_AA)
                pts.append(end)
        elif pose.tool == "Irrigator":
            tube = np.array([E + n * w_tip * 1.1, T + n * w_tip * 0.9, T - n * w_tip * 0.9, E - n * w_tip * 1.1])
            cv2.fillConvexPoly(img, tube.astype(np.int32), (160, 162, 170), cv2.LINE_AA)
            cv2.line(
                img,
                tuple((T + n * w_tip * 0.9).astype(int)),
                tuple((T - n * w_tip * 0.9).astype(int)),
                (60, 60, 66),
                max(1, int(3 * s)),
                cv2.LINE_AA,
            )
            for k in (0.3, 0.6):
                hole = E + d * tip_len * k
                cv2.circle(img, tuple(hole.astype(int)), max(1, int(2 * s)), (50, 50, 55), -1, cv2.LINE_AA)
            pts += [T + n * w_tip, T - n * w_tip]
        pts_arr = np.array(pts)
        box = _clip_box(pts_arr.min(0) - 3 * s, pts_arr.max(0) + 3 * s, self.w, self.h)
        return (
            box
            or _clip_box(T - 6 * s, T + 6 * s, self.w, self.h)
            or (
                float(np.clip(T[0], 0, self.w - 2)),
                float(np.clip(T[1], 0, self.h - 2)),
                float(np.clip(T[0], 0, self.w - 2)) + 2.0,
                float(np.clip(T[1], 0, self.h - 2)) + 2.0,
            )
        )


TOOL_ORDER = ("Grasper", "Bipolar", "Hook", "Scissors", "Clipper", "Irrigator", "SpecimenBag")


def _zoom(M: np.ndarray) -> float:
    """The camera's zoom, read off its view matrix (scale of a rotation-and-scale affine)."""
    return float(np.hypot(M[0, 0], M[0, 1]))


def _clip_box(lo: np.ndarray, hi: np.ndarray, w: int, h: int) -> Box | None:
    x1, y1 = max(0.0, float(lo[0])), max(0.0, float(lo[1]))
    x2, y2 = min(float(w), float(hi[0])), min(float(h), float(hi[1]))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    return (round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1))
