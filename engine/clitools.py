"""Shared behaviour of surgview's command-line tools: clear errors, exit codes, no tracebacks."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CliError(Exception):
    """An error to report to the user as one line, with a non-zero exit."""


def run(prog: str, main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Call ``main``; turn any failure into one clear line on stderr and an exit code."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Output piped into a program that stopped reading (e.g. `| head`): not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except CliError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        if os.environ.get("SURGVIEW_DEBUG"):
            raise
        print(
            f"{prog}: internal error: {type(exc).__name__}: {exc} (set SURGVIEW_DEBUG=1 for details)", file=sys.stderr
        )
        return EXIT_ERROR


def run_subcommand(
    prog: str, build_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str] | None = None
) -> int:
    """Parse ``argv`` and call the chosen subcommand's ``func(args)`` under :func:`run`."""

    def _main(args_in: Sequence[str] | None) -> int:
        args = build_parser().parse_args(args_in)
        return args.func(args)

    return run(prog, _main, argv)


class ArgumentParser(argparse.ArgumentParser):
    """argparse that exits with status 2 and a one-line hint, as argparse does, for every subparser."""

    def error(self, message: str):  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")
