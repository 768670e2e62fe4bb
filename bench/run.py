"""Throughput benchmark: the service side by side with bare APScheduler 3.11.

Run from the repository root::

    .venv/bin/python -m bench.run --quick              # ~3 min: 2k stored, burst 1,000
                                                       # (PostgreSQL: 600 sleeping runs)
    .venv/bin/python -m bench.run                      # full: 100k stored, bursts 1k and 10k
    .venv/bin/python -m bench.run --stored 20000       # a reduced full run
    .venv/bin/python -m bench.run --quick --json out.json
    .venv/bin/python -m bench.run --profile-burst burst.txt    # pyinstrument, one 1,000 burst
                                                       # (the loop thread only; the runs'
                                                       # writes are in worker threads)
    .venv/bin/python -m bench.sqlite_burst --runs 1000 --reps 3     # the SQLite burst alone,
                                                       # service vs asyncio baseline, A/B
    PY_SPY=path/to/py-spy .venv/bin/python -m bench.burst_anatomy --spy b.raw
                                                       # statements, commits, thread hops
                                                       # per run; py-spy on every thread
    .venv/bin/python -m bench.run --reps 0 --stored 100 --no-pg        # the 10,000 burst alone
    .venv/bin/python -m bench.run ... --gc-freeze      # the service's bursts after gc.freeze()

Every measure runs the service and the baselines in the same process invocation,
interleaved (service, bare, service, bare, ...), ``--reps`` times (min/median/max).
The baselines (``bench/bare.py``) are an ``AsyncIOScheduler`` + ``SQLAlchemyJobStore`` on
the same kind of database, with either

* the asyncio baseline (the one the burst target is measured against): the default
  executor (``AsyncIOExecutor``), ``misfire_grace_time=None``, a coroutine job — a no-op,
  or one ``INSERT`` and a commit through one shared aiosqlite connection (PostgreSQL: an
  async ``postgresql+asyncpg`` engine); or
* the thread-pool baseline: a ``ThreadPoolExecutor`` with ``--concurrency`` threads (the
  service gets ``max_concurrent_tasks = --concurrency``), ``misfire_grace_time`` 3600 and
  sync jobs: a no-op, and one plain ``INSERT`` through a sync SQLAlchemy engine.

``python -m bench.sqlite_burst`` runs the SQLite burst alone, service and asyncio baseline
alternately.

Measures (each printed beside its issue-11 target):

* burst: ``--burst`` one-time tasks (a no-op async tool) due at the same whole second;
  due → last run started, due → last run recorded (service: its last notification, which
  is published after the run's outcome is committed; PostgreSQL: the last ``finished_at``;
  bare: the job's commit), process CPU per run (``time.process_time``, all threads, from
  0.3 s before the due instant to the last run), and the event-loop lag (a 10 ms sampler);
* fire delay p50/p99 with ``--stored`` tasks stored: ``--fire-tasks`` one-time tasks spread
  over a few seconds; ``started_at - fire_time`` of their runs (bare: job start − run time);
* create/get/update/delete per second, sequential, through ``scheduler_tool`` vs bare
  ``add_job``/``get_job``/``reschedule_job``/``remove_job`` plus one row written/read;
* ``get_tasks`` page latency (20 rows) for one user with ``--stored`` tasks: first page,
  offset ``stored // 2``, and the next page at that depth by ``cursor`` (the way the tool
  pages; bare: plain SQL count + page on an indexed table);
* start-up with ``--stored`` tasks: a subprocess from ``Popen`` to "service started"
  (``python -m bench.replica --exit-when-ready``), its peak RSS (VmHWM) and the longest
  event-loop stall from before the start to 0.5 s after it;
* PostgreSQL burst with 1 and 3 replica processes (``python -m bench.replica``) on a fresh
  database created for the run and dropped after; tasks are created by this process
  through a service with ``scheduler.enabled = false`` (it serves tool calls only). Twice:
  with the no-op tool (``--pg-runs``, ``--concurrency`` slots a replica), where each run
  is the scheduler's own CPU and the replicas share the host's cores (CPU-bound); and
  with a tool that awaits ``--tool-sleep`` s (``--pg-sleep-runs``, ``--sleep-concurrency``
  slots a replica), where one replica is bound by its slots, as with real tools that
  wait on an LLM or an API (slot-bound). Both report runs per replica; the sleeping one
  also the most runs one replica had in its tool at once (counted by the tool).

The stored tasks are created once through ``scheduler_tool`` (daily tasks, none due for
~2 h; the time it took is printed) and the SQLite file is copied for each measure; the
baseline's jobs are bulk-inserted the way ``SQLAlchemyJobStore`` stores them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import create_engine, delete, func, insert, select, update
from sqlalchemy.engine import make_url

from bench import bare
from bench.common import (
    LagProbe,
    NoopTool,
    SleepTool,
    call,
    daily_task,
    once_task,
    percentile,
    settings_for,
    spread,
)
from scheduler_service import SchedulerService
from scheduler_service.cli.commands import freeze_startup_heap
from scheduler_service.storage.models import TaskRun
from scheduler_service.tools import ToolContext, ToolError

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("PG_BENCH_URL", "postgresql://postgres@127.0.0.1:5432/test")
WARMUP = ToolContext(user_id="bench-warmup", conversation_id="bench-warmup")
PAGE = 20

log = logging.getLogger("bench.run")


# -- small helpers ---------------------------------------------------------------------
def sync_url(async_url: str) -> str:
    """The sync-driver URL of an async one (for plain reads of the service's tables)."""
    url = make_url(async_url)
    driver = {"sqlite+aiosqlite": "sqlite", "postgresql+asyncpg": "postgresql+psycopg"}
    return url.set(drivername=driver[url.drivername]).render_as_string(hide_password=False)


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def copy_sqlite(src: Path, dst: Path) -> Path:
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{src}{suffix}").exists():
            shutil.copyfile(f"{src}{suffix}", f"{dst}{suffix}")
    return dst


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def next_second(after_s: float) -> datetime:
    """A whole-second UTC instant at least ``after_s`` from now."""
    when = datetime.now(UTC) + timedelta(seconds=after_s)
    return when.replace(microsecond=0) + timedelta(seconds=1)


async def create_rate(service: SchedulerService, n: int = 20) -> float:
    """Tasks created per second (daily tasks of another user, never due in the bench)."""
    t0 = time.perf_counter()
    for i in range(n):
        await call(service, "create_task", daily_task(f"warmup {i}", far_hhmm(i)), WARMUP)
    return n / (time.perf_counter() - t0)


def far_hhmm(i: int) -> str:
    """A time of day 2–21 h from now: a daily task at it does not fire during a bench."""
    now = datetime.now(UTC)
    return f"{(now.hour + 2 + i % 20) % 24:02d}:{i % 60:02d}"


def read_burst(url: str, due: datetime) -> dict[str, Any]:
    """Plain reads of the run table: how many runs of fire time ``due`` finished, when."""
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            count, first_start, last_start, last_finish = conn.execute(
                select(
                    func.count(TaskRun.finished_at),
                    func.min(TaskRun.started_at),
                    func.max(TaskRun.started_at),
                    func.max(TaskRun.finished_at),
                ).where(TaskRun.fire_time == due)
            ).one()
            workers = conn.execute(
                select(TaskRun.worker, func.count())
                .where(TaskRun.fire_time == due)
                .group_by(TaskRun.worker)
            ).all()
    finally:
        engine.dispose()
    return {
        "finished": int(count),
        "first_start": first_start,
        "last_start": last_start,
        "last_finish": last_finish,
        "per_worker": sorted(int(n) for _w, n in workers),
    }


# -- bursts -----------------------------------------------------------------------------
async def project_burst(
    url: str,
    runs: int,
    concurrency: int,
    timeout: float,
    profiler: Any = None,
    margin: float = 1.3,
    freeze: bool = False,
) -> dict[str, Any]:
    """``freeze``: ``gc.collect(); gc.freeze()`` once the service has started, as
    ``task-scheduler run`` does (``cli.freeze_startup_heap``); undone at the end."""
    finished = 0
    all_done = asyncio.Event()
    last_notified = 0.0

    async def on_notification(_n: dict[str, Any]) -> None:
        nonlocal finished, last_notified
        finished += 1
        last_notified = time.time()
        if finished >= runs:
            all_done.set()

    result: dict[str, Any] = {"runs": runs}
    async with SchedulerService(
        settings_for(url, concurrency=concurrency), on_notification=on_notification
    ) as service:
        if freeze:
            freeze_startup_heap()
        service.tools.register(NoopTool())
        rate = await create_rate(service)
        due = next_second(runs / rate * margin + 1.0)
        t0 = time.perf_counter()
        try:
            for i in range(runs):
                await call(service, "create_task", once_task(f"burst {i}", due.isoformat()))
        except ToolError as exc:  # the due time passed while creating (a loaded host)
            return {**result, "error": f"creating {runs} tasks overran the due time: {exc}"}
        result["create_per_s"] = runs / (time.perf_counter() - t0)
        ahead = due.timestamp() - time.time()
        if ahead < 0.3:
            return {**result, "error": f"creating {runs} tasks overran the due time"}
        await asyncio.sleep(ahead - 0.3)
        probe = LagProbe()
        probe.start()
        cpu0 = time.process_time()
        if profiler is not None:
            profiler.start()
        try:
            await asyncio.wait_for(all_done.wait(), timeout)
        except TimeoutError:
            result["error"] = f"timed out after {timeout:.0f} s ({finished}/{runs} runs)"
        if profiler is not None:
            profiler.stop()
        cpu = time.process_time() - cpu0
        await probe.stop()
    if freeze:
        gc.unfreeze()
    rows = read_burst(url, due)
    due_ts = due.timestamp()
    return {
        **result,
        "recorded_s": last_notified - due_ts if finished >= runs else math.nan,
        "started_s": rows["last_start"].timestamp() - due_ts if rows["last_start"] else math.nan,
        "first_start_s": (
            rows["first_start"].timestamp() - due_ts if rows["first_start"] else math.nan
        ),
        "cpu_ms_per_run": cpu / max(finished, 1) * 1000,
        "lag": probe.summary(),
    }


BARE_JOBS: dict[str, Callable[[int, float], Any]] = {
    "noop": bare.noop_job,
    "row": bare.row_job,
    "async_noop": bare.async_noop_job,
    "async_row": bare.async_row_job,
    "async_engine_row": bare.async_row_job,
}


async def bare_burst(
    url: str,
    runs: int,
    concurrency: int,
    kind: str,
    timeout: float,
    margin: float = 1.4,
    profiler: Any = None,
) -> dict[str, Any]:
    """The baseline burst; ``url`` is a sync SQLAlchemy URL; ``kind`` 'noop' or 'row'
    (thread-pool baseline: sync jobs in ``concurrency`` threads), 'async_noop' or
    'async_row' (asyncio baseline: coroutine jobs on the loop, the default executor; the
    row through one aiosqlite connection, or asyncpg), 'async_engine_row' (the same, the
    row through an async SQLAlchemy engine with its default pool, also on SQLite)."""
    loop = asyncio.get_running_loop()
    all_done = asyncio.Event()
    engine = bare.sync_engine(url, pool_size=concurrency)
    bare.create_tables(engine)
    rows = None
    if kind in ("async_row", "async_engine_row"):
        rows = await bare.AsyncRows(url, engine=kind == "async_engine_row").open()
    bare.reset(runs, engine, lambda: loop.call_soon_threadsafe(all_done.set), rows)
    job = BARE_JOBS[kind]
    if kind.startswith("async_"):
        scheduler = bare.asyncio_scheduler(engine)
    else:
        scheduler = bare.bare_scheduler(engine, concurrency)
    scheduler.start(paused=True)
    result: dict[str, Any] = {"runs": runs, "kind": kind}
    try:
        t0 = time.perf_counter()
        for _ in range(20):  # the add rate, from jobs that never fire during the bench
            scheduler.add_job(
                job, "date", run_date=datetime.now(UTC) + timedelta(days=1), args=[-1, 0.0]
            )
        rate = 20 / (time.perf_counter() - t0)
        due = next_second(runs / rate * margin + 1.0)
        due_ts = due.timestamp()
        t0 = time.perf_counter()
        for i in range(runs):
            scheduler.add_job(job, "date", run_date=due, args=[i, due_ts], id=f"burst-{i}")
        result["create_per_s"] = runs / (time.perf_counter() - t0)
        scheduler.resume()
        ahead = due_ts - time.time()
        if ahead < 0.3:
            return {**result, "error": f"adding {runs} jobs overran the due time"}
        await asyncio.sleep(ahead - 0.3)
        probe = LagProbe()
        probe.start()
        cpu0 = time.process_time()
        if profiler is not None:
            profiler.start()
        try:
            await asyncio.wait_for(all_done.wait(), timeout)
        except TimeoutError:
            result["error"] = f"timed out after {timeout:.0f} s"
        if profiler is not None:
            profiler.stop()
        cpu = time.process_time() - cpu0
        await probe.stop()
    finally:
        if kind.startswith("async_"):
            scheduler.shutdown(False)  # on the loop: its tasks are the loop's
        else:
            await asyncio.to_thread(scheduler.shutdown, True)
        engine.dispose()
        if rows is not None:
            await rows.close()
    done = bare.results()
    return {
        **result,
        "recorded_s": max(f for _ft, _s, f in done) - due_ts if done else math.nan,
        "started_s": max(s for _ft, s, _f in done) - due_ts if done else math.nan,
        "first_start_s": min(s for _ft, s, _f in done) - due_ts if done else math.nan,
        "cpu_ms_per_run": cpu / max(len(done), 1) * 1000,
        "lag": probe.summary(),
    }


# -- stored tasks: fire delay, listing, start-up ----------------------------------------
async def build_stored(path: Path, n: int) -> dict[str, Any]:
    """``n`` daily tasks for one user, created through scheduler_tool (timed)."""
    async with SchedulerService(settings_for(sqlite_url(path))) as service:
        service.tools.register(NoopTool())
        t0 = time.perf_counter()
        for i in range(n):
            await call(service, "create_task", daily_task(f"stored {i}", far_hhmm(i)))
            if i and i % 10_000 == 0:
                say(f"  {i} stored tasks created ({i / (time.perf_counter() - t0):.0f}/s)")
        took = time.perf_counter() - t0
    return {"tasks": n, "seconds": took, "per_s": n / took}


async def timed(coro_factory: Callable[[], Coroutine[Any, Any, Any]], times: int) -> float:
    """Median seconds of ``times`` sequential calls."""
    samples = []
    for _ in range(times):
        t0 = time.perf_counter()
        await coro_factory()
        samples.append(time.perf_counter() - t0)
    return sorted(samples)[len(samples) // 2]


async def project_fire_delay(
    url: str, stored: int, tasks: int, window: float, timeout: float, margin: float = 1.3
) -> dict[str, Any]:
    got = 0
    all_done = asyncio.Event()

    async def on_notification(_n: dict[str, Any]) -> None:
        nonlocal got
        got += 1
        if got >= tasks:
            all_done.set()

    result: dict[str, Any] = {}
    async with SchedulerService(settings_for(url), on_notification=on_notification) as service:
        service.tools.register(NoopTool())
        first = await timed(lambda: call(service, "get_tasks", {"limit": PAGE}), 5)
        deep = await timed(
            lambda: call(service, "get_tasks", {"limit": PAGE, "offset": stored // 2}), 5
        )
        middle = await call(service, "get_tasks", {"limit": PAGE, "offset": stored // 2})
        cursor = middle.get("next_cursor")
        if cursor:  # the same depth reached the way the tool tells a model to page
            by_cursor = await timed(
                lambda: call(service, "get_tasks", {"limit": PAGE, "cursor": cursor}), 5
            )
            result["page_cursor_ms"] = by_cursor * 1000
        result.update(page_first_ms=first * 1000, page_deep_ms=deep * 1000)
        rate = await create_rate(service)
        start = datetime.now(UTC) + timedelta(seconds=tasks / rate * margin + 1.0)
        since = datetime.now(UTC)
        try:
            for i in range(tasks):
                when = start + timedelta(seconds=window * i / max(tasks - 1, 1))
                await call(service, "create_task", once_task(f"probe {i}", when.isoformat()))
        except ToolError:
            return {**result, "error": "creating the probe tasks overran their time"}
        if datetime.now(UTC) >= start:
            return {**result, "error": "creating the probe tasks overran their time"}
        try:
            await asyncio.wait_for(all_done.wait(), window + timeout)
        except TimeoutError:
            result["error"] = f"timed out ({got}/{tasks} runs)"
    engine = create_engine(sync_url(url))
    with engine.connect() as conn:
        rows = conn.execute(
            select(TaskRun.fire_time, TaskRun.started_at).where(
                TaskRun.started_at.is_not(None), TaskRun.queued_at >= since
            )
        ).all()
    engine.dispose()
    late = [(s - f).total_seconds() * 1000 for f, s in rows if s is not None]
    return {
        **result,
        "runs": len(late),
        "p50_ms": percentile(late, 50),
        "p99_ms": percentile(late, 99),
    }


async def bare_fire_delay(
    url: str, stored: int, tasks: int, window: float, timeout: float, asyncio_executor: bool = False
) -> dict[str, Any]:
    """The baseline's fire delay: a no-op job in the thread pool, or (``asyncio_executor``)
    a coroutine no-op job under the asyncio baseline."""
    loop = asyncio.get_running_loop()
    all_done = asyncio.Event()
    engine = bare.sync_engine(url)
    first = await timed(lambda: asyncio.to_thread(bare.page, engine, "bench", PAGE, 0), 5)
    deep = await timed(lambda: asyncio.to_thread(bare.page, engine, "bench", PAGE, stored // 2), 5)
    bare.reset(tasks, None, lambda: loop.call_soon_threadsafe(all_done.set))
    job = BARE_JOBS["async_noop" if asyncio_executor else "noop"]
    if asyncio_executor:
        scheduler = bare.asyncio_scheduler(engine)
    else:
        scheduler = bare.bare_scheduler(engine, 50)
    scheduler.start()
    result: dict[str, Any] = {"page_first_ms": first * 1000, "page_deep_ms": deep * 1000}
    try:
        start = datetime.now(UTC) + timedelta(seconds=tasks / 200 + 1.5)
        for i in range(tasks):
            when = start + timedelta(seconds=window * i / max(tasks - 1, 1))
            scheduler.add_job(job, "date", run_date=when, args=[i, when.timestamp()])
        try:
            await asyncio.wait_for(all_done.wait(), window + timeout)
        except TimeoutError:
            result["error"] = "timed out"
    finally:
        if asyncio_executor:
            scheduler.shutdown(False)
        else:
            await asyncio.to_thread(scheduler.shutdown, True)
        engine.dispose()
    late = [(s - ft) * 1000 for ft, s, _f in bare.results()]
    return {
        **result,
        "runs": len(late),
        "p50_ms": percentile(late, 50),
        "p99_ms": percentile(late, 99),
    }


async def read_json_line(
    proc: asyncio.subprocess.Process, event: str, timeout: float
) -> dict[str, Any]:
    """The next JSON line with this ``event`` on the subprocess's stdout."""
    assert proc.stdout is not None
    async with asyncio.timeout(timeout):
        while True:
            line = await proc.stdout.readline()
            if not line:
                raise RuntimeError(f"subprocess ended before {event!r}")
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if message.get("event") == event:
                    return message  # type: ignore[no-any-return]


async def spawn(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def end(proc: asyncio.subprocess.Process, grace: float = 30) -> None:
    """Stop a subprocess we started: SIGTERM, then SIGKILL after ``grace`` s."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def startup(args: list[str], timeout: float) -> dict[str, Any]:
    """Process start → ready line, in a subprocess; its peak RSS and loop stall."""
    t0 = time.time()
    proc = await spawn(*args)
    try:
        ready = await read_json_line(proc, "ready", timeout)
        await asyncio.wait_for(proc.wait(), timeout)
    except (TimeoutError, RuntimeError) as exc:
        return {"error": f"start-up probe failed: {exc!r}"}
    finally:
        await end(proc)
    return {"seconds": ready["t"] - t0, "rss_mb": ready["rss_mb"], "lag_ms": ready["lag_max_ms"]}


# -- create / get / update / delete ------------------------------------------------------
async def project_crud(url: str, ops: int) -> dict[str, float]:
    """Sequential create/get/update/delete per second. The quota is what the user needs
    (``ops`` tasks), not the never-binding one of the other measures: above 10,000 a
    create keeps its quota count off the event loop (``manager.SHORT_QUOTA_BOUND``), which
    costs a thread hop."""
    rates: dict[str, float] = {}
    async with SchedulerService(settings_for(url, max_tasks=ops + 10)) as service:
        service.tools.register(NoopTool())
        await create_rate(service, 5)  # warm-up
        ids: list[str] = []
        t0 = time.perf_counter()
        for i in range(ops):
            made = await call(service, "create_task", daily_task(f"crud {i}", far_hhmm(i)))
            ids.append(made["task"]["task_id"])
        rates["create"] = ops / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for task_id in ids:
            await call(service, "get_task", {"task_id": task_id})
        rates["get"] = ops / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i, task_id in enumerate(ids):
            await call(
                service, "update_task", {"task_id": task_id, "scheduled_time": far_hhmm(i + 7)}
            )
        rates["update"] = ops / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for task_id in ids:
            await call(service, "delete_task", {"task_id": task_id})
        rates["delete"] = ops / (time.perf_counter() - t0)
    return rates


def _cron(i: int) -> CronTrigger:
    hour, minute = far_hhmm(i).split(":")
    return CronTrigger(hour=int(hour), minute=int(minute), timezone=UTC)


def bare_crud(url: str, ops: int) -> dict[str, float]:
    """add_job + INSERT, get_job + SELECT, reschedule_job + UPDATE, remove_job + DELETE."""
    engine = bare.sync_engine(url)
    bare.create_tables(engine)
    scheduler = bare.bare_scheduler(engine, 50)
    rates: dict[str, float] = {}
    tasks = bare.BARE_TASKS
    scheduler.start(paused=True)  # (call inside a running loop) jobs are stored, never run
    try:
        ids = [f"crud-{i}" for i in range(ops)]
        t0 = time.perf_counter()
        for i, job_id in enumerate(ids):
            scheduler.add_job(bare.noop_job, _cron(i), args=[i, 0.0], id=job_id)
            with engine.begin() as conn:
                conn.execute(
                    insert(tasks).values(
                        id=job_id, user_id="crud", name=job_id, schedule="d", created_at=0.0
                    )
                )
        rates["create"] = ops / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for job_id in ids:
            scheduler.get_job(job_id)
            with engine.connect() as conn:
                conn.execute(select(tasks).where(tasks.c.id == job_id)).one()
        rates["get"] = ops / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i, job_id in enumerate(ids):
            scheduler.reschedule_job(job_id, trigger=_cron(i + 7))
            with engine.begin() as conn:
                conn.execute(update(tasks).where(tasks.c.id == job_id).values(schedule="e"))
        rates["update"] = ops / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for job_id in ids:
            scheduler.remove_job(job_id)
            with engine.begin() as conn:
                conn.execute(delete(tasks).where(tasks.c.id == job_id))
        rates["delete"] = ops / (time.perf_counter() - t0)
    finally:
        scheduler.shutdown(wait=False)
        engine.dispose()
    return rates


# -- PostgreSQL ---------------------------------------------------------------------------
@contextlib.contextmanager
def pg_database() -> Any:
    """A fresh PostgreSQL database (async URL), dropped afterwards."""
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def pg_burst(
    replicas: int,
    runs: int,
    concurrency: int,
    timeout: float,
    margin: float = 1.3,
    tool_sleep: float = 0.0,
) -> dict[str, Any]:
    """A burst of ``runs`` one-time tasks on ``replicas`` replica processes; with
    ``tool_sleep`` > 0 each run awaits that long in its tool (``SleepTool``)."""
    result: dict[str, Any] = {"runs": runs, "replicas": replicas, "tool_sleep": tool_sleep}
    tool = SleepTool.name if tool_sleep > 0 else NoopTool.name
    with pg_database() as url:
        procs: list[asyncio.subprocess.Process] = []
        try:
            for _ in range(replicas):
                procs.append(
                    await spawn(
                        "-m",
                        "bench.replica",
                        "--url",
                        url,
                        "--concurrency",
                        str(concurrency),
                        "--run-for",
                        str(timeout + 300),
                        "--tool-sleep",
                        str(tool_sleep),
                    )
                )
            readies = [await read_json_line(p, "ready", 120) for p in procs]
            result["leaders"] = sum(1 for r in readies if r["leader"])
            async with SchedulerService(
                settings_for(url, concurrency=concurrency, enabled=False)
            ) as service:  # serves tool calls only: the replicas run the tasks
                service.tools.register(NoopTool())
                service.tools.register(SleepTool(tool_sleep))
                rate = await create_rate(service)
                due = next_second(runs / rate * margin + 1.0)
                try:
                    for i in range(runs):
                        task = once_task(f"burst {i}", due.isoformat(), tool)
                        await call(service, "create_task", task)
                except ToolError:
                    return {**result, "error": "creating the tasks overran the due time"}
            ahead = due.timestamp() - time.time()
            if ahead < 0.3:
                return {**result, "error": "creating the tasks overran the due time"}
            await asyncio.sleep(ahead - 0.3)
            cpu0 = sum(cpu_seconds(p.pid) for p in procs)
            engine = create_engine(sync_url(url))
            deadline = time.monotonic() + timeout
            try:
                while time.monotonic() < deadline:
                    with engine.connect() as conn:
                        n = conn.execute(
                            select(func.count(TaskRun.finished_at)).where(TaskRun.fire_time == due)
                        ).scalar_one()
                    if n >= runs:
                        break
                    await asyncio.sleep(0.1)
                else:
                    result["error"] = f"timed out after {timeout:.0f} s"
            finally:
                engine.dispose()
            cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu0
        finally:
            for proc in procs:
                if proc.stdin is not None:
                    proc.stdin.close()
            peaks = await asyncio.gather(*(stopped_peak(p) for p in procs))
            await asyncio.gather(*(end(p) for p in procs))
        rows = read_burst(url, due)
    due_ts = due.timestamp()
    return {
        **result,
        "recorded_s": rows["last_finish"].timestamp() - due_ts if rows["last_finish"] else math.nan,
        "started_s": rows["last_start"].timestamp() - due_ts if rows["last_start"] else math.nan,
        "cpu_ms_per_run": cpu / max(rows["finished"], 1) * 1000,
        "per_worker": rows["per_worker"],
        "peak_at_once": max(peaks, default=0),
    }


async def stopped_peak(proc: asyncio.subprocess.Process) -> int:
    """The most runs the replica had in its ``sleep`` tool at once (its last line)."""
    try:
        return int((await read_json_line(proc, "stopped", 60)).get("peak_at_once", 0))
    except (TimeoutError, RuntimeError):
        return 0


async def bare_pg_burst(
    runs: int, concurrency: int, timeout: float, kind: str = "row"
) -> dict[str, Any]:
    """``kind`` 'row' (thread pool, psycopg) or 'async_row' (asyncio baseline, asyncpg)."""
    with pg_database() as url:
        return await bare_burst(sync_url(url), runs, concurrency, kind, timeout)


# -- the run ---------------------------------------------------------------------------------
@dataclass
class Results:
    data: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, key: str, value: Any) -> None:
        self.data.setdefault(key, []).append(value)
        if isinstance(value, dict) and value.get("error"):
            say(f"  {key}: {value['error']}")

    def values(self, key: str, path: str) -> list[float]:
        out = []
        for item in self.data.get(key, []):
            value: Any = item
            for part in path.split("."):
                value = value.get(part, math.nan) if isinstance(value, dict) else math.nan
            out.append(float(value))
        return out


async def retried(
    make: Callable[[int, float], Coroutine[Any, Any, dict[str, Any]]],
    margin: float = 1.3,
    attempts: int = 3,
) -> dict[str, Any]:
    """``make(attempt, margin)``; again with twice the margin, up to ``attempts`` times in
    all, when creating the tasks took longer than the rate measured just before promised
    (a loaded host: at load 8-10 on 2 cores, 1,000 creates ran at half the rate of the
    20 that measured it)."""
    result = await make(0, margin)
    for attempt in range(1, attempts):
        if "overran" not in str(result.get("error", "")):
            break
        margin *= 2
        say(f"  the due time passed while creating the tasks: again, margin {margin:g}")
        result = await make(attempt, margin)
    return result


async def run_all(args: argparse.Namespace, work: Path) -> Results:
    res = Results()
    timeout = args.timeout
    # Stored tasks (once), then each measure interleaved, --reps times.
    stored_db = work / "stored.db"
    say(f"creating {args.stored} stored tasks through scheduler_tool …")
    res.add("stored_create", await build_stored(stored_db, args.stored))
    say(f"  took {res.data['stored_create'][0]['seconds']:.1f} s")
    bare_stored = work / "bare_stored.db"
    took = bare.bulk_store(bare.sync_engine(f"sqlite:///{bare_stored}"), args.stored)
    res.add("bare_stored_create", {"seconds": took})
    Attempt = Callable[[int, float], Coroutine[Any, Any, dict[str, Any]]]

    def burst_attempt(rep: int) -> Attempt:
        return lambda k, m: project_burst(
            sqlite_url(work / f"burst-{rep}-{k}.db"),
            args.burst,
            args.concurrency,
            timeout,
            margin=m,
            freeze=args.gc_freeze,
        )

    def fire_attempt(rep: int) -> Attempt:
        return lambda k, m: project_fire_delay(
            sqlite_url(copy_sqlite(stored_db, work / f"fire-{rep}-{k}.db")),
            args.stored,
            args.fire_tasks,
            args.fire_window,
            timeout,
            margin=m,
        )

    def sleep_attempt(replicas: int) -> Attempt:
        return lambda _k, m: pg_burst(
            replicas,
            args.pg_sleep_runs,
            args.sleep_concurrency,
            timeout,
            m,
            tool_sleep=args.tool_sleep,
        )

    for rep in range(args.reps):
        say(f"rep {rep + 1}/{args.reps}: burst {args.burst}")
        res.add(
            "burst",
            await retried(burst_attempt(rep)),
        )
        res.add(
            "bare_burst_noop",
            await bare_burst(
                f"sqlite:///{work / f'bn-{rep}.db'}", args.burst, args.concurrency, "noop", timeout
            ),
        )
        res.add(
            "bare_burst_row",
            await bare_burst(
                f"sqlite:///{work / f'br-{rep}.db'}", args.burst, args.concurrency, "row", timeout
            ),
        )
        for kind in ("async_row", "async_noop"):
            res.add(
                f"bare_burst_{kind}",
                await bare_burst(
                    f"sqlite:///{work / f'b{kind}-{rep}.db'}",
                    args.burst,
                    args.concurrency,
                    kind,
                    timeout,
                ),
            )
        if rep < args.fire_reps:
            say(f"rep {rep + 1}: fire delay and listing with {args.stored} stored")
            res.add(
                "fire",
                await retried(
                    fire_attempt(rep),
                    2.0,
                ),
            )
            bare_copy = copy_sqlite(bare_stored, work / f"bare-fire-{rep}.db")
            res.add(
                "bare_fire",
                await bare_fire_delay(
                    f"sqlite:///{bare_copy}", args.stored, args.fire_tasks, args.fire_window, 60
                ),
            )
            bare_copy = copy_sqlite(bare_stored, work / f"bare-fire-async-{rep}.db")
            res.add(
                "bare_fire_async",
                await bare_fire_delay(
                    f"sqlite:///{bare_copy}",
                    args.stored,
                    args.fire_tasks,
                    args.fire_window,
                    60,
                    asyncio_executor=True,
                ),
            )
        say(f"rep {rep + 1}: create/get/update/delete ×{args.crud}")
        res.add("crud", await project_crud(sqlite_url(work / f"crud-{rep}.db"), args.crud))
        res.add("bare_crud", bare_crud(f"sqlite:///{work / f'bare-crud-{rep}.db'}", args.crud))
        say(f"rep {rep + 1}: start-up with {args.stored} stored")
        res.add(
            "startup",
            await startup(
                ["-m", "bench.replica", "--url", sqlite_url(stored_db), "--exit-when-ready"], 300
            ),
        )
        res.add(
            "bare_startup",
            await startup(["-m", "bench.bare", "--startup", f"sqlite:///{bare_stored}"], 300),
        )
    if args.big_burst:
        say(f"burst {args.big_burst} (once each)")
        res.add(
            "big_burst",
            await retried(
                lambda k, m: project_burst(
                    sqlite_url(work / f"big-{k}.db"),
                    args.big_burst,
                    args.concurrency,
                    timeout * 5,
                    margin=m,
                    freeze=args.gc_freeze,
                ),
                2.0,
            ),
        )
        res.add(
            "bare_big_burst_row",
            await bare_burst(
                f"sqlite:///{work / 'bare-big.db'}",
                args.big_burst,
                args.concurrency,
                "row",
                timeout * 5,
            ),
        )
        res.add(
            "bare_big_burst_async_row",
            await bare_burst(
                f"sqlite:///{work / 'bare-big-async.db'}",
                args.big_burst,
                args.concurrency,
                "async_row",
                timeout * 5,
            ),
        )
    if not args.no_pg:
        for rep in range(args.pg_reps):
            say(f"PostgreSQL rep {rep + 1}/{args.pg_reps}: burst {args.pg_runs}, 1 and 3 replicas")
            res.add(
                "pg_1",
                await retried(
                    lambda _k, m: pg_burst(1, args.pg_runs, args.concurrency, timeout, m)
                ),
            )
            res.add("bare_pg", await bare_pg_burst(args.pg_runs, args.concurrency, timeout))
            res.add(
                "bare_pg_async",
                await bare_pg_burst(args.pg_runs, args.concurrency, timeout, "async_row"),
            )
            res.add(
                "pg_3",
                await retried(
                    lambda _k, m: pg_burst(3, args.pg_runs, args.concurrency, timeout, m)
                ),
            )
            if args.tool_sleep > 0:
                say(
                    f"PostgreSQL rep {rep + 1}/{args.pg_reps}: burst {args.pg_sleep_runs}, "
                    f"tool sleeps {args.tool_sleep} s, {args.sleep_concurrency} slots a "
                    "replica, 1 and 3 replicas"
                )
                for replicas in (1, 3):
                    res.add(f"pg_sleep_{replicas}", await retried(sleep_attempt(replicas)))
    return res


# -- the table ---------------------------------------------------------------------------------
def fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "—"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "ms":
        return f"{value:.1f} ms" if value < 100 else f"{value:.0f} ms"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "MB":
        return f"{value:.0f} MB"
    if unit == "runs":
        return f"{value:.0f}"
    return f"{value:.2f}{unit}"


def cell(values: list[float], unit: str) -> str:
    s = spread(values)
    if not s["n"]:
        return "—"
    if s["n"] == 1:
        return fmt(s["median"], unit)
    return f"{fmt(s['median'], unit)} ({fmt(s['min'], unit)}–{fmt(s['max'], unit)})"


def table(res: Results, args: argparse.Namespace) -> tuple[list[list[str]], list[dict[str, Any]]]:
    rows: list[list[str]] = []
    records: list[dict[str, Any]] = []

    def row(
        measure: str,
        target: str,
        mine: list[float],
        unit: str,
        base: list[float] | None = None,
        base_label: str = "",
        check: Callable[[float, float], bool] | None = None,
    ) -> None:
        m = spread(mine)["median"]
        b = spread(base)["median"] if base else math.nan
        ratio = m / b if base and b and not math.isnan(b) and not math.isnan(m) else math.nan
        met = "—"
        if check is not None and not math.isnan(m):
            met = "yes" if check(m, ratio) else "no"
        rows.append(
            [
                measure,
                target,
                cell(mine, unit),
                (cell(base, unit) + (f" {base_label}" if base_label else "")) if base else "—",
                "—" if math.isnan(ratio) else f"{ratio:.2f}×",
                met,
            ]
        )
        records.append(
            {
                "measure": measure,
                "target": target,
                "project": spread(mine),
                "bare": spread(base) if base else None,
                "ratio": ratio,
                "met": met,
            }
        )

    n = f"{args.burst:,}"
    burst = res.values("burst", "recorded_s")
    started = res.values("burst", "started_s")
    cpu = res.values("burst", "cpu_ms_per_run")
    lag = res.values("burst", "lag.max_ms")
    row(
        f"burst {n} → last run recorded",
        "≤ 1.5× bare asyncio (row)",
        burst,
        "s",
        res.values("bare_burst_async_row", "recorded_s"),
        "(asyncio, row)",
        lambda m, r: r <= 1.5,
    )
    row(
        f"burst {n} → last run recorded",
        "(vs thread-pool row job)",
        burst,
        "s",
        res.values("bare_burst_row", "recorded_s"),
        "(threads, row)",
    )
    row(
        f"burst {n} → last run recorded",
        "(vs asyncio no-op job)",
        burst,
        "s",
        res.values("bare_burst_async_noop", "recorded_s"),
        "(asyncio, no-op)",
    )
    row(
        f"burst {n} → last run recorded",
        "(vs thread-pool no-op job)",
        burst,
        "s",
        res.values("bare_burst_noop", "recorded_s"),
        "(threads, no-op)",
    )
    for key, label in (
        ("bare_burst_async_row", "(asyncio, row)"),
        ("bare_burst_row", "(threads, row)"),
    ):
        row(f"burst {n} → last run started", "—", started, "s", res.values(key, "started_s"), label)
    for key, label in (
        ("bare_burst_async_row", "(asyncio, row)"),
        ("bare_burst_row", "(threads, row)"),
    ):
        row(
            f"burst {n} → first run started",
            "—",
            res.values("burst", "first_start_s"),
            "s",
            res.values(key, "first_start_s"),
            label,
        )
    row(
        "CPU per run (process, all threads)",
        "≤ 2 ms",
        cpu,
        "ms",
        res.values("bare_burst_async_row", "cpu_ms_per_run"),
        "(asyncio, row)",
        lambda m, r: m <= 2,
    )
    row(
        "CPU per run (process, all threads)",
        "—",
        cpu,
        "ms",
        res.values("bare_burst_row", "cpu_ms_per_run"),
        "(threads, row)",
    )
    for key, label in (
        ("bare_burst_async_row", "(asyncio, row)"),
        ("bare_burst_row", "(threads, row)"),
    ):
        row(
            f"event-loop lag max, burst {n}",
            "≤ 100 ms",
            lag,
            "ms",
            res.values(key, "lag.max_ms"),
            label,
            lambda m, r: m <= 100,
        )
        row(
            "  … outside gen-2 GC pauses",
            "—",
            res.values("burst", "lag.max_no_gc_ms"),
            "ms",
            res.values(key, "lag.max_no_gc_ms"),
            label,
        )
    if args.big_burst:
        big = f"{args.big_burst:,}"
        row(
            f"burst {big} → last run started",
            "≤ 10 s",
            res.values("big_burst", "started_s"),
            "s",
            res.values("bare_big_burst_row", "started_s"),
            "(threads, row)",
            lambda m, r: m <= 10,
        )
        row(
            f"burst {big} → last run recorded",
            "—",
            res.values("big_burst", "recorded_s"),
            "s",
            res.values("bare_big_burst_row", "recorded_s"),
            "(threads, row)",
        )
        row(
            f"burst {big} → last run recorded",
            "—",
            res.values("big_burst", "recorded_s"),
            "s",
            res.values("bare_big_burst_async_row", "recorded_s"),
            "(asyncio, row)",
        )
        row(
            f"event-loop lag max, burst {big}",
            "≤ 100 ms",
            res.values("big_burst", "lag.max_ms"),
            "ms",
            res.values("bare_big_burst_row", "lag.max_ms"),
            "(threads, row)",
            lambda m, r: m <= 100,
        )
    s = f"{args.stored:,} stored"
    row(
        f"fire delay p50, {s}",
        "—",
        res.values("fire", "p50_ms"),
        "ms",
        res.values("bare_fire", "p50_ms"),
        "(threads, no record)",
    )
    row(
        f"fire delay p99, {s}",
        "≤ 20 ms",
        res.values("fire", "p99_ms"),
        "ms",
        res.values("bare_fire", "p99_ms"),
        "(threads, no record)",
        lambda m, r: m <= 20,
    )
    row(
        f"fire delay p50, {s}",
        "—",
        res.values("fire", "p50_ms"),
        "ms",
        res.values("bare_fire_async", "p50_ms"),
        "(asyncio, no record)",
    )
    row(
        f"fire delay p99, {s}",
        "—",
        res.values("fire", "p99_ms"),
        "ms",
        res.values("bare_fire_async", "p99_ms"),
        "(asyncio, no record)",
    )
    for op in ("create", "get", "update", "delete"):
        target = "≥ bare and ≥ 1,000/s" if op == "create" else "—"
        check = (lambda m, r: r >= 1 and m >= 1000) if op == "create" else None
        row(
            f"{op}_task, sequential",
            target,
            res.values("crud", op),
            "/s",
            res.values("bare_crud", op),
            "(+ row)",
            check,
        )
    row(
        f"get_tasks first page, {s}",
        "≤ 10 ms",
        res.values("fire", "page_first_ms"),
        "ms",
        res.values("bare_fire", "page_first_ms"),
        "(SQL)",
        lambda m, r: m <= 10,
    )
    row(
        f"get_tasks offset {args.stored // 2:,}, {s}",
        "— (offset: compatibility)",
        res.values("fire", "page_deep_ms"),
        "ms",
        res.values("bare_fire", "page_deep_ms"),
        "(SQL)",
        None,
    )
    row(
        f"get_tasks by cursor at depth {args.stored // 2:,}, {s}",
        "≤ 10 ms",
        res.values("fire", "page_cursor_ms"),
        "ms",
        res.values("bare_fire", "page_deep_ms"),
        "(SQL offset)",
        lambda m, r: m <= 10,
    )
    row(
        f"start-up (process → ready), {s}",
        "≤ 2 s",
        res.values("startup", "seconds"),
        "s",
        res.values("bare_startup", "seconds"),
        "",
        lambda m, r: m <= 2,
    )
    row(
        f"peak RSS at ready, {s}",
        "≤ 200 MB",
        res.values("startup", "rss_mb"),
        "MB",
        res.values("bare_startup", "rss_mb"),
        "",
        lambda m, r: m <= 200,
    )
    row(
        "event loop blocked during start-up",
        "≤ 100 ms",
        res.values("startup", "lag_ms"),
        "ms",
        res.values("bare_startup", "lag_ms"),
        "",
        lambda m, r: m <= 100,
    )

    def speedup_rows(one_key: str, three_key: str, label: str, target: str | None) -> None:
        """1 → 3 replicas: the ratio of the median bursts (checked against 2.5× where
        ``target`` is given), and runs per replica."""
        one = spread(res.values(one_key, "recorded_s"))["median"]
        three = spread(res.values(three_key, "recorded_s"))["median"]
        speedup = one / three if three and not math.isnan(three) else math.nan
        rows.append(
            [
                f"PostgreSQL speed-up 1 → 3 replicas, {label}",
                target or "— (see docs/performance.md)",
                "—" if math.isnan(speedup) else f"{speedup:.2f}×",
                "—",
                "—",
                "—" if math.isnan(speedup) or not target else ("yes" if speedup >= 2.5 else "no"),
            ]
        )
        records.append({"measure": f"pg speed-up 1→3, {label}", "project": speedup})
        shares = []
        for item in res.data.get(three_key, []):
            per = list(item.get("per_worker", []))
            per = sorted(per + [0] * (item["replicas"] - len(per)), reverse=True)
            shares.append("/".join(str(n) for n in per))
        per_replica = "; ".join(shares) or "—"
        measure = f"PostgreSQL 3 replicas, {label}: runs per replica"
        rows.append([measure, "spread", per_replica, "—", "—", "—"])

    if not args.no_pg:
        p = f"{args.pg_runs:,}"
        row(
            f"PostgreSQL burst {p}, no-op tool (CPU-bound), 1 replica → recorded",
            "—",
            res.values("pg_1", "recorded_s"),
            "s",
            res.values("bare_pg", "recorded_s"),
            "(threads, row)",
        )
        row(
            f"PostgreSQL burst {p}, no-op tool (CPU-bound), 1 replica → recorded",
            "—",
            res.values("pg_1", "recorded_s"),
            "s",
            res.values("bare_pg_async", "recorded_s"),
            "(asyncio, row)",
        )
        row(
            f"PostgreSQL burst {p}, no-op tool (CPU-bound), 3 replicas → recorded",
            "—",
            res.values("pg_3", "recorded_s"),
            "s",
            res.values("bare_pg", "recorded_s"),
            "(threads, row)",
        )
        speedup_rows("pg_1", "pg_3", "no-op (CPU-bound)", None)
        if args.tool_sleep > 0:
            q = f"{args.pg_sleep_runs:,}"
            how = f"tool {args.tool_sleep:g} s, {args.sleep_concurrency} slots"
            row(
                f"PostgreSQL burst {q}, {how} (slot-bound), 1 replica → recorded",
                f"≈ {args.pg_sleep_runs * args.tool_sleep / args.sleep_concurrency:.0f} s (slots)",
                res.values("pg_sleep_1", "recorded_s"),
                "s",
            )
            row(
                f"PostgreSQL burst {q}, {how} (slot-bound), 3 replicas → recorded",
                "—",
                res.values("pg_sleep_3", "recorded_s"),
                "s",
            )
            speedup_rows("pg_sleep_1", "pg_sleep_3", "slot-bound", "≥ 2.5× (3,000 runs)")
            peaks = [
                item.get("peak_at_once", math.nan)
                for key in ("pg_sleep_1", "pg_sleep_3")
                for item in res.data.get(key, [])
            ]
            row(
                "PostgreSQL slot-bound: most runs in one replica's tool at once",
                f"≤ {args.sleep_concurrency}",
                [float(p) for p in peaks],
                "runs",
                check=lambda m, r: max(peaks, default=0) <= args.sleep_concurrency,
            )
        row(
            "PostgreSQL CPU per run (replicas)",
            "≤ 2 ms",
            res.values("pg_1", "cpu_ms_per_run"),
            "ms",
            res.values("bare_pg", "cpu_ms_per_run"),
            "(threads, row)",
            lambda m, r: m <= 2,
        )
        row(
            "PostgreSQL CPU per run (replicas)",
            "—",
            res.values("pg_1", "cpu_ms_per_run"),
            "ms",
            res.values("bare_pg_async", "cpu_ms_per_run"),
            "(asyncio, row)",
        )
    return rows, records


def render(rows: list[list[str]]) -> str:
    head = ["measure", "target", "this project", "bare APScheduler", "ratio", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    mem_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    load = os.getloadavg()
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "commit": commit,
        "load": [round(x, 2) for x in load],
    }


async def profile_burst(args: argparse.Namespace, work: Path, out: Path) -> None:
    """One burst under pyinstrument (main thread, stacks as they run, 1 ms samples)."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        raise SystemExit("--profile-burst needs pyinstrument (pip install -e '.[dev]')") from None
    profiler = Profiler(interval=0.001, async_mode="disabled")
    result = await project_burst(
        sqlite_url(work / "profile.db"), args.burst, args.concurrency, args.timeout, profiler
    )
    await asyncio.to_thread(out.write_text, profiler.output_text(unicode=True, show_all=False))
    say(f"burst {args.burst}: recorded {result.get('recorded_s', math.nan):.2f} s; profile {out}")
    for line in hot_spots(profiler):
        print(line)


def hot_spots(profiler: Any, top: int = 10) -> list[str]:
    """The project's own frames by inclusive time (each counted once per stack), and the
    frames with the most self time, as shares of the main thread's samples."""
    root = profiler.last_session.root_frame()
    total = root.time or 1.0
    inclusive: dict[str, float] = {}
    self_time: dict[str, float] = {}

    def walk(frame: Any, on_path: frozenset[str], parent: str) -> None:
        if frame.is_synthetic:  # "[self]" and the like: time spent in the parent itself
            self_time[parent] = self_time.get(parent, 0.0) + frame.time
            return
        key = f"{frame.file_path_short or frame.file_path}:{frame.line_no} {frame.function}"
        if not frame.children:
            self_time[key] = self_time.get(key, 0.0) + frame.time
        own = "/scheduler_service/" in (frame.file_path or "")
        if own and key not in on_path:
            inclusive[key] = inclusive.get(key, 0.0) + frame.time
        for child in frame.children:
            walk(child, on_path | {key}, key)

    walk(root, frozenset(), "")
    lines = [f"main thread: {total:.2f} s sampled; the project's frames by inclusive time:"]
    for key, t in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {t / total * 100:5.1f}%  {t:6.2f} s  {key}")
    lines.append("frames by self time (any code):")
    for key, t in sorted(self_time.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"  {t / total * 100:5.1f}%  {t:6.2f} s  {key}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="~3 min: see the defaults below")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--stored", type=int, help="tasks stored (default 100k; --quick 2k)")
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--big-burst", type=int, help="default 10,000; --quick: none")
    parser.add_argument("--concurrency", type=int, default=50, help="max_concurrent_tasks")
    parser.add_argument("--fire-tasks", type=int, help="probe tasks (default 300; --quick 100)")
    parser.add_argument("--fire-window", type=float, default=5.0, help="seconds they span")
    parser.add_argument("--fire-reps", type=int, help="reps of the fire delay (quick: 1)")
    parser.add_argument("--crud", type=int, help="ops of each kind (default 500; --quick 100)")
    parser.add_argument("--pg-runs", type=int, default=1000)
    parser.add_argument("--pg-reps", type=int, help="default 3; --quick 1")
    parser.add_argument(
        "--pg-sleep-runs", type=int, help="runs of the slot-bound burst (3,000; --quick 600)"
    )
    parser.add_argument(
        "--tool-sleep", type=float, default=0.1, help="s each slot-bound run awaits; 0: none"
    )
    parser.add_argument(
        "--sleep-concurrency", type=int, default=10, help="max_concurrent_tasks, slot-bound"
    )
    parser.add_argument("--no-pg", action="store_true", help="skip PostgreSQL")
    parser.add_argument(
        "--gc-freeze",
        action="store_true",
        help="the service's bursts after gc.freeze() (as the CLI)",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="bound on each burst, s")
    parser.add_argument("--json", type=Path, help="write every raw result here")
    parser.add_argument("--profile-burst", type=Path, metavar="PATH", help="profile one burst")
    args = parser.parse_args()
    quick = args.quick
    args.stored = args.stored or (2_000 if quick else 100_000)
    args.big_burst = args.big_burst if args.big_burst is not None else (0 if quick else 10_000)
    args.fire_tasks = args.fire_tasks or (100 if quick else 300)
    args.fire_reps = args.fire_reps if args.fire_reps is not None else (1 if quick else args.reps)
    args.crud = args.crud or (100 if quick else 500)
    args.pg_reps = args.pg_reps if args.pg_reps is not None else (1 if quick else args.reps)
    args.pg_sleep_runs = args.pg_sleep_runs or (600 if quick else 3_000)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    info = machine()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-run-") as tmp:
        if args.profile_burst:
            asyncio.run(profile_burst(args, Path(tmp), args.profile_burst))
            return
        res = asyncio.run(run_all(args, Path(tmp)))
    info["load_after"] = [round(x, 2) for x in os.getloadavg()]
    rows, records = table(res, args)
    took = time.perf_counter() - t0
    print()
    print(
        f"commit {info['commit']}, {info['nproc']} CPUs, {info['memory_gb']} GB, "
        f"CPython {info['python']}; load average {info['load']} before, "
        f"{info['load_after']} after; {took:.0f} s"
    )
    print(
        f"max_concurrent_tasks = bare thread pool = {args.concurrency}; reps {args.reps} "
        f"(median (min–max)); {args.stored:,} stored tasks created through scheduler_tool in "
        f"{res.data['stored_create'][0]['seconds']:.1f} s "
        f"({res.data['stored_create'][0]['per_s']:.0f}/s); bare bulk insert "
        f"{res.data['bare_stored_create'][0]['seconds']:.1f} s"
    )
    print(render(rows))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": info, "args": vars(args), "table": records, "raw": res.data},
                default=str,
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
