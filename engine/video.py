"""Frame-accurate video access on PyAV: a packet index built on open, exact seeks, a frame cache.

Frames are numbered 0..N-1 in presentation order. On open every packet of the first video
stream is demuxed (not decoded) once: the frame count, each frame's timestamp and the keyframes
come from the packets, never from the header (edit lists and muxers make header counts wrong).

``frame(i)`` is exact: it seeks to the last keyframe at or before frame i, checks where the
container really landed (MPEG-TS and MPEG-PS seek by byte search and can land after the target;
then it seeks one keyframe earlier, finally reopens the file) and decodes forward until the
frame whose timestamp is frame i's. Every frame decoded on the way is kept (as the decoder's
YUV frame, not yet converted) in an LRU cache around the playhead, so stepping back is a cache
hit, and stepping forward continues the running decoder without a seek. RGB comes from
``cv2.cvtColor`` on the I420 planes, about twice as fast as PyAV's own conversion, and only for
the frames handed out.

Frames come out as displayed: a display matrix (a phone's ``rotate=90``, in the container or an
H.264 SEI, read off the first decoded frame) is applied, so pixels are upright and ``width`` x
``height`` is the displayed size. Time comes from presentation timestamps (:class:`FrameTimes`),
never from a frame rate: a variable-frame-rate file has no single rate to count frames with.

Every failure of the file (missing, empty, random bytes, corrupt, truncated, deleted or replaced
after opening) raises :class:`VideoError` with the file name; a frame number outside 0..N-1
raises :class:`IndexError`. A truncated file whose last packet is cut short is counted as a
decoder counts it (``ffprobe -count_frames``): on open, the last GOPs are decoded and frames that
do not come out are not frames.
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
import os
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from av.sidedata.sidedata import Type as SideDataType
from av.video.reformatter import ColorRange, VideoReformatter

from engine.userdata import data_home

__all__ = [
    "VIDEO_SUFFIXES",
    "CacheKey",
    "FrameTimes",
    "Orientation",
    "VideoError",
    "VideoReader",
    "VideoReaderConfig",
    "VideoReaderStats",
    "cache_dir",
    "frame_to_rgb",
    "video_size",
]


VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".ts", ".m4v", ".webm")
"""File name endings taken as videos when a folder of cases is given."""


class VideoError(Exception):
    """A video is missing, unreadable, corrupt, truncated or has no video stream."""


@dataclass(frozen=True)
class VideoReaderConfig:
    cache_bytes: int = 256 * 2**20  # decoded frames kept around the playhead (YUV, ~1.4 MB per 720p frame)
    cache_frames: int = 256  # and at most this many of them
    threads: int = 0  # decoder threads; 0 lets FFmpeg choose (cores + 1, frame threading)
    # A seek costs about this many decoded frames (flush, refill of the threaded decoder): a target
    # at most this much further than the cheapest keyframe is reached by decoding on, not seeking.
    seek_cost_frames: int = 8
    # frames() keeps only this many of the frames it decodes: enough to step back after pausing
    # playback, and a sweep does not page a whole cache of fresh buffers in (that costs ~10%).
    sequential_cache_frames: int = 16
    check_file: bool = True  # before each uncached decode, check the file is still the one opened
    # Keep the packet index (and what opening derived from it) in data_home()/index, keyed by the
    # video's fingerprint, and reuse it while the file is unchanged: a long case opens without
    # demuxing every packet (about 1 s per hour). Written only for files of at least this many frames
    # (below that, indexing costs about what reading the cache does).
    index_cache: bool = True
    index_cache_min_frames: int = 3000
    # A seek decodes from the keyframe with the decoder skipping pictures nothing refers to
    # (non-reference B-frames) up to this many frames before the target: they are never shown. The
    # frames from there to the target are all decoded and cached, for stepping back. None: no skipping.
    skip_nonref_before: int | None = 32
    # Told the share of the file indexed so far (0..1, from the demuxer's byte position, every few
    # thousand packets) while ``open`` builds the index: a viewer shows "Indexing video… 40%". Called
    # on the opening thread; not called when the index comes from the cache.
    progress: Callable[[float], None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        sizes = (self.cache_bytes, self.cache_frames, self.threads, self.seek_cost_frames, self.sequential_cache_frames)
        sizes += (self.index_cache_min_frames, self.skip_nonref_before or 0)
        if min(sizes) < 0:
            raise ValueError("VideoReaderConfig values must not be negative")


@dataclass
class VideoReaderStats:
    """Counters for tests and benchmarks: what the reader did to serve the frames asked of it."""

    seeks: int = 0  # container seeks and reopenings (landing after the target counts each retry)
    decoded: int = 0  # frames that came out of the decoder
    reopens: int = 0  # of those, reopenings to decode from the top (no timestamps, or no seek worked)
    cache_hits: int = 0  # requests served from the frame cache without decoding
    converted: int = 0  # frames converted to RGB (only those handed out)


@dataclass(frozen=True, eq=False)
class FrameTimes:
    """When each frame shows, from presentation timestamps: timecodes, seeking by time, playback
    and clips go by these (a variable-frame-rate file has no rate to multiply frame numbers by).

    ``ticks[i]`` is frame i's pts minus frame 0's; ``end`` is the last frame's pts plus its
    duration (the container's, else the interval before it). Streams without timestamps count
    frames at the nominal rate.
    """

    ticks: np.ndarray  # int64, ascending, ticks[0] == 0
    end: int  # the end of the last frame, in ticks
    time_base: Fraction  # seconds per tick

    def __len__(self) -> int:
        return len(self.ticks)

    @property
    def duration_s(self) -> float:
        """From the first frame's start to the last frame's end."""
        return float(self.end * self.time_base)

    def time_of(self, i: int) -> float:
        """Seconds from the first frame to frame ``i``."""
        return float(int(self.ticks[i]) * self.time_base)

    def index_at(self, seconds: float) -> int:
        """The frame on screen at ``seconds`` from the first frame (clamped to the video)."""
        last = len(self.ticks) - 1
        if not self.end or math.isnan(seconds):
            return 0  # no time is known: every moment is the first frame's
        if math.isinf(seconds):
            return last if seconds > 0 else 0
        # Floor, but forgive the float's last bits: index_at(time_of(i)) must be i.
        ticks = math.floor(Fraction(seconds) / self.time_base + Fraction(1, 10**6))
        return min(max(int(np.searchsorted(self.ticks, ticks, side="right")) - 1, 0), last)

    def seconds(self) -> np.ndarray:
        """Every frame's time (float64 seconds from the first frame)."""
        return self.ticks * float(self.time_base)


_DISPLAYMATRIX = SideDataType.DISPLAYMATRIX


@dataclass(frozen=True)
class Orientation:
    """How stored pixels become the displayed picture: transpose, then mirror left-right, top-bottom.

    The eight quarter turns and flips of a display matrix; other angles (never seen from cameras)
    go to the nearest quarter turn. Decided as ffmpeg's autorotate decides, so frames look as they
    do in players.
    """

    transpose: bool = False
    hflip: bool = False
    vflip: bool = False

    @classmethod
    def of(cls, frame: av.VideoFrame) -> Orientation:
        """The orientation the frame's display matrix side data asks for (none: as stored)."""
        data = frame.side_data.get(_DISPLAYMATRIX)
        if data is None or data.buffer_size < 36:
            return cls()
        m = np.frombuffer(data, np.int32, count=9).astype(np.int64)
        a, b, c, d = int(m[0]), int(m[1]), int(m[3]), int(m[4])  # x' = a x + c y, y' = b x + d y
        if abs(b) + abs(c) > abs(a) + abs(d):
            return cls(True, c < 0, b < 0)
        return cls(False, a < 0, d < 0)

    @property
    def upright(self) -> bool:
        return not (self.transpose or self.hflip or self.vflip)

    def size(self, width: int, height: int) -> tuple[int, int]:
        """The displayed (width, height) of a stored picture of this size."""
        return (height, width) if self.transpose else (width, height)

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """The displayed picture (a new array unless already upright)."""
        if self.transpose:
            rgb = cv2.transpose(rgb)
        if self.hflip or self.vflip:
            rgb = cv2.flip(rgb, -1 if self.hflip and self.vflip else 1 if self.hflip else 0)
        return rgb


@dataclass(frozen=True)
class _Index:
    """The packet index. A packet's key is its pts (else dts) in the stream's time base."""

    pts: np.ndarray  # key of frame i, ascending: frame numbers are presentation order
    durations: np.ndarray  # frame i's packet duration (0: not given)
    keyframes: list[int]  # frame numbers of the visible keyframes
    dec_key: np.ndarray  # per packet in decode order: key, dts (key if none), size
    dec_dts: np.ndarray
    dec_size: np.ndarray
    seek_keys: np.ndarray  # keys of the keyframe packets (shown or not), ascending
    seek_dpos: np.ndarray  # and their decode-order positions
    sorted_keys: np.ndarray  # every packet's key, ascending, and its decode-order position:
    sorted_dpos: np.ndarray  # which packet a demuxer hands us after a seek
    first_dpos: int  # decode position of the first keyframe: packets before it cannot be decoded
    tolerance: int  # how far (ticks) a byte-seeking demuxer's timestamps may be off after a seek
    ordinal: bool  # no usable timestamps (e.g. raw H.264): frames are numbered by counting
    cut_short: bool = False  # the last packet was read short (a truncated file): check what decodes


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _lookup(sorted_keys: np.ndarray, key: int | None) -> int | None:
    """Position of ``key`` in ``sorted_keys``, or None when absent."""
    if key is None:
        return None
    i = int(np.searchsorted(sorted_keys, key))
    return i if i < len(sorted_keys) and sorted_keys[i] == key else None


PROGRESS_PACKETS = 4096  # packets between two progress reports while indexing (~1 ms of demuxing at 1080p)


def _build_index(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    progress: Callable[[float], None] | None = None,
    file_size: int = 0,
) -> _Index:
    """Demux every packet once (no decoding) and derive frame numbers and seek points; ``progress``
    is told the share of ``file_size`` read every :data:`PROGRESS_PACKETS` packets."""
    keys: list[int | None] = []
    dts: list[int | None] = []
    sizes: list[int] = []
    durations: list[int] = []
    key_flags: list[bool] = []
    visible: list[bool] = []
    corrupt = False
    for packet in container.demux(stream):
        if packet.size == 0:  # PyAV's end-of-stream flush packets
            continue
        keys.append(packet.pts if packet.pts is not None else packet.dts)
        dts.append(packet.dts)
        sizes.append(packet.size)
        durations.append(packet.duration or 0)
        key_flags.append(packet.is_keyframe)
        visible.append(not packet.is_discard)  # edit lists mark packets decoded but never shown
        corrupt = packet.is_corrupt  # demuxers flag a packet read short of its size so
        if progress is not None and file_size > 0 and len(keys) % PROGRESS_PACKETS == 0 and (packet.pos or 0) > 0:
            progress(min(1.0, packet.pos / file_size))
    n = len(keys)
    if n and not any(key_flags):
        key_flags[0] = True  # some streams flag no keyframe at all: decoding starts at the first packet
    first = next((d for d in range(n) if key_flags[d]), 0)
    # Packets before the first keyframe (a stream cut mid-GOP) cannot be decoded: not frames of ours.
    shown = [d for d in range(first, n) if visible[d]]
    shown_keys = [keys[d] for d in shown]
    dec_size = np.array(sizes, dtype=np.int64)
    if None in shown_keys or len(set(shown_keys)) < len(shown_keys):
        # No timestamps (raw elementary streams) or ambiguous ones (timestamps a demuxer had to
        # guess, as in some MPEG-PS files): decode order is the only order to trust.
        counted = np.arange(len(shown), dtype=np.int64)
        keyframes = [j for j, d in enumerate(shown) if key_flags[d]]
        empty = np.zeros(0, np.int64)
        return _Index(
            pts=counted,
            durations=np.zeros(len(shown), np.int64),
            keyframes=keyframes,
            dec_key=empty,
            dec_dts=empty,
            dec_size=dec_size,
            seek_keys=empty,
            seek_dpos=empty,
            sorted_keys=empty,
            sorted_dpos=empty,
            first_dpos=first,
            tolerance=0,
            ordinal=True,
        )
    dec_key = np.array([k if k is not None else 0 for k in keys], dtype=np.int64)
    dec_dts = np.array([t if t is not None else k for t, k in zip(dts, dec_key.tolist(), strict=True)], np.int64)
    # Leading pictures that show before the first keyframe need the GOP before it: not ours either.
    frames = sorted((keys[d], durations[d]) for d in shown if keys[d] >= keys[first])
    pts = np.array([k for k, _ in frames], dtype=np.int64)
    kf = sorted((d for d in range(first, n) if key_flags[d]), key=lambda d: keys[d])
    seek_keys = dec_key[kf] if kf else np.zeros(0, np.int64)
    keyframes = sorted({i for d in kf if visible[d] and (i := _lookup(pts, keys[d])) is not None})
    frame_ticks = int(pts[-1] - pts[0]) // (len(pts) - 1) if len(pts) > 1 else 1
    order = np.argsort(dec_key, kind="stable")
    return _Index(
        pts,
        np.array([t for _, t in frames], dtype=np.int64),
        keyframes,
        dec_key,
        dec_dts,
        dec_size,
        seek_keys,
        np.array(kf, dtype=np.int64),
        dec_key[order],
        order,
        first,
        tolerance=8 * max(frame_ticks, 1),
        ordinal=False,
        cut_short=corrupt,
    )


INDEX_CACHE_VERSION = 1
_INDEX_ARRAYS = ("pts", "durations", "dec_key", "dec_dts", "dec_size", "seek_keys", "seek_dpos")


def cache_dir() -> Path:
    """Where packet indexes and thumbnail strips are kept: ``data_home()/index`` (never beside a video)."""
    return data_home() / "index"


def video_fingerprint(path: Path) -> str | None:
    """The case store's fingerprint of a video (first and last MiB, size), None if it cannot be read."""
    from engine.store import StoreError
    from engine.store import video_fingerprint as fingerprint

    try:
        return fingerprint(path)
    except StoreError:
        return None


@dataclass(frozen=True)
class CacheKey:
    """What identifies the file a cache entry was made from: content fingerprint, size, mtime."""

    fingerprint: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> CacheKey | None:
        """The key of ``path`` as it is now; None if it cannot be read."""
        try:
            st = os.stat(path)
        except OSError:
            return None
        fingerprint = video_fingerprint(Path(path))
        return None if fingerprint is None else cls(fingerprint, st.st_size, st.st_mtime_ns)

    def path(self, kind: str) -> Path:
        """The cache file of this kind (``index``, ``thumbs``) for the video."""
        return cache_dir() / f"{self.fingerprint}.{kind}.npz"

    def meta(self) -> dict[str, np.ndarray]:
        return {
            "fingerprint": np.array(self.fingerprint),
            "file_size": np.array(self.size, np.int64),
            "mtime_ns": np.array(self.mtime_ns, np.int64),
        }

    def matches(self, data) -> bool:
        return (
            str(data["fingerprint"][()]) == self.fingerprint
            and int(data["file_size"][()]) == self.size
            and int(data["mtime_ns"][()]) == self.mtime_ns
        )


def save_npz_atomically(path: Path, arrays: dict[str, np.ndarray]) -> bool:
    """Write ``arrays`` as an uncompressed .npz: a temporary file in the folder, then ``os.replace``
    (readers never see half a file; two writers leave one whole file). False if it cannot be written."""
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
        return True
    except OSError:
        if tmp is not None:
            with suppress(OSError):
                tmp.unlink()
        return False


def _index_to_arrays(index: _Index, orientation: Orientation, time_base: Fraction) -> dict[str, np.ndarray]:
    arrays = {name: np.asarray(getattr(index, name), np.int64) for name in _INDEX_ARRAYS}
    arrays["keyframes"] = np.asarray(index.keyframes, np.int64)
    arrays["version"] = np.array(INDEX_CACHE_VERSION, np.int64)
    arrays["frame_count"] = np.array(len(index.pts), np.int64)
    arrays["time_base"] = np.array([time_base.numerator, time_base.denominator], np.int64)
    scalars = (index.first_dpos, index.tolerance, index.ordinal, index.cut_short)
    arrays["scalars"] = np.array(scalars, np.int64)
    arrays["orientation"] = np.array([orientation.transpose, orientation.hflip, orientation.vflip], np.int64)
    return arrays


def _index_from_arrays(data, time_base: Fraction) -> tuple[_Index, Orientation] | None:
    """The index a cache file holds, or None unless every part of it is consistent with the rest."""
    if data["version"].shape != () or int(data["version"]) != INDEX_CACHE_VERSION:
        return None
    if data["time_base"].tolist() != [time_base.numerator, time_base.denominator]:
        return None
    a = {name: data[name] for name in (*_INDEX_ARRAYS, "keyframes")}
    if any(x.dtype != np.int64 or x.ndim != 1 for x in a.values()):
        return None
    first_dpos, tolerance, ordinal, cut_short = (int(v) for v in data["scalars"].tolist())
    transpose, hflip, vflip = (bool(v) for v in data["orientation"].tolist())
    pts, keyframes, packets = a["pts"], a["keyframes"], len(a["dec_size"])
    n = int(data["frame_count"])
    consistent = (
        0 < n == len(pts) == len(a["durations"]) <= packets
        and bool(np.all(np.diff(pts) > 0))
        and (not len(keyframes) or (bool(np.all(np.diff(keyframes) > 0)) and keyframes[0] >= 0 and keyframes[-1] < n))
        and 0 <= first_dpos < packets
        and bool(np.all(a["dec_size"] > 0))
    )
    if not consistent:
        return None
    if ordinal:
        consistent = not (len(a["dec_key"]) or len(a["seek_keys"])) and np.array_equal(pts, np.arange(n))
    else:
        seek_dpos = a["seek_dpos"]
        consistent = (
            len(a["dec_key"]) == len(a["dec_dts"]) == packets
            and 0 < len(a["seek_keys"]) == len(seek_dpos)
            and bool(np.all((seek_dpos >= 0) & (seek_dpos < packets)))
            and np.array_equal(a["dec_key"][seek_dpos], a["seek_keys"])
            and bool(np.all(np.diff(a["seek_keys"]) >= 0))
        )
    order = np.argsort(a["dec_key"], kind="stable")
    sorted_keys = a["dec_key"][order]
    if not ordinal:  # every frame is a packet's
        at = np.minimum(np.searchsorted(sorted_keys, pts), packets - 1)
        consistent = consistent and bool(np.all(sorted_keys[at] == pts))
    if not consistent:
        return None
    index = _Index(
        pts=pts,
        durations=a["durations"],
        keyframes=[int(k) for k in keyframes],
        dec_key=a["dec_key"],
        dec_dts=a["dec_dts"],
        dec_size=a["dec_size"],
        seek_keys=a["seek_keys"],
        seek_dpos=a["seek_dpos"],
        sorted_keys=sorted_keys,
        sorted_dpos=order.astype(np.int64),
        first_dpos=first_dpos,
        tolerance=tolerance,
        ordinal=bool(ordinal),
        cut_short=bool(cut_short),
    )
    return index, Orientation(transpose, hflip, vflip)


def _plane(plane: av.video.plane.VideoPlane, width: int, height: int) -> np.ndarray:
    """A view of one plane without its row padding (strides wider than the image)."""
    return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:height, :width]


