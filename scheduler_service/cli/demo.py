"""The ``--demo`` of ``task-scheduler run``: real tasks, runs and notifications in seconds.

It schedules the "Daily Inventory Check" example, runs it at once, and adds a one-time
task a few seconds ahead, so a new user sees the whole cycle without writing code.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from scheduler_service.service import SchedulerService
from scheduler_service.tools import ToolContext

DEMO_CONTEXT = ToolContext(user_id="demo-user", conversation_id="demo-conversation")


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
