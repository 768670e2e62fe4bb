"""Exactly once on every path, not only the fire path: concurrent edits keep a task and
its job together, retention keeps what someone still needs, slow sync tools never hold
up the service, and the threaded facade answers instead of freezing."""

from __future__ import annotations

import asyncio
import random
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from scheduler_service import SchedulerService
from scheduler_service.storage.models import ScheduledTask, TaskNotification, TaskRun
from scheduler_service.threaded import ThreadedScheduler
from tests.conftest import RecordingTool, ServiceFactory, make_settings
from tools import Tool, ToolContext, ToolError

CTX = ToolContext(user_id="u1", conversation_id="c1")
OTHER = ToolContext(user_id="u2", conversation_id="c2")


def every_minute(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "frequency": "minutely",
        "tool_name": "recording_tool",
        "operation": "record",
        "parameters": {},
    }


async def job_agrees(service: SchedulerService, task_id: str) -> tuple[str, bool]:
    """(the task's status, whether its job agrees with it)."""
    async with service.db.read() as session:
        task = await session.get(ScheduledTask, task_id)
    assert task is not None
    exists = await service.jobs.exists(task_id)
    next_run = await service.jobs.next_run_time(task_id) if exists else None
    if task.status == "scheduled":
        return task.status, exists and next_run is not None
    if task.status == "paused":
        return task.status, exists and next_run is None
    return task.status, not exists


async def test_concurrent_pause_resume_update_from_two_processes_keep_task_and_job_together(
    start_service: ServiceFactory,
) -> None:
    """Two services (two processes' worth of connections) pause, resume and update one
    task at the same instants, round after round: the task and its job always agree,
    and every answer is a result or a ToolError naming a conflict."""
    one = await start_service(tools=[RecordingTool()])
    two = await start_service(tools=[RecordingTool()])
    task_id = (await one.scheduler_tool.run("create_task", every_minute("edited"), context=CTX))[
        "task"
    ]["task_id"]
    rng = random.Random(7)
    ops = [
        ("pause_task", {}),
        ("resume_task", {}),
        ("update_task", {"frequency": "hourly"}),
        ("update_task", {"frequency": "minutely"}),
        ("update_task", {"name": "renamed"}),
    ]

    async def act(service: SchedulerService) -> str:
        operation, extra = rng.choice(ops)
        try:
            await service.scheduler_tool.run(operation, {"task_id": task_id, **extra}, context=CTX)
        except ToolError as exc:
            assert exc.code == "conflict", exc
            return "conflict"
        return "ok"

    answers = []
    for _ in range(25):
        answers += await asyncio.gather(act(one), act(two), act(one))
        status, agrees = await job_agrees(one, task_id)
        assert agrees, f"task {status} but its job disagrees"
    assert "ok" in answers


async def test_an_update_that_loses_to_a_cancel_is_refused_and_leaves_no_job(
    start_service: ServiceFactory,
) -> None:
    one = await start_service(tools=[RecordingTool()])
    two = await start_service(tools=[RecordingTool()])
    for round_ in range(10):
        task_id = (
            await one.scheduler_tool.run("create_task", every_minute(f"r{round_}"), context=CTX)
        )["task"]["task_id"]

        async def answer(
            service: SchedulerService, operation: str, task_id: str = task_id, **extra: Any
        ) -> str:
            try:
                await service.scheduler_tool.run(
                    operation, {"task_id": task_id, **extra}, context=CTX
                )
            except ToolError as exc:
                return exc.code
            return "ok"

        update_answer, cancel_answer = await asyncio.gather(
            answer(one, "update_task", frequency="hourly"), answer(two, "cancel_task")
        )
        assert cancel_answer == "ok"
        assert update_answer in ("ok", "conflict")
        status, agrees = await job_agrees(one, task_id)
        assert status == "cancelled" and agrees, "a cancelled task kept a job"


