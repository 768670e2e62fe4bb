"""One process of the concurrency test: ``python -m tests.chaos_worker URL SIDEFILE SEED SECONDS``.

A real worker ``SchedulerService`` on the shared database that, for SECONDS, makes random
``scheduler_tool`` calls as one shared user on the tasks that user has — create, update,
pause, resume, cancel, delete, execute_task_now (waiting or not) — while its tasks fire
every second or two. Every side effect of the test tool goes to SIDEFILE (fsync). At the
end it prints one JSON line: the answers by operation and code, and any answer that was
neither a result nor a ToolError of an expected code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from config import load_settings
from scheduler_service import SchedulerService
from tests.fault_worker import SideEffectTool
from tools import ToolContext, ToolError

USER = ToolContext(user_id="chaos", conversation_id="chaos")
EXPECTED = {"conflict", "not_found", "quota_exceeded"}  # what a lost race may answer


def recurring(rng: random.Random) -> dict[str, Any]:
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    every = rng.choice((1, 2))
    rule = f"DTSTART:{start:%Y%m%dT%H%M%SZ}\nRRULE:FREQ=SECONDLY;INTERVAL={every}"
    return {
        "name": f"chaos every {every} s",
        "frequency": "custom",
        "custom_schedule": rule,
        "tool_name": "side_effect",
        "operation": "act",
        "max_retries": 0,
    }


async def one_call(service: SchedulerService, rng: random.Random, ids: list[str]) -> str:
    operation = rng.choice(
        ["create_task"] * 2
        + ["update_task", "pause_task", "resume_task", "cancel_task", "delete_task"] * 2
        + ["execute_task_now"] * 3
    )
    if operation == "create_task" or not ids:
        kwargs: dict[str, Any] = recurring(rng)
        operation = "create_task"
    else:
        kwargs = {"task_id": rng.choice(ids)}
        if operation == "update_task":
            kwargs["name"] = f"renamed {rng.randint(0, 9)}"
            if rng.random() < 0.5:
                kwargs["custom_schedule"] = recurring(rng)["custom_schedule"]
        if operation == "execute_task_now":
            kwargs["wait"] = rng.random() < 0.5
    out = await service.scheduler_tool.run(operation, kwargs, context=USER)
    if operation == "create_task":
        ids.append(out["task"]["task_id"])
    return operation


async def chaos(service: SchedulerService, seed: int, seconds: float) -> dict[str, Any]:
    rng = random.Random(seed)
    answers: Counter[str] = Counter()
    unexpected: list[str] = []
    ids: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if rng.random() < 0.2:  # see what the other processes created
            listed = await service.scheduler_tool.run("get_tasks", {"limit": 100}, context=USER)
            ids = [t["task_id"] for t in listed["tasks"]]
        try:
            answers[f"{await one_call(service, rng, ids)} ok"] += 1
        except ToolError as exc:
            answers[exc.code] += 1
            if exc.code not in EXPECTED:
                unexpected.append(f"{exc.code}: {exc.message[:200]}")
        except Exception as exc:  # never expected: recorded for the test to fail on
            unexpected.append(f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(rng.random() * 0.05)  # callers arrive at random moments
    return {"answers": dict(answers), "unexpected": unexpected}


async def main(args: argparse.Namespace) -> None:
    settings = load_settings(database_url=args.url)
    settings.limits.manual_run_interval = 0  # the rate is not what this test is about
    async with SchedulerService(settings, tools=[SideEffectTool(args.sidefile)]) as service:
        print(json.dumps({"event": "ready"}), flush=True)
        result = await chaos(service, args.seed, args.seconds)
    print(json.dumps({"event": "done", **result}), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("sidefile")
    parser.add_argument("seed", type=int)
    parser.add_argument("seconds", type=float)
    asyncio.run(main(parser.parse_args()))
