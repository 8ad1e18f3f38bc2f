"""The video reader pinned where mutation testing (scripts/mutation.py) found its tests blind: the index
cache's consistency checks (pts that repeat, consecutive keyframes, an ordinal index with packets), the
orientation a cache keeps, a file with a second video stream, a file whose stream has no frames, times at
the ends of the video, full-range YUV without a colour-range flag, and the messages errors give."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.reformatter import ColorRange

import engine.video
from engine.video import VideoError, VideoReader, VideoReaderConfig, frame_to_rgb, save_npz_atomically, video_size
from tests.engine.test_video import GOP, encode, ident, pattern, rewrite
from tests.engine.test_video_rotation_vfr import close, upright, write_rotated

CACHED = VideoReaderConfig(cache_frames=2, index_cache_min_frames=0)  # short test files are cached too


@pytest.fixture(autouse=True)
def _own_data_home(data_home):
    """Index caches go to this test's own data folder, never the user's."""
    return data_home


@pytest.fixture(scope="module")
def mp4(tmp_path_factory) -> Path:
    return encode(tmp_path_factory.mktemp("mv") / "h264.mp4", "libx264", "mp4", n=30)


@pytest.fixture(scope="module")
def raw_h264(tmp_path_factory) -> Path:
    return encode(tmp_path_factory.mktemp("mv") / "h264.h264", "libx264", "h264", n=30)


def test_a_negative_config_value_is_refused_with_its_reason():
    with pytest.raises(ValueError, match=r"^VideoReaderConfig values must not be negative$"):
        VideoReaderConfig(cache_frames=-1)


def test_times_before_and_after_the_video_clamp_to_its_ends(mp4):
    with VideoReader(mp4) as reader:
        assert reader.index_at(float("-inf")) == 0 and reader.index_at(-5.0) == 0
        assert reader.index_at(float("inf")) == reader.frame_count - 1 == 29


def test_a_timestamp_past_the_last_frame_is_no_frame(mp4):
    with VideoReader(mp4) as reader:
        last = int(reader._index.pts[-1])
        assert reader.frame_of_pts(last) == 29
        assert reader.frame_of_pts(last + 10**6) is None and reader.frame_of_pts(None) is None


def test_a_stream_without_frames_is_named(tmp_path):
    path = tmp_path / "empty.avi"
    with av.open(str(path), "w", format="avi") as container:  # headers, a video stream, no packet
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    with pytest.raises(VideoError, match=r"the video stream holds no frames$"):
        VideoReader(path)


def test_a_single_frame_video_lasts_one_frame(tmp_path):
    path = encode(tmp_path / "one.mkv", "libx264", "matroska", n=1)
    with VideoReader(path) as reader:
        assert reader.frame_count == 1 and ident(reader.frame(0)) == 0
        assert reader.duration_s == pytest.approx(1 / 25, rel=0.05)


def test_only_the_first_video_stream_is_indexed(tmp_path):
    path = tmp_path / "two.mkv"
    with av.open(str(path), "w", format="matroska") as container:
        streams = []
        for _ in range(2):
            stream = container.add_stream("mpeg4", rate=25)
            stream.width, stream.height, stream.pix_fmt = 192, 64, "yuv420p"
            streams.append(stream)
        for i in range(20):
            for s, stream in enumerate(streams):
                if s == 1 and i >= 7:
                    continue
                frame = av.VideoFrame.from_ndarray(pattern(i + 100 * s), format="rgb24").reformat(format="yuv420p")
                frame.pts = i
                container.mux(stream.encode(frame))
        for stream in streams:
            container.mux(stream.encode(None))
    with VideoReader(path) as reader:
        assert reader.frame_count == 20
        assert [ident(reader.frame(i)) for i in (0, 6, 7, 19)] == [0, 6, 7, 19]


# ------------------------------------------------------------------ the index cache's checks
def _cached_copy(video: Path, tmp_path: Path) -> tuple[Path, Path]:
    path = tmp_path / ("case" + video.suffix)
    shutil.copy2(video, path)
    with VideoReader(path, CACHED) as reader:
        kept = reader.index_cache_path()
    assert kept.is_file()
    return path, kept


def test_a_cache_whose_timestamps_repeat_is_rebuilt(mp4, tmp_path):
    path, kept = _cached_copy(mp4, tmp_path)
    with np.load(kept) as data:
        pts = data["pts"].copy()
    pts[5] = pts[4]  # two frames at one time: the cache is not this file's reading
    rewrite(kept, pts=pts)
    with VideoReader(path, CACHED) as reader:
        assert not reader.index_from_cache and reader.frame_count == 30 and ident(reader.frame(5)) == 5


def test_an_ordinal_cache_that_lists_packets_is_rebuilt(raw_h264, tmp_path):
    path, kept = _cached_copy(raw_h264, tmp_path)
    with np.load(kept) as data:
        assert int(data["scalars"][2]) == 1 and len(data["dec_key"]) == 0  # no timestamps: frames are counted
        packets = len(data["dec_size"])
    rewrite(kept, dec_key=np.arange(packets, dtype=np.int64))
    with VideoReader(path, CACHED) as reader:
        assert not reader.index_from_cache and reader.frame_count == 30 and ident(reader.frame(20)) == 20
    with VideoReader(path, CACHED) as reader:
        assert reader.index_from_cache and ident(reader.frame(21)) == 21


def test_an_all_keyframe_video_reuses_its_cache(tmp_path):
    path = tmp_path / "intra.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 192, 64, "yuv420p"
        stream.options = {"g": "1", "qscale": "3"}
        for i in range(8):
            frame = av.VideoFrame.from_ndarray(pattern(i), format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    with VideoReader(path, CACHED) as cold:
        assert cold.keyframes == list(range(8))
    with VideoReader(path, CACHED) as warm:
        assert warm.index_from_cache and warm.keyframes == list(range(8)) and ident(warm.frame(6)) == 6


@pytest.mark.parametrize("degrees, hflip, vflip", [(180, False, False), (0, False, True), (0, True, False)])
def test_a_cached_index_keeps_flips(tmp_path, degrees, hflip, vflip):
    path = write_rotated(tmp_path / "turned.mp4", upright(), degrees, hflip, vflip)
    with VideoReader(path, CACHED) as cold:
        shown = cold.frame(3)
        orientation = cold.orientation
    assert not orientation.upright
    with VideoReader(path, CACHED) as warm:
        assert warm.index_from_cache and warm.orientation == orientation
        assert close(warm.frame(3), shown)


def test_the_cache_is_written_through_a_temporary_file_named_as_one(tmp_path, monkeypatch):
    replaced: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace(src, dst):
        replaced.append((os.fspath(src), os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(engine.video.os, "replace", replace)
    target = tmp_path / "x.index.npz"
    assert save_npz_atomically(target, {"a": np.arange(3)})
    ((src, dst),) = replaced
    assert dst == str(target) and Path(src).parent == tmp_path
    assert Path(src).name.startswith("x.index.npz.") and src.endswith(".tmp")  # a leftover shows what it is
    with np.load(target) as data:
        assert data["a"].tolist() == [0, 1, 2]


# ------------------------------------------------------------------ conversion and errors
def test_full_range_yuv_without_a_range_flag_is_read_as_full_range():
    rgb = np.zeros((16, 32, 3), np.uint8)
    rgb[:, :, :] = np.linspace(10, 245, 32, dtype=np.uint8)[None, :, None]
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuvj420p", dst_color_range=ColorRange.JPEG)
    frame.color_range = ColorRange.UNSPECIFIED  # only the pixel format says "full range"
    out = frame_to_rgb(frame)
    assert np.abs(out.astype(int) - rgb.astype(int)).max() <= 6


def test_an_unreadable_file_is_named_when_sizing_it(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"\0" * 4096)
    with pytest.raises(VideoError, match=r"^cannot read clip\.mp4: "):
        video_size(path)


def test_keyframes_before_a_frame(mp4):
    with VideoReader(mp4) as reader:
        assert reader.keyframes[0] == 0
        assert [reader.keyframe_at_or_before(i) for i in (0, GOP - 1, GOP, 29)] == [0, 0, GOP, 24]


def test_a_sweep_checks_the_file_once_then_plays_what_was_opened(mp4, tmp_path):
    path = tmp_path / "sweep.mp4"
    shutil.copy(mp4, path)
    with VideoReader(path) as reader:
        sweep = reader.frames(0, 10)
        assert next(sweep)[0] == 0
        path.unlink()  # the open file still reads (POSIX); decoding on needs no seek and no check
        assert [ident(rgb) for _, rgb in sweep] == list(range(1, 10))
        with pytest.raises(VideoError, match=r"sweep\.mp4.*vanished"):
            next(reader.frames(25))


def test_a_single_frame_without_a_duration_lasts_one_frame_at_the_nominal_rate(tmp_path):
    path = encode(tmp_path / "one.flv", "flv", "flv", n=1)  # FLV gives the packet no duration
    with VideoReader(path) as reader:
        assert reader.frame_count == 1 and int(reader._index.durations[-1]) == 0
        assert reader.duration_s == pytest.approx(1 / 25)


def test_a_read_failure_without_an_os_reason_gives_its_message(mp4, tmp_path, monkeypatch):
    path = tmp_path / "clip.mp4"
    shutil.copy(mp4, path)

    def fail(*args, **kwargs):
        raise OSError("the network share went away")  # no errno, no strerror

    monkeypatch.setattr(engine.video.av, "open", fail)
    with pytest.raises(VideoError, match=r"clip\.mp4: cannot read this video \(the network share went away\)$"):
        VideoReader(path)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is installed by ./dev.sh")
def test_a_cut_file_starts_decoding_at_its_first_frame_not_at_its_last_keyframe(tmp_path):
    """A stream copy cut mid-GOP shows frames before its first visible keyframe (the keyframe they
    need is decoded but hidden by the edit list): for those frames decoding starts at frame 0, never at the
    case's last keyframe (the playback cache's estimate and backward play's prefetch read it)."""
    source = encode(tmp_path / "h264.mp4", "libx264", "mp4", n=60)
    cut = tmp_path / "cut.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-ss", "1.3", "-i", str(source), "-c", "copy", str(cut)], check=True)
    with VideoReader(cut) as reader:
        first_key = reader.keyframes[0]
        assert first_key > 0  # the cut's first frames come before its first visible keyframe
        assert [reader.keyframe_at_or_before(i) for i in range(first_key)] == [0] * first_key
        assert reader.keyframe_at_or_before(first_key) == first_key
        assert reader.keyframe_at_or_before(reader.frame_count - 1) == reader.keyframes[-1] > first_key
