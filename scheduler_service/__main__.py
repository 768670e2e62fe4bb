"""Run the service in the foreground: ``python -m scheduler_service`` (or ``task-scheduler``).

``--demo`` schedules an example task, "Daily Inventory Check", runs it at once, and
adds a one-time task a few seconds ahead, so a new user sees real runs, real reminders
and real notifications within seconds. Stops cleanly on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler_service.config import ConfigError, load_settings
from scheduler_service.service import SchedulerService
from scheduler_service.storage.db import SchemaError
from scheduler_service.tools import ToolContext

log = logging.getLogger("scheduler_service.cli")

DEMO_CONTEXT = ToolContext(user_id="demo-user", conversation_id="demo-conversation")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="task-scheduler", description=__doc__)
    parser.add_argument("--demo", action="store_true", help="schedule and run example tasks")
    parser.add_argument(
        "--run-for", type=float, default=None, metavar="SECONDS", help="stop after this long"
    )
    parser.add_argument("--database-url", default=None, help="overrides DATABASE_URL")
    return parser.parse_args(argv)


async def run_demo(service: SchedulerService) -> None:
    tool = service.scheduler_tool
    existing = await tool.run("get_tasks", {"limit": 100}, context=DEMO_CONTEXT)
    for task in existing["tasks"]:  # a second demo on the same database starts afresh
        await tool.run("delete_task", {"task_id": task["task_id"]}, context=DEMO_CONTEXT)
    created = await tool.run(
        "create_task",
        {
            "name": "Daily Inventory Check",
            "frequency": "daily",
            "scheduled_time": "09:00:00",
            "execution_mode": "direct",
            "tool_name": "reminder_tool",
            "operation": "add_reminder",
            "parameters": {
                "title": "Check inventory levels",
                "date": "today",
                "description": "Review stock levels for popular items",
            },
        },
        context=DEMO_CONTEXT,
    )
    print(f"scheduler_tool create_task → {created['message']}", flush=True)
    ran = await tool.run(
        "execute_task_now", {"task_id": created["task"]["task_id"]}, context=DEMO_CONTEXT
    )
    print(f"scheduler_tool execute_task_now → {ran['message']}", flush=True)
    soon = (datetime.now(UTC) + timedelta(seconds=3)).isoformat(timespec="seconds")
    once = await tool.run(
        "create_task",
        {
            "name": "Stretch break",
            "frequency": "once",
            "scheduled_time": soon,
            "tool_name": "reminder_tool",
            "operation": "add_reminder",
            "parameters": {"title": "Stand up and stretch", "date": "today"},
        },
        context=DEMO_CONTEXT,
    )
    print(f"scheduler_tool create_task → {once['message']}", flush=True)


async def show_state(service: SchedulerService) -> None:
    reminders = await service.tools.call(
        "reminder_tool", "get_reminders", {"status": "all"}, context=DEMO_CONTEXT
    )
    print(
        "reminders now stored: "
        + json.dumps([r["title"] for r in reminders["reminders"]], ensure_ascii=False),
        flush=True,
    )


async def serve(args: argparse.Namespace) -> int:
    overrides: dict[str, Any] = {}
    if args.database_url:
        overrides["database_url"] = args.database_url
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.scheduler.log_level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    for noisy in ("alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with SchedulerService(settings) as service:
            print(f"scheduler running on {settings.database_url} — Ctrl-C to stop", flush=True)
            if args.demo:
                await run_demo(service)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.run_for):
                    await stop.wait()
            if args.demo:
                await show_state(service)
            print("stopping…", flush=True)
    except SchemaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> None:
    sys.exit(asyncio.run(serve(parse_args(argv))))


if __name__ == "__main__":
    main()
