"""Frame-accurate video access: counts, exact random access in several containers, the frame
cache, sequential iteration, YUV→RGB, and one error type for every broken file.

The test videos are made here with PyAV: every frame draws its own number as 8 black/white
stripes (bit b is stripe b), which survives compression, so a decoded frame says which it is.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from engine.video import INDEX_CACHE_VERSION, VideoError, VideoReader, VideoReaderConfig, cache_dir, frame_to_rgb
from engine.video_probe import VideoError as ProbeVideoError
from engine.video_probe import probe_video

W, H, BITS, STRIPE = 192, 64, 8, 24
N, GOP = 100, 12
SEEKING = VideoReaderConfig(cache_frames=2)  # a cache too small to hide the seeks
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is installed by ./dev.sh")


def pattern(i: int, width: int = W, height: int = H) -> np.ndarray:
    img = np.zeros((height, width, 3), np.uint8)
    for b in range(BITS):
        if i >> b & 1:
            img[:, b * STRIPE : (b + 1) * STRIPE] = 255
    return img


def ident(rgb: np.ndarray) -> int:
    """The frame number drawn by :func:`pattern`."""
    return sum(1 << b for b in range(BITS) if rgb[4:-4, b * STRIPE + 4 : (b + 1) * STRIPE - 4].mean() > 128)


def encode(path: Path, codec: str, fmt: str, *, n: int = N, width: int = W, height: int = H, pix_fmt="yuv420p"):
    options = {
        "libx264": {"g": str(GOP), "keyint_min": str(GOP), "sc_threshold": "0", "bf": "3", "preset": "veryfast"},
        "mpeg4": {"g": str(GOP), "bf": "2", "qscale": "3", "sc_threshold": "1000000000"},
    }.get(codec, {})
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = options
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(pattern(i, width, height), format="rgb24").reformat(format=pix_fmt)
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def encode_mpeg_ps(path: Path) -> Path:
    """MPEG-2 in MPEG-PS by the ffmpeg CLI: a container whose seeks search bytes, not an index."""
    raw = np.stack([pattern(i) for i in range(N)]).tobytes()
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}", "-r", "25"]
    cmd += ["-i", "-", "-c:v", "mpeg2video", "-g", str(GOP), "-bf", "2", "-q:v", "3", str(path)]
    subprocess.run(cmd, input=raw, check=True)
    return path


@pytest.fixture(autouse=True)
def _own_data_home(data_home):
    """Index caches go to this test's own data folder, never the user's."""
    return data_home


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("videos")
    made = {
        "h264.mp4": encode(out / "h264.mp4", "libx264", "mp4"),  # B-frames: decode order != presentation
        "h264.ts": encode(out / "h264.ts", "libx264", "mpegts"),  # first pts is not 0; byte seeks
        "mpeg4.avi": encode(out / "mpeg4.avi", "mpeg4", "avi"),  # B-frames, packets from pts 1
        "h264.mkv": encode(out / "h264.mkv", "libx264", "matroska"),
        "h264.raw": encode(out / "h264.h264", "libx264", "h264"),  # no timestamps at all
    }
    if shutil.which("ffmpeg"):
        made["mpeg2.mpg"] = encode_mpeg_ps(out / "mpeg2.mpg")
        made["faststart.mp4"] = out / "faststart.mp4"  # the index (moov) first, then the packets
        cmd = ["ffmpeg", "-v", "error", "-i", str(made["h264.mp4"]), "-c", "copy", "-movflags", "+faststart"]
        subprocess.run([*cmd, str(made["faststart.mp4"])], check=True)
    return made


CONTAINERS = ["h264.mp4", "h264.ts", "mpeg4.avi", "h264.mkv", "h264.raw", "mpeg2.mpg"]


@pytest.fixture(params=CONTAINERS)
def video(request, videos) -> Path:
    if request.param not in videos:
        pytest.skip("ffmpeg is installed by ./dev.sh")
    return videos[request.param]


def reference(path: Path) -> list[np.ndarray]:
    """Every frame by plain PyAV decoding, in the order the decoder outputs them (presentation)."""
    with av.open(str(path)) as container:
        return [frame_to_rgb(f) for f in container.decode(video=0)]


def ffprobe_count(path: Path) -> int:
    cmd = ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0"]
    cmd += ["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return int(out.split()[0].strip(","))  # MPEG-TS lists the stream once more under its program


# -- counts, order, metadata -------------------------------------------------------------------


def test_frame_count_is_the_decoded_count(video):
    ref = reference(video)
    with VideoReader(video) as reader:
        assert reader.frame_count == len(reader) == len(ref) == N
        assert sum(1 for _ in reader.frames()) == N
    if shutil.which("ffprobe"):
        assert ffprobe_count(video) == N


def test_sequential_frames_are_the_decoders_frames_in_order(video):
    ref = reference(video)
    with VideoReader(video) as reader:
        for i, rgb in reader.frames():
            assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
            assert ident(rgb) == i
            assert np.array_equal(rgb, ref[i]), f"frame {i}"


def test_random_access_is_exact(video):
    ref = reference(video)
    with VideoReader(video, SEEKING) as reader:
        around_keyframes = [j for k in reader.keyframes for j in (k - 1, k, k + 1) if 0 <= j < N]
        backwards = list(range(N - 1, -1, -9))
        rng = random.Random(7)
        order = [N - 1, 0, *rng.sample(range(N), 25), *around_keyframes, *backwards, N - 1, N - 2, 3, 2, 1, 0]
        for i in order:
            rgb = reader.frame(i)
            assert ident(rgb) == i and np.array_equal(rgb, ref[i]), f"frame {i} of {video.name}"
        assert reader.stats.seeks > 10  # the cache did not serve these: they were real seeks
        if video.suffix != ".h264":  # a raw stream has no timestamps: it decodes from the top
            assert reader.stats.reopens == 0


def test_the_test_videos_are_hard_enough(videos):
    """B-frames (decode order is not presentation order) and streams that do not start at pts 0."""
    for name in ("h264.mp4", "h264.ts", "mpeg4.avi", "h264.mkv"):
        with av.open(str(videos[name])) as container:
            pts = [p.pts for p in container.demux(video=0) if p.size]
        assert pts != sorted(pts), name
        if name in ("h264.ts", "mpeg4.avi"):
            assert min(pts) > 0, name


def test_metadata_from_the_packets(videos):
    for name in ("h264.mp4", "h264.ts", "mpeg4.avi", "h264.mkv"):
        with VideoReader(videos[name]) as reader:
            assert (reader.width, reader.height) == (W, H)
            assert reader.fps == Fraction(25)
            assert reader.keyframes == list(range(0, N, GOP)), name
            assert reader.duration_s == pytest.approx(N / 25, abs=1e-6)
            for i in (0, 1, 37, N - 1):
                assert reader.time_of(i) == pytest.approx(i / 25, abs=1e-3), name  # relative to the first pts
                assert reader.index_at(reader.time_of(i)) == i
                assert reader.index_at(reader.time_of(i) + 0.02) == i  # mid-frame
            assert reader.index_at(-5) == 0 and reader.index_at(1e6) == N - 1
            assert reader.keyframe_at_or_before(GOP + 5) == GOP


def test_stepping_back_is_served_from_the_cache(videos):
    with VideoReader(videos["h264.mp4"]) as reader:
        i = 3 * GOP + 7  # mid-GOP: decoding it decodes the GOP's frames before it
        assert ident(reader.frame(i)) == i
        seeks, decoded = reader.stats.seeks, reader.stats.decoded
        for j in range(i - 1, 3 * GOP - 1, -1):
            assert ident(reader.frame(j)) == j
        assert (reader.stats.seeks, reader.stats.decoded) == (seeks, decoded)
        assert reader.stats.cache_hits == 7
        assert ident(reader.frame(i + 1)) == i + 1  # forward: the running decoder goes on, no seek
        assert reader.stats.seeks == seeks
        assert reader.stats.decoded <= decoded + 2


def test_cache_is_bounded(videos):
    config = VideoReaderConfig(cache_frames=5)
    with VideoReader(videos["h264.mp4"], config) as reader:
        for _ in reader.frames():
            pass
        assert len(reader._cache) == 5
    frame_bytes = W * H * 3 // 2
    with VideoReader(videos["h264.mp4"], VideoReaderConfig(cache_bytes=3 * frame_bytes)) as reader:
        reader.frame(N - 1)
        assert 1 <= len(reader._cache) <= 3


def test_frames_decode_forward_without_seeking_and_convert_only_what_they_yield(videos):
    with VideoReader(videos["h264.mp4"]) as reader:
        got = [i for i, rgb in reader.frames(step=3) if ident(rgb) == i]
        assert got == list(range(0, N, 3))
        assert reader.stats.seeks <= 1
        assert reader.stats.converted == len(got)
    with VideoReader(videos["h264.ts"], SEEKING) as reader:
        assert [i for i, rgb in reader.frames(5, 40, 4) if ident(rgb) == i] == list(range(5, 40, 4))
        assert reader.stats.seeks <= 1
        assert [i for i, rgb in reader.frames(N - 1, 80, -1) if ident(rgb) == i] == list(range(N - 1, 80, -1))


def test_returned_arrays_belong_to_the_caller(videos):
    with VideoReader(videos["h264.mp4"]) as reader:
        first = reader.frame(10)
        first[:] = 0
        again = reader.frame(10)  # from the cache
        assert ident(again) == 10 and again.any()
        assert again.flags.writeable and again.flags.c_contiguous


def test_a_seek_that_lands_after_the_keyframe_seeks_earlier(videos):
    """MPEG-TS/PS seeks can land past the target: simulate it on the first seek of each request."""
    ref = reference(videos["h264.ts"])

    class Overshooting:
        def __init__(self, container):
            self._container = container
            self.armed = True

        def seek(self, offset, **kwargs):
            if self.armed:
                self.armed = False
                offset += 2 * GOP * 3600  # two GOPs later (90 kHz, 25 fps)
            return self._container.seek(offset, **kwargs)

        def __getattr__(self, name):
            return getattr(self._container, name)

    with VideoReader(videos["h264.ts"], SEEKING) as reader:
        proxy = Overshooting(reader._container)
        reader._container = proxy
        for i in (40, 20, 77, 5):
            proxy.armed = True
            seeks = reader.stats.seeks
            rgb = reader.frame(i)
            assert ident(rgb) == i and np.array_equal(rgb, ref[i])
            assert reader.stats.seeks >= seeks + 2  # it noticed and went back
        proxy.armed = False


# -- other sources --------------------------------------------------------------------------


def test_synthetic_case(synth_case):
    out, summary = synth_case
    path = out / "cholec80" / "videos" / "video01.mp4"
    with VideoReader(path) as reader:
        n = summary["cases"][0]["frames"]
        assert reader.frame_count == n and reader.keyframes == list(range(0, n, 25))
        wanted = sorted([*random.Random(1).sample(range(n), 8), n - 1, 25, 24])
        seq = {i: rgb for i, rgb in reader.frames() if i in wanted}
    with VideoReader(path, SEEKING) as reader:
        for i in reversed(wanted):
            assert np.array_equal(reader.frame(i), seq[i]), i


@needs_ffmpeg
def test_edit_list_hides_decoded_frames(videos, tmp_path):
    """A stream copy cut mid-GOP keeps the packets from the keyframe before, marked to discard."""
    cut = tmp_path / "cut.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-ss", "1.3", "-i", str(videos["h264.mp4"]), "-c", "copy", str(cut)])
    expected = ffprobe_count(cut)
    with VideoReader(cut, SEEKING) as reader:
        assert reader.frame_count == expected < N
        first = ident(reader.frame(0))
        assert first > 0
        for i in (5, reader.frame_count - 1, 0, 17):
            assert ident(reader.frame(i)) == first + i


def test_odd_sized_full_range_video(tmp_path):
    path = encode(tmp_path / "odd.avi", "mjpeg", "avi", n=20, width=W - 1, height=H - 3, pix_fmt="yuvj420p")
    with VideoReader(path) as reader:
        assert (reader.width, reader.height) == (W - 1, H - 3)
        for i, rgb in reader.frames():
            assert rgb.shape == (H - 3, W - 1, 3) and ident(rgb) == i
        white, black = rgb[:, :STRIPE].mean(), rgb[:, 2 * STRIPE : 3 * STRIPE].mean()  # 19 = 0b10011
        assert white > 245 and black < 10  # full-range YUV is not read as limited range


def bt601(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Reference limited-range BT.601 YUV→RGB with nearest chroma upsampling."""
    h, w = y.shape
    u = np.repeat(np.repeat(u, 2, 0), 2, 1)[:h, :w].astype(float) - 128
    v = np.repeat(np.repeat(v, 2, 0), 2, 1)[:h, :w].astype(float) - 128
    c = 1.164 * (y.astype(float) - 16)
    rgb = np.stack([c + 1.596 * v, c - 0.391 * u - 0.813 * v, c + 2.018 * u], axis=-1)
    return np.clip(np.round(rgb), 0, 255)


