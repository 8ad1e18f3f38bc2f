"""Reading the text files users hand to surgview (labels, sets, results) with one-line errors."""

from __future__ import annotations

from pathlib import Path


def read_lines(path: Path, error: type[Exception]) -> list[str]:
    """The lines of a UTF-8 text file; an unreadable or binary file raises ``error`` naming it."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise error(f"{path} is not a UTF-8 text file") from None
