"""Recordings as phones and real recorders make them: rotated by a display matrix, variable frame
rate, cut short; and an evaluation image too big to read.

The rotated files carry a container display matrix (PyAV writes it, as phones do) or an H.264
display-orientation SEI (ffmpeg's ``h264_metadata``); what ffmpeg itself shows (its autorotate) is
the reference. The variable-rate file has frames at 10 fps for 10 s, then 30 fps for 10 s, each
drawing its number as stripes.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from engine.eval_set import MAX_IMAGE_PIXELS, EvalSetError, load_rgb
from engine.timecode import format_time, parse_position
from engine.video import VideoError, VideoReader, VideoReaderConfig, video_size
from engine.video_probe import probe_video
from tests.engine.test_video import encode, ffprobe_count

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is installed by ./dev.sh")


@pytest.fixture(autouse=True)
def _own_data_home(data_home):
    """Index caches go to this test's own data folder, never the user's."""
    return data_home


# -- rotation ----------------------------------------------------------------------------------

UW, UH = 64, 96  # the upright picture: portrait, as a phone held upright films it


def upright(width: int = UW, height: int = UH) -> np.ndarray:
    """A picture whose every quarter turn and mirror image differ: a bright block top-left, red bottom-right."""
    img = np.full((height, width, 3), 40, np.uint8)
    img[: height // 3, : width // 2] = 255
    img[-height // 4 :, -width // 4 :] = (255, 0, 0)
    return img


def write_rotated(path: Path, stored: np.ndarray, degrees: float, hflip: bool = False, vflip: bool = False) -> Path:
    """``stored`` as 10 frames of H.264 MP4 with a display matrix: turn ``degrees`` counter-clockwise, then mirror."""
    h, w = stored.shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.set_display_rotation(degrees, hflip=hflip, vflip=vflip)
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def phone_recording(path: Path) -> Path:
    """A phone's portrait recording: landscape pixels, 'rotate=90' (turn clockwise to show)."""
    return write_rotated(path, np.rot90(upright(), 1).copy(), -90)


