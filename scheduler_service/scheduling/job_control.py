"""Job control: the narrow async facade the rest of the service uses for job-store
changes; each call runs in a thread under the service's write lock."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import pickle
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.util import datetime_to_utc_timestamp
from sqlalchemy import Connection, Table, delete, insert, or_, update

from scheduler_service.jobs import JOB_FUNCTION, RETRY_FUNCTION
from scheduler_service.scheduling.scheduler import ResilientAsyncIOScheduler, Serializer
from scheduler_service.storage.retry import retry_locked
from scheduler_service.storage.sql import Prepared

log = logging.getLogger(__name__)


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

    def put_job_sync(
        self,
        connection: Connection,
        task_id: str,
        trigger: BaseTrigger,
        next_run_time: datetime | None,
    ) -> None:
        """Create or replace the task's job row (None: paused) in the caller's
        transaction, the one that changes the task: both change together or neither
        does. After the commit, ``stored``."""
        row = self.new_job_row(task_id, trigger, next_run_time)
        table = self.jobs_table
        values = {"next_run_time": row["next_run_time"], "job_state": row["job_state"]}
        changed = connection.execute(update(table).where(table.c.id == task_id).values(**values))
        if not changed.rowcount:
            connection.execute(insert(table).values(**row))

    def remove_jobs_sync(self, connection: Connection, task_id: str) -> None:
        """Delete the task's job and its retry jobs in the caller's transaction."""
        table = self.jobs_table
        retries = table.c.id.startswith(f"retry:{task_id}:", autoescape=True)
        connection.execute(delete(table).where(or_(table.c.id == task_id, retries)))

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
