"""The window's default layout, used when no saved geometry exists: the window's size and its docks'
shares of it, chosen so a typical three-level chain is readable at common screen sizes (the answer
in view at 1440×900, Level 3 at 1280×720) while the video keeps the larger part of the window."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtWidgets import QMainWindow

DEFAULT_SIZE = (1440, 900)
REASONING_SHARE = 0.33  # of the window's width
CASES_SHARE = 0.14  # the Cases / Bookmarks tabs, of the width
TIMELINES_SHARE = 0.25  # of the window's height


def dock_sizes(width: int, height: int) -> tuple[int, int, int]:
    """(reasoning width, cases width, timelines height) in pixels for a window of that size."""
    return round(width * REASONING_SHARE), round(width * CASES_SHARE), round(height * TIMELINES_SHARE)


def apply_default_layout(window: QMainWindow, width: int | None = None, height: int | None = None) -> None:
    """Resize ``window`` (default 1440×900) and give its docks their default shares of it.

    ``QMainWindow.resizeDocks`` before the window is first shown is laid out again on showing, so
    the sizes are applied now and once more when the window is first shown.
    """
    width, height = width or DEFAULT_SIZE[0], height or DEFAULT_SIZE[1]
    window.resize(width, height)
    _resize_docks(window, width, height)
    if not window.isVisible():
        window.installEventFilter(_OnFirstShow(window, width, height))


def _resize_docks(window: QMainWindow, width: int, height: int) -> None:
    reasoning, cases, timelines = dock_sizes(width, height)
    window.resizeDocks([window.reasoning_dock, window.library_dock], [reasoning, cases], Qt.Orientation.Horizontal)
    window.resizeDocks([window.timeline_dock], [timelines], Qt.Orientation.Vertical)


class _OnFirstShow(QObject):
    """Applies the dock sizes again once the window is first shown, then removes itself."""

    def __init__(self, window: QMainWindow, width: int, height: int):
        super().__init__(window)
        self._window, self._size = window, (width, height)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if watched is self._window and event.type() == QEvent.Type.Show:
            watched.removeEventFilter(self)
            QTimer.singleShot(0, self._apply)
        return False

    def _apply(self) -> None:
        if self._window.size().toTuple() == self._size:  # not resized or restored since
            _resize_docks(self._window, *self._size)
        self.deleteLater()
