"""Claims and quotas under concurrency, on SQLite and PostgreSQL alike.

* Two fires of one task claimed at the same moment (a slow claim overlapping the next
  fire, a catch-up overlapping a regular fire) never give one fire time two final
  outcomes: the claim transaction locks the task row.
* A fire time a ``missed`` row covers is never claimed and run afterwards.
* Concurrent creates never exceed ``max_tasks_per_user``.
* A manual run racing ``delete_task`` never deadlocks.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from scheduler_service import SchedulerService
from scheduler_service.storage.models import TaskRun
from tests.conftest import RecordingTool, ServiceFactory, next_notification
from tools import ToolContext, ToolError

CTX = ToolContext(user_id="u1", conversation_id="c1")


async def create_daily(service: SchedulerService, name: str = "daily") -> dict[str, Any]:
    out = await service.scheduler_tool.run(
        "create_task",
        {
            "name": name,
            "frequency": "daily",
            "scheduled_time": "03:00",
            "timezone": "UTC",
            "tool_name": "recording_tool",
            "operation": "record",
            "max_retries": 0,
        },
        context=CTX,
    )
    task: dict[str, Any] = out["task"]
    return task


async def final_outcomes(service: SchedulerService, task_id: str) -> dict[datetime, list[str]]:
    """fire time → statuses of the rows that settle it."""
    async with service.db.read() as session:
        runs = (await session.scalars(select(TaskRun).where(TaskRun.task_id == task_id))).all()
    outcomes: dict[datetime, list[str]] = defaultdict(list)
    for run in runs:
        if "retry_at" not in (run.details or {}):
            outcomes[run.fire_time.astimezone(UTC)].append(run.status)
    return dict(outcomes)


async def test_overlapping_claims_of_one_task_give_each_fire_time_one_outcome(
    start_service: ServiceFactory,
) -> None:
    tool = RecordingTool()
    service = await start_service(tools=[tool])
    task = await create_daily(service)
    first = datetime.fromisoformat(task["next_run_time"]).astimezone(UTC)
    second = first + timedelta(days=1)

    await asyncio.gather(
        service.runner.on_fire(task["task_id"], [first]),
        service.runner.on_fire(task["task_id"], [second]),
    )
    for _ in range(2):  # each fire time ends with one notification (run where claimed)
        await next_notification(service)

    outcomes = await final_outcomes(service, task["task_id"])
    assert set(outcomes) == {first, second}
    assert all(len(statuses) == 1 for statuses in outcomes.values()), outcomes
    assert outcomes[first] == ["succeeded"]  # the second overlapped it: run or skipped
    assert len(tool.calls) == [*outcomes.values()].count(["succeeded"])


async def test_a_fire_time_recorded_missed_is_never_run(start_service: ServiceFactory) -> None:
    tool = RecordingTool()
    service = await start_service(tools=[tool], misfire_grace_time=1)
    task = await create_daily(service)
    first = datetime.fromisoformat(task["next_run_time"]).astimezone(UTC)
    times = [first - timedelta(days=3), first - timedelta(days=2), first - timedelta(days=1)]
    # Long past: all three are missed. Then the job store hands the middle one over again.
    await service.runner.on_fire(task["task_id"], times)
    await service.runner.on_fire(task["task_id"], [times[1]])

    outcomes = await final_outcomes(service, task["task_id"])
    assert {t: outcomes.get(t) for t in times} == {t: ["missed"] for t in times}
    assert not tool.calls


async def test_concurrent_creates_never_exceed_the_quota(start_service: ServiceFactory) -> None:
    service = await start_service(tools=[RecordingTool()])
    service.settings.scheduler_tool.max_tasks_per_user = 20

    async def one(i: int) -> bool:
        try:
            await create_daily(service, f"task {i}")
        except ToolError as error:
            assert error.code == "quota_exceeded", error
            return False
        return True

    created = await asyncio.gather(*(one(i) for i in range(50)))
    assert sum(created) == 20
    listed = await service.scheduler_tool.run("get_tasks", {"limit": 100}, context=CTX)
    assert listed["total"] == 20


async def test_manual_run_racing_delete_never_deadlocks(start_service: ServiceFactory) -> None:
    tool = RecordingTool()
    service = await start_service(tools=[tool])
    for i in range(20):
        task = await create_daily(service, f"race {i}")
        await service.scheduler_tool.run(
            "execute_task_now", {"task_id": task["task_id"], "wait": False}, context=CTX
        )
        out = await service.scheduler_tool.run(
            "delete_task", {"task_id": task["task_id"]}, context=CTX
        )
        assert out["task_id"] == task["task_id"]
    await service.runner.settled()


def test_retries_are_decided_in_one_place() -> None:
    """policy.retryable: failures of a moment are retried, refusals and runs that
    changed tasks are not; the orchestration result reports the same decision."""
    from scheduler_service.runs.chains import TASK_CHANGES
    from scheduler_service.runs.policy import Outcome, retryable

    def failed(kind: str, **details: str) -> Outcome:
        return Outcome("failed", error="x", error_kind=kind, details=dict(details))

    for kind in ("timeout", "exception", "unavailable", "rate_limit", "tool_missing"):
        assert retryable(failed(kind)), kind
    for kind in ("invalid_input", "not_found", "forbidden", "iteration_limit", "refusal"):
        assert not retryable(failed(kind)), kind
    assert not retryable(failed("timeout", **{TASK_CHANGES: "created a task"}))
    assert not retryable(Outcome("succeeded"))
    assert not retryable(Outcome("interrupted", error_kind="interrupted"))
