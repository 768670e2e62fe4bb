"""A scheduler process for the fault tests: ``python -m tests.fault_worker DB SIDEFILE``.

Runs a real ``SchedulerService`` on the SQLite file ``DB`` (other settings from the
environment, e.g. ``SCHEDULER__MAX_CONCURRENT_TASKS``) with one test tool,
``side_effect``, that appends the side effect of each run — task id, fire time, attempt,
pid — as a JSON line to ``SIDEFILE`` and fsyncs it before returning, so a ``kill -9`` can
never lose a side effect that happened. With ``--create N`` it first creates N one-time
tasks due over ``--spread`` seconds, starting ``--lead`` seconds from now; every
``--fail-every``-th one fails its first attempt (so it is retried).

It prints ``ready`` once started, ``effect`` after each side effect, and ``finished``
when no task is left scheduled, then stops and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from config import load_settings
from scheduler_service import SchedulerService
from scheduler_service.runs.runner import current_run
from scheduler_service.storage.models import ScheduledTask
from tools import Tool, ToolContext, ToolError

OWNER = ToolContext(user_id="fault", conversation_id="fault")


class SideEffectTool(Tool):
    """Appends one durable line per run; fails attempts up to ``fail_attempts``."""

    name = "side_effect"
    description = "Appends a line to a file (fault tests only)."
    input_schema = {"type": "object", "properties": {"operation": {"enum": ["act"]}}}

    def __init__(self, path: str) -> None:
        self.path = path

    async def run(
        self, operation: str, kwargs: dict[str, Any] | str | None, *, context: ToolContext
    ) -> dict[str, Any]:
        args = kwargs if isinstance(kwargs, dict) else {}
        run = current_run.get()
        if run.attempt <= int(args.get("fail_attempts", 0)):
            raise ToolError("unavailable", "a transient failure before acting (test)")
        line = {
            "task_id": run.task_id,
            "fire_time": run.fire_time.isoformat(),
            "attempt": run.attempt,
            "pid": os.getpid(),
        }
        await asyncio.to_thread(self._append, json.dumps(line) + "\n")
        print("effect", flush=True)
        # Between the side effect and its record: where a kill leaves an interrupted run.
        await asyncio.sleep(float(args.get("hold", 0.05)))
        return {"message": "acted"}

    def _append(self, text: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)


async def create_tasks(
    service: SchedulerService, count: int, spread: float, lead: float, fail_every: int
) -> None:
    start = datetime.now(UTC) + timedelta(seconds=lead)
    start = start.replace(microsecond=start.microsecond // 1000 * 1000)  # whole ms
    for i in range(count):
        due = start + timedelta(milliseconds=round(spread * 1000 * i / count))
        fail = 1 if fail_every and i % fail_every == 0 else 0
        await service.scheduler_tool.run(
            "create_task",
            {
                "name": f"fault {i}",
                "frequency": "once",
                "scheduled_time": due.isoformat(),
                "tool_name": "side_effect",
                "operation": "act",
                "parameters": {"fail_attempts": fail},
            },
            context=OWNER,
        )


async def scheduled_left(service: SchedulerService) -> int:
    async with service.db.read() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(ScheduledTask)
            .where(ScheduledTask.status == "scheduled")
        )
    return int(count or 0)


async def main(args: argparse.Namespace) -> None:
    settings = load_settings(database_url=f"sqlite+aiosqlite:///{args.db}")
    changed = asyncio.Event()

    async def on_notification(_n: dict[str, Any]) -> None:
        changed.set()

    service = SchedulerService(settings, on_notification=on_notification)
    service.tools.register(SideEffectTool(args.sidefile))
    async with service:
        if args.create:
            await create_tasks(service, args.create, args.spread, args.lead, args.fail_every)
        print("ready", flush=True)
        while await scheduled_left(service):
            changed.clear()
            with contextlib.suppress(TimeoutError):  # a fallback; notifications wake us
                await asyncio.wait_for(changed.wait(), timeout=1)
    print("finished", flush=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("sidefile")
    parser.add_argument("--create", type=int, default=0)
    parser.add_argument("--spread", type=float, default=3.0)
    parser.add_argument("--lead", type=float, default=1.5)
    parser.add_argument("--fail-every", type=int, default=10)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
