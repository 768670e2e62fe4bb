"""Argument types with bounds, and a parser whose errors are one line.

Every value an operator types has a bound and a message naming the argument and what
is accepted: an unbounded ``--limit`` or port reaches the database or the socket layer
and comes back as a traceback (or, for a port in use, as a misleading database error),
and an empty ``--user`` would act for a user nobody can be.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import NoReturn

from scheduler_service.logs.escape import escape, is_control
from scheduler_service.storage.urls import redact_urls_in

EXIT_USAGE = 2


class UsageError(Exception):
    """A command-line value that cannot be used; the message is one line (exit 2)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line on stderr (exit 2): the problem
    and where help is, instead of the whole usage block; a URL argparse quotes back (an
    unrecognized argument) loses its password."""

    def error(self, message: str) -> NoReturn:
        line = " ".join(escape(redact_urls_in(message)).split())
        sys.stderr.write(f"{self.prog}: error: {line} (see {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """A whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{_shown(text)} is not a whole number; use {low} to {high}"
            ) from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{_shown(text)} is out of range; use {low} to {high}")
        return value

    parse.__name__ = "number"  # argparse names the type in its messages
    return parse


def port(text: str) -> int:
    """A TCP port, 1 to 65535."""
    return bounded_int(1, 65535)(text)


def seconds(high: float) -> Callable[[str], float]:
    """A duration in seconds, from 0 to ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            value = math.nan
        if not 0 <= value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(
                f"{_shown(text)} is not a number of seconds from 0 to {high:.0f}"
            )
        return value

    parse.__name__ = "seconds"
    return parse


def identifier(max_chars: int) -> Callable[[str], str]:
    """An id or name: not blank, at most ``max_chars`` characters, no control characters."""

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError("must not be empty")
        if len(text) > max_chars:
            raise argparse.ArgumentTypeError(
                f"{len(text)} characters; at most {max_chars} are accepted"
            )
        if any(is_control(c) for c in text):
            raise argparse.ArgumentTypeError(f"{_shown(text)} contains control characters")
        return text

    parse.__name__ = "value"
    return parse


def _shown(text: str, limit: int = 40) -> str:
    """The rejected text as a message may quote it: escaped and cut short."""
    quoted = repr(text if len(text) <= limit else text[:limit] + "…")
    return escape(quoted)