async def test_retention_keeps_unread_notifications_and_runs_in_progress(
    start_service: ServiceFactory,
) -> None:
    """Creating a task prunes the user's oldest finished tasks beyond the limit, but not
    one whose notification nobody has read, nor one whose run is still going."""
    service = await start_service(tools=[RecordingTool()])
    service.settings.limits.max_finished_tasks_per_user = 0
    unread = await create_finished(service, "unread", notified=True)
    running = await create_finished(service, "running", notified=False, run_status="running")
    plain = await create_finished(service, "plain", notified=False)
    await service.scheduler_tool.run("create_task", every_minute("trigger prune"), context=CTX)
    kept = await task_ids(service)
    assert unread in kept and running in kept and plain not in kept
    pending = await service.get_notifications("c1", user_id="u1")
    assert [n["task_id"] for n in pending] == [unread]

    await service.mark_notifications_displayed([n["id"] for n in pending], user_id="u1")
    await service.scheduler_tool.run("create_task", every_minute("prune again"), context=CTX)
    assert unread not in await task_ids(service)


async def create_finished(
    service: SchedulerService, name: str, *, notified: bool, run_status: str = "succeeded"
) -> str:
    """A cancelled task with one run (and an unread notification if ``notified``)."""
    out = await service.scheduler_tool.run("create_task", every_minute(name), context=CTX)
    task_id = str(out["task"]["task_id"])
    await service.scheduler_tool.run("cancel_task", {"task_id": task_id}, context=CTX)
    now = datetime.now(UTC)
    async with service.db.write() as session:
        session.add(
            TaskRun(
                id=f"run_{name}", task_id=task_id, user_id="u1", kind="manual", fire_time=now,
                attempt=1, status=run_status, queued_at=now, worker=service.runner.worker,
            )
        )  # fmt: skip
        if notified:
            session.add(
                TaskNotification(
                    id=f"n_{name}", task_id=task_id, run_id=f"run_{name}", user_id="u1",
                    conversation_id="c1", task_name=name, status="succeeded", priority=1,
                    title=name, message=name, created_at=now,
                )
            )  # fmt: skip
        await session.execute(
            update(ScheduledTask)
            .where(ScheduledTask.id == task_id)
            .values(updated_at=now - timedelta(days=1))
        )
    return task_id


async def task_ids(service: SchedulerService) -> set[str]:
    async with service.db.read() as session:
        return set((await session.scalars(select(ScheduledTask.id))).all())


class SlowSyncTool(Tool):
    """A plain ``def`` tool that blocks its thread until released."""

    name = "slow_sync"
    description = "Blocks."
    input_schema = {"type": "object", "properties": {}}

    def __init__(self) -> None:
        self.release = threading.Event()
        self.inside = 0
        self.lock = threading.Lock()

    def run(  # type: ignore[override]
        self, operation: str, kwargs: dict[str, Any] | str | None, *, context: ToolContext
    ) -> dict[str, Any]:
        with self.lock:
            self.inside += 1
        self.release.wait(30)
        return {"ok": True}


async def test_slow_sync_tools_never_hold_up_another_users_calls(
    start_service: ServiceFactory,
) -> None:
    """Eight plain-``def`` tools blocked in their threads (more than the default thread
    pool of a 2-core machine): another user's calls, which read and write the
    database in threads, still answer."""
    tool = SlowSyncTool()
    service = await start_service(tools=[tool, RecordingTool()], max_concurrent_tasks=8)
    service.settings.limits.manual_run_interval = 0
    for i in range(8):
        task = {**every_minute(f"slow {i}"), "tool_name": "slow_sync", "operation": "go"}
        out = await service.scheduler_tool.run("create_task", task, context=CTX)
        await service.scheduler_tool.run(
            "execute_task_now", {"task_id": out["task"]["task_id"], "wait": False}, context=CTX
        )
    while tool.inside < 8:  # noqa: ASYNC110 (threads of our own: no event to await)
        await asyncio.sleep(0.01)
    try:
        async with asyncio.timeout(10):
            await service.scheduler_tool.run("create_task", every_minute("mine"), context=OTHER)
            listed = await service.scheduler_tool.run("get_tasks", {}, context=OTHER)
        assert listed["count"] == 1
    finally:
        tool.release.set()
    await service.runner.settled()


