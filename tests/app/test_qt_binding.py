"""The Qt binding must not leak references: PySide6 6.12.0 drops a reference to None on every
call that returns nothing, and the viewer aborts (Fatal Python error: none_dealloc) within
seconds of playback. pyproject.toml excludes that release; this test keeps it excluded."""

from __future__ import annotations

import sys

from PySide6.QtCore import QRectF


def test_void_qt_calls_keep_the_reference_count_of_none():
    rect = QRectF()
    before = sys.getrefcount(None)
    for _ in range(5000):
        rect.setWidth(3.0)
    assert before - sys.getrefcount(None) < 100
