"""Export files, written as :func:`engine.outputs.output_path` says: complete or not at all.

A regular file is written under a temporary name in its folder and renamed when complete, so a
failed or cancelled export never leaves half a file and never replaces a good file with a broken
one; a device or FIFO is written in place (never replaced); a symlink's target is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.outputs import OutputError, output_path
from engine.report_data import ReportError

__all__ = ["atomic_path", "atomic_write"]


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path that becomes ``path`` when the block ends without error (removed otherwise);
    failures to place it are one-line :class:`ReportError`s, as every export failure is."""
    try:
        with output_path(path) as tmp:
            yield tmp
    except OutputError as exc:
        raise ReportError(str(exc)) from None


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` for a temporary file, then place it at ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
