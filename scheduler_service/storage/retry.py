"""The one way this service retries a database call that failed for a passing reason.

Two policies use the same loop:

* ``retry_locked``: SQLite said "database is locked" (another process holds the write
  lock). Only that error is retried, five times with a short backoff; the call must be
  safe to repeat (a failed SQLite statement changed nothing).
* ``retry_transient``: any error of a whole write transaction on the run path (claiming a
  fire time, recording an outcome), three times with 0.5 s doubled per attempt. The
  transaction rolled back, so repeating it is safe; giving up is the caller's decision.

The loop re-raises the last error once the attempts are used up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)

T = TypeVar("T")

LOCKED_ATTEMPTS = 5  # tries of a write that meets "database is locked"
LOCKED_BACKOFF_S = (0.05, 0.2, 0.5, 1.0)  # waits between them (after each busy timeout)
TRANSIENT_ATTEMPTS = 3  # tries of a run-path transaction that failed
TRANSIENT_DELAY_S = 0.5  # wait before the second try, doubled per attempt


def is_locked(exc: BaseException) -> bool:
    """SQLite's "database is locked" / "database table is locked" (SQLITE_BUSY/LOCKED)."""
    return isinstance(exc, OperationalError) and "is locked" in str(exc.orig or exc)


def _locked_backoff(attempt: int) -> float:
    return LOCKED_BACKOFF_S[min(attempt, len(LOCKED_BACKOFF_S) - 1)]


def _transient_backoff(attempt: int) -> float:
    return float(TRANSIENT_DELAY_S * 2**attempt)


async def retrying(
    call: Callable[[], Awaitable[T]],
    what: str,
    *,
    attempts: int,
    backoff: Callable[[int], float],
    retry_if: Callable[[Exception], bool],
    log_error: Callable[[Exception, int], None],
) -> T:
    """Run ``call``; while it raises an error ``retry_if`` accepts, wait and try again,
    at most ``attempts`` times in all. ``log_error`` reports each failure that is retried."""
    for attempt in range(attempts):
        try:
            return await call()
        except Exception as exc:
            if not retry_if(exc) or attempt == attempts - 1:
                raise
            log_error(exc, attempt)
            await asyncio.sleep(backoff(attempt))
    raise AssertionError(f"{what}: unreachable")


async def retry_locked(call: Callable[[], Awaitable[T]], what: str) -> T:
    """Run ``call``; if SQLite says the database is locked, try again a few times.

    Only for calls that are safe to repeat (a failed SQLite statement changed nothing).
    """

    def report(_exc: Exception, attempt: int) -> None:
        log.warning(
            "%s: database is locked; retry %d of %d", what, attempt + 1, LOCKED_ATTEMPTS - 1
        )

    return await retrying(
        call,
        what,
        attempts=LOCKED_ATTEMPTS,
        backoff=_locked_backoff,
        retry_if=is_locked,
        log_error=report,
    )


async def retry_transient(call: Callable[[], Awaitable[T]], what: str) -> T:
    """Run a whole write transaction, retrying any error; raises the last one when every
    attempt failed. Each failure is logged with its traceback."""

    def report(_exc: Exception, _attempt: int) -> None:
        log.exception("%s failed", what)

    return await retrying(
        call,
        what,
        attempts=TRANSIENT_ATTEMPTS,
        backoff=_transient_backoff,
        retry_if=lambda _exc: True,
        log_error=report,
    )
