"""Host tools: registered before start via tools=[...]; a run whose tool is missing retries."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from scheduler_service import SchedulerService, lifespan
from scheduler_service.storage.models import TaskRun
from scheduler_service.tools import ToolContext
from tests.conftest import (
    RecordingTool,
    ServiceFactory,
    make_settings,
    next_notification,
    wait_for,
)

CTX = ToolContext(user_id="u1", conversation_id="c1")


def once_soon(seconds: float = 0.3) -> dict[str, Any]:
    return {
        "name": "Record once",
        "frequency": "once",
        "scheduled_time": (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(),
        "tool_name": "recording_tool",
        "operation": "record",
        "parameters": {},
    }


async def test_tools_given_to_the_constructor_and_lifespan_exist_at_start(db_path: Path) -> None:
    tool = RecordingTool()
    async with SchedulerService(make_settings(db_path), tools=[tool]) as service:
        assert service.tools.get("recording_tool") is tool

    class App:
        class state:
            pass

    async with lifespan(App(), settings=make_settings(db_path), tools=[tool]) as state:
        assert state["scheduler"].tools.get("recording_tool") is tool


async def test_missed_run_caught_up_at_start_finds_the_host_tool(db_path: Path) -> None:
    """A fire time missed while down runs during start: the tool must already be there."""
    settings = make_settings(db_path)
    tool = RecordingTool()
    async with SchedulerService(settings, tools=[tool]) as service:
        await service.scheduler_tool.run("create_task", once_soon(0.5), context=CTX)
    await asyncio.sleep(0.6)  # the service is down while the fire time passes
    later = RecordingTool()
    service = SchedulerService(settings, tools=[later])
    done = asyncio.Event()

    async def on_notification(_n: dict[str, Any]) -> None:
        done.set()

    service.add_notification_callback(on_notification)
    async with service:
        await asyncio.wait_for(done.wait(), 10)
    assert [c[0] for c in later.calls] == ["record"]


async def test_a_run_whose_tool_is_missing_waits_in_the_queue_until_it_is_there(
    start_service: ServiceFactory,
) -> None:
    """A worker never executes a run it has no tool for (it would fail for a reason of
    the deployment, not of the task): the run waits in the queue, unassigned, and runs
    once a worker has the tool (here, the host registers it late)."""
    tool = RecordingTool()
    service = await start_service(tools=[tool])
    await service.scheduler_tool.run("create_task", once_soon(), context=CTX)
    service.tools.unregister("recording_tool")

    async def queued_for_another_worker() -> bool:
        async with service.db.read() as session:
            run = await session.scalar(select(TaskRun))
        return run is not None and run.status == "queued" and run.worker is None

    await wait_for(queued_for_another_worker)
    service.tools.register(tool)

    note = await next_notification(service)
    assert note["status"] == "succeeded"
    async with service.db.read() as session:
        runs = (await session.scalars(select(TaskRun).order_by(TaskRun.attempt))).all()
    assert [(r.attempt, r.status, r.worker) for r in runs] == [
        (1, "succeeded", service.runner.worker)
    ]
