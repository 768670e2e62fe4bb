"""Process roles on both backends: clients never take runs, a stop hands unstarted runs
back to the queue, a manual run is fenced by its claim, health follows a clean stop, and
a task takes the user's zone from the host's context."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from scheduler_service import SchedulerService
from scheduler_service.cluster.health import check_health
from scheduler_service.cluster.workers import WorkerRow, live_workers
from scheduler_service.storage.models import TaskRun
from tests.conftest import RecordingTool, ServiceFactory, next_notification, wait_for
from tools import ToolContext, ToolError

CTX = ToolContext(user_id="u1", conversation_id="c1")


def soon(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def create_blocking(service: SchedulerService, due: str, name: str) -> str:
    out = await service.scheduler_tool.run(
        "create_task",
        {
            "name": name,
            "frequency": "once",
            "scheduled_time": due,
            "tool_name": "recording_tool",
            "operation": "block",
            "parameters": {},
        },
        context=CTX,
    )
    return str(out["task"]["task_id"])


async def all_runs(service: SchedulerService) -> list[TaskRun]:
    async with service.db.read() as session:
        return list((await session.scalars(select(TaskRun))).all())


async def test_a_client_started_during_a_backlog_takes_no_run(
    start_service: ServiceFactory,
) -> None:
    """The operator's shell and the web process are clients: started and stopped while
    runs wait for the worker's slots, they take none and interrupt none."""
    tool = RecordingTool()
    worker = await start_service(tools=[tool], max_concurrent_tasks=2)
    due = soon(1.0)
    ids = [await create_blocking(worker, due, f"t{i}") for i in range(6)]

    async def two_running() -> bool:
        return len(tool.calls) >= 2

    await wait_for(two_running)
    client = await start_service(role="client")
    assert not client.is_worker and not client.is_leader
    client.runner.queue.poke()  # a worker would look at the queue now; a client must not
    await client.scheduler_tool.run("get_tasks", {}, context=CTX)
    assert client.leadership.worker not in {w.id for w in await live_workers(client.db)}
    await client.stop()

    tool.release.set()
    statuses = [(await next_notification(worker))["status"] for _ in ids]
    assert statuses == ["succeeded"] * len(ids)
    runs = await all_runs(worker)
    assert sorted(r.task_id for r in runs) == sorted(ids)
    assert {r.worker for r in runs} == {worker.runner.worker}


async def test_a_graceful_stop_hands_unstarted_runs_to_the_next_worker(
    start_service: ServiceFactory,
) -> None:
    """One slot, three runs due: at a stop the running one is interrupted after the
    grace; the two that never started go back to the queue and the next worker runs
    them. Every task ends with exactly one run."""
    tool = RecordingTool()
    first = await start_service(tools=[tool], max_concurrent_tasks=1, shutdown_grace=0.2)
    due = soon(1.0)
    ids = [await create_blocking(first, due, f"t{i}") for i in range(3)]

    async def all_claimed() -> bool:
        return len(await all_runs(first)) == 3 and bool(tool.calls)

    await wait_for(all_claimed)
    await first.stop()
    after_stop = await all_runs(first)
    assert sorted(r.status for r in after_stop) == ["interrupted", "queued", "queued"]
    assert all(r.worker is None for r in after_stop if r.status == "queued")

    tool.release.set()
    second_tool = RecordingTool()
    second_tool.release.set()
    second = await start_service(tools=[second_tool])
    statuses = [(await next_notification(second))["status"] for _ in range(2)]
    assert statuses == ["succeeded", "succeeded"]
    runs = await all_runs(second)
    assert sorted(r.task_id for r in runs) == sorted(ids)  # one run per task, none twice
    assert sorted(r.status for r in runs) == ["interrupted", "succeeded", "succeeded"]
    assert len(second_tool.calls) == 2


async def test_two_callers_of_execute_task_now_get_one_run(
    start_service: ServiceFactory,
) -> None:
    """Two processes (two services on one database) run one task now at the same
    instant: the claim is the fence, so one run and one conflict."""
    tool = RecordingTool()
    one = await start_service(tools=[tool])
    two = await start_service(tools=[tool])
    one.settings.limits.manual_run_interval = 0
    two.settings.limits.manual_run_interval = 0
    task_id = await create_blocking(one, soon(3600), "manual")

    async def run_now(service: SchedulerService) -> Any:
        try:
            return await service.scheduler_tool.run(
                "execute_task_now", {"task_id": task_id, "wait": False}, context=CTX
            )
        except ToolError as exc:
            return exc

    answers = await asyncio.gather(run_now(one), run_now(two))
    refused = [a for a in answers if isinstance(a, ToolError)]
    assert len(refused) == 1 and refused[0].code == "conflict", answers
    tool.release.set()
    await one.runner.settled()
    await two.runner.settled()
    manual = [r for r in await all_runs(one) if r.kind == "manual"]
    assert len(manual) == 1 and len(tool.calls) == 1


