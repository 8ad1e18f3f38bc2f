"""Reading the text files users hand to surgview (labels, sets, results) with one-line errors."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def read_lines(path: Path, error: Callable[[str], Exception]) -> list[str]:
    """The lines of a UTF-8 text file; an unreadable or binary file raises ``error`` naming it."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise error(f"{path} is not a UTF-8 text file") from None


def parse_json_lines(
    lines: Iterable[str],
    where: str | Path,
    error: Callable[[str], Exception],
    on_bad_json: Callable[[int, json.JSONDecodeError], Exception | None] | None = None,
) -> list[tuple[int, Any]]:
    """(line number, value) of each non-blank JSON line (numbers from 1, counting blank lines).

    A line that is not JSON raises ``error("WHERE:N: not JSON (reason)")``; ``on_bad_json(N, exc)``
    replaces that: it returns the exception to raise, or None to keep the line with the value None
    (for a caller that reports every unusable line its own way).
    """
    rows: list[tuple[int, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as exc:
            failure = on_bad_json(number, exc) if on_bad_json else error(f"{where}:{number}: not JSON ({exc.msg})")
            if failure is not None:
                raise failure from None
            rows.append((number, None))
    return rows


def read_json_lines(
    path: Path,
    error: Callable[[str], Exception],
    on_bad_json: Callable[[int, json.JSONDecodeError], Exception | None] | None = None,
) -> list[tuple[int, Any]]:
    """(line number, value) of each non-blank line of a UTF-8 JSON-lines file; an unreadable file and a
    line that is not JSON raise ``error`` with the path (and the line number). See :func:`parse_json_lines`."""
    path = Path(path)
    return parse_json_lines(read_lines(path, error), path, error, on_bad_json)
