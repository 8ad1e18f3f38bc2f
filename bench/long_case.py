"""A long H.264 case made cheaply, with stored answers: for benchmarks of reopening and playing long cases.

``long_case`` encodes ``seconds`` of a moving 1080p picture once (libx264, low bitrate, B-frames, a
fixed GOP) and repeats its packets with shifted timestamps until the case lasts ``minutes`` (a remux,
nothing re-encoded): a 90-minute 1080p case in about half a minute on 2 cores and ~100 MB on disk.
``store_answers`` writes a three-level chain every ``stride`` frames into the case's own store, as
the engine's sweep would, under the viewer's default profile.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.store_bench import chain_text  # noqa: E402
from engine.chain_parser import parse_chain  # noqa: E402
from engine.profiles import get_profile  # noqa: E402
from engine.store import CaseStore, FrameResult  # noqa: E402

MODEL_ID = "bench-model@0000"

__all__ = ["MODEL_ID", "engine_info", "long_case", "store_answers"]


def _picture(i: int, width: int, height: int) -> np.ndarray:
    """A textured frame with a moving disc: enough motion that B- and P-frames carry data."""
    y, x = np.ogrid[:height, :width]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = (x * 255 // width).astype(np.uint8)
    img[..., 1] = (y * 255 // height).astype(np.uint8)
    img[..., 2] = 90
    cx, cy, r = (i * 17) % width, height // 2 + int(200 * np.sin(i / 20)), height // 6
    img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = (200, 60, 60)
    return img


def long_case(
    path: Path, minutes: float = 90.0, width: int = 1920, height: int = 1080, fps: int = 25, gop: int = 250
) -> Path:
    """Write (once: kept when present) a ``minutes`` H.264 MP4 at ``width`` x ``height``, GOP ``gop``."""
    if path.is_file():
        return path
    segment = path.with_name(path.stem + ".segment.mp4")
    with av.open(str(segment), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0", "bf": "3", "crf": "32"}
        stream.options["preset"] = "superfast"
        for i in range(gop):
            frame = av.VideoFrame.from_ndarray(_picture(i, width, height), format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with av.open(str(segment)) as src:
        ins = src.streams.video[0]
        packets = [(p.pts, p.dts, bytes(p), p.is_keyframe) for p in src.demux(ins) if p.size]
        time_base = ins.time_base
        tick = round(1 / (Fraction(fps) * time_base))
        copies = max(1, round(minutes * 60 * fps / gop))
        part = path.with_name(path.name + ".part")
        with av.open(str(part), "w", format="mp4") as out:
            stream = out.add_stream_from_template(ins)
            for c in range(copies):
                shift = c * gop * tick
                for pts, dts, data, key in packets:
                    packet = av.Packet(data)
                    packet.pts, packet.dts, packet.time_base = pts + shift, dts + shift, time_base
                    packet.is_keyframe = key
                    packet.stream = stream
                    out.mux(packet)
    segment.unlink()
    part.rename(path)
    return path


def engine_info() -> dict:
    """What an engine's ``ready`` says about the default profile (the store keys answers are under)."""
    profile = get_profile()
    return {"name": profile.name, "version": profile.version, "questions": [{"task": str(t)} for t in profile.tasks]}


def store_answers(video: Path, fps: float, frame_count: int, stride: int = 25) -> int:
    """Store a chain every ``stride`` frames of ``video`` (skipped when the store holds them); how many."""
    profile = get_profile()
    task = str(profile.tasks[0])
    frames = list(range(0, frame_count, stride))
    rng = np.random.default_rng(0)
    with CaseStore.for_video(video, fps=fps, frame_count=frame_count) as store:
        if len(store.timeline_rows(MODEL_ID, profile.version, task)) >= len(frames):
            return len(frames)
        for k, frame in enumerate(frames):
            text = chain_text(k, len(frames), rng)
            store.put_result(FrameResult(frame, MODEL_ID, profile.version, task, text, parse_chain(text)))
    return len(frames)
