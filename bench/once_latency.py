"""How late does a `once` task start after its scheduled time?

Schedules N one-time tasks (a trivial async tool) spread over a few seconds on a fresh
SQLite file, waits for every notification, and reports how long after its fire time each
run started (run.started_at - run.fire_time) and was recorded (run.finished_at -
run.fire_time: the tool has acted and the outcome is committed).

    .venv/bin/python -m bench.once_latency --tasks 20 --spread 4
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench.common import NoopTool
from scheduler_service import SchedulerService
from scheduler_service.config import SchedulerConfig, Settings
from scheduler_service.storage.models import TaskRun
from scheduler_service.tools import ToolContext


async def measure(tasks: int, spread: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}",
            scheduler=SchedulerConfig(log_level="WARNING"),
        )
        done = asyncio.Queue[datetime]()

        async def on_notification(_: dict[str, Any]) -> None:
            done.put_nowait(datetime.now(UTC))

        quota = settings.scheduler_tool.max_tasks_per_user
        async with SchedulerService(settings, on_notification=on_notification) as service:
            service.tools.register(NoopTool())
            start = datetime.now(UTC) + timedelta(seconds=2)
            for i in range(tasks):
                due = start + timedelta(seconds=spread * i / max(tasks - 1, 1))
                await service.scheduler_tool.run(
                    "create_task",
                    {
                        "name": f"t{i}",
                        "frequency": "once",
                        "scheduled_time": due.isoformat(),
                        "tool_name": NoopTool.name,
                        "operation": "tick",
                    },
                    # as many tasks a user as the quota allows
                    context=ToolContext(user_id=f"bench-{i // quota}", conversation_id="bench"),
                )
            for _ in range(tasks):
                await asyncio.wait_for(done.get(), timeout=spread + 30)
            async with service.db.read() as session:
                runs = (await session.scalars(select(TaskRun))).all()
        started = after_fire_ms([(r.fire_time, r.started_at) for r in runs])
        finished = after_fire_ms([(r.fire_time, r.finished_at) for r in runs])
    return {
        "runs": started["n"],
        "median_ms": started["median"],
        "p95_ms": started["p95"],
        "max_ms": started["max"],
        "finished_median_ms": finished["median"],
        "finished_p95_ms": finished["p95"],
    }


def after_fire_ms(pairs: list[tuple[datetime, datetime | None]]) -> dict[str, float]:
    """How long after its fire time each moment came, in ms: count, median, p95, max."""
    late = sorted((at - fire).total_seconds() * 1000 for fire, at in pairs if at is not None)
    return {
        "n": len(late),
        "median": statistics.median(late),
        "p95": late[int(0.95 * (len(late) - 1))],
        "max": late[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--spread", type=float, default=4.0, help="seconds the fire times span")
    args = parser.parse_args()
    result = asyncio.run(measure(args.tasks, args.spread))
    print(
        f"{result['runs']} once tasks: start lateness median {result['median_ms']:.1f} ms, "
        f"p95 {result['p95_ms']:.1f} ms, max {result['max_ms']:.1f} ms; recorded (finished_at) "
        f"median {result['finished_median_ms']:.1f} ms, p95 {result['finished_p95_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
