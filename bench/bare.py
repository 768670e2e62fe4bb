"""Bare APScheduler 3.11 + SQLAlchemyJobStore: the baselines ``bench.run`` compares against.

The same kind of database (a SQLite file in WAL mode with ``synchronous=NORMAL`` and a busy
timeout, or PostgreSQL), a ``SQLAlchemyJobStore`` on a sync engine, and two schedulers:

* the thread-pool baseline (``bare_scheduler``): an ``AsyncIOScheduler`` whose default
  executor is a ``ThreadPoolExecutor`` with as many threads as the service's
  ``max_concurrent_tasks``, ``misfire_grace_time`` 3600, running sync jobs:

  * ``noop_job``: records its start and end times in memory (no database write);
  * ``row_job``: one plain ``INSERT`` into ``bench_runs`` through a sync SQLAlchemy engine
    (its own transaction, committed before the job returns);

* the asyncio baseline (``asyncio_scheduler``): a stock ``AsyncIOScheduler`` with its
  default executor (``AsyncIOExecutor``: every due coroutine job is a loop task at once,
  no cap), ``misfire_grace_time=None``, running coroutine jobs on the event loop, as the
  service runs its tools:

  * ``async_noop_job``: records its start and end times in memory;
  * ``async_row_job``: one ``INSERT`` into ``bench_runs`` and a commit, awaited, through an
    ``AsyncRows`` writer (below). This is the cheaper baseline, and the one the burst
    target is measured against.

``AsyncRows`` writes through one shared ``aiosqlite`` connection on SQLite (same pragmas):
aiosqlite runs a connection's calls in order on its own thread, so a job's ``INSERT`` and
``COMMIT`` queue behind those of the jobs before it, without waiting on each other's round
trips (a ``COMMIT`` may cover rows of jobs queued in between; each job's row is committed
when its own commit returns). On PostgreSQL, and on SQLite with ``engine=True``, it uses an
async SQLAlchemy engine (``postgresql+asyncpg``; ``sqlite+aiosqlite`` with the service's
default pool), one transaction a job. On SQLite that engine variant is several times slower
than the shared connection: its connections contend for SQLite's write lock and wait in
the busy handler's sleeps, which is why it is not the baseline there.

``python -m bench.bare --startup URL`` is the start-up probe: it prints one JSON line when
the scheduler has started on a job store that may hold many jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiosqlite
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.util import datetime_to_utc_timestamp
from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.probes import LagProbe, peak_rss_mb

METADATA = MetaData()
BENCH_RUNS = Table(
    "bench_runs",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job", Integer, nullable=False),
    Column("fire_time", Float, nullable=False),
    Column("started", Float, nullable=False),
)
BARE_TASKS = Table(  # the "one row" a bare create/update/delete writes beside its job
    "bare_tasks",
    METADATA,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(200), nullable=False),
    Column("name", String(200), nullable=False),
    Column("schedule", String(200), nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_bare_tasks_user", "user_id"),
)

# Shared with the job functions (which run in the executor's threads).
_lock = threading.Lock()
_engine: Engine | None = None
_rows: AsyncRows | None = None  # used by the coroutine jobs, on the loop
_done: list[tuple[float, float, float]] = []  # (fire_time, started, finished) per run
_target = 0
_on_all_done: Callable[[], object] | None = None


def _sqlite_pragmas(conn: Any, _record: Any) -> None:
    cursor = conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def sync_engine(url: str, pool_size: int = 5) -> Engine:
    """A sync engine; on SQLite: WAL, synchronous=NORMAL, 10 s busy timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False},
            pool_size=pool_size,
            max_overflow=10,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=10)


def async_url(sync_url: str) -> str:
    """The async-driver URL of a sync one: sqlite → sqlite+aiosqlite, postgresql[+psycopg]
    → postgresql+asyncpg."""
    url = make_url(sync_url)
    driver = "sqlite+aiosqlite" if url.drivername.startswith("sqlite") else "postgresql+asyncpg"
    return url.set(drivername=driver).render_as_string(hide_password=False)


def async_engine(sync_url: str) -> AsyncEngine:
    """An async engine with the service's settings (the default pool of
    ``create_async_engine``; on SQLite WAL, ``synchronous=NORMAL``, busy timeout)."""
    engine = create_async_engine(async_url(sync_url))
    if sync_url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


class AsyncRows:
    """Writes one ``bench_runs`` row and commits it, from coroutine jobs on the loop: one
    shared aiosqlite connection on SQLite, else (or with ``engine=True``) an async engine."""

    def __init__(self, sync_url: str, *, engine: bool = False) -> None:
        self.sync_url = sync_url
        self.shared = sync_url.startswith("sqlite") and not engine
        self.engine: AsyncEngine | None = None
        self.conn: aiosqlite.Connection | None = None

    async def open(self) -> AsyncRows:
        if self.shared:
            self.conn = await aiosqlite.connect(make_url(self.sync_url).database or "")
            for pragma in ("journal_mode=WAL", "busy_timeout=10000", "synchronous=NORMAL"):
                await self.conn.execute(f"PRAGMA {pragma}")
        else:
            self.engine = async_engine(self.sync_url)
        return self

    async def insert(self, i: int, fire_time: float, started: float) -> None:
        if self.conn is not None:
            await self.conn.execute(
                "INSERT INTO bench_runs (job, fire_time, started) VALUES (?, ?, ?)",
                (i, fire_time, started),
            )
            await self.conn.commit()
            return
        assert self.engine is not None
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(BENCH_RUNS).values(job=i, fire_time=fire_time, started=started)
            )

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
        if self.engine is not None:
            await self.engine.dispose()


