"""Instant scrubbing (issue 20, the viewer): keyframe previews on the canvas while a seek decodes,
replaced by the exact frame; previews in the timeline's tooltip; the strip's lifecycle."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPoint
from PySide6.QtGui import QHelpEvent
from PySide6.QtWidgets import QApplication, QToolTip

from app.previews import preview_html, to_qimage
from app.session import CaseSession
from engine.chain_parser import parse_chain
from engine.thumbnails import ThumbnailStrip
from tests.engine.test_video import pattern

CHAIN = """<think>
Level 1 (Perception): Instruments: Grasper [10, 20, 100, 90] (0.93). Anatomy: liver, gallbladder.
Level 3 (Context): Phase: Calot Triangle Dissection. CVS: C1 met, C2 not met, C3 not assessable.
</think>
<answer>CalotTriangleDissection</answer>"""


def _ready(w, qtbot):
    qtbot.waitUntil(lambda: w.session.thumbnails is not None, timeout=20000)
    return w.session.thumbnails


def test_a_far_seek_shows_the_keyframe_preview_until_the_exact_frame_arrives(open_viewer, video, qtbot):
    w = open_viewer(video)
    strip = _ready(w, qtbot)
    assert len(strip) > 1 and strip.frames[0] == 0
    here = w.canvas.index
    assert not w.canvas.previewing
    w.canvas.set_chain(here, parse_chain(CHAIN))  # an overlay on the exact frame, to be hidden by the preview
    assert w.canvas.drawn_chain is not None

    target = w.case.frame_count - 7  # another group of pictures than the one on screen
    key = int(strip.frames[np.searchsorted(strip.frames, target, side="right") - 1])
    assert strip.nearest(here)[0] != key
    w.seek(target)
    # At once, before the event loop can deliver frameReady: the preview, marked, no overlay.
    assert w.canvas.previewing
    assert (w.canvas.preview_frame, w.canvas.preview_keyframe) == (target, key)
    assert w.canvas.index == here  # the exact frame has not come yet
    assert w.canvas.drawn_chain is None and w.canvas.box_at(w.canvas.rect().center()) is None
    small = w.canvas.preview_image
    assert (small.width(), small.height()) == strip.size
    shot = w.canvas.grab().toImage()  # painted scaled into the frame's place
    rect = w.canvas.image_rect()
    assert rect.width() > 2 * strip.size[0]
    assert shot.pixelColor(int(rect.center().x()), int(rect.center().y())).isValid()

    qtbot.waitUntil(lambda: w.canvas.index == target, timeout=10000)
    assert not w.canvas.previewing and w.canvas.preview_frame == -1
    assert w.playhead.displayed == target


def test_a_seek_the_cache_holds_shows_no_preview(open_viewer, video, qtbot):
    """The next frames are refilled after the first one is shown: a step there is exact at once."""
    w = open_viewer(video)
    _ready(w, qtbot)
    here = w.canvas.index
    qtbot.waitUntil(lambda: w.player.holds(here + 3), timeout=10000)
    w.seek(here + 3)
    assert not w.canvas.previewing
    qtbot.waitUntil(lambda: w.canvas.index == here + 3, timeout=10000)
    assert not w.player.holds(w.case.frame_count - 7)  # far away: nothing decoded there


@pytest.fixture(scope="module")
def long_gop_video(tmp_path_factory) -> Path:
    """A 12 s video whose groups of pictures are 10 s long, as hospital recorders write them."""
    path = tmp_path_factory.mktemp("long-gop") / "long-gop.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"g": "250", "keyint_min": "250", "sc_threshold": "0"})
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv420p"
        for i in range(300):
            frame = av.VideoFrame.from_ndarray(pattern(i, 320, 180), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def test_a_seek_ahead_in_the_group_on_screen_shows_the_preview_until_it_is_decoded(open_viewer, long_gop_video, qtbot):
    """Frame 200 shares frame 0's keyframe, but the decoder must run 200 frames to reach it: a click
    there shows the preview at once (before, nothing changed on screen for the whole decode)."""
    w = open_viewer(long_gop_video)
    strip = _ready(w, qtbot)
    here, target = w.canvas.index, 200
    assert strip.nearest(here)[0] == strip.nearest(target)[0] == 0
    assert not w.player.holds(target)
    w.seek(target)
    assert w.canvas.previewing and (w.canvas.preview_frame, w.canvas.preview_keyframe) == (target, 0)
    qtbot.waitUntil(lambda: w.canvas.index == target and not w.canvas.previewing, timeout=10000)
    assert w.player.holds(target)
    w.seek(target - 2)  # decoded on the way: exact at once, no preview
    assert not w.canvas.previewing
    qtbot.waitUntil(lambda: w.canvas.index == target - 2, timeout=10000)


def test_dragging_the_playhead_previews_continuously(open_viewer, video, qtbot):
    w = open_viewer(video)
    strip = _ready(w, qtbot)
    shown = w.previews.shown
    far = [int(f) + 3 for f in strip.frames[len(strip) // 2 :: max(1, len(strip) // 6)]]
    for frame in far:  # what the timeline emits while dragging: a seek per step
        w.timeline.seekRequested.emit(frame)
        if strip.nearest(frame)[0] != strip.nearest(w.canvas.index)[0]:
            assert w.canvas.previewing and w.canvas.preview_frame == frame
    assert w.previews.shown > shown
    qtbot.waitUntil(lambda: w.canvas.index == far[-1] and not w.canvas.previewing, timeout=10000)


def test_hovering_the_timeline_shows_the_preview_in_its_tooltip(open_viewer, video, qtbot):
    w = open_viewer(video)
    strip = _ready(w, qtbot)
    w.timeline_dock.show()
    qtbot.waitExposed(w.timeline)
    tl = w.timeline
    frame = int(strip.frames[len(strip) // 2]) + 2
    pos = tl.viewport_point((frame + 0.5) / w.case.fps, "phase")
    assert tl.frame_at(pos) is not None
    text = tl.tooltip_at(pos)
    assert text is not None and text.startswith('<img src="data:image/png;base64,')
    assert tl.describe_at(pos).split("\n")[0] in text.replace("&amp;", "&")
    viewport = tl._plot.viewport()
    QApplication.sendEvent(viewport, QHelpEvent(QEvent.Type.ToolTip, pos, viewport.mapToGlobal(pos)))
    assert "<img" in QToolTip.text()
    QToolTip.hideText()


def test_closing_the_case_drops_the_strip_and_a_stale_one_is_ignored(open_viewer, video, qtbot, tmp_path):
    w = open_viewer(video)
    strip = _ready(w, qtbot)
    seen = []
    w.session.subscribe(lambda name, value: seen.append(value) if name == "thumbnails" else None)
    w.session.close_store()
    assert w.session.thumbnails is None and seen == [None]
    assert not w.session.set_thumbnails(video, strip)  # no build in flight: a late strip is dropped
    w.seek(10)
    assert not w.canvas.previewing


def test_the_session_builds_only_when_asked_and_ignores_another_video(tmp_path):
    session = CaseSession()
    assert session.preview_at(5) is None
    session._start_thumbnails(tmp_path / "x.mp4")  # nobody listens: nothing starts
    assert session._thumbnail_builder is None
    strip = ThumbnailStrip(np.array([0, 50]), np.zeros((2, 18, 32, 3), np.uint8))
    got = []
    session.thumbnails_ready = lambda video, s: got.append((video, s))
    session._start_thumbnails(tmp_path / "missing.mp4")
    session._thumbnail_builder.join(10)
    assert got and got[0][1] is None  # a file that does not read: no strip
    assert not session.set_thumbnails(tmp_path / "other.mp4", strip)
    assert session.set_thumbnails(tmp_path / "missing.mp4", strip)
    assert session.preview_at(70)[0] == 50
    session.close_store()
    assert session.thumbnails is None


def test_pictures_become_images_and_escaped_rich_text():
    picture = np.zeros((18, 32, 3), np.uint8)
    picture[..., 0] = 200
    image = to_qimage(picture)
    assert (image.width(), image.height()) == (32, 18) and image.pixelColor(QPoint(3, 3)).red() == 200
    html = preview_html(picture, "a <b> & c\n00:01")
    assert "&lt;b&gt; &amp; c<br>00:01" in html
