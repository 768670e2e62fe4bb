"""spread through scheduler_tool on both backends: the echo, the stored task and its job,
updates, and refusals that change nothing."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select

from scheduler_service import SchedulerService
from scheduler_service.schedules.spread import spread_offset
from scheduler_service.storage.models import ScheduledTask
from scheduler_service.tools import ToolContext, ToolError
from tests.conftest import ServiceFactory

HOURLY: dict[str, Any] = {
    "name": "Check the feeds",
    "frequency": "hourly",
    "tool_name": "reminder_tool",
    "operation": "add_reminder",
    "parameters": {"text": "feeds"},
}


async def create(service: SchedulerService, ctx: ToolContext, **fields: Any) -> dict[str, Any]:
    return await service.scheduler_tool.run("create_task", {**HOURLY, **fields}, context=ctx)


async def job_next_run(service: SchedulerService, task_id: str) -> datetime | None:
    job = service.scheduler.get_job(task_id)
    return job.next_run_time if job is not None else None


async def test_a_spread_task_runs_at_its_offset_and_says_so(
    service: SchedulerService, ctx: ToolContext
) -> None:
    out = await create(service, ctx, spread=True)
    task = out["task"]
    offset = spread_offset(task["task_id"], 3600)
    assert 0 <= offset <= 360
    async with service.db.read() as session:
        row = await session.get(ScheduledTask, task["task_id"])
    assert row is not None and row.schedule["spread"] == offset
    start = datetime.fromisoformat(row.schedule["start_at"])
    runs = [datetime.fromisoformat(run) for run in out["next_runs"]]
    assert runs[0] == start + timedelta(seconds=offset)
    assert runs[1] - runs[0] == timedelta(hours=1)
    assert row.next_run_at == runs[0] and await job_next_run(service, row.id) == runs[0]
    assert "spread: each run starts" in task["schedule"] and "spread" in out["message"]
    shown = await service.scheduler_tool.run("get_task", {"task_id": row.id}, context=ctx)
    assert shown["task"]["schedule"] == task["schedule"]


async def test_without_spread_runs_stay_on_time(
    service: SchedulerService, ctx: ToolContext
) -> None:
    out = await create(service, ctx)
    async with service.db.read() as session:
        row = await session.get(ScheduledTask, out["task"]["task_id"])
    assert row is not None and row.schedule["spread"] == 0
    assert datetime.fromisoformat(out["next_runs"][0]) == datetime.fromisoformat(
        row.schedule["start_at"]
    )
    assert "spread" not in out["task"]["schedule"]


async def test_an_update_keeps_the_spread_for_the_new_period_and_false_removes_it(
    service: SchedulerService, ctx: ToolContext
) -> None:
    task_id = (await create(service, ctx, spread=True))["task"]["task_id"]
    daily = await service.scheduler_tool.run(
        "update_task",
        {"task_id": task_id, "frequency": "daily", "scheduled_time": "09:00", "timezone": "UTC"},
        context=ctx,
    )
    offset = spread_offset(task_id, 86_400)
    first = datetime.fromisoformat(daily["next_runs"][0])
    assert (first.hour, first.minute * 60 + first.second) == (9, offset) and offset <= 900
    assert await job_next_run(service, task_id) == first
    plain = await service.scheduler_tool.run(
        "update_task", {"task_id": task_id, "spread": False}, context=ctx
    )
    first = datetime.fromisoformat(plain["task"]["next_run_time"])
    assert (first.hour, first.minute, first.second) == (9, 0, 0)
    assert await job_next_run(service, task_id) == first
    assert "spread" not in plain["task"]["schedule"]


async def test_a_one_time_task_cannot_be_spread_and_nothing_is_created(
    service: SchedulerService, ctx: ToolContext
) -> None:
    with pytest.raises(ToolError) as refused:
        await create(service, ctx, frequency="once", scheduled_time="in 2 hours", spread=True)
    assert refused.value.code == "invalid_input"
    assert refused.value.message.startswith("spread:") and "recurring" in refused.value.message
    async with service.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(ScheduledTask)) == 0


async def test_a_spread_job_survives_a_restart_unchanged(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    service = await start_service()
    task_id = (await create(service, ctx, spread=True))["task"]["task_id"]
    before = await job_next_run(service, task_id)
    await service.stop()
    again = await start_service()  # reconciliation compares the stored trigger with the task's
    assert await job_next_run(again, task_id) == before
    assert again.scheduler.get_job(task_id).trigger.offset == spread_offset(task_id, 3600)
