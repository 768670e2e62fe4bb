"""Failures of a retrying loop, logged as state changes rather than once per attempt.

The scheduler's background loops (the wake-up that processes due jobs, the leadership
check, the wake-up listener) retry every second or so. During a database outage each
attempt fails the same way, and a traceback per attempt buries the one line an operator
needs: a 10 s PostgreSQL outage under load wrote 40 tracebacks. A :class:`FailureLog`
per component instead writes:

* one WARNING when the component starts failing (the error's first line, no traceback
  when the error is an expected one: the database or the network went away);
* a traceback only for an unexpected error, once per kind of error per outage;
* an optional reminder while it keeps failing (default every 5 minutes);
* one WARNING when it recovers, with how long it failed and how many attempts did.

Attempts in between are logged at DEBUG. The loop calls :meth:`FailureLog.failed` in its
``except`` and :meth:`FailureLog.succeeded` after a good pass; both are cheap when
nothing changes, and safe to call from several threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from scheduler_service.logs.escape import escape

REMIND_EVERY_S = 300.0
# Errors that mean "the database or the network is not there": expected in an outage.
_EXPECTED_NAMES = frozenset(
    {
        "OperationalError",  # sqlalchemy / psycopg: connection refused, server closed, ...
        "InterfaceError",  # a connection already closed
        "DisconnectionError",
        "ConnectionDoesNotExistError",  # asyncpg
        "CannotConnectNowError",  # asyncpg: the server is starting or shutting down
        "ConnectionFailureError",
        "PostgresConnectionError",
        "AdminShutdown",  # psycopg: the server was stopped
        "TooManyConnectionsError",
    }
)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says the database or network is unavailable:
    connection errors, timeouts, and the drivers' errors of that kind."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError | TimeoutError):  # ConnectionError is an OSError
            return True
        if any(cls.__name__ in _EXPECTED_NAMES for cls in type(current).__mro__):
            return True
        if getattr(current, "connection_invalidated", False):  # sqlalchemy DBAPIError
            return True
        current = current.__cause__ or current.__context__
    return False


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    detail = escape(text[0]) if text else ""
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


class FailureLog:
    """The failing/recovered state of one component, and the lines that report it."""

    def __init__(
        self,
        logger: logging.Logger,
        component: str,
        *,
        expected: Callable[[BaseException], bool] = is_outage,
        remind_every: float | None = REMIND_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.component = component
        self.expected = expected
        self.remind_every = remind_every
        self.clock = clock
        self.failures = 0  # attempts that failed since the last success
        self._since: float | None = None
        self._reminded_at = 0.0
        self._traced: set[type[BaseException]] = set()
        self._lock = threading.Lock()

    @property
    def failing(self) -> bool:
        return self._since is not None

    def failed(self, exc: BaseException, *, retry_in: float | None = None) -> None:
        """One attempt failed with ``exc``: log it if it starts an outage, if it is a new
        unexpected error, or if a reminder is due; else at DEBUG."""
        now = self.clock()
        with self._lock:
            self.failures += 1
            first = self._since is None
            if first:
                self._since = self._reminded_at = now
            unexpected = not self.expected(exc)
            trace = unexpected and type(exc) not in self._traced
            if trace:
                self._traced.add(type(exc))
            remind = (
                not first
                and self.remind_every is not None
                and now - self._reminded_at >= self.remind_every
            )
            if remind:
                self._reminded_at = now
            failing_for = now - self._since if self._since is not None else 0.0
            count = self.failures
        retry = f"; retrying in {retry_in:.1f} s" if retry_in is not None else ""
        if first or trace:
            self.logger.warning(
                "%s failing: %s%s",
                self.component,
                _first_line(exc),
                retry,
                exc_info=exc if trace else None,
            )
        elif remind:
            self.logger.warning(
                "%s still failing after %.0f s (%d attempts): %s%s",
                self.component,
                failing_for,
                count,
                _first_line(exc),
                retry,
            )
        else:
            self.logger.debug("%s failed again: %s%s", self.component, _first_line(exc), retry)

    def succeeded(self) -> None:
        """An attempt worked: if the component was failing, say it recovered and after
        how long."""
        if self._since is None:  # the common case: nothing to say, no lock taken
            return
        with self._lock:
            if self._since is None:
                return
            failed_for = self.clock() - self._since
            count = self.failures
            self._since, self.failures = None, 0
            self._traced.clear()
        self.logger.warning(
            "%s recovered after %.1f s (%d failed attempt%s)",
            self.component,
            failed_for,
            count,
            "" if count == 1 else "s",
        )