def frame_to_rgb(frame: av.VideoFrame, reformatter: VideoReformatter | None = None) -> np.ndarray:
    """An H×W×3 uint8 RGB array, newly allocated (the caller owns it), from any decoded frame.

    yuv420p goes straight to ``cv2.cvtColor(COLOR_YUV2RGB_I420)`` (BT.601, limited range, as
    swscale's default); other formats and full-range YUV are first reformatted to limited-range
    yuv420p by swscale. Odd widths and heights are padded by repeating the last column/row,
    converted, and cropped. Pass a ``reformatter`` to reuse its swscale context across frames.
    """
    name = frame.format.name
    if name == "rgb24":
        return np.array(frame.to_ndarray())  # to_ndarray may be a view on the frame's buffer
    full_range = name.startswith("yuvj") or frame.color_range == ColorRange.JPEG
    if name != "yuv420p" or full_range:  # OpenCV's I420 conversion expects limited range
        frame = (reformatter or VideoReformatter()).reformat(
            frame,
            format="yuv420p",
            src_color_range=ColorRange.JPEG if full_range else None,
            dst_color_range=ColorRange.MPEG,
        )
    w, h = frame.width, frame.height
    ew, eh = w + (w & 1), h + (h & 1)
    cw, ch = ew // 2, eh // 2
    buf = np.empty((eh * 3 // 2, ew), np.uint8)
    y = _plane(frame.planes[0], w, h)
    buf[:h, :w] = y
    if w & 1:
        buf[:h, w] = y[:, w - 1]
    if h & 1:
        buf[h] = buf[h - 1]
    flat = buf.reshape(-1)
    u0, v0 = ew * eh, ew * eh + cw * ch
    flat[u0:v0].reshape(ch, cw)[:] = _plane(frame.planes[1], cw, ch)
    flat[v0:].reshape(ch, cw)[:] = _plane(frame.planes[2], cw, ch)
    rgb = cv2.cvtColor(buf, cv2.COLOR_YUV2RGB_I420)
    return rgb if (ew, eh) == (w, h) else np.ascontiguousarray(rgb[:h, :w])


def _frame_bytes(frame: av.VideoFrame) -> int:
    return sum(p.buffer_size for p in frame.planes)


def _skip(packets: Iterator[av.Packet], n: int) -> Iterator[av.Packet]:
    """``packets`` without the first ``n`` non-empty ones."""
    for packet in packets:
        if n and packet.size:
            n -= 1
            continue
        yield packet


class VideoReader:
    """Frame-accurate reader of one video file's first video stream.

    ``frame(i)`` and ``frames()`` return new RGB arrays (H×W×3 uint8, upright: the stream's
    ``orientation`` applied) that the caller owns and may keep or modify; the cache holds decoded
    YUV frames, never the arrays handed out. ``times`` says when each frame shows.

    Not thread-safe by design: the decoder has one position. Use one reader per thread (a UI
    reader and a worker's reader on the same file are independent).
    """

    def __init__(self, path: str | os.PathLike, config: VideoReaderConfig | None = None):
        self.path = Path(path)
        self.config = config or VideoReaderConfig()
        self.stats = VideoReaderStats()
        self._container: av.container.InputContainer | None = None
        self._cache: OrderedDict[int, tuple[av.VideoFrame, int]] = OrderedDict()
        self._cache_size = 0
        self._frame_shape: tuple[int, int, str] | None = None  # of the last frame cached, and its bytes
        self._frame_size = 0
        self._live: Iterator[tuple[int, av.VideoFrame]] | None = None  # the running decoder
        self._live_last = -1  # last frame number it produced (or the one before its first)
        self._live_from_start = False  # it reads the file from the top (no seek to distrust)
        self._undecodable: set[int] = set()  # frames a damaged stream did not produce
        self._reformatter = VideoReformatter()  # swscale context for pixel formats other than yuv420p
        self.orientation = Orientation()  # until the first frame says otherwise
        self._file_key: CacheKey | None = None  # fingerprint, size, mtime: the index cache's key
        self._one_thread = False  # decode without threads (a truncated file: see _drop_what_does_not_decode)
        if not self.path.is_file():
            raise VideoError(f"{self.path}: no such video file")
        self.index_from_cache = False  # the index came from the cache file (nothing was demuxed)
        try:
            with self._reading():
                self._signature = self._stat()
                self._open()
                assert self._container is not None
                stream = self._container.streams.video[0]
                self.time_base = Fraction(stream.time_base or Fraction(1, 90000))
                cached = self._load_index() if self.config.index_cache else None
                if cached is not None:
                    self._index, self.orientation = cached
                    self.index_from_cache = True
                else:
                    self._index = _build_index(self._container, stream, self.config.progress, self._signature[2])
        except BaseException:
            self.close()
            raise
        if not len(self._index.pts):
            self.close()
            raise VideoError(f"{self.path}: the video stream holds no frames")
        ctx = stream.codec_context
        self.codec: str = ctx.name
        self.fps: Fraction = Fraction(stream.average_rate or stream.guessed_rate or self._rate_from_index())
        try:
            if self._index.cut_short:
                self._one_thread = True
                self._configure_decoder()
                if not self.index_from_cache:  # a cached index holds the frames that decode
                    self._drop_what_does_not_decode()
            if not self.index_from_cache:
                self._read_orientation()
                self._save_index()
        except BaseException:
            self.close()
            raise
        self.width, self.height = self.orientation.size(ctx.width, ctx.height)
        self.frame_count: int = len(self._index.pts)
        self.keyframes: list[int] = self._index.keyframes
        self.times: FrameTimes = self._frame_times()
        self.stats = VideoReaderStats()  # what opening decoded is not what frames asked of it cost

    # -- public API -------------------------------------------------------------------------

    @property
    def duration_s(self) -> float:
        """Time from the first frame's start to the last frame's end (its pts plus its duration)."""
        return self.times.duration_s

    def __len__(self) -> int:
        return self.frame_count

    def time_of(self, i: int) -> float:
        """Seconds from the first frame to frame ``i`` (by timestamps; streams need not start at 0)."""
        return self.times.time_of(self._checked(i))

    def index_at(self, seconds: float) -> int:
        """The frame on screen at ``seconds`` from the first frame (clamped to 0..N-1)."""
        return self.times.index_at(seconds)

    def frame_of_pts(self, pts: int | None) -> int | None:
        """The number of the frame with this presentation timestamp (stream time base), None if none
        has it or the stream has no timestamps."""
        return None if self._index.ordinal else _lookup(self._index.pts, pts)

    def keyframe_at_or_before(self, i: int) -> int:
        """The last visible keyframe at or before frame ``i`` (0 if none)."""
        k = bisect.bisect_right(self.keyframes, self._checked(i)) - 1
        return self.keyframes[k] if k >= 0 else 0

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as a new H×W×3 uint8 RGB array, exact (verified by timestamp)."""
        i = self._checked(i)
        with self._reading():
            return self._convert(self._get(i))

    def warm(self, i: int) -> bool:
        """Decode frame ``i`` into the cache without converting it (background refill around a
        playhead); True when it had to be decoded, False when it was cached already."""
        i = self._checked(i)
        if i in self._cache:
            return False
        with self._reading():
            self._get(i)
        return True

    def cached(self, i: int) -> bool:
        """Frame ``i`` is in the decoded-frame cache: ``frame(i)`` would only convert it."""
        return i in self._cache

    def frames(self, start: int = 0, stop: int | None = None, step: int = 1) -> Iterator[tuple[int, np.ndarray]]:
        """(i, RGB) for ``range(N)[start:stop:step]``, decoding forward without a seek per frame.

        Frames in between are decoded but not converted. A seek happens only where skipping ahead
        beats decoding on (a step longer than a keyframe interval), or going back: a negative step
        decodes each GOP once and serves it backwards from the cache.
        """
        self._assert_open()
        check_file = True  # once here, then at every seek (a stat per frame would cost ~1%)
        keep = self.config.sequential_cache_frames if step > 0 else None  # backwards, the cache is the GOP
        for i in range(self.frame_count)[start:stop:step]:
            with self._reading():
                rgb = self._convert(self._get(i, check_file, keep))
            check_file = False
            yield i, rgb

    def close(self) -> None:
        self._live = None
        self._cache.clear()
        self._cache_size = 0
        if self._container is not None:
            container, self._container = self._container, None
            container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VideoReader({str(self.path)!r}, {self.width}x{self.height}, {self.frame_count} frames @ {self.fps})"

    # -- internals --------------------------------------------------------------------------

    def _checked(self, i: int) -> int:
        i = operator.index(i)
        if not 0 <= i < self.frame_count:
            raise IndexError(f"frame {i} is out of range: {self.path.name} has frames 0..{self.frame_count - 1}")
        return i

    def _assert_open(self) -> None:
        if self._container is None:
            raise ValueError(f"the VideoReader of {self.path} is closed")

    @contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except (av.error.FFmpegError, OSError) as exc:
            self._live = None  # the decoder's state is unknown after a failure
            if isinstance(exc, FileNotFoundError) and not self.path.exists():
                raise VideoError(f"{self.path}: the file has vanished") from exc
            raise VideoError(f"{self.path}: cannot read this video ({_reason(exc)})") from exc

    def _key(self) -> CacheKey | None:
        """The opened file's fingerprint, size and mtime (computed once), None if it cannot be read."""
        if self._file_key is None:
            fingerprint = video_fingerprint(self.path)
            if fingerprint is None:
                return None
            self._file_key = CacheKey(fingerprint, self._signature[2], self._signature[3])
        return self._file_key

    def index_cache_path(self) -> Path | None:
        """The file this video's packet index is (or would be) kept in."""
        key = self._key()
        return None if key is None else key.path("index")

    def _load_index(self) -> tuple[_Index, Orientation] | None:
        """The cached index of this very file (fingerprint, size and mtime match), checked for
        consistency; None when there is none, or it is damaged, foreign, stale or of another version."""
        path = self.index_cache_path()
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                if not self._key().matches(data):  # type: ignore[union-attr]
                    return None
                return _index_from_arrays(data, self.time_base)
        except Exception:  # a damaged file fails in any of zipfile, numpy or the checks: rebuilt
            return None

    def _save_index(self) -> None:
        """Keep the index of a long file for the next open (best effort: a read-only home is fine)."""
        if not self.config.index_cache or len(self._index.pts) < self.config.index_cache_min_frames:
            return
        path = self.index_cache_path()
        key = self._key()
        if path is None or key is None:
            return
        arrays = _index_to_arrays(self._index, self.orientation, self.time_base)
        save_npz_atomically(path, {**arrays, **key.meta()})

    def _stat(self) -> tuple[int, int, int, int]:
        st = os.stat(self.path)
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns

    def _check_file(self) -> None:
        """An open file keeps reading after it is deleted (POSIX): notice it, and replacements."""
        if not self.config.check_file:
            return
        try:
            signature = self._stat()
        except FileNotFoundError:
            raise VideoError(f"{self.path}: the file has vanished since it was opened") from None
        if signature != self._signature:
            raise VideoError(f"{self.path}: the file has changed on disk since it was opened")

    def _open(self) -> None:
        self._container = av.open(str(self.path))
        if not self._container.streams.video:
            self.close()
            raise VideoError(f"{self.path}: the file holds no video stream")
        self._configure_decoder()

    def _configure_decoder(self) -> None:
        """Frame threads, unless the file is truncated: a frame-threaded decoder that meets the
        packet cut short at the end reports the error while flushing, and PyAV then drops the
        frames still queued behind it (frames ``ffprobe`` counts); one thread loses none."""
        assert self._container is not None
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = 1 if self._one_thread else self.config.threads

    def _frame_times(self) -> FrameTimes:
        index = self._index
        n = len(index.pts)
        if index.ordinal:
            if not self.fps:
                return FrameTimes(np.zeros(n, np.int64), 0, Fraction(1))
            return FrameTimes(np.arange(n, dtype=np.int64), n, 1 / self.fps)
        ticks = index.pts - index.pts[0]
        last = int(index.durations[-1])
        if last <= 0:  # not given: as long as the interval before it, else one frame at the nominal rate
            last = int(ticks[-1] - ticks[-2]) if n > 1 else round(1 / (self.fps * self.time_base)) if self.fps else 0
        return FrameTimes(ticks, int(ticks[-1]) + last, self.time_base)

    def _read_orientation(self) -> None:
        """The display matrix of the first frame (container side data or an H.264 SEI), for every frame.

        Decoding frame 0 on open is no waste: it is the frame a viewer shows first, and it stays
        cached. A file whose first frame does not decode is shown as stored.
        """
        try:
            with self._reading():
                self.orientation = Orientation.of(self._get(0))
        except VideoError:
            self._undecodable.clear()  # asked again later, it is tried again
            self.orientation = Orientation()

    def _drop_what_does_not_decode(self) -> None:
        """A truncated file ends in a packet cut short: decode the last two GOPs and drop from the
        index the frames that do not come out, so the count is a decoder's (``ffprobe -count_frames``)."""
        index = self._index
        if index.ordinal or not len(index.seek_keys):
            return
        last_gop = int(np.argmax(index.seek_dpos))  # the last keyframe in decode order
        start = int(np.searchsorted(index.pts, index.seek_keys[max(last_gop - 1, 0)]))
        if start >= len(index.pts):
            return
        produced: set[int] = set()
        try:
            with self._reading():
                self._start_before(start)
                assert self._live is not None
                produced.update(j for j, _ in self._live)
        except VideoError:
            return  # the decoder failed outright: keep the index as it is
        finally:
            self._live = None
            self._cache.clear()
            self._cache_size = 0
            self._undecodable.clear()
        keep = np.ones(len(index.pts), bool)
        keep[start:] = False
        keep[sorted(j for j in produced if j >= start)] = True
        if not keep.any():
            raise VideoError(f"{self.path}: no frame of the video stream decodes (the file is cut short)")
        if keep.all():
            return
        renumber = np.cumsum(keep) - 1
        keyframes = [int(renumber[k]) for k in index.keyframes if keep[k]]
        self._index = replace(index, pts=index.pts[keep], durations=index.durations[keep], keyframes=keyframes)

    def _rate_from_index(self) -> Fraction:
        pts = self._index.pts
        if self._index.ordinal or len(pts) < 2 or pts[-1] == pts[0]:
            return Fraction(0)
        return Fraction(len(pts) - 1) / (Fraction(int(pts[-1] - pts[0])) * self.time_base)

    def _convert(self, frame: av.VideoFrame) -> np.ndarray:
        self.stats.converted += 1
        return self.orientation.apply(frame_to_rgb(frame, self._reformatter))

    # The cache: decoded frames (refcounted FFmpeg buffers, no copy), most recent last.

    def _cache_get(self, i: int) -> av.VideoFrame | None:
        entry = self._cache.get(i)
        if entry is None:
            return None
        self._cache.move_to_end(i)
        return entry[0]

    def _cache_put(self, i: int, frame: av.VideoFrame, keep: int | None = None) -> None:
        if i in self._cache:
            self._cache.move_to_end(i)
            return
        shape = (frame.width, frame.height, frame.format.name)
        if shape != self._frame_shape:
            self._frame_shape, self._frame_size = shape, _frame_bytes(frame)
        size = self._frame_size
        self._cache[i] = (frame, size)
        self._cache_size += size
        cfg = self.config
        limit = cfg.cache_frames if keep is None else min(keep, cfg.cache_frames)
        while self._cache and (len(self._cache) > limit or self._cache_size > cfg.cache_bytes):
            _, (_, old) = self._cache.popitem(last=False)
            self._cache_size -= old

    # Getting a frame: cache, else decode on from the running decoder, else seek.

    def _get(self, i: int, check_file: bool = True, keep: int | None = None) -> av.VideoFrame:
        self._assert_open()
        cached = self._cache_get(i)
        if cached is not None:
            self.stats.cache_hits += 1
            return cached
        if i in self._undecodable:
            raise VideoError(f"{self.path}: frame {i} cannot be decoded (the stream is damaged)")
        seek = self._live is None or self._live_last >= i or not self._decode_on_is_cheaper(i)
        if check_file or seek:
            self._check_file()
        if seek:
            self._start_before(i)
        frame = self._advance(i, keep)
        if frame is None and not self._live_from_start:
            self._restart()  # the stream after the seek did not match the index: read it from the top
            frame = self._advance(i, keep)
        if frame is None:
            self._undecodable.add(i)
            raise VideoError(f"{self.path}: frame {i} cannot be decoded (the stream is damaged or ends early)")
        return frame

    def _advance(self, i: int, keep: int | None) -> av.VideoFrame | None:
        """Run the decoder on to frame ``i``, caching every frame on the way; None if it never comes."""
        assert self._live is not None
        for j, frame in self._live:
            self._live_last = j
            self._cache_put(j, frame, keep)
            if j == i:
                return frame
            if j > i:
                break
        self._live = None
        return None

    def _decode_on_is_cheaper(self, i: int) -> bool:
        if i == self._live_last + 1 or self._index.ordinal:
            return True  # the next frame; or no timestamps, where the alternative is the top of the file
        seek_decodes = i - self._first_decodable(i) + 1 + self.config.seek_cost_frames
        return i - self._live_last <= seek_decodes

    def _seek_point(self, i: int) -> int:
        """Position in the seek tables of the last keyframe that shows at or before frame ``i``."""
        k = int(np.searchsorted(self._index.seek_keys, self._index.pts[i], side="right")) - 1
        return max(k, 0)

    def _first_decodable(self, i: int) -> int:
        """The first frame a seek for frame ``i`` produces."""
        return int(np.searchsorted(self._index.pts, self._index.seek_keys[self._seek_point(i)]))

    def _start_before(self, i: int) -> None:
        """Position the decoder so that it will produce frame ``i``: seek, check the landing, retry earlier."""
        self._live = None
        index = self._index
        if index.ordinal or not len(index.seek_keys):
            self._restart()
            return
        assert self._container is not None
        stream = self._container.streams.video[0]
        for k in range(self._seek_point(i), -1, -1):
            d = int(index.seek_dpos[k])
            self.stats.seeks += 1
            try:
                self._container.seek(min(int(index.dec_key[d]), int(index.dec_dts[d])), stream=stream, backward=True)
            except av.error.FFmpegError:
                break  # not seekable (some raw formats): decode from the start
            packets = self._container.demux(stream)
            first = self._landing(packets, d)
            if first is None:
                continue  # MPEG-TS/PS byte seeks can land past the keyframe: try the one before
            margin = self.config.skip_nonref_before
            skip_below = None if margin is None else int(index.pts[max(i - margin, 0)])
            self._live = self._decode(itertools.chain([first], packets), d, int(index.dec_key[d]), skip_below)
            self._live_last = int(np.searchsorted(index.pts, index.dec_key[d])) - 1
            self._live_from_start = False
            return
        self._restart()

    def _landing(self, packets: Iterator[av.Packet], d: int) -> av.Packet | None:
        """The keyframe packet at decode position ``d``, skipping what comes before it; None if past it.

        A packet whose timestamp and size are those of a packet in the index is that packet.
        Demuxers that find frames by parsing a byte stream (MPEG-PS) can hand out a fragment first
        and attach a neighbour's timestamp to the packets after a seek: a packet the index does not
        know is taken for the keyframe if its flag and size match and its timestamp is near.
        """
        index = self._index
        dts, size = int(index.dec_dts[d]), int(index.dec_size[d])
        for packet in packets:
            if packet.size == 0:
                return None  # end of stream
            key = packet.pts if packet.pts is not None else packet.dts
            at = _lookup(index.sorted_keys, key)
            known = at is not None and index.dec_size[index.sorted_dpos[at]] == packet.size
            if known:
                where = int(index.sorted_dpos[at])
                if where == d:
                    return packet
                if where > d:
                    return None
                continue
            t = packet.dts if packet.dts is not None else packet.pts
            if packet.is_keyframe and packet.size == size and t is not None and abs(t - dts) <= index.tolerance:
                return packet
            if t is not None and t > dts + index.tolerance:
                return None
        return None

    def _decode(
        self, packets: Iterable[av.Packet], d: int, floor_key: int, skip_below: int | None = None
    ) -> Iterator[tuple[int, av.VideoFrame]]:
        """(frame number, frame) in presentation order, from packets starting at decode position ``d``.

        Each packet gets the index's timestamps, so frames are named by the index, not by what a
        demuxer guessed after a seek; a packet whose size differs from the index's ends the run.
        Frames that show before ``floor_key`` (leading pictures of an open GOP) are dropped.

        Packets that show before ``skip_below`` are sent with ``skip_frame = NONREF``: the decoder
        drops the pictures no other picture refers to (their frames never come out; every frame
        that does is decoded exactly as without skipping, since nothing it needs was skipped), and
        decodes everything from there on. The decision is the packet's own (its timestamp), so it
        does not depend on the decoder's delay. Not for streams without timestamps, where frames
        are named by counting them.
        """
        index = self._index
        assert self._container is not None
        codec = self._container.streams.video[0].codec_context
        last: int | None = None
        n = len(index.pts)
        skipping = None if index.ordinal else skip_below
        mode = "DEFAULT"
        if codec.skip_frame != mode:
            codec.skip_frame = mode  # a run abandoned while skipping left it set
        for packet in packets:
            if packet.size:
                if d >= len(index.dec_size) or packet.size != index.dec_size[d]:
                    return  # out of step with the index
                if not index.ordinal:
                    packet.pts, packet.dts = int(index.dec_key[d]), int(index.dec_dts[d])
                d += 1
                if skipping is not None:
                    want = "NONREF" if packet.pts < skipping else "DEFAULT"
                    if want != mode:
                        codec.skip_frame = mode = want
            try:
                decoded = codec.decode(packet)
            except av.error.InvalidDataError:
                continue  # a damaged packet gives no picture; as in FFmpeg's tools, the next one may
            for frame in decoded:
                self.stats.decoded += 1
                if index.ordinal:
                    j = 0 if last is None else last + 1
                elif frame.pts is None:
                    j = None if last is None else last + 1
                elif frame.pts < floor_key:
                    continue  # a leading picture of an open GOP: it needs the GOP before
                elif last is not None and last + 1 < n and index.pts[last + 1] == frame.pts:
                    j = last + 1  # the usual case, without a search
                else:
                    j = _lookup(index.pts, frame.pts)
                if j is None:
                    continue
                last = j
                yield j, frame

    def _restart(self) -> None:
        """Reopen the file and decode from its first keyframe (no seek is possible, or none worked)."""
        self._live = None
        self.stats.seeks += 1
        self.stats.reopens += 1
        if self._container is not None:
            self._container.close()
            self._container = None
        self._open()
        assert self._container is not None
        index = self._index
        packets = _skip(self._container.demux(self._container.streams.video[0]), index.first_dpos)
        floor = 0 if index.ordinal else int(index.dec_key[index.first_dpos])
        self._live = self._decode(packets, index.first_dpos, floor)
        self._live_last = -1
        self._live_from_start = True


def video_size(path: Path) -> tuple[int, int]:
    """Displayed (width, height) of a video's first video stream, as :class:`VideoReader` gives
    frames: the headers' size, turned by the first frame's display matrix (one frame is decoded)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"{Path(path).name} has no video stream")
            stream = container.streams.video[0]
            width, height = int(stream.codec_context.width), int(stream.codec_context.height)
            orientation = Orientation()
            try:
                for frame in container.decode(stream):
                    orientation = Orientation.of(frame)
                    break
            except av.FFmpegError:
                pass  # no frame decodes: as stored, as VideoReader shows such a file
            return orientation.size(width, height)
    except (av.FFmpegError, OSError) as exc:
        raise VideoError(f"cannot read {Path(path).name}: {exc}") from None
