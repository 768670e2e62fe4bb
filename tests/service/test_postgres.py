"""The service on a real PostgreSQL server (the scale-out backend).

Uses the local server (PG_TEST_URL, default postgres@127.0.0.1:5432) and a fresh
database per test; skipped when no server answers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from config import SchedulerConfig, Settings
from scheduler_service import SchedulerService
from scheduler_service.storage.models import TaskRun
from tests.conftest import next_notification, watch_notifications
from tools import ToolContext


async def test_service_on_postgresql(pg_url: str) -> None:
    settings = Settings(database_url=pg_url, scheduler=SchedulerConfig(), anthropic_api_key=None)
    ctx = ToolContext(user_id="u1", conversation_id="c1")
    service = SchedulerService(settings)
    watch_notifications(service)
    async with service:
        due = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
        created = await service.scheduler_tool.run(
            "create_task",
            {
                "name": "pg once",
                "frequency": "once",
                "scheduled_time": due,
                "tool_name": "reminder_tool",
                "operation": "add_reminder",
                "parameters": {"title": "from postgres"},
            },
            context=ctx,
        )
        task_id = created["task"]["task_id"]
        notification = await next_notification(service)
        assert notification["task_id"] == task_id and notification["status"] == "succeeded"
        async with service.db.read() as session:
            runs = (await session.scalars(select(TaskRun).where(TaskRun.task_id == task_id))).all()
        assert [r.status for r in runs] == ["succeeded"]
        # The fence: a second claim of the same fire time is refused by the database.
        assert (
            await service.runner.claims.attempt(task_id, runs[0].fire_time, "scheduled", 1) is None
        )
        reminders = await service.tools.call("reminder_tool", "get_reminders", {}, context=ctx)
        assert [r["title"] for r in reminders["reminders"]] == ["from postgres"]
    async with SchedulerService(settings) as again:
        task = await again.scheduler_tool.run("get_task", {"task_id": task_id}, context=ctx)
        assert task["task"]["status"] == "completed"
