"""A strip of small pictures of every keyframe: a preview under the cursor while the timeline is dragged.

Only keyframes are decoded (``skip_frame = "NONKEY"``: the decoder drops every other picture
unread), scaled to ``width`` pixels (160 by default) as displayed (the display matrix applied), in
a background thread. The strip is kept in ``data_home()/index/<fingerprint>.thumbs.npz`` beside the
packet index (never beside the video) and loaded at once on the next open while the file is
unchanged (fingerprint, size and mtime). ``nearest(frame)`` gives the keyframe at or before any
frame and its picture, by a binary search over a list built once, handing out prebuilt read-only
views: O(log n) and nothing allocated, fit to call on every mouse move.
"""

from __future__ import annotations

import bisect
import os
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from engine.video import CacheKey, VideoError, VideoReader, VideoReaderConfig, save_npz_atomically

__all__ = ["THUMBNAILS_VERSION", "ThumbnailBuilder", "ThumbnailStrip", "build_thumbnails", "load_thumbnails"]

THUMBNAILS_VERSION = 1
DEFAULT_WIDTH = 160


class ThumbnailStrip:
    """Keyframe numbers (ascending) and their RGB pictures (n x h x w x 3 uint8, read-only)."""

    def __init__(self, frames: np.ndarray, images: np.ndarray):
        frames = np.asarray(frames, np.int64)
        if frames.ndim != 1 or images.ndim != 4 or images.shape[0] != len(frames) or images.shape[3] != 3:
            raise ValueError("a thumbnail strip needs one h x w x 3 picture per frame number")
        if not len(frames) or np.any(np.diff(frames) <= 0) or frames[0] < 0 or images.dtype != np.uint8:
            raise ValueError("a thumbnail strip needs ascending frame numbers and uint8 pictures")
        images = np.ascontiguousarray(images)
        images.setflags(write=False)
        self.frames = frames
        self.images = images
        self._keys = [int(f) for f in frames]
        self._entries = [(f, images[k]) for k, f in enumerate(self._keys)]

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of each picture."""
        return int(self.images.shape[2]), int(self.images.shape[1])

    def nearest(self, frame: int) -> tuple[int, np.ndarray]:
        """(keyframe at or before ``frame``, its picture); the first keyframe for frames before it."""
        k = bisect.bisect_right(self._keys, frame) - 1
        return self._entries[k if k > 0 else 0]


def thumbnails_path(video: Path) -> Path | None:
    key = CacheKey.of(Path(video))
    return None if key is None else key.path("thumbs")


def load_thumbnails(video: Path, width: int = DEFAULT_WIDTH) -> ThumbnailStrip | None:
    """The kept strip of ``video`` as it is now; None when there is none, it is of another width,
    version or file, or it is damaged (then build it again)."""
    key = CacheKey.of(Path(video))
    return None if key is None else _load(key, width)


def _load(key: CacheKey, width: int) -> ThumbnailStrip | None:
    path = key.path("thumbs")
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["version"]) != THUMBNAILS_VERSION or not key.matches(data):
                return None
            frames, images = data["frames"], data["images"]
            if frames.dtype != np.int64 or images.ndim != 4 or images.shape[2] != width:
                return None
            return ThumbnailStrip(frames, images)
    except Exception:  # zipfile, numpy or the strip's own checks: a damaged file is rebuilt
        return None


def build_thumbnails(
    video: Path,
    width: int = DEFAULT_WIDTH,
    cancel: threading.Event | None = None,
    save: bool = True,
    stats: dict[str, int] | None = None,
    progress: Callable[[float], None] | None = None,
) -> ThumbnailStrip | None:
    """Decode every keyframe of ``video`` small; kept in the cache folder when ``save``. None when
    cancelled. Raises :class:`VideoError` for a file that does not read. ``progress`` is told the
    share of keyframes done (0..1) about every 2%, and the share of the file indexed before that
    when the index is built first (each as half of the whole)."""
    video = Path(video)
    key = CacheKey.of(video)
    indexing = None if progress is None else (lambda share: progress(share / 2))
    config = VideoReaderConfig(cache_frames=1, progress=indexing)
    with VideoReader(video, config) as reader:  # the index: cached for long files
        keyframes = set(reader.keyframes)
        ordered = list(reader.keyframes)
        orientation = reader.orientation
        shown_w, shown_h = reader.width, reader.height
        frame_of_pts = reader.frame_of_pts
        height = max(2, round(width * shown_h / shown_w / 2) * 2)
        # scale the stored picture so that, turned as displayed, it is width x height
        sw, sh = (height, width) if orientation.transpose else (width, height)
        frames: list[int] = []
        images: list[np.ndarray] = []
        decoded = 0
        # Indexing is half the work only when it was done here (a cached index costs nothing).
        start, span = (0.5, 0.5) if not reader.index_from_cache else (0.0, 1.0)
        every = max(1, len(ordered) // 50)
        try:
            with av.open(str(video)) as container:
                stream = container.streams.video[0]
                # Slice threads only: a frame-threaded decoder hands every skipped packet to a thread
                # and back, six times slower than the keyframes themselves.
                stream.thread_type = "SLICE"
                stream.codec_context.skip_frame = "NONKEY"
                for packet in container.demux(stream):
                    if cancel is not None and cancel.is_set():
                        return None
                    try:
                        pictures = packet.decode()
                    except av.error.InvalidDataError:
                        continue  # a damaged packet: as the reader does, go on
                    for picture in pictures:
                        decoded += 1
                        if reader._index.ordinal:  # no timestamps: keyframes in order
                            j = ordered[len(frames)] if len(frames) < len(ordered) else None
                        else:
                            j = frame_of_pts(picture.pts)
                        if j is None or j not in keyframes or (frames and j <= frames[-1]):
                            continue
                        small = picture.reformat(width=sw, height=sh, format="rgb24", interpolation="AREA")
                        frames.append(j)
                        images.append(orientation.apply(small.to_ndarray()))
                        if progress is not None and len(frames) % every == 0:
                            progress(start + span * min(1.0, len(frames) / len(ordered)))
        except (av.error.FFmpegError, OSError) as exc:
            raise VideoError(f"{video}: cannot read this video for thumbnails ({exc})") from exc
    if stats is not None:
        stats["decoded"] = decoded
    if not frames:
        raise VideoError(f"{video}: no keyframe decodes")
    strip = ThumbnailStrip(np.array(frames, np.int64), np.stack(images))
    if save and key is not None:
        arrays = {"version": np.array(THUMBNAILS_VERSION, np.int64), "frames": strip.frames, "images": strip.images}
        save_npz_atomically(key.path("thumbs"), {**arrays, **key.meta()})
    return strip


@dataclass
class ThumbnailBuilder:
    """The strip of one video, loaded when kept, else built, in a daemon thread (a 90-minute case's
    strip is ~25 MB: even loading it is kept off the caller's thread, a viewer's UI thread).

    ``strip`` is set (and ``on_done(strip)`` called, from the builder thread) when it is ready;
    ``error`` holds the one-line reason when it cannot be made (set before ``on_done(None)``).
    ``on_progress(share)`` (builder thread) follows a build. ``cancel()`` stops a build (nothing
    is written); ``join()`` waits.
    """

    video: Path
    width: int = DEFAULT_WIDTH
    on_done: Callable[[ThumbnailStrip | None], None] | None = None
    on_progress: Callable[[float], None] | None = None
    nice: int = 10  # the builder thread's niceness above its creator's (Linux): background work

    def __post_init__(self) -> None:
        self.strip: ThumbnailStrip | None = None
        self.loaded = False  # the strip came from the cache folder (nothing was decoded)
        self.error: str | None = None
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ThumbnailBuilder:
        """Start loading the kept strip, or building it when there is none; returns at once."""
        self._thread = threading.Thread(target=self._run, name="surgview-thumbnails", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        if self.nice > 0 and sys.platform.startswith("linux"):
            with suppress(OSError):  # Linux niceness is per thread: a viewer's UI thread keeps its cores
                tid = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + self.nice))
        try:
            self.strip = load_thumbnails(self.video, self.width)
            self.loaded = self.strip is not None
            if self.strip is None and not self._cancel.is_set():
                self.strip = build_thumbnails(self.video, self.width, self._cancel, progress=self._progress)
        except VideoError as exc:
            self.error = str(exc)
        except Exception as exc:  # a bug or a resource problem: say so rather than leave previews pending
            self.error = f"{self.video}: previews could not be built ({type(exc).__name__}: {exc})"
        if self.on_done is not None and not self._cancel.is_set():
            self.on_done(self.strip)

    def _progress(self, share: float) -> None:
        if self.on_progress is not None and not self._cancel.is_set():
            self.on_progress(share)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def cancel(self) -> None:
        self._cancel.set()

    def join(self, timeout: float | None = None) -> ThumbnailStrip | None:
        if self._thread is not None:
            self._thread.join(timeout)
        return self.strip
