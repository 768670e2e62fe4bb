"""APScheduler's scheduler, adapted to this service.

``ResilientAsyncIOScheduler`` runs ``_process_jobs`` (which does synchronous job-store
I/O) in a worker thread, so the event loop never blocks on the database; holds the
service's SQLite write lock while doing so, so it never waits on a transaction that
needs the loop to finish; and always re-arms its timer, capped at ``max_sleep``, so a
database error during a wake-up can never stall the scheduler (a watchdog by design).
While running (the leader), it also polls the job store's earliest next run every
``poll_interval`` and wakes up early when a job is due before its armed timer: jobs
added or moved by another process (a standby) would otherwise wait for ``max_sleep``.

``scheduling`` is the only package that touches APScheduler's internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_RUNNING, STATE_STOPPED, BaseScheduler
from sqlalchemy import func, select

from scheduler_service.logs.failures import FailureLog
from scheduler_service.scheduling.executor import FireTimeExecutor
from scheduler_service.scheduling.jobstore import DUE_JOBS_PER_WAKEUP, OneTransactionJobStore
from scheduler_service.storage import names

log = logging.getLogger(__name__)

Serializer = Callable[[], contextlib.AbstractAsyncContextManager[None]]
POLL_INTERVAL_S = 1.0  # how soon the leader sees a job another process scheduled earlier
PG_POLL_INTERVAL_S = 5.0  # PostgreSQL announces changes (wakeups): the poll is a safety net
EARLIER_BY_S = 0.05  # job-store times are floats: ignore rounding against the armed timer


class ResilientAsyncIOScheduler(AsyncIOScheduler):  # type: ignore[misc]
    """AsyncIOScheduler whose wake-ups run off the loop and always re-arm."""

    def __init__(
        self,
        *,
        serialize: Serializer,
        max_sleep: float,
        poll_interval: float | None = POLL_INTERVAL_S,
        **options: Any,
    ) -> None:
        self._serialize = serialize
        self._max_sleep = max_sleep
        self._poll_interval = poll_interval
        self._wakeup_task: asyncio.Task[None] | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._armed_at: float | None = None  # epoch seconds the armed timer fires at
        self._wakeup_again = False
        self._failures = 0  # consecutive failed wake-ups: the retry backs off, bounded
        self._failure_log = FailureLog(log, "the scheduler wake-up")  # a line per state change
        super().__init__(**options)

    def wakeup(self) -> None:
        loop = self._eventloop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._request_wakeup)

    def _request_wakeup(self) -> None:
        self._ensure_polling()
        if self._wakeup_task is not None and not self._wakeup_task.done():
            self._wakeup_again = True  # one more pass after the current one
            return
        self._wakeup_task = self._eventloop.create_task(self._wakeup_loop())

    async def _wakeup_loop(self) -> None:
        while True:
            self._wakeup_again = False
            self._stop_timer()
            self._armed_at = None
            await self._backlog_started()
            wait: float = self._max_sleep
            try:
                async with self._serialize():
                    seconds = await asyncio.to_thread(self._process_jobs_together)
                self._failures = 0
                self._failure_log.succeeded()
                if seconds is not None:
                    wait = min(wait, seconds)
            except Exception as exc:
                wait = min(wait, 0.5 * 2**self._failures)
                self._failures = min(self._failures + 1, 10)
                self._failure_log.failed(exc, retry_in=wait)
            finally:
                if self.state != STATE_STOPPED:
                    self._start_timer(max(wait, 0.0))
                    self._armed_at = time.time() + max(wait, 0.0)
            if not self._wakeup_again or self.state == STATE_STOPPED:
                return

    async def _backlog_started(self) -> None:
        """Backpressure: while more than a wake-up's worth of due jobs wait to start, the
        rest stay in the job store (rows) rather than in memory (objects the garbage
        collector walks); the next wake-up takes them once these have started."""
        executor = self._executors.get("default")
        if isinstance(executor, FireTimeExecutor):
            await executor.backlog_at_most(DUE_JOBS_PER_WAKEUP)

    def _process_jobs_together(self) -> float | None:
        """``_process_jobs`` with every job-store write of the wake-up in one transaction
        (see ``jobstore``): a burst of due jobs costs one commit, not one per job."""
        store = self._lookup_jobstore("default")
        if not isinstance(store, OneTransactionJobStore):
            return self._process_jobs()  # type: ignore[no-any-return]
        with store.one_transaction():
            return self._process_jobs()  # type: ignore[no-any-return]

    # -- noticing other processes' jobs --------------------------------------------------
    def _ensure_polling(self) -> None:
        """Start the poll with the first wake-up: only a running scheduler (the leader)
        wakes up, so a standby never polls."""
        if self._poll_interval is None or self.state == STATE_STOPPED:
            return
        if self._poll_task is None or self._poll_task.done():
            self._poll_task = self._eventloop.create_task(self._poll_loop(self._poll_interval))

    async def _poll_loop(self, interval: float) -> None:
        """Wake up early when the store's earliest run is before the armed timer. The read
        runs in a thread and without the write lock: WAL readers never wait for writers."""
        while self.state != STATE_STOPPED:
            await asyncio.sleep(interval)
            if self.state != STATE_RUNNING or self._busy():
                continue
            try:
                earliest = await asyncio.to_thread(self._earliest_next_run)
            except Exception as exc:  # the wake-up itself reports database errors
                log.debug("job-store poll failed: %s", exc)
                continue
            if self._is_earlier(earliest):
                log.debug("a job is due before the armed wake-up; waking up")
                self._request_wakeup()

    def wake_for(self, when: datetime | None) -> None:
        """A job was stored (outside ``add_job``) to run at ``when``: wake up if that is
        before the armed timer, or if a wake-up is in progress (it may have read the
        store before the job was there). A later job changes nothing: the armed wake-up
        finds it. Call on the loop thread."""
        if when is None or self.state != STATE_RUNNING:
            return
        if self._busy() or self._armed_at is None or when.timestamp() < self._armed_at:
            self._request_wakeup()

    def _busy(self) -> bool:
        return self._wakeup_task is not None and not self._wakeup_task.done()

    def _is_earlier(self, earliest: float | None) -> bool:
        """Whether to wake now. Not while a failed wake-up backs off: a job that stays
        due because the store cannot be written would otherwise wake us every poll."""
        if earliest is None or self._busy() or self._failures or self.state != STATE_RUNNING:
            return False
        return self._armed_at is None or earliest < self._armed_at - EARLIER_BY_S

    def _earliest_next_run(self) -> float | None:
        """``min(next_run_time)`` over the job store: one indexed lookup, no unpickling."""
        store = self._lookup_jobstore("default")
        if not isinstance(store, SQLAlchemyJobStore):
            return None
        with store.engine.connect() as conn:
            earliest = conn.scalar(select(func.min(store.jobs_t.c.next_run_time)))
        return None if earliest is None else float(earliest)

    def shutdown(self, wait: bool = False) -> None:
        """Stop now, on the calling (loop) thread; the runner drains running tasks."""
        BaseScheduler.shutdown(self, wait=False)
        self._stop_timer()
        self._armed_at = None
        for task in (self._wakeup_task, self._poll_task):
            if task is not None:
                task.cancel()


def build_scheduler(
    *,
    serialize: Serializer,
    max_sleep: float,
    executor: FireTimeExecutor,
    engine: Any,
    poll_interval: float | None = POLL_INTERVAL_S,
) -> ResilientAsyncIOScheduler:
    """The scheduler with our job store, executor and deliberate job defaults.

    misfire_grace_time=None and coalesce=False: APScheduler hands every due fire time to
    the runner, which decides (and records) what runs and what was missed. Its 1 s
    default would silently drop them.
    """
    return ResilientAsyncIOScheduler(
        serialize=serialize,
        max_sleep=max_sleep,
        poll_interval=poll_interval,
        jobstores={"default": OneTransactionJobStore(engine=engine, tablename=names.JOBS)},
        executors={"default": executor},
        job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1_000_000},
        timezone=UTC,
    )
