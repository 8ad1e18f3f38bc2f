"""Atomic export files: written under a temporary name in the target folder, renamed when complete.

A failed or cancelled export therefore never leaves half a file at the output path, and never
replaces a good file with a broken one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.report_data import ReportError

__all__ = ["atomic_path", "atomic_write"]


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``; renamed over ``path`` when the block ends without error,
    removed otherwise. The file gets the usual permissions (``mkstemp`` makes it private)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ReportError(f"cannot write {path.name}: the folder {folder} does not exist")
    if path.is_dir():
        raise ReportError(f"cannot write {path.name}: it is a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=folder)
    except OSError as exc:
        raise ReportError(f"cannot write in {folder}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except OSError as exc:
        raise ReportError(f"cannot write {path.name}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` for a temporary file beside ``path``, then rename it over ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
