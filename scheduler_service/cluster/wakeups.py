"""Telling the leader at once that the job store changed (PostgreSQL LISTEN/NOTIFY).

Any replica can create or move a task's job, but only the leader's scheduler fires jobs,
and APScheduler notices a job another process stored only at its next wake-up. On
PostgreSQL every job-store change is followed by ``NOTIFY task_scheduler_wakeup``; the
leader keeps one connection listening and wakes its scheduler on each notification, so
a task created on a standby runs on time, not at the next poll. The same mechanism, on
``task_scheduler_runs``, tells every replica that runs were queued (``runs.queue``).

The listening connection is health-checked (a ``SELECT 1`` every few seconds, with a
timeout) and re-opened when it fails; each (re)connection wakes the scheduler once, in
case a notification was sent while nobody listened. A slow job-store poll stays as the
last safety net (see ``engine``). SQLite has no such channel: a single machine polls its
job store often instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from scheduler_service.logs.failures import FailureLog

log = logging.getLogger(__name__)

JOBS_CHANNEL = "task_scheduler_wakeup"  # the job store changed: the leader wakes up
RUNS_CHANNEL = "task_scheduler_runs"  # runs were queued: every replica looks
HEALTH_CHECK_S = 5.0  # how often the listening connection is checked
HEALTH_TIMEOUT_S = 3.0  # a check slower than this counts as a dead connection
RECONNECT_MAX_S = 5.0


class Wakeups:
    """No channel (SQLite): announcing and listening do nothing."""

    async def announce(self) -> None:
        """Say that the job store changed."""

    def listen(self, on_wakeup: Callable[[], None]) -> None:
        """Call ``on_wakeup`` whenever another process announces a change (leader only)."""

    async def stop_listening(self) -> None:
        """Stop calling back (on stepping down or stopping)."""


class PgWakeups(Wakeups):
    """LISTEN/NOTIFY on the service's PostgreSQL database."""

    def __init__(self, engine: AsyncEngine, channel: str) -> None:
        # A notify is one autocommit statement: one round trip, not BEGIN, it, COMMIT.
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._channel = channel
        self._dsn = _asyncpg_dsn(engine)
        self._listener: asyncio.Task[None] | None = None
        self._announcing: asyncio.Task[None] | None = None
        self._again = False

    async def announce(self) -> None:
        """Send the notification in the background: the caller (a tool call creating a
        task) does not wait for it, and changes made while one is being sent share the
        next one."""
        if self._announcing is not None and not self._announcing.done():
            self._again = True
            return
        self._announcing = asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        while True:
            self._again = False
            try:
                async with self._engine.connect() as conn:
                    await conn.execute(
                        text("SELECT pg_notify(:channel, '')"), {"channel": self._channel}
                    )
            except Exception as exc:  # the slow poll still finds the change
                log.warning("could not announce a job-store change: %s", exc)
            if not self._again:
                return

    def listen(self, on_wakeup: Callable[[], None]) -> None:
        if self._listener is None or self._listener.done():
            self._listener = asyncio.get_running_loop().create_task(self._listen(on_wakeup))

    async def stop_listening(self) -> None:
        if self._announcing is not None:  # a last announcement goes out first
            with contextlib.suppress(Exception):
                await self._announcing
        task, self._listener = self._listener, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _listen(self, on_wakeup: Callable[[], None]) -> None:
        """Listen until cancelled, reconnecting with a bounded backoff (a line when the
        connection is lost, one when it is back: ``FailureLog``)."""
        delay = 0.1
        failures = FailureLog(log, "the wake-up listener")
        while True:
            try:
                await self._listen_once(on_wakeup, failures.succeeded)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures.failed(exc, retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(RECONNECT_MAX_S, delay * 2)

    async def _listen_once(
        self, on_wakeup: Callable[[], None], on_connected: Callable[[], None] | None = None
    ) -> None:
        import asyncpg

        conn = await asyncpg.connect(self._dsn, timeout=HEALTH_TIMEOUT_S)
        try:
            await conn.add_listener(self._channel, lambda *_args: on_wakeup())
            on_wakeup()  # anything announced while nobody listened
            if on_connected is not None:
                on_connected()
            while True:
                await asyncio.sleep(HEALTH_CHECK_S)
                async with asyncio.timeout(HEALTH_TIMEOUT_S):  # not wait_for: see stopping
                    await conn.fetchval("SELECT 1")
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(HEALTH_TIMEOUT_S):
                    await conn.close()


def _asyncpg_dsn(engine: AsyncEngine) -> str:
    """The plain ``postgresql://`` DSN asyncpg takes, from the engine's URL."""
    url = make_url(engine.url.render_as_string(hide_password=False))
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def wakeups_for(engine: AsyncEngine, channel: str = JOBS_CHANNEL) -> Wakeups:
    if engine.url.get_backend_name() == "postgresql":
        return PgWakeups(engine, channel)
    return Wakeups()
