"""What the command-line tools share: the help format, one-line usage errors, argument checks.

Every argument is checked by argparse before any work starts, so a bad value is one
``error: ...`` line with exit status 2 (never a traceback, never blamed on the cache).
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Callable, NoReturn, Sequence

from ood_core.registry import OODLensError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# What a user can cause (a bad name, a missing file, a stale cache): one line, exit status 2.
USER_ERRORS = (OODLensError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the epilog's examples as written."""


class ArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one ``error: ...`` line (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {one_line(message)} (see {self.prog} --help)\n")


def one_line(message: object) -> str:
    """``message`` with every run of whitespace (newlines included) collapsed to one space."""
    return " ".join(str(message).split())


def device(text: str) -> str:
    """``--device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, and only one this machine has."""
    import torch

    value = text.strip().lower()
    kind, _, index = value.partition(":")
    if value in {"auto", "cpu"}:
        return value
    if kind == "cuda" and (not index or index.isdigit()):
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine; use cpu or auto")
        if index and int(index) >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return value
    if value == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available on this machine; use cpu or auto")
        return value
    raise argparse.ArgumentTypeError(f"{text!r} is not a device; use auto, cpu, cuda, cuda:N or mps")


def _number(text: str, kind: type) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return value


def non_negative_int(text: str) -> int:
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or a positive integer")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or a positive number")
    return value


def print_error(error: BaseException) -> int:
    """Print ``error`` as one ``error: ...`` line on stderr; return the usage exit status."""
    print("error: " + (one_line(error) or type(error).__name__), file=sys.stderr)
    return EXIT_USAGE


def run_command(parser: argparse.ArgumentParser, command: Callable[[argparse.Namespace], None],
                argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run ``command``; returns the exit status: 0, 2 for a usage or user error
    (printed as one line), 130 for Ctrl-C (a build's interruption says what it kept)."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help (0) or a usage error, already printed as one line (2)
        return int(stop.code or 0)
    try:
        command(args)
    except KeyboardInterrupt as interrupt:
        print(f"\n{interrupt or 'interrupted; re-run the same command to resume'}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS as error:
        return print_error(error)
    return 0