class CallsBack(Tool):
    """A sync tool that calls the scheduler back through the threaded facade."""

    name = "calls_back"
    description = "Lists tasks from inside a run."
    input_schema = {"type": "object", "properties": {}}
    facade: ThreadedScheduler | None = None

    def run(  # type: ignore[override]
        self, operation: str, kwargs: dict[str, Any] | str | None, *, context: ToolContext
    ) -> dict[str, Any]:
        assert self.facade is not None
        try:
            self.facade.call_tool("get_tasks", {}, context=context)
        except ToolError as exc:
            return {"refused": exc.code}
        return {"refused": None}


def test_a_tool_calling_back_into_the_threaded_scheduler_is_refused_at_once(
    db_path: Path,
) -> None:
    tool = CallsBack()
    with ThreadedScheduler(make_settings(db_path), tools=[tool], timeout=20) as facade:
        tool.facade = facade
        task = facade.call_tool(
            "create_task",
            {"name": "cb", "frequency": "daily", "scheduled_time": "09:00",
             "tool_name": "calls_back", "operation": "go"},
            context=CTX,
        )  # fmt: skip
        out = facade.call_tool(
            "execute_task_now", {"task_id": task["task"]["task_id"]}, context=CTX
        )
    assert out["run"]["status"] == "succeeded" and out["run"]["result"] == {"refused": "forbidden"}


def test_a_stop_answers_threaded_callers_in_flight_with_unavailable(db_path: Path) -> None:
    facade = ThreadedScheduler(make_settings(db_path, shutdown_grace=0.1))
    facade.start()
    gate = threading.Event()
    answers: list[Any] = []

    async def slow(service: SchedulerService) -> None:
        gate.set()
        await asyncio.sleep(60)

    def caller() -> None:
        try:
            facade.submit(slow)
        except BaseException as exc:  # what a host thread would see
            answers.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(4)]
    for thread in threads:
        thread.start()
    assert gate.wait(10)
    facade.stop()
    for thread in threads:
        thread.join(10)
    assert len(answers) == 4
    assert all(isinstance(a, ToolError) and a.code == "unavailable" for a in answers), answers


async def test_the_store_check_finds_and_repairs_what_disagrees(
    start_service: ServiceFactory,
) -> None:
    from scheduler_service.runs.invariants import check_store
    from scheduler_service.runs.recovery import reconcile

    service = await start_service(tools=[RecordingTool()])
    alive = service.leadership.is_alive
    ids = [
        (await service.scheduler_tool.run("create_task", every_minute(f"c{i}"), context=CTX))[
            "task"
        ]["task_id"]
        for i in range(3)
    ]
    assert (await check_store(service.db, service.jobs, alive)).ok
    await service.jobs.remove(ids[0])  # a task without its job
    now = datetime.now(UTC)
    async with service.db.write() as session:  # a run a vanished worker left running
        session.add(
            TaskRun(
                id="run_stranded", task_id=ids[1], user_id="u1", kind="manual", fire_time=now,
                attempt=1, status="running", queued_at=now, worker="gone:1:deadbeef",
            )
        )  # fmt: skip
    report = await check_store(service.db, service.jobs, alive)
    found = {p.what: p.examples for p in report.problems}
    assert found == {
        "live tasks whose job is missing or in another state": [ids[0]],
        "runs left queued or running by a worker that is gone": ["run_stranded"],
    }
    await reconcile(service.db, service.jobs)
    await service.lead.recover()
    assert (await check_store(service.db, service.jobs, alive)).ok


@pytest.mark.parametrize(
    "fields",
    [
        {"frequency": "once", "scheduled_time": "in 99999999999 days"},
        {"frequency": "custom", "custom_schedule": "every 99999999999 seconds"},
        {"frequency": "custom", "custom_schedule": "every 99999999999 days"},
        {"frequency": "once", "scheduled_time": "in 99999999 weeks"},
    ],
)
async def test_numbers_too_large_are_bad_input_not_our_bug(
    service: SchedulerService, fields: dict[str, Any]
) -> None:
    with pytest.raises(ToolError) as info:
        await service.scheduler_tool.run(
            "create_task",
            {"name": "huge", **fields, "tool_name": "reminder_tool", "operation": "get_reminders"},
            context=CTX,
        )
    assert info.value.code == "invalid_input", info.value
    assert "bug" not in info.value.message
