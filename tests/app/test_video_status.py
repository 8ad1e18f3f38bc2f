"""The video's background work in the status bar (issue 20): "Indexing video… N%" while a long
file opens, "Building previews… N%" while its strip is made, and a clear line when it cannot be."""

from __future__ import annotations

import shutil

from engine.video import VideoError


def _record_texts(w, seen: list[str]) -> None:
    """Every text the video status label shows from now on (read after each change) into ``seen``."""
    label = w.status.video.label
    w.player.indexing.connect(lambda _share: seen.append(label.text()))
    w.previews.progress.connect(lambda _share: seen.append(label.text() if label.isVisible() else ""))


def test_opening_shows_indexing_then_building_progress_then_nothing(open_viewer, video, tmp_path, qtbot, monkeypatch):
    import engine.video as video_module

    monkeypatch.setattr(video_module, "PROGRESS_PACKETS", 256)  # the 1,500-frame case reports a few times
    case = tmp_path / "case.mp4"
    shutil.copy2(video, case)  # nothing kept for it: indexed and its strip built now
    from app.main_window import SurgviewWindow

    seen: list[str] = []
    orig_init = SurgviewWindow.__init__

    def spying_init(self, *args, **kwargs):
        orig_init(self, *args, **kwargs)
        _record_texts(self, seen)
        self._seen = seen

    monkeypatch.setattr(SurgviewWindow, "__init__", spying_init)
    w = open_viewer(case)
    qtbot.waitUntil(lambda: w.session.thumbnails is not None, timeout=20000)
    qtbot.waitUntil(lambda: not w.status.video.label.isVisible(), timeout=5000)
    texts = w._seen
    indexing = [t for t in texts if t.startswith("Indexing video… ")]
    building = [t for t in texts if t.startswith("Building previews… ")]
    assert len(indexing) >= 3 and all(t.endswith("%") for t in indexing)
    assert [int(t.split("… ")[1][:-1]) for t in indexing] == sorted(int(t.split("… ")[1][:-1]) for t in indexing)
    assert building and texts.index(building[0]) > texts.index(indexing[-1])
    assert w.status.video.problem is None


def test_a_strip_that_cannot_be_built_is_said_in_the_status_bar(open_viewer, video, tmp_path, qtbot, monkeypatch):
    import engine.thumbnails as thumbnails

    def broken(path, *args, **kwargs):
        raise VideoError(f"{path}: no keyframe decodes")

    monkeypatch.setattr(thumbnails, "build_thumbnails", broken)
    case = tmp_path / "case.mp4"
    shutil.copy2(video, case)
    w = open_viewer(case)
    label = w.status.video.label
    qtbot.waitUntil(lambda: w.status.video.problem is not None, timeout=10000)
    assert label.isVisible() and label.text() == "No previews: seeking shows exact frames only"
    assert label.toolTip() == f"{case}: no keyframe decodes"
    assert (
        "previews unavailable" in w.statusBar().currentMessage()
        and "no keyframe decodes" in w.statusBar().currentMessage()
    )
    w.seek(w.case.frame_count - 7)  # seeking still works, without a preview
    assert not w.canvas.previewing
    qtbot.waitUntil(lambda: w.canvas.index == w.case.frame_count - 7, timeout=10000)
    monkeypatch.undo()
    w.open_case(video)  # the next case starts clean
    qtbot.waitUntil(lambda: w.session.thumbnails is not None, timeout=20000)
    assert w.status.video.problem is None and not label.isVisible()
