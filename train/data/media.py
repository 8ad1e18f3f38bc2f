"""Locating and measuring the frames that labels refer to (video files and image folders)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from train.data.errors import DatasetError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".ts")


def case_order(name: str) -> tuple:
    """Sort key for case names by their number: ``video99`` before ``video100`` (name order puts it after), the
    same order as plain names while every id has two digits."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def find_video(directories: list[Path], names: list[str]) -> Path | None:
    """The first file ``<dir>/<name><ext>`` with a video extension (names tried case-insensitively)."""
    wanted = {n.lower() for n in names}
    for directory in directories:
        if not directory or not Path(directory).is_dir():
            continue
        for path in sorted(Path(directory).iterdir()):
            if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS and path.stem.lower() in wanted:
                return path
    return None


@cache
def video_info(path: Path) -> tuple[int, int, float]:
    """(width, height, frames per second) of a video's first video stream, from its header only."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DatasetError(path, "no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or 0
            return int(stream.codec_context.width), int(stream.codec_context.height), float(rate)
    except DatasetError:
        raise
    except Exception as exc:  # PyAV raises many types (FileNotFoundError, InvalidDataError, ...)
        raise DatasetError(path, f"cannot open video: {exc}") from exc


@cache
def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file, reading its header only."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(path, f"cannot read image: {exc}") from exc
