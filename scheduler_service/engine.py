"""APScheduler, adapted to this service.

Two small subclasses fix what APScheduler 3.11 gets wrong for this service:

* ``ResilientAsyncIOScheduler`` runs ``_process_jobs`` (which does synchronous job-store
  I/O) in a worker thread, so the event loop never blocks on the database; holds the
  service's SQLite write lock while doing so, so it never waits on a transaction that
  needs the loop to finish; and always re-arms its timer, capped at ``max_sleep``, so a
  database error during a wake-up can never stall the scheduler (a watchdog by design).
  While running (the leader), it also polls the job store's earliest next run every
  ``poll_interval`` and wakes up early when a job is due before its armed timer: jobs
  added or moved by another process (a standby) would otherwise wait for ``max_sleep``.
* ``FireTimeExecutor`` starts coroutine jobs on the loop with their computed fire times
  in a ContextVar, never drops a run for ``max_instances`` (overlap is the runner's
  decision, recorded as a run row), and leaves cancellation to the runner's graceful stop.

``JobControl`` is the narrow async facade the rest of the service uses for job-store
changes: each call runs in a thread under the same lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import pickle
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from apscheduler.executors.base import BaseExecutor
from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_RUNNING, STATE_STOPPED, BaseScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.util import datetime_to_utc_timestamp
from sqlalchemy import Table, func, insert, select

from scheduler_service.jobs import JOB_FUNCTION, RETRY_FUNCTION, FireContext, current_fire
from scheduler_service.jobstore import DUE_JOBS_PER_WAKEUP, OneTransactionJobStore
from scheduler_service.storage import names
from scheduler_service.storage.retry import retry_locked
from scheduler_service.storage.sql import Prepared

log = logging.getLogger(__name__)

Serializer = Callable[[], contextlib.AbstractAsyncContextManager[None]]
POLL_INTERVAL_S = 1.0  # how soon the leader sees a job another process scheduled earlier
PG_POLL_INTERVAL_S = 5.0  # PostgreSQL announces changes (wakeups): the poll is a safety net
EARLIER_BY_S = 0.05  # job-store times are floats: ignore rounding against the armed timer
SPAWN_SLICE = 100  # due jobs started in one loop callback (the loop stays responsive)
MAX_LIVE_JOBS = 250  # job coroutines alive at once; later starts wait as plain tuples


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
                if seconds is not None:
                    wait = min(wait, seconds)
            except Exception:
                wait = min(wait, 0.5 * 2**self._failures)
                self._failures = min(self._failures + 1, 10)
                log.exception("scheduler wake-up failed; retrying in %.1f s", wait)
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


class FireTimeExecutor(BaseExecutor):  # type: ignore[misc]
    """Starts coroutine jobs on the loop, telling each its fire times."""

    def __init__(
        self,
        on_fire: Callable[[str, list[datetime]], Awaitable[Any]],
        on_retry: Callable[[str, datetime, int], Awaitable[Any]],
    ) -> None:
        super().__init__()
        self._on_fire = on_fire
        self._on_retry = on_retry
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._submitted: list[tuple[Any, ...]] = []  # starts queued for the loop
        self._submitted_lock = threading.Lock()
        self._spawn_scheduled = False  # a _spawn_submitted call is on its way (under lock)
        self._spawned = asyncio.Event()  # set each time queued starts were started

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        self._loop = scheduler._eventloop

    def shutdown(self, wait: bool = True) -> None:
        """Running jobs are drained and recorded by the runner, not cancelled here."""

    def submit_job(self, job: Any, run_times: list[datetime]) -> None:
        # No max_instances check: an overlapping fire time is recorded by the runner.
        self._do_submit_job(job, run_times)

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        """Queue the start for the loop (called in the wake-up's thread). One
        ``call_soon_threadsafe`` serves every job submitted before the loop gets to it:
        each call writes to the loop's self-pipe, 10,000 writes for 10,000 due jobs."""
        assert self._loop is not None
        start = (job.id, job.func, tuple(job.args), dict(job.kwargs), tuple(run_times))
        with self._submitted_lock:
            self._submitted.append(start)
            wake, self._spawn_scheduled = not self._spawn_scheduled, True
        if wake:
            self._loop.call_soon_threadsafe(self._spawn_submitted)

    def _spawn_submitted(self) -> None:
        """Start up to ``SPAWN_SLICE`` queued jobs, then yield to the loop: each start's
        first step runs in the same loop iteration, and thousands at once would stall
        the loop for a quarter of a second. At most ``MAX_LIVE_JOBS`` run at once (a job
        lives while its fire is claimed): a burst of 10,000 would otherwise hold 10,000
        suspended coroutine chains, which every full garbage collection walks while the
        loop waits; the rest start as earlier ones finish (``_done``), in order."""
        assert self._loop is not None
        with self._submitted_lock:
            room = max(0, min(SPAWN_SLICE, MAX_LIVE_JOBS - len(self._tasks)))
            starts = self._submitted[:room]
            del self._submitted[:room]
            again = bool(self._submitted) and len(self._tasks) + room < MAX_LIVE_JOBS
            self._spawn_scheduled = again
        for start in starts:
            self._spawn(*start)
        self._spawned.set()
        if again:
            self._loop.call_soon(self._spawn_submitted)

    async def backlog_at_most(self, limit: int) -> None:
        """Return once at most ``limit`` submitted jobs wait to start (loop thread)."""
        while len(self._submitted) > limit:
            self._spawned.clear()
            await self._spawned.wait()

    def _spawn(
        self,
        job_id: str,
        func: Callable[..., Coroutine[Any, Any, Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        run_times: tuple[datetime, ...],
    ) -> None:
        """Start one job's coroutine. Only what it needs is kept, not the ``Job`` (with
        its trigger): a burst's starts wait in ``_submitted`` by the thousand."""
        assert self._loop is not None
        token = current_fire.set(FireContext(list(run_times), self._on_fire, self._on_retry))
        try:
            task = self._loop.create_task(func(*args, **kwargs))
        finally:
            current_fire.reset(token)
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._done, job_id))

    def _done(self, job_id: str, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        with self._submitted_lock:  # room for a start waiting on MAX_LIVE_JOBS
            wake = bool(self._submitted) and not self._spawn_scheduled
            self._spawn_scheduled = self._spawn_scheduled or wake
        if wake:
            assert self._loop is not None
            self._loop.call_soon(self._spawn_submitted)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("job %s failed outside the runner", job_id, exc_info=exc)


def retry_job_id(task_id: str, fire_time: datetime, attempt: int) -> str:
    return f"retry:{task_id}:{fire_time.astimezone(UTC).isoformat()}:{attempt}"


def task_of_job(job_id: str) -> str:
    """The task a job belongs to: its id, or the task id inside a retry job's id."""
    return job_id.split(":", 2)[1] if job_id.startswith("retry:") else job_id


class JobControl:
    """Async, lock-holding access to APScheduler's job store for the rest of the service."""

    def __init__(
        self,
        scheduler: ResilientAsyncIOScheduler,
        serialize: Serializer,
        announce: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.scheduler = scheduler
        self._serialize = serialize
        self._announce = announce  # tells the leader (maybe another process) at once

    async def _changed(self) -> None:
        if self._announce is not None:
            await self._announce()

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[None]:
        async with self._serialize():
            yield

    async def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one job-store call in a thread under the lock; retried if SQLite is locked."""

        async def once() -> Any:
            async with self._locked():
                return await asyncio.to_thread(fn, *args, **kwargs)

        return await retry_locked(once, f"job store {getattr(fn, '__name__', 'call')}")

    async def schedule(
        self, task_id: str, trigger: BaseTrigger, next_run_time: datetime | None
    ) -> None:
        """Create or replace the task's job with an explicit next run (None = paused)."""

        def add() -> None:
            self.scheduler.add_job(
                JOB_FUNCTION,
                trigger=trigger,
                args=[task_id],
                id=task_id,
                name=task_id,
                replace_existing=True,
                next_run_time=next_run_time,
            )

        await self._call(add)
        await self._changed()

    def new_job_row(
        self, task_id: str, trigger: BaseTrigger, next_run_time: datetime | None
    ) -> dict[str, Any]:
        """The job-store row of a new task's job, for ``insert_job`` in the transaction
        that inserts the task: one commit stores both, so neither exists without the
        other. The state is APScheduler's own (``_job_template``) with this task's id,
        trigger and next run, pickled as the store pickles it. After the commit,
        ``stored``."""
        state = {
            **self._job_template,
            "id": task_id,
            "name": task_id,
            "args": [task_id],
            "trigger": trigger,
            "next_run_time": next_run_time,
        }
        return {
            "id": task_id,
            "next_run_time": datetime_to_utc_timestamp(next_run_time),
            "job_state": pickle.dumps(state, self._store().pickle_protocol),
        }

    @functools.cached_property
    def _job_template(self) -> dict[str, Any]:
        """The pickled state of a task's job as APScheduler builds it (a ``Job`` with the
        scheduler's defaults), built once: building a ``Job`` checks the function's
        signature each time, which was a tenth of a create."""
        template = Job(
            self.scheduler,
            id="template",
            func=JOB_FUNCTION,
            trigger=DateTrigger(datetime(2000, 1, 1, tzinfo=UTC)),
            executor="default",
            args=["template"],
            kwargs={},
            name="template",
            next_run_time=None,
            **self.scheduler._job_defaults,
        )
        state: dict[str, Any] = template.__getstate__()
        return state

    @functools.cached_property
    def insert_job(self) -> Prepared:
        """``INSERT`` of a ``new_job_row`` into the job store's table (built once)."""
        return Prepared(insert(self.jobs_table))

    @property
    def jobs_table(self) -> Table:
        """The job store's table, for writes made in the service's own transactions."""
        table: Table = self._store().jobs_t
        return table

    async def stored(self, next_run_time: datetime | None) -> None:
        """A job row was committed outside the scheduler: wake this process's scheduler
        if it is due before the armed timer, and tell the other processes."""
        self.scheduler.wake_for(next_run_time)
        await self._changed()

    async def modify(
        self, job_id: str, trigger: BaseTrigger, next_run_time: datetime | None
    ) -> None:
        """Give a job a new trigger and an explicit next run, keeping everything else.

        Unlike ``reschedule_job`` (which recomputes the next run from now, dropping a due
        one) the caller says which fire time comes next.
        """
        await self._call(
            self.scheduler.modify_job, job_id, trigger=trigger, next_run_time=next_run_time
        )
        await self._changed()

    async def states(self) -> dict[str, tuple[datetime | None, BaseTrigger]]:
        """Every job's next run and trigger (unpickles every job: for start-up only)."""

        def load() -> dict[str, tuple[datetime | None, BaseTrigger]]:
            return {job.id: (job.next_run_time, job.trigger) for job in self.scheduler.get_jobs()}

        states: dict[str, tuple[datetime | None, BaseTrigger]] = await self._call(load)
        return states

    async def pause(self, task_id: str) -> None:
        await self._call(self._ignore_missing(self.scheduler.pause_job), task_id)

    async def remove(self, job_id: str) -> None:
        await self._call(self._ignore_missing(self.scheduler.remove_job), job_id)

    async def next_run_time(self, job_id: str) -> datetime | None:
        job = await self._call(self.scheduler.get_job, job_id)
        return None if job is None else job.next_run_time

    async def exists(self, job_id: str) -> bool:
        return bool(await self._call(self.scheduler.get_job, job_id))

    async def next_run_times(self) -> dict[str, datetime | None]:
        """Every job's next run (None: paused), read without unpickling any job."""

        def load() -> dict[str, datetime | None]:
            store = self._store()
            table = store.jobs_t
            with store.engine.connect() as conn:
                rows = conn.execute(
                    table.select().with_only_columns(table.c.id, table.c.next_run_time)
                )
                return {
                    job_id: None if when is None else datetime.fromtimestamp(when, UTC)
                    for job_id, when in rows
                }

        times: dict[str, datetime | None] = await self._call(load)
        return times

    async def triggers(self, job_ids: list[str]) -> dict[str, BaseTrigger]:
        """The stored triggers of these jobs (unpickled in a thread: a chunk at a time). A
        plain read: it does not take the write lock (WAL readers never wait for it)."""

        def load() -> dict[str, BaseTrigger]:
            store = self._store()
            table = store.jobs_t
            query = table.select().with_only_columns(table.c.id, table.c.job_state)
            with store.engine.connect() as conn:
                rows = conn.execute(query.where(table.c.id.in_(job_ids)))
                return {job_id: pickle.loads(state)["trigger"] for job_id, state in rows}

        found: dict[str, BaseTrigger] = await asyncio.to_thread(load)
        return found

    def _store(self) -> SQLAlchemyJobStore:
        store = self.scheduler._lookup_jobstore("default")
        assert isinstance(store, SQLAlchemyJobStore)
        return store

    async def job_ids(self) -> list[str]:
        """Every job id (a light query: no job is unpickled)."""

        def ids() -> list[str]:
            store = self.scheduler._lookup_jobstore("default")
            if isinstance(store, SQLAlchemyJobStore):
                with store.engine.connect() as conn:
                    rows = conn.execute(store.jobs_t.select().with_only_columns(store.jobs_t.c.id))
                    return [row[0] for row in rows]
            return [job.id for job in self.scheduler.get_jobs()]

        return list(await self._call(ids))

    async def schedule_retry(
        self, task_id: str, fire_time: datetime, attempt: int, run_at: datetime
    ) -> None:
        def add() -> None:
            self.scheduler.add_job(
                RETRY_FUNCTION,
                trigger=DateTrigger(run_date=run_at, timezone=UTC),
                args=[task_id, fire_time.astimezone(UTC).isoformat(), attempt],
                id=retry_job_id(task_id, fire_time, attempt),
                replace_existing=True,
            )

        await self._call(add)
        await self._changed()

    @staticmethod
    def _ignore_missing(fn: Callable[[str], Any]) -> Callable[[str], None]:
        def call(job_id: str) -> None:
            with contextlib.suppress(JobLookupError):
                fn(job_id)

        return call


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
