"""Several processes × random create / update / pause / resume / cancel / delete /
execute_task_now on shared tasks, while the tasks fire every second or two (both
backends). Afterwards, with every process stopped:

* the store's invariants hold (``task-scheduler check``: each live task has one job in its
  state, no job without a task, no fire time with two outcomes, no stranded run);
* every tool effect is accounted for by exactly one run, and every succeeded run by one
  effect (effects of deleted tasks aside: their runs went with them);
* every answer was a result or a ToolError of an expected code.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from scheduler_service import SchedulerService
from scheduler_service.runs.invariants import check_store
from scheduler_service.storage.models import ScheduledTask, TaskRun
from tests.conftest import make_settings
from tests.workers import Worker

pytestmark = pytest.mark.processes

PROCESSES = 3
SECONDS = float(os.environ.get("CHAOS_SECONDS", "20"))
ENV = {
    "SCHEDULER__LOG_LEVEL": "WARNING",
    "SCHEDULER__MIN_INTERVAL": "1",
    "SCHEDULER__CHECK_INTERVAL": "2",
    "SCHEDULER__SHUTDOWN_GRACE": "2",
    "SCHEDULER__MAX_RETRIES": "0",
    "SCHEDULER_TOOL__MAX_TASKS_PER_USER": "12",
}


def utc(value: str | datetime) -> datetime:
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


async def test_random_calls_from_several_processes_keep_every_promise(
    database_url: str, tmp_path: Path
) -> None:
    side = tmp_path / "effects.jsonl"
    workers = [
        await Worker.spawn(
            "tests.chaos_worker", database_url, str(side), str(seed), str(SECONDS), env=ENV
        )
        for seed in range(PROCESSES)
    ]
    try:
        for worker in workers:
            await worker.event("ready", timeout=60)
        results = [await w.event("done", timeout=SECONDS + 90) for w in workers]
    finally:
        await asyncio.gather(*(w.stop() for w in workers))

    unexpected = [u for r in results for u in r["unexpected"]]
    assert not unexpected, unexpected[:10]
    answers: Counter[str] = Counter()
    for result in results:
        answers.update(result["answers"])
    assert answers["create_task ok"] and answers["execute_task_now ok"], answers

    checker = SchedulerService(make_settings(database_url), role="client")
    await checker.start()
    try:
        report = await check_store(checker.db, checker.jobs, checker.leadership.is_alive)
        assert report.ok, report.problems
        async with checker.db.read() as session:
            tasks = set((await session.scalars(select(ScheduledTask.id))).all())
            runs = (await session.execute(select(TaskRun))).scalars().all()
    finally:
        await checker.stop()

    effects = [json.loads(line) for line in side.read_text().splitlines()] if side.exists() else []
    acted = Counter(
        (e["task_id"], utc(e["fire_time"]), e["attempt"]) for e in effects if e["task_id"] in tasks
    )
    assert effects, "no run acted at all"  # tasks deleted since took their runs along
    assert max(acted.values(), default=0) <= 1, "a run acted twice"
    by_key = {(r.task_id, utc(r.fire_time), r.attempt): r for r in runs}
    assert set(acted) <= set(by_key), "a side effect without a run"
    succeeded = {k for k, r in by_key.items() if r.status == "succeeded"}
    assert succeeded <= set(acted), "a succeeded run without its side effect"
    assert not [r for r in runs if r.status in ("queued", "running") and r.worker is not None]
    print(f"\n{sum(answers.values())} calls from {PROCESSES} processes: {dict(answers)}")
