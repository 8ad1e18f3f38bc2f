"""Blank areas are an edit like the bookmarks: removing marked areas asks first, and Edit ▸ Undo / Redo take
a saved change back and forth in the case store."""

from __future__ import annotations

from PySide6.QtWidgets import QMenu, QMessageBox

from engine.store import BlankArea, CaseStore, case_store_path


def stored(window) -> list[BlankArea]:
    with CaseStore.open(case_store_path(window.case.video), readonly=True) as store:
        return store.blank_areas()


def edit_action(window, name: str):
    """The Edit menu's action whose text starts with ``name`` (&Undo, &Redo)."""
    edit = next(m for m in window.menuBar().findChildren(QMenu) if m.title() == "&Edit")
    return next(a for a in edit.actions() if a.text().startswith(name))


def test_saving_blank_areas_is_undoable_and_removing_them_asks(qtbot, open_viewer, video, monkeypatch):
    window = open_viewer(video)
    asked: list[str] = []
    answer = [QMessageBox.StandardButton.No]
    monkeypatch.setattr(QMessageBox, "question", lambda parent, title, text, *a: (asked.append(text), answer[0])[1])
    area = BlankArea(10, 10, 40, 20)

    dialog = window.exports.blank_areas()
    dialog.canvas.areas.append(area)
    dialog.accept()
    assert stored(window) == [area] and asked == []  # adding asks nothing
    edit_action(window, "&Undo").trigger()
    assert stored(window) == []
    edit_action(window, "&Redo").trigger()
    assert stored(window) == [area]

    dialog = window.exports.blank_areas()
    dialog._clear()  # "Clear all", then Save
    dialog.accept()
    assert len(asked) == 1 and "1 marked area" in asked[0]
    assert stored(window) == [area]  # answered No: kept
    answer[0] = QMessageBox.StandardButton.Yes
    dialog = window.exports.blank_areas()
    dialog._clear()
    dialog.accept()
    assert stored(window) == []
    edit_action(window, "&Undo").trigger()  # brings the removed area back
    assert stored(window) == [area]
