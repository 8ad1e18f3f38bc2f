"""Facts about a video file, read by demuxing (headers are not trusted for frame counts).

The counting is :class:`engine.video.VideoReader`'s packet index; ``VideoError`` lives there too
and is re-exported here for the callers that import it from this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from engine.video import VideoError, VideoReader

__all__ = ["VideoError", "VideoFacts", "probe_video"]


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
    """Count frames and keyframes by reading every packet of the first video stream (no decoding)."""
    path = Path(path)
    with VideoReader(path) as reader:
        return VideoFacts(
            path, reader.codec, reader.width, reader.height, reader.fps, reader.frame_count, len(reader.keyframes)
        )
