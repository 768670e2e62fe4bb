"""One worker process for the multi-process tests: ``python -m tests.multiprocess_worker DB``.

Runs a real ``SchedulerService`` on the SQLite file ``DB`` (other settings from the
environment) with one test tool, ``mp_tool``: ``act`` reports its run and returns, ``block``
reports that it started and waits for a ``release`` command. The test drives the process
with JSON commands on stdin and reads JSON events from stdout:

commands  {"cmd": "create", "count": N, "lead": s, "spread": s, "op": "act"|"block"}
          {"cmd": "run_now"}   a manual run (``execute_task_now``) of a new blocking task
          {"cmd": "release"}   let every blocked run finish
          {"cmd": "stop"}      stop the service and exit 0
events    ready (leader, worker, pid), leader (at: when it took over), created (tasks),
          effect / blocking (task_id, fire_time, kind, at, pid), stopped
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from config import load_settings
from scheduler_service import SchedulerService
from scheduler_service.runs.runner import current_run
from tools import Tool, ToolContext

OWNER = ToolContext(user_id="mp", conversation_id="mp")


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "pid": os.getpid(), **fields}), flush=True)


class MultiprocessTool(Tool):
    """Reports each run on stdout; ``block`` runs wait for ``release``."""

    name = "mp_tool"
    description = "Reports runs (multi-process tests only)."
    input_schema = {"type": "object", "properties": {"operation": {"enum": ["act", "block"]}}}

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def run(
        self, operation: str, kwargs: dict[str, Any] | str | None, *, context: ToolContext
    ) -> dict[str, Any]:
        run = current_run.get()
        fields = {"task_id": run.task_id, "fire_time": run.fire_time.isoformat(), "kind": run.kind}
        if operation == "block":
            emit("blocking", at=time.time(), **fields)
            await self.release.wait()
            return {"message": "released"}
        emit("effect", at=time.time(), **fields)
        return {"message": "acted"}


async def create(
    service: SchedulerService, count: int, lead: float, spread: float, op: str
) -> list[dict[str, str]]:
    """``count`` one-time tasks due ``lead`` s from now, spread over ``spread`` s."""
    start = datetime.now(UTC) + timedelta(seconds=lead)
    start = start.replace(microsecond=start.microsecond // 1000 * 1000)  # whole ms
    tasks = []
    for i in range(count):
        due = start + timedelta(seconds=spread * i / max(count - 1, 1))
        out = await service.scheduler_tool.run(
            "create_task",
            {
                "name": f"mp {op} {i}",
                "frequency": "once",
                "scheduled_time": due.isoformat(),
                "tool_name": "mp_tool",
                "operation": op,
            },
            context=OWNER,
        )
        tasks.append({"task_id": out["task"]["task_id"], "due": due.isoformat()})
    return tasks


async def run_now(service: SchedulerService) -> None:
    """A manual run of a new task (due in an hour): it blocks until ``release``."""
    [task] = await create(service, 1, 3600, 0, "block")
    await service.scheduler_tool.run(
        "execute_task_now", {"task_id": task["task_id"], "wait": False}, context=OWNER
    )


async def commands() -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def announce_takeover(service: SchedulerService) -> None:
    await service.leading.wait()
    emit("leader", at=time.time())


async def serve(service: SchedulerService, tool: MultiprocessTool) -> None:
    reader = await commands()
    while line := await reader.readline():
        command = json.loads(line)
        match command["cmd"]:
            case "create":
                args = (command["count"], command["lead"], command["spread"], command["op"])
                emit("created", tasks=await create(service, *args))
            case "run_now":
                await run_now(service)
            case "release":
                tool.release.set()
            case "stop":
                return


async def main(args: argparse.Namespace) -> None:
    settings = load_settings(database_url=f"sqlite+aiosqlite:///{args.db}")
    service = SchedulerService(settings, leader_retry=args.leader_retry)
    tool = MultiprocessTool()
    service.tools.register(tool)
    async with service:
        emit("ready", leader=service.is_leader, worker=service.leadership.worker)
        watcher = asyncio.create_task(announce_takeover(service))
        await serve(service, tool)
        watcher.cancel()
        tool.release.set()
    emit("stopped")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("--leader-retry", type=float, default=0.5)
    asyncio.run(main(parser.parse_args()))
