"""Facts about a video file, read by demuxing (headers are not trusted for frame counts or time).

The counting is :class:`engine.video.VideoReader`'s packet index; ``VideoError`` lives there too
and is re-exported here for the callers that import it from this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from engine.video import FrameTimes, VideoError, VideoReader

__all__ = ["VideoError", "VideoFacts", "probe_video"]


@dataclass(frozen=True)
class VideoFacts:
    path: Path
    codec: str
    width: int  # as displayed (a rotated recording's turned size)
    height: int
    fps: Fraction  # the container's average rate: a label, not a clock (variable-rate files have none)
    frames: int
    keyframes: int
    times: FrameTimes = field(repr=False, compare=False)  # when each frame shows, by its timestamp

    @property
    def duration_s(self) -> float:
        """The last frame's pts plus its duration, from the first frame's (not frames / fps)."""
        return self.times.duration_s

    def time_of(self, frame: int) -> float:
        return self.times.time_of(frame)

    def index_at(self, seconds: float) -> int:
        """The frame on screen at ``seconds``: what a timecode means in a variable-frame-rate file."""
        return self.times.index_at(seconds)


def probe_video(path: Path) -> VideoFacts:
    """Count frames and keyframes by reading every packet of the first video stream (no decoding
    but the first frame, whose display matrix says which way is up)."""
    path = Path(path)
    with VideoReader(path) as reader:
        return VideoFacts(
            path,
            reader.codec,
            reader.width,
            reader.height,
            reader.fps,
            reader.frame_count,
            len(reader.keyframes),
            reader.times,
        )