def _finish(fire_time: float, started: float) -> None:
    finished = time.time()
    with _lock:
        _done.append((fire_time, started, finished))
        complete = len(_done) >= _target
    if complete and _on_all_done is not None:
        _on_all_done()


def noop_job(i: int, fire_time: float) -> None:
    _finish(fire_time, time.time())


def row_job(i: int, fire_time: float) -> None:
    started = time.time()
    assert _engine is not None
    with _engine.begin() as conn:
        conn.execute(insert(BENCH_RUNS).values(job=i, fire_time=fire_time, started=started))
    _finish(fire_time, started)


async def async_noop_job(i: int, fire_time: float) -> None:
    _finish(fire_time, time.time())


async def async_row_job(i: int, fire_time: float) -> None:
    started = time.time()
    assert _rows is not None
    await _rows.insert(i, fire_time, started)
    _finish(fire_time, started)


def asyncio_scheduler(engine: Engine) -> AsyncIOScheduler:
    """The asyncio baseline: the default executor (``AsyncIOExecutor``), no grace limit."""
    return AsyncIOScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=engine)},
        job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        timezone=UTC,
    )


def bare_scheduler(engine: Engine, concurrency: int) -> AsyncIOScheduler:
    return AsyncIOScheduler(
        jobstores={"default": SQLAlchemyJobStore(engine=engine)},
        executors={"default": ThreadPoolExecutor(concurrency)},
        job_defaults={"misfire_grace_time": 3600, "coalesce": True, "max_instances": 1},
        timezone=UTC,
    )


def reset(
    target: int,
    engine: Engine | None,
    on_all_done: Callable[[], object] | None,
    rows: AsyncRows | None = None,
) -> None:
    global _engine, _rows, _target, _on_all_done
    with _lock:
        _done.clear()
        _engine, _rows, _target, _on_all_done = engine, rows, target, on_all_done


def results() -> list[tuple[float, float, float]]:
    with _lock:
        return list(_done)


def create_tables(engine: Engine) -> None:
    METADATA.create_all(engine)
    SQLAlchemyJobStore(engine=engine).jobs_t.create(engine, checkfirst=True)


def bulk_store(engine: Engine, n: int, user_id: str = "bench", batch: int = 5000) -> float:
    """Store ``n`` daily cron jobs (none due within ~2 h) and their ``bare_tasks`` rows,
    bulk-inserted the way SQLAlchemyJobStore stores a job. Returns the seconds it took."""
    t0 = time.perf_counter()
    create_tables(engine)
    store = SQLAlchemyJobStore(engine=engine)
    scheduler = AsyncIOScheduler(timezone=UTC)
    now = datetime.now(UTC)
    jobs: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    with engine.begin() as conn:
        for i in range(n):
            hour = (now.hour + 2 + i % 20) % 24
            trigger = CronTrigger(hour=hour, minute=i % 60, timezone=UTC)
            job = Job(
                scheduler,
                id=f"stored-{i}",
                func=noop_job,
                trigger=trigger,
                executor="default",
                args=(i, 0.0),
                kwargs={},
                name=f"stored {i}",
                misfire_grace_time=3600,
                coalesce=True,
                max_instances=1,
                next_run_time=trigger.get_next_fire_time(None, now),
            )
            jobs.append(
                {
                    "id": job.id,
                    "next_run_time": datetime_to_utc_timestamp(job.next_run_time),
                    "job_state": pickle.dumps(job.__getstate__(), store.pickle_protocol),
                }
            )
            rows.append(
                {
                    "id": job.id,
                    "user_id": user_id,
                    "name": job.name,
                    "schedule": f"daily {hour:02d}:{i % 60:02d}",
                    "created_at": time.time(),
                }
            )
            if len(jobs) >= batch:
                conn.execute(store.jobs_t.insert(), jobs)
                conn.execute(insert(BARE_TASKS), rows)
                jobs, rows = [], []
        if jobs:
            conn.execute(store.jobs_t.insert(), jobs)
            conn.execute(insert(BARE_TASKS), rows)
    return time.perf_counter() - t0


def page(engine: Engine, user_id: str, limit: int, offset: int) -> tuple[int, int]:
    """A plain-SQL listing page: the total, then one page by creation order."""
    with engine.connect() as conn:
        total = conn.execute(
            select(func.count()).select_from(BARE_TASKS).where(BARE_TASKS.c.user_id == user_id)
        ).scalar_one()
        rows = conn.execute(
            select(BARE_TASKS)
            .where(BARE_TASKS.c.user_id == user_id)
            .order_by(BARE_TASKS.c.created_at, BARE_TASKS.c.id)
            .limit(limit)
            .offset(offset)
        ).all()
    return int(total), len(rows)


async def startup_probe(url: str) -> dict[str, Any]:
    probe = LagProbe()
    probe.start()
    engine = sync_engine(url)
    scheduler = bare_scheduler(engine, 50)
    scheduler.start()
    ready = time.time()
    await asyncio.sleep(0.5)  # let the first wake-up (due-job query) run under the probe
    await probe.stop()
    scheduler.shutdown(wait=False)
    engine.dispose()
    lag = probe.summary()
    return {
        "event": "ready",
        "t": ready,
        "rss_mb": peak_rss_mb(),
        "lag_max_ms": lag["max_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="bare APScheduler start-up probe")
    parser.add_argument("--startup", metavar="URL", required=True, help="sync SQLAlchemy URL")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(startup_probe(args.startup))), flush=True)


if __name__ == "__main__":
    main()