@pytest.mark.parametrize("size", [(160, 90), (161, 90), (160, 91), (161, 91), (33, 7)])
def test_frame_to_rgb_handles_odd_sizes_and_strides(size):
    w, h = size
    rng = np.random.default_rng(w * h)
    y = rng.integers(16, 236, (h, w), dtype=np.uint8)
    u = rng.integers(16, 241, ((h + 1) // 2, (w + 1) // 2), dtype=np.uint8)
    v = rng.integers(16, 241, ((h + 1) // 2, (w + 1) // 2), dtype=np.uint8)
    frame = av.VideoFrame(w, h, "yuv420p")
    for plane, data in zip(frame.planes, (y, u, v), strict=True):
        assert (plane.width, plane.height) == data.shape[::-1]
        padded = np.full((plane.buffer_size // plane.line_size, plane.line_size), 99, np.uint8)
        padded[: plane.height, : plane.width] = data  # the padding holds junk the conversion must skip
        plane.update(padded.tobytes())
    rgb = frame_to_rgb(frame)
    assert rgb.shape == (h, w, 3) and rgb.flags.c_contiguous
    assert np.abs(rgb.astype(int) - bt601(y, u, v)).max() <= 3
    if w % 2 == 0 and h % 2 == 0:  # swscale's unscaled path (it interpolates chroma for odd sizes)
        assert np.abs(rgb.astype(int) - frame.to_ndarray(format="rgb24").astype(int)).max() <= 3


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00" * 1000, bytes(random.Random(3).randrange(256) for _ in range(50_000))],
    ids=["empty", "zeros", "random"],
)
def test_broken_files_raise_video_error(tmp_path, content):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(content)
    with pytest.raises(VideoError, match=r"broken\.mp4"):
        VideoReader(bad)


@pytest.mark.parametrize("name", ["h264.mp4", "h264.ts", "mpeg4.avi", "faststart.mp4"])
def test_truncated_file_raises_video_error_or_reads_consistently(videos, tmp_path, name):
    if name not in videos:
        pytest.skip("ffmpeg is installed by ./dev.sh")
    data = videos[name].read_bytes()
    cut = tmp_path / f"cut-{name}"
    cut.write_bytes(data[: len(data) // 3])
    try:
        reader = VideoReader(cut, SEEKING)
    except VideoError as exc:  # MP4 without its index at the end
        assert cut.name in str(exc)
        return
    # Otherwise the file is just shorter (TS, AVI; a faststart MP4 lists the packets that are
    # there). Frames whose references were cut off fail with VideoError; the B-frames cut off
    # leave gaps among the frames that survive, which are numbered consecutively. Every frame
    # that reads, reads the same both ways.
    with reader:
        assert 0 < reader.frame_count < N
        seq: dict[int, np.ndarray] = {}
        try:
            seq.update(reader.frames())
        except VideoError as exc:
            assert cut.name in str(exc)
        idents = [ident(seq[i]) for i in sorted(seq)]
        assert idents == sorted(set(idents)) and len(seq) >= reader.frame_count // 2
        for i in range(reader.frame_count - 1, -1, -1):
            try:
                assert np.array_equal(reader.frame(i), seq[i])
            except VideoError as exc:
                assert i not in seq and cut.name in str(exc)


def test_truncated_synth_case_raises_video_error(synth_case, tmp_path):
    out, _ = synth_case
    data = (out / "cholec80" / "videos" / "video01.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(VideoError, match=r"cut\.mp4"):
        VideoReader(cut)


@needs_ffmpeg
def test_a_file_without_video_raises_video_error(tmp_path):
    sound = tmp_path / "sound.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=d=1", str(sound)], check=True)
    with pytest.raises(VideoError, match=r"sound\.m4a: the file holds no video stream"):
        VideoReader(sound)


def test_missing_file_raises_video_error(tmp_path):
    with pytest.raises(VideoError, match=r"never\.mp4"):
        VideoReader(tmp_path / "never.mp4")
    with pytest.raises(VideoError, match="no such video file"):
        VideoReader(tmp_path)  # a folder is not a video


def test_a_file_that_vanishes_after_opening(videos, tmp_path):
    path = tmp_path / "vanishing.mp4"
    shutil.copy(videos["h264.mp4"], path)
    with VideoReader(path) as reader:
        assert ident(reader.frame(3)) == 3
        path.unlink()
        assert ident(reader.frame(3)) == 3  # cached frames are still there to show
        with pytest.raises(VideoError, match=r"vanishing\.mp4.*vanished"):
            reader.frame(60)
        with pytest.raises(VideoError, match=r"vanishing\.mp4"):
            next(reader.frames(80))


def test_a_file_replaced_after_opening(videos, tmp_path):
    path = tmp_path / "replaced.mp4"
    shutil.copy(videos["h264.mp4"], path)
    with VideoReader(path) as reader:
        shutil.copy(videos["h264.mkv"], path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
        with pytest.raises(VideoError, match=r"replaced\.mp4.*changed"):
            reader.frame(50)


def test_out_of_range_index_raises_index_error(videos):
    with VideoReader(videos["h264.mp4"]) as reader:
        for bad in (-1, N, N + 100):
            with pytest.raises(IndexError, match=f"frames 0..{N - 1}"):
                reader.frame(bad)
        with pytest.raises(IndexError):
            reader.time_of(N)
        with pytest.raises(TypeError):
            reader.frame(1.5)


def test_config_refuses_negative_sizes():
    with pytest.raises(ValueError):
        VideoReaderConfig(cache_frames=-1)


def test_closed_reader_refuses(videos):
    reader = VideoReader(videos["h264.mp4"])
    reader.close()
    reader.close()  # twice is fine
    with pytest.raises(ValueError, match="closed"):
        reader.frame(0)


def test_probe_counts_through_the_index(videos):
    assert ProbeVideoError is VideoError
    facts = probe_video(videos["h264.ts"])
    assert (facts.frames, facts.keyframes, facts.width, facts.height, facts.fps) == (N, N // GOP + 1, W, H, 25)
    assert facts.codec == "h264" and facts.duration_s == pytest.approx(4.0)


# -- the persisted packet index ----------------------------------------------------------------

CACHED = VideoReaderConfig(cache_frames=2, index_cache_min_frames=0)  # short test files are cached too


def same_reading(a: VideoReader, b: VideoReader) -> None:
    assert (a.frame_count, a.keyframes, a.width, a.height, a.fps, a.time_base) == (
        b.frame_count,
        b.keyframes,
        b.width,
        b.height,
        b.fps,
        b.time_base,
    )
    assert np.array_equal(a.times.ticks, b.times.ticks) and a.times.end == b.times.end
    assert a.orientation == b.orientation


@pytest.mark.parametrize("name", ["h264.mp4", "h264.ts", "mpeg4.avi", "h264.raw", "mpeg2.mpg"])
def test_the_index_is_kept_and_reused_while_the_file_is_unchanged(videos, tmp_path, name):
    if name not in videos:
        pytest.skip("ffmpeg is installed by ./dev.sh")
    path = tmp_path / videos[name].name
    shutil.copy2(videos[name], path)
    ref = reference(path)
    with VideoReader(path, CACHED) as cold:
        assert not cold.index_from_cache
        kept = cold.index_cache_path()
        assert kept is not None and kept.parent == cache_dir() and kept.is_file()
        with VideoReader(path, CACHED) as warm:
            assert warm.index_from_cache
            same_reading(warm, cold)
            for i in [N - 1, 0, 37, 13, 12, 11, 88, 50]:
                rgb = warm.frame(i)
                assert ident(rgb) == i and np.array_equal(rgb, ref[i]), f"frame {i} of {name}"
    assert not any(p.name == kept.name for p in tmp_path.iterdir())  # never beside the video


def test_a_long_file_is_cached_by_default_and_a_short_one_is_not(videos, tmp_path):
    with VideoReader(videos["h264.mp4"]) as reader:  # 100 frames: indexing costs what reading a cache would
        assert not reader.index_cache_path().exists()
    with VideoReader(videos["h264.mp4"], VideoReaderConfig(index_cache_min_frames=N)) as reader:
        assert reader.index_cache_path().exists()


def test_the_cache_can_be_turned_off(videos):
    off = VideoReaderConfig(index_cache=False, index_cache_min_frames=0)
    with VideoReader(videos["h264.mp4"], off) as reader:
        assert not reader.index_from_cache
        assert not cache_dir().exists()
    with VideoReader(videos["h264.mp4"], CACHED):
        pass
    with VideoReader(videos["h264.mp4"], off) as reader:  # a kept index is not read either
        assert not reader.index_from_cache


def rewrite(path: Path, **changes) -> None:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    with path.open("wb") as fh:
        np.savez(fh, **arrays)


@pytest.mark.parametrize(
    "damage",
    ["garbage", "truncated", "empty", "version", "frame_count", "keyframe", "pts_order", "seek_table", "time_base"],
)
def test_a_damaged_or_inconsistent_cache_is_rebuilt(videos, tmp_path, damage):
    path = tmp_path / "case.mp4"
    shutil.copy2(videos["h264.mp4"], path)
    with VideoReader(path, CACHED) as reader:
        kept = reader.index_cache_path()
        good = kept.read_bytes()
    with np.load(kept) as data:
        pts, seek_dpos = data["pts"], data["seek_dpos"]
    if damage == "garbage":
        kept.write_bytes(bytes(random.Random(5).randrange(256) for _ in range(len(good))))
    elif damage == "truncated":
        kept.write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        kept.write_bytes(b"")
    elif damage == "version":
        rewrite(kept, version=np.array(INDEX_CACHE_VERSION + 1, np.int64))
    elif damage == "frame_count":
        rewrite(kept, frame_count=np.array(N + 1, np.int64))
    elif damage == "keyframe":
        rewrite(kept, keyframes=np.array([0, 12, N + 5], np.int64))
    elif damage == "pts_order":
        rewrite(kept, pts=pts[::-1].copy())
    elif damage == "seek_table":
        rewrite(kept, seek_dpos=(seek_dpos + 1))
    elif damage == "time_base":
        rewrite(kept, time_base=np.array([1, 1000], np.int64))
    with VideoReader(path, CACHED) as reader:
        assert not reader.index_from_cache
        assert reader.frame_count == N and reader.keyframes == list(range(0, N, GOP))
        assert ident(reader.frame(77)) == 77
    with VideoReader(path, CACHED) as reader:
        assert reader.index_from_cache  # rewritten whole
    assert kept.read_bytes() != b"" and not list(kept.parent.glob("*.tmp"))


def test_a_changed_or_foreign_file_does_not_use_the_cache(videos, tmp_path):
    path = tmp_path / "case.mp4"
    shutil.copy2(videos["h264.mp4"], path)
    with VideoReader(path, CACHED) as reader:
        kept = reader.index_cache_path()
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # touched: mtime differs
    with VideoReader(path, CACHED) as reader:
        assert not reader.index_from_cache and reader.index_cache_path() == kept
    with VideoReader(path, CACHED) as reader:
        assert reader.index_from_cache
    # Another video's index under this one's name (a copied data folder, a collision) is refused.
    other = tmp_path / "other.mkv"
    shutil.copy2(videos["h264.mkv"], other)
    with VideoReader(other, CACHED) as reader:
        shutil.copy(reader.index_cache_path(), kept)
    with VideoReader(path, CACHED) as reader:
        assert not reader.index_from_cache and ident(reader.frame(40)) == 40


def test_a_read_only_data_folder_only_costs_the_cache(videos, tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the data folder should be")
    monkeypatch.setenv("SURGVIEW_DATA", str(blocked))
    with VideoReader(videos["h264.mp4"], CACHED) as reader:
        assert not reader.index_from_cache and ident(reader.frame(50)) == 50


@pytest.mark.parametrize("name", ["h264.ts", "faststart.mp4"])
def test_a_truncated_file_keeps_what_decodes_in_its_cache(videos, tmp_path, name):
    if name not in videos:
        pytest.skip("ffmpeg is installed by ./dev.sh")
    data = videos[name].read_bytes()
    cut = tmp_path / f"cut-{name}"
    cut.write_bytes(data[: int(len(data) * 0.77)])
    with VideoReader(cut, CACHED) as cold, VideoReader(cut, CACHED) as warm:
        assert warm.index_from_cache
        same_reading(warm, cold)
        assert warm._one_thread == cold._one_thread
        assert [i for i, _ in warm.frames()] == list(range(cold.frame_count))


# -- seeks that skip what is never shown ---------------------------------------------------------


@pytest.mark.parametrize("margin", [0, 3])
def test_skipping_unreferenced_pictures_before_the_target_stays_exact(video, margin):
    """Non-reference pictures before the target are not decoded after a seek; every frame handed
    out is still the decoder's own (compared with plain sequential decoding) and named right."""
    ref = reference(video)
    config = VideoReaderConfig(cache_frames=2, skip_nonref_before=margin, index_cache=False)
    with VideoReader(video, config) as skipping, VideoReader(video, replace(config, skip_nonref_before=None)) as full:
        rng = random.Random(11)
        order = [N - 1, *rng.sample(range(N), 30), *(k + GOP - 1 for k in skipping.keyframes if k + GOP - 1 < N), 0]
        for i in order:
            rgb = skipping.frame(i)
            assert ident(rgb) == i and np.array_equal(rgb, ref[i]), f"frame {i} of {video.name}"
            full.frame(i)
        if video.suffix not in (".h264",):  # frames counted, not timed: nothing is skipped
            assert skipping.stats.decoded < full.stats.decoded, video.name


def test_warm_decodes_into_the_cache_without_converting(videos):
    path = videos["h264.mp4"]
    with VideoReader(path, VideoReaderConfig(index_cache=False)) as reader:
        reader.frame(30)
        assert not reader.cached(31) and reader.cached(30)
        converted, decoded = reader.stats.converted, reader.stats.decoded
        assert reader.warm(31) and reader.warm(32)  # the decoder runs on: two more frames
        assert reader.stats.converted == converted and reader.stats.decoded - decoded >= 2
        assert not reader.warm(31)  # held already: nothing decoded
        decoded, hits = reader.stats.decoded, reader.stats.cache_hits
        assert ident(reader.frame(32)) == 32 and ident(reader.frame(31)) == 31
        assert reader.stats.decoded == decoded and reader.stats.cache_hits == hits + 2
        with pytest.raises(IndexError):
            reader.warm(N)


def test_indexing_reports_progress_and_a_cached_index_none(videos, monkeypatch):
    import engine.video as video_module

    monkeypatch.setattr(video_module, "PROGRESS_PACKETS", 10)
    shares: list[float] = []
    config = VideoReaderConfig(index_cache_min_frames=0, progress=shares.append)
    with VideoReader(videos["h264.mkv"], config) as reader:
        assert not reader.index_from_cache
    assert len(shares) >= 5 and shares == sorted(shares) and shares[0] > 0 and shares[-1] <= 1
    assert shares[-1] > 0.7  # the last report comes near the end of the file
    shares.clear()
    with VideoReader(videos["h264.mkv"], config) as reader:
        assert reader.index_from_cache and shares == []
