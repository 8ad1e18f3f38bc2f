"""Shared behaviour of surgview's command-line tools: clear errors, exit codes, no tracebacks.

Error lines often carry text from outside (a server's error body, a model folder's manifest, a
file name): each is printed through :func:`engine.terminal.safe_for_terminal` as one line, so it
can neither drive the terminal nor spread over several lines.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from engine.terminal import safe_for_terminal

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CliError(Exception):
    """An error to report to the user as one line, with a non-zero exit."""


def _line(text: object) -> str:
    return safe_for_terminal(str(text), keep_newlines=False)


def run(
    prog: str,
    main: Callable[[Sequence[str] | None], int],
    argv: Sequence[str] | None = None,
    expected: tuple[type[Exception], ...] = (),
) -> int:
    """Call ``main``; turn any failure into one clear line on stderr and an exit code.

    ``expected`` are error types whose message is already one line for the user (a backend, store
    or video error escaping a command): reported as a :class:`CliError` is, not as an internal error.
    """
    try:
        return main(argv)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Output piped into a program that stopped reading (e.g. `| head`): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (CliError, *expected) as exc:
        if os.environ.get("SURGVIEW_DEBUG") and not isinstance(exc, CliError):
            raise
        _flush_stdout()
        print(f"{prog}: error: {_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        if os.environ.get("SURGVIEW_DEBUG"):
            raise
        _flush_stdout()
        print(
            f"{prog}: internal error: {type(exc).__name__}: {_line(exc)} (set SURGVIEW_DEBUG=1 for details)",
            file=sys.stderr,
        )
        return EXIT_ERROR


def _flush_stdout() -> None:
    """What a command printed comes before its error line (a terminal shows both streams in order)."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()


def run_subcommand(
    prog: str,
    build_parser: Callable[[], argparse.ArgumentParser],
    argv: Sequence[str] | None = None,
    expected: tuple[type[Exception], ...] = (),
) -> int:
    """Parse ``argv`` and call the chosen subcommand's ``func(args)`` under :func:`run`."""

    def _main(args_in: Sequence[str] | None) -> int:
        args = build_parser().parse_args(args_in)
        return args.func(args)

    return run(prog, _main, argv, expected)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that exits with status 2 and a one-line hint, as argparse does, for every subparser."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` that reads ``kind`` and refuses zero and negative values (argparse names the
    option and the value in its error)."""

    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise ValueError(text)
        return value

    parse.__name__ = f"positive {getattr(kind, '__name__', 'value')}"
    return parse


def add_sweep_stride_argument(parser: argparse.ArgumentParser) -> None:
    """``--stride``, for commands that read a stored analysis: the sweep's stride, whose frames alone are smoothed
    (:func:`engine.timeline.build_case_timelines`), as the viewer smooths them."""
    parser.add_argument(
        "--stride",
        type=positive(float),
        default=1.0,
        help="seconds between the sweep's analysed frames, as analysed (default 1.0): only those frames are "
        "smoothed into the timelines, as the viewer does",
    )