async def test_health_is_unhealthy_as_soon_as_the_only_worker_stops(
    start_service: ServiceFactory,
) -> None:
    worker = await start_service()
    url, interval = worker.settings.database_url, worker.settings.scheduler.check_interval
    report = await asyncio.to_thread(check_health, url, interval, worker.leadership.worker)
    assert report.ok, report.problems
    assert [w["id"] for w in report.workers] == [worker.leadership.worker]
    await worker.stop()
    report = await asyncio.to_thread(check_health, url, interval, worker.leadership.worker)
    assert not report.ok and report.workers == []
    assert any("no leader" in p for p in report.problems)
    assert any("is not running" in p for p in report.problems)


async def test_a_worker_row_lists_its_tools_and_goes_at_a_clean_stop(
    start_service: ServiceFactory,
) -> None:
    worker = await start_service(tools=[RecordingTool()])
    [info] = await live_workers(worker.db)
    assert info.leader and info.role == "worker" and "recording_tool" in info.tools
    db = worker.db
    await worker.stop()
    fresh = SchedulerService(worker.settings, role="client")
    await fresh.start()
    try:
        async with fresh.db.read() as session:
            assert (await session.scalars(select(WorkerRow))).all() == []
    finally:
        await fresh.stop()
    assert db is not fresh.db


@pytest.mark.parametrize("given", [None, "America/New_York"])
async def test_a_task_takes_the_users_zone_from_the_context(
    service: SchedulerService, given: str | None
) -> None:
    context = ToolContext(user_id="u1", conversation_id="c1", timezone="Europe/Paris")
    kwargs = {
        "name": "Standup",
        "frequency": "daily",
        "scheduled_time": "09:00",
        "tool_name": "reminder_tool",
        "operation": "add_reminder",
        "parameters": {"title": "standup", "date": "today"},
    }
    if given:
        kwargs["timezone"] = given
    out = await service.scheduler_tool.run("create_task", kwargs, context=context)
    assert out["task"]["timezone"] == (given or "Europe/Paris")
    assert ("from the conversation" in out["message"]) == (given is None)
    assert out["task"]["next_run_time"].endswith(("+01:00", "+02:00", "-05:00", "-04:00"))


async def test_the_manual_run_rate_counts_every_task_of_the_user(
    start_service: ServiceFactory,
) -> None:
    """Fresh tasks do not reset it: creating, running and cancelling task after task
    stops at ``max_manual_runs_per_minute`` runs, with quota_exceeded."""
    tool = RecordingTool()
    tool.release.set()
    service = await start_service(tools=[tool])
    service.settings.limits.max_manual_runs_per_minute = 3
    answers = []
    for i in range(5):
        task_id = await create_blocking(service, soon(3600), f"fresh {i}")
        try:
            await service.scheduler_tool.run(
                "execute_task_now", {"task_id": task_id, "wait": False}, context=CTX
            )
            answers.append("ok")
        except ToolError as exc:
            answers.append(exc.code)
        await service.scheduler_tool.run("cancel_task", {"task_id": task_id}, context=CTX)
    assert answers == ["ok", "ok", "ok", "quota_exceeded", "quota_exceeded"]
    await service.runner.settled()


async def test_preview_of_an_interval_task_keeps_its_stored_phase(
    service: SchedulerService,
) -> None:
    """An "every hour" task created at hh:mm:ss runs at that minute and second: the
    preview by task_id shows the stored runs, not runs recomputed from now."""
    out = await service.scheduler_tool.run(
        "create_task",
        {"name": "hourly", "frequency": "hourly", "tool_name": "reminder_tool",
         "operation": "get_reminders"},
        context=CTX,
    )  # fmt: skip
    task = out["task"]
    await asyncio.sleep(1.1)  # a later "now" would give other seconds if recomputed
    shown = await service.scheduler_tool.run(
        "preview_schedule", {"task_id": task["task_id"], "count": 3}, context=CTX
    )
    got = await service.scheduler_tool.run("get_task", {"task_id": task["task_id"]}, context=CTX)
    first = datetime.fromisoformat(task["next_run_time"])
    assert [datetime.fromisoformat(t) for t in shown["next_runs"]] == [
        first + timedelta(hours=i) for i in range(3)
    ]
    assert datetime.fromisoformat(got["task"]["next_run_time"]) == first
