"""The one error every dataset adapter raises: the file and (where it has one) the line at fault."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any


class DatasetError(Exception):
    """A dataset file is missing, unreadable or not in its format. ``str()`` reads ``path:line: reason``."""

    def __init__(self, path: str | Path | None, reason: str, line: int | None = None):
        self.path = Path(path) if path is not None else None
        self.line = line
        self.reason = reason
        where = "" if path is None else f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(f"{where}{reason}")

    @classmethod
    def wrap(cls, exc: Exception, path: str | Path) -> DatasetError:
        """Re-raise another module's ``path:line: reason`` error as a DatasetError, keeping the line."""
        text = str(exc)
        prefix = f"{path}:"
        if text.startswith(prefix):
            rest = text[len(prefix) :]
            m = re.match(r"(\d+):\s*(.*)", rest, re.S)
            if m:
                return cls(path, m.group(2), int(m.group(1)))
            return cls(path, rest.strip())
        return cls(path, text)


def line_of(text: str, offset: int) -> int:
    """1-based line number of character ``offset`` in ``text``."""
    return text.count("\n", 0, max(0, offset)) + 1


def read_json(path: Path) -> tuple[Any, str]:
    """A JSON file's value and its text (for line numbers); an unreadable, non-UTF-8 or malformed
    file raises :class:`DatasetError` naming it (and the line, for syntax errors)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(path, exc.strerror or str(exc)) from exc
    except UnicodeDecodeError:
        raise DatasetError(path, "not a UTF-8 text file") from None
    try:
        return json.loads(text), text
    except json.JSONDecodeError as exc:
        raise DatasetError(path, f"invalid JSON (column {exc.colno}): {exc.msg}", exc.lineno) from None
