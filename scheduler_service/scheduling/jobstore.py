"""APScheduler's SQLAlchemy job store, writing a whole wake-up in one transaction.

In a wake-up APScheduler updates or removes every due job one at a time, each in its
own transaction. At the top of the hour — a thousand reminders due in the same second —
that is a thousand commits, made while the service's claims wait for the same database
(SQLite has one writer): the first run would start only after the last job was
written. ``OneTransactionJobStore.one_transaction`` makes every statement the store runs
in the calling thread share one connection and one transaction, committed when the
wake-up ends (rolled back, all of it, if it fails: the jobs are then still due, fire
again, and the claims — keyed by task and fire time — run each fire time once).

Inside that transaction the per-job writes are also deferred and sent together
(``_PendingWrites``): the removals as one ``DELETE … WHERE id IN (…)`` a chunk, the
updates as one ``executemany``. One statement a job cost ~0.2 ms of CPU each to build and
run (10,000 due jobs: ~2 s, holding the write lock the claims wait for, and the GIL).
They are written before any other statement of the transaction, so every read in it
(the next run time that ends a wake-up) sees them. What is lost is only the per-call
``JobLookupError`` for a job that is not there: a wake-up writes only jobs it has just
read in the same transaction.

Only the thread running the wake-up sees the shared connection (a thread-local
``engine``); every other caller uses the real engine as before.

A wake-up takes at most ``DUE_JOBS_PER_WAKEUP`` due jobs, earliest first; APScheduler
then finds the store's next run time already past and wakes up again at once for the
rest. Ten thousand due jobs are otherwise ten thousand unpickled ``Job`` objects held
together, which every full garbage collection walks while the event loop waits, and
one long transaction the claims wait behind.
"""

from __future__ import annotations

import contextlib
import pickle
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.util import datetime_to_utc_timestamp
from sqlalchemy import Table, bindparam, select
from sqlalchemy.engine import Connection, Engine

DELETE_CHUNK = 500  # ids in one DELETE … IN (…): well under SQLite's bound-variable limit
DUE_JOBS_PER_WAKEUP = 1_000  # due jobs handed over in one wake-up; the next takes the rest


@dataclass
class _PendingWrites:
    """Job-store writes of one wake-up, not yet sent: job id → new row values, or removed."""

    table: Table
    updates: dict[str, tuple[float | None, bytes]] = field(default_factory=dict)
    removals: set[str] = field(default_factory=set)

    def update(self, job_id: str, next_run_time: float | None, job_state: bytes) -> None:
        self.removals.discard(job_id)
        self.updates[job_id] = (next_run_time, job_state)

    def remove(self, job_id: str) -> None:
        self.updates.pop(job_id, None)
        self.removals.add(job_id)

    def flush(self, connection: Connection) -> None:
        """Send what is pending on ``connection`` (in its transaction)."""
        table = self.table
        if self.removals:
            ids = sorted(self.removals)
            self.removals.clear()
            for start in range(0, len(ids), DELETE_CHUNK):
                chunk = ids[start : start + DELETE_CHUNK]
                connection.execute(table.delete().where(table.c.id.in_(chunk)))
        if self.updates:
            rows = [
                {"job_id": job_id, "b_next": next_run_time, "b_state": job_state}
                for job_id, (next_run_time, job_state) in self.updates.items()
            ]
            self.updates.clear()
            statement = (
                table.update()
                .where(table.c.id == bindparam("job_id"))
                .values(next_run_time=bindparam("b_next"), job_state=bindparam("b_state"))
            )
            connection.execute(statement, rows)


class _SharedTransaction:
    """Stands in for the engine inside ``one_transaction``: ``begin()`` and ``connect()``
    hand out the one connection (after the pending writes), and commit nothing."""

    def __init__(self, connection: Connection, engine: Engine, pending: _PendingWrites) -> None:
        self._connection = connection
        self._engine = engine
        self.pending = pending

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        self.pending.flush(self._connection)
        yield self._connection

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        self.pending.flush(self._connection)
        yield self._connection

    def __getattr__(self, name: str) -> Any:  # url, dialect, dispose: the real engine's
        return getattr(self._engine, name)


class OneTransactionJobStore(SQLAlchemyJobStore):  # type: ignore[misc]
    """A ``SQLAlchemyJobStore`` whose writes can be grouped in one transaction."""

    def __init__(self, **options: Any) -> None:
        self._local = threading.local()
        super().__init__(**options)

    @property
    def engine(self) -> Any:
        shared = getattr(self._local, "shared", None)
        return shared if shared is not None else self._engine

    @engine.setter
    def engine(self, value: Engine) -> None:
        self._engine = value

    def _pending(self) -> _PendingWrites | None:
        shared: _SharedTransaction | None = getattr(self._local, "shared", None)
        return None if shared is None else shared.pending

    def get_due_jobs(self, now: Any) -> list[Job]:
        """The earliest ``DUE_JOBS_PER_WAKEUP`` due jobs (``_get_jobs`` with a limit; a
        job that cannot be unpickled is removed, as there)."""
        timestamp = datetime_to_utc_timestamp(now)
        query = (
            select(self.jobs_t.c.id, self.jobs_t.c.job_state)
            .where(self.jobs_t.c.next_run_time <= timestamp)
            .order_by(self.jobs_t.c.next_run_time)
            .limit(DUE_JOBS_PER_WAKEUP)
        )
        jobs: list[Job] = []
        failed: set[str] = set()
        with self.engine.begin() as connection:
            for row in connection.execute(query):
                try:
                    jobs.append(self._reconstitute_job(row.job_state))
                except BaseException:
                    self._logger.exception('Unable to restore job "%s" -- removing it', row.id)
                    failed.add(row.id)
            if failed:
                connection.execute(self.jobs_t.delete().where(self.jobs_t.c.id.in_(failed)))
        return jobs

    def update_job(self, job: Job) -> None:
        pending = self._pending()
        if pending is None:
            super().update_job(job)
            return
        pending.update(
            job.id,
            datetime_to_utc_timestamp(job.next_run_time),
            pickle.dumps(job.__getstate__(), self.pickle_protocol),
        )

    def remove_job(self, job_id: str) -> None:
        pending = self._pending()
        if pending is None:
            super().remove_job(job_id)
            return
        pending.remove(job_id)

    @contextlib.contextmanager
    def one_transaction(self) -> Iterator[None]:
        """Every store call made by this thread inside the block shares one transaction;
        its updates and removals are sent together (before any other statement, and at
        the end)."""
        with self._engine.begin() as connection:
            pending = _PendingWrites(self.jobs_t)
            self._local.shared = _SharedTransaction(connection, self._engine, pending)
            try:
                yield
                pending.flush(connection)
            finally:
                self._local.shared = None
