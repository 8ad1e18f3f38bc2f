"""Where an export goes: complete or not at all, and never over a device.

Every file surgview writes for the user (reports, clips, JSONL/CSV exports, scores, eval results)
goes through :func:`output_path`. The output is first written whole to a temporary file; what
happens to it then depends on what the target is:

- a regular file, or a path that does not exist yet: the temporary file sits beside the target
  and is renamed over it, so a failed or cancelled export never leaves half a file and never
  replaces a good file with a broken one;
- a symbolic link: resolved, and its final target handled by these rules (the link stays a link);
- ``-``: standard output;
- an existing character or block device or FIFO (``/dev/null``, ``/dev/stdout``, a named pipe a
  program reads): written in place, opened for writing, never renamed over (a rename would replace
  the system's ``/dev/null`` with a regular file). The bytes are copied there once the output is
  complete, from a temporary file in the system's temporary folder, so a failure writes nothing to
  the device; a clip streams to a FIFO this way too (an MP4 needs a seekable file while it is made);
- a socket or a folder: refused with one line.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["STDOUT", "OutputError", "output_path", "write_output"]

STDOUT = "-"


class OutputError(Exception):
    """The output cannot be written where it was asked to go; one line."""


def _name(target: Path) -> str:
    return target.name or str(target)


def _kind(path: Path) -> str:
    """ "new", "file", "dir", "device" (character, block, FIFO) or "socket", after following links."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "new"
    except OSError as exc:
        raise OutputError(f"cannot write {_name(path)}: {exc.strerror or exc}") from None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device"


@contextmanager
def output_path(target: str | os.PathLike[str], *, make_parents: bool = False, suffix: str = ".part") -> Iterator[Path]:
    """A temporary path to write the whole output to; when the block ends without error it becomes
    ``target`` (see the module's rules), otherwise it is removed and ``target`` is untouched.

    An ``OSError`` raised in the block, or in placing the output, becomes one :class:`OutputError`
    line. ``make_parents`` creates a missing folder for a new file instead of refusing.
    """
    if str(target) == STDOUT:
        with _through_temporary(Path(STDOUT), suffix) as tmp:
            yield tmp
            sys.stdout.flush()
            out = getattr(sys.stdout, "buffer", None)
            with tmp.open("rb") as fh:
                if out is not None:
                    shutil.copyfileobj(fh, out)
                    out.flush()
                else:  # a text-only stream (a test's capture): the outputs written so are text
                    sys.stdout.write(fh.read().decode("utf-8", errors="replace"))
        return
    given = Path(target)
    path = Path(os.path.realpath(given))  # a link's final target: written, while the link stays
    kind = _kind(path)
    if kind == "dir":
        raise OutputError(f"cannot write {_name(given)}: it is a folder")
    if kind == "socket":
        raise OutputError(f"cannot write {_name(given)}: it is a socket (give a file, a device, a FIFO or -)")
    if kind == "device":
        with _through_temporary(given, suffix) as tmp:
            yield tmp
            with tmp.open("rb") as src, open(path, "wb") as dst:  # in place: opened, never renamed over
                shutil.copyfileobj(src, dst)
        return
    folder = path.parent
    if not folder.is_dir():
        if not make_parents:
            raise OutputError(f"cannot write {_name(given)}: the folder {given.parent} does not exist")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot make the folder {given.parent}: {exc.strerror or exc}") from None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=folder)
    except OSError as exc:
        raise OutputError(f"cannot write in {given.parent}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        mode = os.stat(path).st_mode & 0o7777 if kind == "file" else 0o666 & ~_umask()
        os.chmod(tmp, mode)  # mkstemp makes the file private; the output gets the usual or the old mode
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {_name(given)}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def _through_temporary(given: Path, suffix: str) -> Iterator[Path]:
    """A temporary file in the system's temporary folder, removed afterwards; OSErrors as one line."""
    try:
        fd, name = tempfile.mkstemp(prefix=".surgview-output.", suffix=suffix)
    except OSError as exc:
        raise OutputError(f"cannot make a temporary file for {_name(given)}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
    except BrokenPipeError:
        raise  # the reader of standard output stopped reading (`| head`): not this output's failure
    except OSError as exc:
        where = "standard output" if str(given) == STDOUT else _name(given)
        raise OutputError(f"cannot write {where}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_output(target: str | os.PathLike[str], text: str, *, make_parents: bool = False) -> None:
    """Write ``text`` (UTF-8) to ``target`` by :func:`output_path`'s rules."""
    with output_path(target, make_parents=make_parents) as tmp:
        tmp.write_text(text, encoding="utf-8")