def ffmpeg_shows(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The first frame as ffmpeg shows it (autorotate on), as RGB of the given shape."""
    cmd = ["ffmpeg", "-v", "error", "-i", str(path), "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
    raw = subprocess.run(cmd, capture_output=True, check=True).stdout
    assert len(raw) == int(np.prod(shape)), "ffmpeg shows it in another size"
    return np.frombuffer(raw, np.uint8).reshape(shape)


def close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and float(np.abs(a.astype(int) - b.astype(int)).mean()) < 4


def test_a_phone_recording_is_shown_upright(tmp_path):
    path = phone_recording(tmp_path / "phone.mp4")
    with av.open(str(path)) as container:  # the file really is sideways
        assert (container.streams.video[0].codec_context.width, container.streams.video[0].codec_context.height) == (
            UH,
            UW,
        )
    with VideoReader(path, VideoReaderConfig(cache_frames=2)) as reader:
        assert (reader.width, reader.height) == (UW, UH)
        assert reader.orientation.transpose
        for i in (9, 0, 5):
            assert close(reader.frame(i), upright()), i
        assert all(close(rgb, upright()) for _, rgb in reader.frames())
    assert video_size(path) == (UW, UH)
    facts = probe_video(path)
    assert (facts.width, facts.height) == (UW, UH)


def test_a_cached_index_keeps_the_rotation(tmp_path):
    path = phone_recording(tmp_path / "phone.mp4")
    cached = VideoReaderConfig(cache_frames=2, index_cache_min_frames=0)
    VideoReader(path, cached).close()
    with VideoReader(path, cached) as reader:
        assert reader.index_from_cache and reader.orientation.transpose
        assert (reader.width, reader.height) == (UW, UH)
        assert close(reader.frame(7), upright())


@needs_ffmpeg
@pytest.mark.parametrize(
    "degrees, hflip, vflip",
    [(90, False, False), (180, False, False), (0, True, False), (-90, True, False), (90, False, True)],
)
def test_display_matrices_turn_frames_as_ffmpeg_shows_them(tmp_path, degrees, hflip, vflip):
    path = write_rotated(tmp_path / "turned.mp4", upright(), degrees, hflip, vflip)
    with VideoReader(path) as reader:
        rgb = reader.frame(3)
        assert rgb.shape == (reader.height, reader.width, 3)
        assert close(rgb, ffmpeg_shows(path, rgb.shape))
        assert reader.orientation.upright is False


@needs_ffmpeg
def test_an_h264_display_orientation_sei_turns_frames_too(tmp_path):
    path = tmp_path / "sei.mp4"
    raw = np.stack([upright()] * 5).tobytes()
    cmd = ["ffmpeg", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{UW}x{UH}", "-r", "25", "-i", "-"]
    cmd += ["-c:v", "libx264", "-bsf:v", "h264_metadata=display_orientation=insert:rotate=90", str(path)]
    subprocess.run(cmd, input=raw, check=True)
    with VideoReader(path) as reader:
        assert (reader.width, reader.height) == (UH, UW)
        rgb = reader.frame(4)
        assert close(rgb, ffmpeg_shows(path, rgb.shape))


def test_an_unrotated_file_is_as_stored(tmp_path):
    path = write_rotated(tmp_path / "plain.mp4", upright(), 0)
    with VideoReader(path) as reader:
        assert reader.orientation.upright and (reader.width, reader.height) == (UW, UH)
        assert close(reader.frame(0), upright())


# -- variable frame rate -----------------------------------------------------------------------

VW, VH, VBITS, VSTRIPE = 160, 48, 10, 16
SLOW, FAST = 100, 300  # frames at 10 fps (0..9.9 s), then at 30 fps (10..19.97 s)


def vfr_picture(i: int) -> np.ndarray:
    img = np.zeros((VH, VW, 3), np.uint8)
    for b in range(VBITS):
        if i >> b & 1:
            img[:, b * VSTRIPE : (b + 1) * VSTRIPE] = 255
    return img


def vfr_ident(rgb: np.ndarray) -> int:
    """The frame number drawn by :func:`vfr_picture`, read off the top rows (clips draw an OSD below)."""
    return sum(1 << b for b in range(VBITS) if rgb[2:14, b * VSTRIPE + 3 : (b + 1) * VSTRIPE - 3].mean() > 128)


def write_vfr(path: Path) -> Path:
    """400 frames, 20.0 s: 10 fps for 10 s, then 30 fps (pts set in the input's 1/30 s clock, kept as they are)."""
    raw = np.stack([vfr_picture(i) for i in range(SLOW + FAST)]).tobytes()
    cmd = ["ffmpeg", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{VW}x{VH}", "-r", "30", "-i", "-"]
    cmd += ["-vf", f"setpts='if(lt(N,{SLOW}),3*N,{2 * SLOW}+N)'", "-fps_mode", "vfr"]
    cmd += ["-c:v", "libx264", "-g", "30", "-bf", "2", "-preset", "veryfast", str(path)]
    subprocess.run(cmd, input=raw, check=True)
    return path


def vfr_time(i: int) -> float:
    return i / 10 if i < SLOW else 10 + (i - SLOW) / 30


@pytest.fixture(scope="module")
def vfr(tmp_path_factory) -> Path:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is installed by ./dev.sh")
    return write_vfr(tmp_path_factory.mktemp("vfr") / "vfr.mp4")


def test_the_vfr_file_fools_a_frame_rate(vfr):
    with VideoReader(vfr) as reader:
        assert reader.frame_count == SLOW + FAST
        assert round(6.0 * reader.fps) != 60  # counting at the average rate lands 6 s off
        assert abs(reader.frame_count / reader.fps - 20.0) > 0.1


def test_times_come_from_timestamps(vfr):
    with VideoReader(vfr, VideoReaderConfig(cache_frames=2)) as reader:
        for i in (0, 1, 59, 60, 99, 100, 101, 160, 399):
            assert reader.time_of(i) == pytest.approx(vfr_time(i), abs=1e-6), i
            assert reader.index_at(vfr_time(i)) == i
        assert reader.index_at(6.0) == 60 and reader.index_at(6.09) == 60 and reader.index_at(12.0) == 160
        assert reader.duration_s == pytest.approx(20.0, abs=1e-6)
        assert reader.times.seconds()[[60, 160]] == pytest.approx([6.0, 12.0])
        for i in (reader.index_at(6.0), reader.index_at(12.0), 399, 0):
            assert vfr_ident(reader.frame(i)) == i
    cmd = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts_time", "-of", "csv=p=0"]
    listed = subprocess.run([*cmd, str(vfr)], capture_output=True, text=True, check=True).stdout.split()
    shown = sorted(float(t.strip(",")) for t in listed)
    assert np.allclose(np.array(shown) - shown[0], [vfr_time(i) for i in range(SLOW + FAST)], atol=1e-3)


def test_probe_gives_the_duration_from_timestamps_and_timecodes_map_through_them(vfr):
    facts = probe_video(vfr)
    assert facts.duration_s == pytest.approx(20.0, abs=1e-6)
    assert format_time(facts.duration_s, facts.fps) == "00:00:20.00"
    assert facts.index_at(6.0) == 60 and facts.time_of(160) == pytest.approx(12.0)
    assert parse_position("00:00:06.00", facts.fps, facts.index_at) == 60
    assert parse_position("00:00:12.00", facts.fps, facts.index_at) == 160
    assert parse_position("00:00:06.01", facts.fps, facts.index_at) == 60  # between frames: the one on screen
    assert parse_position("75", facts.fps, facts.index_at) == 75  # a frame number stays a frame number
    assert format_time(facts.time_of(160), facts.fps) == "00:00:12.00"


# -- truncated files ---------------------------------------------------------------------------


def ffprobe_frames(path: Path) -> int | None:
    """Frames ffprobe decodes; None if it cannot read the file at all."""
    try:
        return ffprobe_count(path)
    except (subprocess.CalledProcessError, ValueError, IndexError):
        return None  # no index (moov) to read, or "N/A": nothing decodes


@pytest.fixture(scope="module")
def h264_mp4s(tmp_path_factory) -> dict[str, Path]:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is installed by ./dev.sh")
    out = tmp_path_factory.mktemp("cut")
    plain = encode(out / "plain.mp4", "libx264", "mp4")
    faststart = out / "faststart.mp4"
    cmd = ["ffmpeg", "-v", "error", "-i", str(plain), "-c", "copy", "-movflags", "+faststart", str(faststart)]
    subprocess.run(cmd, check=True)
    return {"plain": plain, "faststart": faststart}


@needs_ffmpeg
@pytest.mark.parametrize("layout", ["plain", "faststart"])
@pytest.mark.parametrize("keep", [0.33, 0.5, 0.77, 0.9, 0.97, 0.995])
def test_a_truncated_file_counts_the_frames_a_decoder_gives(h264_mp4s, tmp_path, layout, keep):
    data = h264_mp4s[layout].read_bytes()
    cut = tmp_path / f"cut-{layout}.mp4"
    cut.write_bytes(data[: int(len(data) * keep)])
    expected = ffprobe_frames(cut)
    try:
        reader = VideoReader(cut, VideoReaderConfig(cache_frames=2))
    except VideoError as exc:
        assert not expected, f"ffprobe decodes {expected} frames"
        assert cut.name in str(exc)
        return
    with reader:
        assert reader.frame_count == expected
        assert sum(1 for _ in reader.frames()) == expected  # every frame counted reads
        reader.frame(expected - 1)
    # Kept in the index cache, the frames that decode are what a later open counts (nothing re-decoded).
    cached = VideoReaderConfig(cache_frames=2, index_cache_min_frames=0)
    VideoReader(cut, cached).close()
    with VideoReader(cut, cached) as reader:
        assert reader.index_from_cache and reader.frame_count == expected
        assert sum(1 for _ in reader.frames()) == expected


# -- images too big to read --------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` RGB pixels and holds almost none of them."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_an_image_too_big_to_read_says_so(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(png_header(20000, 20000))
    with pytest.raises(EvalSetError, match=r"big\.png: image is 20000x20000 pixels, larger than the 178,956,970"):
        load_rgb(big)
    assert 20000 * 20000 > MAX_IMAGE_PIXELS > 12000 * 12000
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header(100_000, 100_000))  # more than Pillow would even open
    with pytest.raises(EvalSetError, match="image is 100000x100000 pixels"):
        load_rgb(huge)
    broken = tmp_path / "broken.png"
    broken.write_bytes(png_header(12000, 12000))  # small enough, but its pixels are not there
    with pytest.raises(EvalSetError, match="not a readable image"):
        load_rgb(broken)
    jpeg = tmp_path / "wide.jpg"  # a JPEG header: start of frame after an APP0 segment
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0\1\1\0\0\1\0\1\0\0"
    jpeg.write_bytes(b"\xff\xd8" + app0 + b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, 9000, 30000, 1) + b"\1\x11\0")
    with pytest.raises(EvalSetError, match="image is 30000x9000 pixels"):
        load_rgb(jpeg)
    fine = tmp_path / "fine.png"
    cv2.imwrite(str(fine), cv2.cvtColor(upright(), cv2.COLOR_RGB2BGR))
    assert np.array_equal(load_rgb(fine), upright())
