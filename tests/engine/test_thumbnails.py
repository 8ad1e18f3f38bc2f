"""The keyframe thumbnail strip: one small picture per keyframe, nearest lookups, kept and reloaded."""

from __future__ import annotations

import shutil
import threading
import tracemalloc

import cv2
import numpy as np
import pytest

from engine.thumbnails import ThumbnailBuilder, ThumbnailStrip, build_thumbnails, load_thumbnails, thumbnails_path
from engine.video import VideoError, VideoReader, VideoReaderConfig
from tests.engine.test_video import encode, ident
from tests.engine.test_video_rotation_vfr import close, phone_recording, upright


@pytest.fixture
def case(video, tmp_path, data_home):
    """The synthetic case's video, copied (its cache files are this test's own)."""
    path = tmp_path / "case.mp4"
    shutil.copy2(video, path)
    return path


def test_one_thumbnail_per_keyframe_and_nearest_is_the_keyframe_at_or_before(case):
    stats: dict[str, int] = {}
    strip = build_thumbnails(case, stats=stats)
    with VideoReader(case, VideoReaderConfig(index_cache=False)) as reader:
        assert strip.frames.tolist() == reader.keyframes
        assert stats["decoded"] == len(reader.keyframes)  # only keyframes were decoded
        assert strip.size == (160, 90) and strip.images.shape == (len(reader.keyframes), 90, 160, 3)
        for i in [0, 1, 24, 25, 26, 777, reader.frame_count - 1]:
            k, picture = strip.nearest(i)
            assert k == reader.keyframe_at_or_before(i)
            expected = cv2.resize(reader.frame(k), (160, 90), interpolation=cv2.INTER_AREA)
            assert np.abs(picture.astype(int) - expected.astype(int)).mean() < 6, i
    assert strip.nearest(-5)[0] == 0 and strip.nearest(10**9)[0] == strip.frames[-1]
    assert not strip.nearest(30)[1].flags.writeable  # the strip's own pictures, shared


def test_nearest_is_allocation_free(case):
    strip = build_thumbnails(case, save=False)
    first = strip.nearest(1234)
    tracemalloc.start()
    try:
        for i in range(20_000):
            strip.nearest(i % 1500)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2048
    assert strip.nearest(1234)[1] is first[1]


def test_the_strip_is_kept_and_loaded_at_once(case):
    assert load_thumbnails(case) is None
    built = build_thumbnails(case)
    kept = thumbnails_path(case)
    assert kept.is_file() and kept.parent.name == "index" and kept.parent != case.parent
    loaded = load_thumbnails(case)
    assert np.array_equal(loaded.frames, built.frames) and np.array_equal(loaded.images, built.images)
    assert load_thumbnails(case, width=120) is None  # another size: built again
    kept.write_bytes(kept.read_bytes()[:1000])  # damaged: not trusted
    assert load_thumbnails(case) is None
    data = case.read_bytes()
    build_thumbnails(case)
    case.write_bytes(data[:-10] + b"0123456789")  # the file changed (end bytes, mtime)
    assert load_thumbnails(case) is None


def test_the_builder_runs_in_the_background_and_loads_what_is_kept(case):
    done = threading.Event()
    got: list = []
    builder = ThumbnailBuilder(case, on_done=lambda strip: (got.append(strip), done.set())).start()
    assert done.wait(60) and builder.error is None
    assert got[0] is builder.strip and len(builder.strip) == 60 and not builder.loaded
    again = ThumbnailBuilder(case).start()  # kept: loaded (in the thread too), nothing decoded
    assert again.join(30) is not None and again.loaded and not again.running
    assert np.array_equal(again.strip.images, builder.strip.images)


def test_a_cancelled_build_writes_nothing(case):
    cancel = threading.Event()
    cancel.set()
    assert build_thumbnails(case, cancel=cancel) is None
    assert not thumbnails_path(case).exists()


def test_rotated_b_frame_and_broken_videos(tmp_path, data_home):
    phone = phone_recording(tmp_path / "phone.mp4")  # stored sideways, shown upright
    turned = build_thumbnails(phone)
    assert turned.size == (160, 240)
    assert close(cv2.resize(turned.images[0], (64, 96), interpolation=cv2.INTER_AREA), upright())
    mkv = encode(tmp_path / "b.mkv", "libx264", "matroska")  # B-frames, GOP 12, 192x64
    strip = build_thumbnails(mkv)
    assert strip.frames.tolist() == list(range(0, 100, 12)) and strip.size == (160, 54)
    for k, picture in zip(strip.frames, strip.images, strict=True):
        assert ident(cv2.resize(picture, (192, 64), interpolation=cv2.INTER_NEAREST)) == k
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\0" * 1000)
    with pytest.raises(VideoError):
        build_thumbnails(bad)
    builder = ThumbnailBuilder(bad).start()
    builder.join(30)
    assert builder.strip is None and "bad.mp4" in builder.error


def test_a_strip_refuses_inconsistent_parts():
    with pytest.raises(ValueError):
        ThumbnailStrip(np.array([0, 5]), np.zeros((3, 2, 2, 3), np.uint8))
    with pytest.raises(ValueError):
        ThumbnailStrip(np.array([5, 0]), np.zeros((2, 2, 2, 3), np.uint8))


def test_a_build_reports_its_progress_from_indexing_to_the_last_keyframe(case):
    shares: list[float] = []
    done = threading.Event()
    builder = ThumbnailBuilder(case, on_progress=shares.append, on_done=lambda strip: done.set()).start()
    assert done.wait(60) and builder.strip is not None and builder.error is None
    assert shares == sorted(shares) and len(shares) >= 10
    assert shares[0] < 0.6 and shares[-1] == 1.0  # from about half (the index, built here) to the end


def test_a_failing_build_says_why(tmp_path, data_home, monkeypatch):
    import engine.thumbnails as thumbnails

    def broken(*args, **kwargs):
        raise MemoryError("no room for the pictures")

    monkeypatch.setattr(thumbnails, "build_thumbnails", broken)
    results: list = []
    builder = ThumbnailBuilder(tmp_path / "case.mp4", on_done=results.append).start()
    builder.join(10)
    assert results == [None] and "MemoryError: no room for the pictures" in builder.error
