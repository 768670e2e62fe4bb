"""The overlap policy on SQLite and PostgreSQL: what a fire due while the task's previous
run is still going does.

* ``skip`` (the default): recorded skipped, with a notification.
* ``buffer_one``: the first such fire waits (a ``buffered`` row) and starts once the
  running run has ended; any further one is skipped, saying that one already waits.
* ``allow``: it runs at the same time.
* ``cancel_previous``: the running run is stopped (recorded interrupted, error kind
  ``cancelled``) by whichever process executes it, then the new one starts; a queued run
  no worker took is recorded skipped at once.
* Two services firing the same task at one instant buffer one fire between them.
* The field is validated, stored, shown and changed like any other.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from scheduler_service import SchedulerService
from scheduler_service.storage.models import TaskRun
from tests.conftest import RecordingTool, ServiceFactory, next_notification, wait_for
from tools import ToolContext, ToolError

CTX = ToolContext(user_id="u1", conversation_id="c1")


class BlockingTool(RecordingTool):
    """RecordingTool whose ``block`` calls wait for ``release``; ``started(n)`` is
    awaited until n calls have begun."""

    def __init__(self) -> None:
        super().__init__()
        self._count = asyncio.Condition()

    async def run(self, operation: str, kwargs: Any, *, context: ToolContext) -> dict[str, Any]:
        async with self._count:
            self.calls.append((operation, kwargs or {}, context))
            self._count.notify_all()
        await self.release.wait()
        return {"message": "done"}

    async def started(self, count: int) -> None:
        async with asyncio.timeout(10), self._count:
            await self._count.wait_for(lambda: len(self.calls) >= count)


async def create(service: SchedulerService, **fields: Any) -> tuple[str, list[datetime]]:
    """A daily task calling the blocking tool; its next three fire times."""
    out = await service.scheduler_tool.run(
        "create_task",
        {
            "name": "slow report",
            "frequency": "daily",
            "scheduled_time": "03:00",
            "timezone": "UTC",
            "tool_name": "recording_tool",
            "operation": "block",
            "max_retries": 0,
            **fields,
        },
        context=CTX,
    )
    first = datetime.fromisoformat(out["task"]["next_run_time"]).astimezone(UTC)
    return out["task"]["task_id"], [first + timedelta(days=d) for d in range(3)]


async def runs_of(service: SchedulerService, task_id: str) -> list[TaskRun]:
    async with service.db.read() as session:
        query = select(TaskRun).where(TaskRun.task_id == task_id).order_by(TaskRun.fire_time)
        return list((await session.scalars(query)).all())


async def test_skip_is_the_default(start_service: ServiceFactory) -> None:
    tool = BlockingTool()
    service = await start_service(tools=[tool])
    task_id, times = await create(service)
    await service.runner.on_fire(task_id, [times[0]])
    await tool.started(1)
    await service.runner.on_fire(task_id, [times[1]])
    skipped = await next_notification(service)
    assert skipped["status"] == "skipped" and "still running" in skipped["message"]
    tool.release.set()
    assert (await next_notification(service))["status"] == "succeeded"
    runs = await runs_of(service, task_id)
    assert [(r.fire_time, r.status) for r in runs] == [
        (times[0], "succeeded"),
        (times[1], "skipped"),
    ]


async def test_buffer_one_starts_one_waiting_fire_after_the_running_one(
    start_service: ServiceFactory,
) -> None:
    tool = BlockingTool()
    service = await start_service(tools=[tool])
    task_id, times = await create(service, overlap="buffer_one")
    await service.runner.on_fire(task_id, [times[0]])
    await tool.started(1)

    await service.runner.on_fire(task_id, [times[1]])  # waits
    await service.runner.on_fire(task_id, [times[2]])  # one waits already: skipped
    skipped = await next_notification(service)
    assert skipped["status"] == "skipped"
    assert "another run was already waiting" in skipped["message"]
    runs = await runs_of(service, task_id)
    assert [(r.fire_time, r.status) for r in runs] == [
        (times[0], "running"),
        (times[1], "buffered"),
        (times[2], "skipped"),
    ]
    assert len(tool.calls) == 1  # the buffered fire has not started

    tool.release.set()
    finished = [await next_notification(service) for _ in range(2)]
    assert [n["status"] for n in finished] == ["succeeded", "succeeded"]
    first, second, third = await runs_of(service, task_id)
    assert (first.status, second.status, third.status) == ("succeeded", "succeeded", "skipped")
    assert second.kind == "scheduled" and second.started_at is not None
    assert first.finished_at is not None and second.started_at >= first.finished_at
    assert len(tool.calls) == 2
    task = await service.scheduler_tool.run("get_task", {"task_id": task_id}, context=CTX)
    assert task["task"]["run_count"] == 2  # the buffered fire is a scheduled run


async def test_allow_runs_alongside(start_service: ServiceFactory) -> None:
    tool = BlockingTool()
    service = await start_service(tools=[tool])
    task_id, times = await create(service, overlap="allow")
    await service.runner.on_fire(task_id, [times[0]])
    await tool.started(1)
    await service.runner.on_fire(task_id, [times[1]])
    await tool.started(2)  # both run at once
    runs = await runs_of(service, task_id)
    assert [r.status for r in runs] == ["running", "running"]
    tool.release.set()
    assert [(await next_notification(service))["status"] for _ in range(2)] == ["succeeded"] * 2


async def test_two_services_firing_at_one_instant_buffer_one_fire(
    start_service: ServiceFactory,
) -> None:
    """Two processes (two services on one database) both claim the next fire while the
    first runs: one buffers it, the other finds it claimed; the fire after it, claimed
    in the other process, sees the waiting one and is skipped; the waiting one starts
    once."""
    tool = BlockingTool()
    one = await start_service(tools=[tool])
    two = await start_service(tools=[tool])
    task_id, times = await create(one, overlap="buffer_one")
    await one.runner.on_fire(task_id, [times[0]])
    await tool.started(1)

    await asyncio.gather(
        one.runner.on_fire(task_id, [times[1]]), two.runner.on_fire(task_id, [times[1]])
    )
    await two.runner.on_fire(task_id, [times[2]])
    runs = await runs_of(one, task_id)
    assert [(r.fire_time, r.status) for r in runs[1:]] == [
        (times[1], "buffered"),
        (times[2], "skipped"),
    ]

    tool.release.set()

    async def settled() -> bool:
        runs = await runs_of(one, task_id)
        return sorted(r.status for r in runs) == ["skipped", "succeeded", "succeeded"]

    await wait_for(settled)  # executed by either service
    assert len(tool.calls) == 2


async def test_cancel_previous_stops_the_running_run_then_starts_the_new_one(
    start_service: ServiceFactory,
) -> None:
    tool = BlockingTool()
    service = await start_service(tools=[tool])
    task_id, times = await create(service, overlap="cancel_previous")
    await service.runner.on_fire(task_id, [times[0]])
    await tool.started(1)

    await service.runner.on_fire(task_id, [times[1]])  # asks the first to stop, waits
    stopped = await next_notification(service)
    assert stopped["status"] == "interrupted" and "a newer run of this task" in stopped["message"]
    await tool.started(2)  # the new run started once the first had stopped
    tool.release.set()
    assert (await next_notification(service))["status"] == "succeeded"
    first, second = await runs_of(service, task_id)
    assert (first.status, first.error_kind) == ("interrupted", "cancelled")
    assert (second.status, second.kind) == ("succeeded", "scheduled")
    assert second.started_at is not None and first.finished_at is not None
    assert second.started_at >= first.finished_at


async def test_cancel_previous_reaches_a_run_in_another_process(
    start_service: ServiceFactory,
) -> None:
    """The run executes in one service; the newer fire is claimed in another: the stop
    request is a stamp on the run's row, and the worker executing it acts on it."""
    tool = BlockingTool()
    one = await start_service(tools=[tool])
    two = await start_service(tools=[tool])
    task_id, times = await create(one, overlap="cancel_previous")
    await one.runner.on_fire(task_id, [times[0]])
    await tool.started(1)
    [running] = await runs_of(one, task_id)

    await two.runner.on_fire(task_id, [times[1]])
    await tool.started(2)
    tool.release.set()

    async def settled() -> bool:
        runs = await runs_of(one, task_id)
        return [(r.status, r.error_kind) for r in runs] == [
            ("interrupted", "cancelled"),
            ("succeeded", None),
        ]

    await wait_for(settled)
    assert running.worker is not None  # it was a worker's, stopped by that worker


