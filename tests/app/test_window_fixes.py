"""Issue 14's small window fixes: Pause once the sweep is done, bookmark notes in the list, cases
that share a file name told apart."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QStatusBar

from app.bookmarks import BookmarkDialog, BookmarksPanel
from app.case_library import CaseLibrary
from app.session import BookmarkRow, CaseSession
from app.state import AnalysisState
from app.status_bar import EngineStatus


def test_pause_is_disabled_once_the_sweep_is_complete(qtbot):
    bar = QStatusBar()
    qtbot.addWidget(bar)
    analysis = AnalysisState()
    status = EngineStatus(bar, analysis, CaseSession(), lambda paused: None, lambda: None)
    analysis.update(engine="ready", done=10, total=40)
    status.update()
    assert status.pause_button.isEnabled() and status.pause_button.text() == "Pause analysis"
    analysis.update(done=40)
    status.update()
    assert not status.pause_button.isEnabled() and status.pause_button.text() == "Analysis finished"


def test_bookmarks_show_their_note_and_the_dialog_takes_several_lines(qtbot):
    session = CaseSession()
    panel = BookmarksPanel(session, lambda frame: None)
    qtbot.addWidget(panel)
    session.bookmarks = [BookmarkRow(1, 250, "clip placed", "second clip slightly oblique\nask Dr. B")]
    session._emit("bookmarks", session.bookmarks)
    item = panel.list.item(0)
    assert "clip placed" in item.text() and "second clip slightly oblique" in item.text()
    assert "ask Dr. B" in item.toolTip() and item.data(Qt.ItemDataRole.UserRole) == (1, 250)
    dialog = BookmarkDialog(panel, "Frame 250")
    dialog.note.setText("line one\nline two")
    assert dialog.note.text() == "line one\nline two" and dialog.minimumWidth() >= 480


def test_cases_sharing_a_file_name_are_told_apart(qtbot, settings, tmp_path):
    library = CaseLibrary(settings, lambda path: None)
    qtbot.addWidget(library)
    for folder, seconds in (("monday", 2530.0), ("tuesday", 1805.0)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "video01.mp4").write_bytes(b"x")
        library.remember(tmp_path / folder / "video01.mp4", seconds)
    texts = [library.item(i).text() for i in range(library.count())]
    assert texts[0] != texts[1]
    assert "tuesday/" in texts[0] and "30:05" in texts[0] and "monday/" in texts[1] and "42:10" in texts[1]
    assert "42:10" in library.item(1).toolTip()
