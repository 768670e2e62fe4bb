"""The one way this service retries a database call that failed for a passing reason.

Two policies use the same loop:

* ``retry_locked``: SQLite said "database is locked" (another process holds the write
  lock). Only that error is retried, five times with a short backoff; the call must be
  safe to repeat (a failed SQLite statement changed nothing).
* ``retry_transient``: any error of a whole write transaction on the run path (claiming a
  fire time, starting a run, recording an outcome), with 0.5 s doubled per attempt up to
  2 s, for as long as the caller's ``keep_trying()`` says so — the runner says so until
  the service stops, so a database outage of any length delays runs but loses none. The
  transaction rolled back, so repeating it is safe.

The loop re-raises the last error once it stops trying.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)

T = TypeVar("T")

LOCKED_ATTEMPTS = 5  # tries of a write that meets "database is locked"
LOCKED_BACKOFF_S = (0.05, 0.2, 0.5, 1.0)  # waits between them (after each busy timeout)
TRANSIENT_DELAY_S = 0.5  # wait before the second try, doubled per attempt
TRANSIENT_MAX_DELAY_S = 2.0  # ... up to this: the database is noticed back within 2 s


def is_locked(exc: BaseException) -> bool:
    """SQLite's "database is locked" / "database table is locked" (SQLITE_BUSY/LOCKED)."""
    return isinstance(exc, OperationalError) and "is locked" in str(exc.orig or exc)


def _locked_backoff(attempt: int) -> float:
    return LOCKED_BACKOFF_S[min(attempt, len(LOCKED_BACKOFF_S) - 1)]


def _transient_backoff(attempt: int) -> float:
    return float(min(TRANSIENT_MAX_DELAY_S, TRANSIENT_DELAY_S * 2 ** min(attempt, 16)))


async def retrying(
    call: Callable[[], Awaitable[T]],
    what: str,
    *,
    attempts: int | None,
    backoff: Callable[[int], float],
    retry_if: Callable[[Exception], bool],
    log_error: Callable[[Exception, int], None],
) -> T:
    """Run ``call``; while it raises an error ``retry_if`` accepts, wait and try again,
    at most ``attempts`` times in all (None: no limit; ``retry_if`` decides).
    ``log_error`` reports each failure that is retried."""
    for attempt in itertools.count():
        try:
            return await call()
        except Exception as exc:
            if not retry_if(exc) or (attempts is not None and attempt >= attempts - 1):
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


async def retry_transient(
    call: Callable[[], Awaitable[T]], what: str, *, keep_trying: Callable[[], bool]
) -> T:
    """Run a whole write transaction, retrying any error while ``keep_trying()``; raises
    the last error once it says stop. The first failure is logged with its traceback,
    later ones in one line each (an outage would otherwise flood the log)."""

    def report(exc: Exception, attempt: int) -> None:
        if attempt == 0:
            log.exception("%s failed; retrying until it succeeds", what)
        else:
            log.warning("%s failed again (%s: %s)", what, type(exc).__name__, exc)

    return await retrying(
        call,
        what,
        attempts=None,
        backoff=_transient_backoff,
        retry_if=lambda _exc: keep_trying(),
        log_error=report,
    )
