"""Facts about a video file, read by demuxing (headers are not trusted for frame counts)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av


class VideoError(Exception):
    """A video is missing, unreadable, corrupt, truncated or has no video stream."""


@dataclass(frozen=True)
class VideoFacts:
    path: Path
    codec: str
    width: int
    height: int
    fps: Fraction
    frames: int
    keyframes: int

    @property
    def duration_s(self) -> float:
        return float(self.frames / self.fps) if self.fps else 0.0


def probe_video(path: Path) -> VideoFacts:
    """Count frames and keyframes by reading every packet of the first video stream."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: the file holds no video stream")
            stream = container.streams.video[0]
            frames = keyframes = 0
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                frames += 1
                keyframes += int(packet.is_keyframe)
            fps = stream.average_rate or stream.guessed_rate or Fraction(0)
            ctx = stream.codec_context
            if frames == 0:
                raise VideoError(f"{path}: the video stream holds no frames")
            return VideoFacts(path, ctx.name, ctx.width, ctx.height, Fraction(fps), frames, keyframes)
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path}: cannot read this video ({exc.strerror or type(exc).__name__})") from exc
