"""Fire delay and get_tasks pages with many tasks stored, without the full bench's build.

``python -m bench.stored_quick --stored 100000 [--no-check]``

The full bench (``bench.run``) creates its stored tasks through ``scheduler_tool``, which
takes ~13 minutes at 100k. For quick experiments this script creates one daily task
through the tool and copies its task row and its job (re-pickled with each new id) in
SQL — the rows a create would write, in seconds. It then starts a service on the file,
creates 100 one-time probe tasks due over 5 s (4 s ahead), and prints their fire delay
(``started_at − fire_time``) p50/p99 and the ``get_tasks`` first page and a page by
cursor at half depth (median of 5). ``--no-check`` turns off the leader's background
trigger check, to see what it costs.
"""

from __future__ import annotations

import argparse
import asyncio
import pickle
import sqlite3
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select

from bench.common import BENCH_USER, NoopTool, call, daily_task, once_task, percentile, settings_for
from scheduler_service import SchedulerService
from scheduler_service.storage import names
from scheduler_service.storage.models import TaskRun

PROBES = 100
WINDOW_S = 5.0
AHEAD_S = 4.0


async def build(path: Path, n: int) -> None:
    async with SchedulerService(settings_for(f"sqlite+aiosqlite:///{path}")) as service:
        service.tools.register(NoopTool())
        await call(service, "create_task", daily_task("template", "23:59"))
    db = sqlite3.connect(path)
    columns = [row[1] for row in db.execute(f"pragma table_info({names.TASKS})")]
    task = dict(zip(columns, db.execute(f"select * from {names.TASKS}").fetchone(), strict=True))
    next_run, state = db.execute(f"select next_run_time, job_state from {names.JOBS}").fetchone()
    job = pickle.loads(state)
    tasks, jobs = [], []
    for i in range(n):
        task_id = f"task_{uuid.uuid4().hex[:16]}"
        tasks.append(tuple({**task, "id": task_id, "name": f"stored {i}"}[c] for c in columns))
        copy = {**job, "id": task_id, "name": task_id, "args": (task_id,)}
        jobs.append((task_id, next_run, pickle.dumps(copy, pickle.HIGHEST_PROTOCOL)))
    marks = ",".join("?" * len(columns))
    db.executemany(f"insert into {names.TASKS} values ({marks})", tasks)
    db.executemany(f"insert into {names.JOBS} values (?, ?, ?)", jobs)
    db.commit()
    db.close()


async def median_ms(service: SchedulerService, kwargs: dict[str, Any]) -> float:
    samples = []
    for _ in range(5):
        t0 = time.perf_counter()
        await call(service, "get_tasks", kwargs)
        samples.append((time.perf_counter() - t0) * 1000)
    return sorted(samples)[2]


async def probe(path: Path, stored: int, check: bool) -> dict[str, float]:
    service = SchedulerService(settings_for(f"sqlite+aiosqlite:///{path}"))
    if not check:
        service.lead._check_triggers = _nothing  # type: ignore[method-assign]
    service.tools.register(NoopTool())
    async with service:
        first = await median_ms(service, {"limit": 20})
        middle = await call(service, "get_tasks", {"limit": 20, "offset": stored // 2})
        deep = await median_ms(service, {"limit": 20, "cursor": middle["next_cursor"]})
        start = datetime.now(UTC) + timedelta(seconds=AHEAD_S)
        since = datetime.now(UTC)
        for i in range(PROBES):
            when = start + timedelta(seconds=WINDOW_S * i / (PROBES - 1))
            await call(
                service, "create_task", once_task(f"probe {i}", when.isoformat()), BENCH_USER
            )
        await asyncio.sleep((start - datetime.now(UTC)).total_seconds() + WINDOW_S + 1)
    engine = create_engine(f"sqlite:///{path}")
    with engine.connect() as conn:
        rows = conn.execute(
            select(TaskRun.fire_time, TaskRun.started_at).where(TaskRun.queued_at >= since)
        ).all()
    engine.dispose()
    late = [(s - f).total_seconds() * 1000 for f, s in rows if s is not None]
    return {
        "runs": len(late),
        "p50_ms": percentile(late, 50),
        "p99_ms": percentile(late, 99),
        "page_first_ms": first,
        "page_cursor_ms": deep,
    }


async def _nothing() -> None:
    """Stands in for the background trigger check (``--no-check``)."""


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stored", type=int, default=100_000)
    parser.add_argument("--no-check", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "stored.db"
        t0 = time.perf_counter()
        await build(path, args.stored)
        print(f"{args.stored} stored tasks copied in {time.perf_counter() - t0:.1f} s")
        result = await probe(path, args.stored, check=not args.no_check)
        print(
            f"fire delay p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms "
            f"({result['runs']} runs); get_tasks first page {result['page_first_ms']:.1f} ms, "
            f"by cursor at depth {args.stored // 2:,} {result['page_cursor_ms']:.1f} ms"
        )


if __name__ == "__main__":
    asyncio.run(main())
