"""One replica for the scale-out tests: ``python -m tests.replica_worker URL SIDEFILE``.

Runs a real ``SchedulerService`` on the database ``URL`` (PostgreSQL or SQLite; other
settings from the environment) with one test tool, ``side_effect``, that appends each
run's side effect — task, fire time, attempt, pid, time, the process's runs in the tool
and waiting for a slot — to ``SIDEFILE`` with fsync before returning, so a ``kill -9`` never loses a side effect that happened.

The test drives it with JSON commands on stdin and reads JSON events on stdout:

commands  {"cmd": "create", "count": N, "every": s}  N tasks firing every s seconds
          {"cmd": "create_many", "count": N}  N concurrent creates of far-future tasks
          {"cmd": "burst", "count": N, "hold": s}  N one-time tasks due at one instant,
                  each run holding the tool s seconds (due after a measured lead)
          {"cmd": "pause_all"}  pause every task (no new fire times are claimed)
          {"cmd": "stop"}  stop the service gracefully and exit 0 (so does SIGTERM)
events    ready (leader, worker, pid), leader (at: when it became leader),
          created (task_ids), created_many (ok, refused), burst (due, task_ids),
          paused (count), stopped
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from config import load_settings
from scheduler_service import SchedulerService
from tests.fault_worker import SideEffectTool, seconds_per_create, side_effect_task
from tools import ToolContext, ToolError

OWNER = ToolContext(user_id="replica", conversation_id="replica")


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, "pid": os.getpid(), **fields}), flush=True)


def recurring(name: str, every: float) -> dict[str, Any]:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    rule = f"DTSTART:{start:%Y%m%dT%H%M%SZ}\nRRULE:FREQ=SECONDLY;INTERVAL={int(every)}"
    return {
        "name": name,
        "frequency": "custom",
        "custom_schedule": rule,
        "tool_name": "side_effect",
        "operation": "act",
        "max_retries": 0,
    }


def far_future(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "frequency": "once",
        "scheduled_time": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
        "tool_name": "side_effect",
        "operation": "act",
    }


async def create_many(service: SchedulerService, count: int) -> tuple[int, int]:
    """``count`` creates at once; (created, refused for the quota)."""

    async def one(i: int) -> bool:
        try:
            await service.scheduler_tool.run(
                "create_task", far_future(f"burst {os.getpid()} {i}"), context=OWNER
            )
        except ToolError as error:
            if error.code != "quota_exceeded":
                raise
            return False
        return True

    results = await asyncio.gather(*(one(i) for i in range(count)))
    return sum(results), len(results) - sum(results)


async def burst(service: SchedulerService, count: int, hold: float) -> dict[str, Any]:
    """``count`` one-time tasks due at the same instant, each run holding its slot for
    ``hold`` s. The instant is after twice the time the creates should take here and
    now, so none of them is refused for being in the past on a loaded machine."""
    lead = 2 * count * await seconds_per_create(service) + 1.0
    due = (datetime.now(UTC) + timedelta(seconds=lead)).replace(microsecond=0)
    ids = []
    for i in range(count):
        task = side_effect_task(f"burst {i}", due + timedelta(seconds=1), 0)
        task["parameters"]["hold"] = hold
        out = await service.scheduler_tool.run("create_task", task, context=OWNER)
        ids.append(out["task"]["task_id"])
    return {"due": (due + timedelta(seconds=1)).isoformat(), "task_ids": ids}


async def announce_leadership(service: SchedulerService) -> None:
    await service.leading.wait()
    emit("leader", at=time.time())


async def serve(service: SchedulerService) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        match command["cmd"]:
            case "create":
                ids = []
                for i in range(command["count"]):
                    task = recurring(f"every {command['every']} s #{i}", command["every"])
                    out = await service.scheduler_tool.run("create_task", task, context=OWNER)
                    ids.append(out["task"]["task_id"])
                emit("created", task_ids=ids)
            case "burst":
                emit("burst", **await burst(service, command["count"], command["hold"]))
            case "create_many":
                ok, refused = await create_many(service, command["count"])
                emit("created_many", ok=ok, refused=refused)
            case "pause_all":
                listed = await service.scheduler_tool.run(
                    "get_tasks", {"status": "scheduled", "limit": 100}, context=OWNER
                )
                for task in listed["tasks"]:
                    await service.scheduler_tool.run(
                        "pause_task", {"task_id": task["task_id"]}, context=OWNER
                    )
                emit("paused", count=len(listed["tasks"]))
            case "stop":
                return


async def main(args: argparse.Namespace) -> None:
    settings = load_settings(database_url=args.url)
    service = SchedulerService(settings, leader_retry=args.leader_retry)
    service.tools.register(SideEffectTool(args.sidefile, waiting=lambda: service.queue_depth))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with service:
        emit("ready", leader=service.is_leader, worker=service.leadership.worker)
        watcher = asyncio.create_task(announce_leadership(service))
        serving = asyncio.create_task(serve(service))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
        for task in (watcher, serving, stopping):
            task.cancel()
    emit("stopped")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("sidefile")
    parser.add_argument("--leader-retry", type=float, default=0.5)
    asyncio.run(main(parser.parse_args()))
