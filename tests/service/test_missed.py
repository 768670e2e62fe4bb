"""Fire times missed while the service was down: caught up or recorded, never dropped.

These tests really stop the service across fire times a few seconds apart; the downtime
is the scenario, so the test waits for wall time to pass while nothing is running.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from scheduler_service import SchedulerService
from scheduler_service.storage.models import TaskRun
from tests.conftest import RecordingTool, ServiceFactory, next_notification
from tools import ToolContext

CTX = ToolContext(user_id="u1", conversation_id="c1")


async def until(instant: datetime) -> None:
    """Let wall time pass while the service is down."""
    await asyncio.sleep(max(0.0, (instant - datetime.now(UTC)).total_seconds()))


def every_4_seconds_from(t0: datetime) -> str:
    return f"DTSTART:{t0:%Y%m%dT%H%M%SZ}\nRRULE:FREQ=SECONDLY;INTERVAL=4"


async def create(service: SchedulerService, **fields: Any) -> str:
    out = await service.scheduler_tool.run(
        "create_task",
        {"name": "tick", "tool_name": "recording_tool", "operation": "record", **fields},
        context=CTX,
    )
    return str(out["task"]["task_id"])


async def runs(service: SchedulerService, task_id: str) -> list[TaskRun]:
    async with service.db.read() as session:
        query = select(TaskRun).where(TaskRun.task_id == task_id).order_by(TaskRun.fire_time)
        return list((await session.scalars(query)).all())


async def down_across_two_fire_times(
    start_service: ServiceFactory, grace: int
) -> tuple[SchedulerService, str, datetime]:
    """A task firing every 4 s, with the service down over its first two fire times."""
    first = await start_service(tools=[RecordingTool()], min_interval=1)
    t0 = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    task_id = await create(
        first,
        frequency="custom",
        custom_schedule=every_4_seconds_from(t0),
        misfire_grace_time=grace,
    )
    await first.stop()
    await until(t0 + timedelta(seconds=5.5))  # t0 and t0+4 pass while down
    again = await start_service(tools=[RecordingTool()], min_interval=1)
    return again, task_id, t0


async def test_latest_missed_time_within_grace_runs_once_older_ones_are_recorded(
    start_service: ServiceFactory,
) -> None:
    service, task_id, t0 = await down_across_two_fire_times(start_service, grace=60)
    missed = await next_notification(service)
    assert (
        missed["status"] == "missed"
        and "missed 1 run while the service was down" in missed["message"]
    )
    caught_up = await next_notification(service)
    assert caught_up["status"] == "succeeded"
    rows = await runs(service, task_id)
    assert [(r.kind, r.fire_time, r.status) for r in rows[:2]] == [
        ("missed", t0, "missed"),
        ("scheduled", t0 + timedelta(seconds=4), "succeeded"),
    ]
    assert rows[0].details == {"missed_times": [t0.isoformat()], "count": 1}


async def test_missed_beyond_grace_are_recorded_and_the_schedule_goes_on(
    start_service: ServiceFactory,
) -> None:
    service, task_id, t0 = await down_across_two_fire_times(start_service, grace=1)
    missed = await next_notification(service)
    assert missed["status"] == "missed" and "missed 2 runs" in missed["message"]
    assert "next run at" in missed["message"]
    regular = await next_notification(service)  # the next fire time runs on schedule
    assert regular["status"] == "succeeded"
    rows = await runs(service, task_id)
    assert [(r.kind, r.fire_time, r.status) for r in rows[:3]] == [  # one row a fire time
        ("missed", t0, "missed"),
        ("missed", t0 + timedelta(seconds=4), "missed"),
        ("scheduled", t0 + timedelta(seconds=8), "succeeded"),
    ]
    assert rows[0].details is not None and rows[0].details["count"] == 2
    assert rows[1].details == {"missed_with": rows[0].id}


async def test_once_task_missed_beyond_grace_ends_missed(start_service: ServiceFactory) -> None:
    first = await start_service(tools=[RecordingTool()])
    due = (datetime.now(UTC) + timedelta(seconds=1)).replace(microsecond=0) + timedelta(seconds=1)
    task_id = await create(
        first, frequency="once", scheduled_time=due.isoformat(), misfire_grace_time=1
    )
    await first.stop()
    await until(due + timedelta(seconds=2))
    service = await start_service(tools=[RecordingTool()])
    notification = await next_notification(service)
    assert notification["status"] == "missed" and "will not run" in notification["message"]
    task = (await service.scheduler_tool.run("get_task", {"task_id": task_id}, context=CTX))["task"]
    assert task["status"] == "missed" and task["next_run_time"] is None
    assert [(r.kind, r.status) for r in await runs(service, task_id)] == [("missed", "missed")]


async def test_once_task_missed_within_grace_runs_late_once(start_service: ServiceFactory) -> None:
    first = await start_service(tools=[RecordingTool()])
    due = (datetime.now(UTC) + timedelta(seconds=1)).replace(microsecond=0) + timedelta(seconds=1)
    task_id = await create(first, frequency="once", scheduled_time=due.isoformat())
    await first.stop()
    await until(due + timedelta(seconds=1))
    tool = RecordingTool()
    service = await start_service(tools=[tool])
    notification = await next_notification(service)
    assert notification["status"] == "succeeded"
    assert [(r.kind, r.fire_time, r.status) for r in await runs(service, task_id)] == [
        ("scheduled", due, "succeeded")
    ]
    assert len(tool.calls) == 1