async def test_cancel_previous_skips_a_queued_run_no_worker_took(
    start_service: ServiceFactory,
) -> None:
    """A run waiting in the queue (no live worker has its tool) never started: it is
    recorded skipped in the new fire's claim, and the new fire is queued at once."""
    owner = await start_service(tools=[BlockingTool()])
    task_id, times = await create(owner, overlap="cancel_previous")
    await owner.stop()
    other = await start_service()  # without the task's tool: its runs wait in the queue
    await other.runner.on_fire(task_id, [times[0]])
    await other.runner.on_fire(task_id, [times[1]])
    skipped = await next_notification(other)
    assert skipped["status"] == "skipped" and "a newer run of this task" in skipped["message"]
    runs = await runs_of(other, task_id)
    assert [(r.status, r.error_kind, r.worker) for r in runs] == [
        ("skipped", "cancelled", None),
        ("queued", None, None),
    ]


async def test_overlap_is_validated_stored_shown_and_changed(service: SchedulerService) -> None:
    tool = service.scheduler_tool
    with pytest.raises(ToolError) as refused:
        await create(service, overlap="cancel_other")
    assert refused.value.code == "invalid_input"
    assert "overlap:" in refused.value.message and "'buffer_one'" in refused.value.message
    listed = await tool.run("get_tasks", {}, context=CTX)
    assert listed["count"] == 0  # nothing stored

    service.tools.register(RecordingTool())
    task_id, _ = await create(service)
    shown = await tool.run("get_task", {"task_id": task_id}, context=CTX)
    assert shown["task"]["overlap"] == "skip"
    updated = await tool.run("update_task", {"task_id": task_id, "overlap": "ALLOW"}, context=CTX)
    assert updated["task"]["overlap"] == "allow" and "overlap" in updated["message"]
    schema = tool.definition()["input_schema"]["properties"]["kwargs"]["properties"]
    assert schema["overlap"]["enum"] == ["skip", "buffer_one", "allow", "cancel_previous"]
