"""A scheduler process for the fault tests: ``python -m tests.fault_worker DB SIDEFILE``.

Runs a real ``SchedulerService`` on the SQLite file ``DB`` (other settings from the
environment, e.g. ``SCHEDULER__MAX_CONCURRENT_TASKS``) with one test tool,
``side_effect``, that appends the side effect of each run — task id, fire time, attempt,
pid — as a JSON line to ``SIDEFILE`` and fsyncs it before returning, so a ``kill -9`` can
never lose a side effect that happened.

With ``--create N`` it first creates N one-time tasks due over ``--spread`` seconds; every
``--fail-every``-th one fails its first attempt (so it is retried). The burst must not
begin before the last task is created, however loaded the machine is, so the first due
time is not fixed in advance: the worker times a few throw-away creates first and starts
the burst after twice the time the N creates should take (never sooner than ``--lead``
seconds). Each task ``create_task`` acknowledged is appended (fsync) to ``--acks``, so the
test checks exactly the tasks the service promised to run; a create refused because its
time has passed anyway is reported on stdout (``past``), never a crash.

It prints ``ready`` once the tasks are created, ``effect`` after each side effect, and
``finished`` when no task is left scheduled, then stops and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from config import load_settings
from scheduler_service import SchedulerService
from scheduler_service.runs.runner import current_run
from scheduler_service.storage.models import ScheduledTask
from tools import Tool, ToolContext, ToolError

OWNER = ToolContext(user_id="fault", conversation_id="fault")
CALIBRATOR = ToolContext(user_id="fault-calibration", conversation_id="fault")
CALIBRATION_CREATES = 10


class SideEffectTool(Tool):
    """Appends one durable line per run; fails attempts up to ``fail_attempts``. Also the
    replicas' tool (``tests.replica_worker``); ``on_effect`` is told after each line;
    ``waiting`` (if given) says how many runs of the process wait for a slot, and each
    line records it."""

    name = "side_effect"
    description = "Appends a line to a file (fault and scale-out tests only)."
    input_schema = {"type": "object", "properties": {"operation": {"enum": ["act"]}}}

    def __init__(
        self,
        path: str,
        on_effect: Callable[[], None] | None = None,
        waiting: Callable[[], int] | None = None,
    ) -> None:
        self.path = path
        self.on_effect = on_effect
        self.waiting = waiting
        self.running = 0  # runs of this process in the tool now

    async def run(
        self, operation: str, kwargs: dict[str, Any] | str | None, *, context: ToolContext
    ) -> dict[str, Any]:
        self.running += 1
        try:
            return await self._act(kwargs)
        finally:
            self.running -= 1

    async def _act(self, kwargs: dict[str, Any] | str | None) -> dict[str, Any]:
        args = kwargs if isinstance(kwargs, dict) else {}
        run = current_run.get()
        if run.attempt <= int(args.get("fail_attempts", 0)):
            raise ToolError("unavailable", "a transient failure before acting (test)")
        line = {
            "task_id": run.task_id,
            "fire_time": run.fire_time.isoformat(),
            "attempt": run.attempt,
            "kind": run.kind,
            "pid": os.getpid(),
            "at": time.time(),
            "at_once": self.running,  # runs of this process in the tool, this one included
            "waiting": self.waiting() if self.waiting is not None else None,
        }
        await asyncio.to_thread(append_durably, self.path, json.dumps(line) + "\n")
        if self.on_effect is not None:
            self.on_effect()
        # Between the side effect and its record: where a kill leaves an interrupted run.
        await asyncio.sleep(float(args.get("hold", 0.05)))
        return {"message": "acted"}


def append_durably(path: str, text: str) -> None:
    """Append ``text`` to ``path`` and fsync: what was written survives a ``kill -9``."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def side_effect_task(name: str, due: datetime, fail: int) -> dict[str, Any]:
    return {
        "name": name,
        "frequency": "once",
        "scheduled_time": due.isoformat(),
        "tool_name": "side_effect",
        "operation": "act",
        "parameters": {"fail_attempts": fail},
    }


async def seconds_per_create(service: SchedulerService) -> float:
    """Time a few creates of far-future tasks on this machine, now, then delete them."""
    due = datetime.now(UTC) + timedelta(hours=1)
    started = time.perf_counter()
    ids = []
    for i in range(CALIBRATION_CREATES):
        out = await service.scheduler_tool.run(
            "create_task", side_effect_task(f"calibration {i}", due, 0), context=CALIBRATOR
        )
        ids.append(out["task"]["id"])
    elapsed = time.perf_counter() - started
    for task_id in ids:
        await service.scheduler_tool.run("delete_task", {"task_id": task_id}, context=CALIBRATOR)
    return elapsed / CALIBRATION_CREATES


async def create_tasks(service: SchedulerService, args: argparse.Namespace) -> None:
    """Create ``args.create`` once tasks due over ``args.spread`` s, after a measured lead."""
    count = args.create
    lead = max(args.lead, 2 * count * await seconds_per_create(service) + 0.5)
    start = datetime.now(UTC) + timedelta(seconds=lead)
    start = start.replace(microsecond=start.microsecond // 1000 * 1000)  # whole ms
    for i in range(count):
        due = start + timedelta(milliseconds=round(args.spread * 1000 * i / count))
        fail = 1 if args.fail_every and i % args.fail_every == 0 else 0
        try:
            out = await service.scheduler_tool.run(
                "create_task", side_effect_task(f"fault {i}", due, fail), context=OWNER
            )
        except ToolError as error:
            if error.code != "invalid_input" or "in the past" not in error.message:
                raise
            print("past", flush=True)  # the machine was slower than measured: not acked
            continue
        ack = {"task_id": out["task"]["id"], "due": due.isoformat()}
        await asyncio.to_thread(append_durably, args.acks, json.dumps(ack) + "\n")


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
    service.tools.register(SideEffectTool(args.sidefile, lambda: print("effect", flush=True)))
    async with service:
        if args.create:
            await create_tasks(service, args)
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
    parser.add_argument("--lead", type=float, default=1.5, help="shortest lead, s")
    parser.add_argument("--acks", default=os.devnull, help="file of acknowledged tasks")
    parser.add_argument("--fail-every", type=int, default=10)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
