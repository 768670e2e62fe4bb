"""Exactly one run per fire time, crash-safe, never stalls.

Real services on real SQLite files with APScheduler firing real jobs. Where a test needs
a state that only a crash produces (rows a dead process left running, a job store that
moved on without a claim), it writes that state into the database directly and starts
a service on it. The kill -9 test with real processes is in ``test_fault_kill.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import delete, event, select, text, update

from scheduler_service import SchedulerService
from scheduler_service.runs.recovery import check_triggers, same_trigger
from scheduler_service.runs.runner import INTERRUPTED, NOT_STARTED, RunInfo, current_run
from scheduler_service.schedules import Schedule, build_trigger
from scheduler_service.scheduling import executor, jobstore, scheduler
from scheduler_service.storage.db import Database
from scheduler_service.storage.models import (
    ScheduledTask,
    TaskNotification,
    TaskRun,
    new_id,
    utcnow,
)
from tests.conftest import (
    ServiceFactory,
    database_execute,
    database_rows,
    next_notification,
    wait_for,
)
from tools import Tool, ToolContext, ToolError

CTX = ToolContext(user_id="u1", conversation_id="c1")


# -- test tools ------------------------------------------------------------------------
class FlakyTool(Tool):
    """Fails (retryably) its first ``failures`` calls, then succeeds; records each run."""

    name = "flaky"
    description = "Fails a given number of times (tests only)."
    input_schema = {"type": "object", "properties": {"operation": {"enum": ["act"]}}}

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.runs: list[RunInfo] = []

    async def run(
        self, operation: str, kwargs: dict[str, Any] | str | None, *, context: ToolContext
    ) -> dict[str, Any]:
        self.runs.append(current_run.get())
        if len(self.runs) <= self.failures:
            raise ToolError("unavailable", f"failure {len(self.runs)} (test)")
        return {"message": "done"}


class GateTool(Tool):
    """Each call waits until the test releases it by name; records start order."""

    name = "gate"
    description = "Blocks until released (tests only)."
    input_schema = {"type": "object", "properties": {"operation": {"enum": ["wait"]}}}

    def __init__(self) -> None:
        self.started: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._gates: dict[str, asyncio.Event] = {}
        self._changed = asyncio.Condition()

    def gate(self, name: str) -> asyncio.Event:
        return self._gates.setdefault(name, asyncio.Event())

    async def run(
        self, operation: str, kwargs: dict[str, Any] | str | None, *, context: ToolContext
    ) -> dict[str, Any]:
        name = str((kwargs if isinstance(kwargs, dict) else {})["name"])
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        async with self._changed:
            self.started.append(name)
            self._changed.notify_all()
        try:
            await self.gate(name).wait()
        finally:
            self.in_flight -= 1
        return {"message": f"released {name}"}

    async def wait_started(self, count: int, timeout: float = 10) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.started) >= count)


class HangTool(Tool):
    """An async tool that never returns, and a sync one that blocks its thread."""

    name = "hang"
    description = "Never finishes (tests only)."
    input_schema = {"type": "object", "properties": {"operation": {"enum": ["wait"]}}}

    async def run(
        self, operation: str, kwargs: dict[str, Any] | str | None, *, context: ToolContext
    ) -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class BlockingThreadTool(Tool):
    name = "blocking_thread"
    description = "A sync tool that blocks until released (tests only)."
    input_schema = {"type": "object", "properties": {"operation": {"enum": ["wait"]}}}

    def __init__(self) -> None:
        self.release = threading.Event()

    def run(  # type: ignore[override]
        self, operation: str, kwargs: dict[str, Any] | str | None, *, context: ToolContext
    ) -> dict[str, Any]:
        self.release.wait(30)
        return {"message": "finally"}


# -- helpers ---------------------------------------------------------------------------
def soon(seconds: float) -> datetime:
    """A due time ``seconds`` ahead, in whole milliseconds (exact through the job store)."""
    at = datetime.now(UTC) + timedelta(seconds=seconds)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


async def create(
    service: SchedulerService, tool: str, due: datetime, *, frequency: str = "once", **extra: Any
) -> str:
    operation = {"flaky": "act"}.get(tool, "wait")
    out = await service.scheduler_tool.run(
        "create_task",
        {
            "name": f"{tool} task",
            "frequency": frequency,
            "scheduled_time": due.isoformat(),
            "tool_name": tool,
            "operation": operation,
            **extra,
        },
        context=CTX,
    )
    return str(out["task"]["task_id"])


async def runs_of(service: SchedulerService, task_id: str) -> list[TaskRun]:
    async with service.db.read() as session:
        query = select(TaskRun).where(TaskRun.task_id == task_id)
        rows = (await session.scalars(query.order_by(TaskRun.fire_time, TaskRun.attempt))).all()
    return list(rows)


async def task_row(service: SchedulerService, task_id: str) -> ScheduledTask:
    async with service.db.read() as session:
        task = await session.get(ScheduledTask, task_id)
    assert task is not None
    return task


async def notifications_of(service: SchedulerService, task_id: str) -> list[TaskNotification]:
    async with service.db.read() as session:
        query = select(TaskNotification).where(TaskNotification.task_id == task_id)
        return list((await session.scalars(query.order_by(TaskNotification.created_at))).all())


# -- 1. fire-time fencing ----------------------------------------------------------------
async def test_job_learns_its_real_fire_time(start_service: ServiceFactory) -> None:
    tool = FlakyTool()
    service = await start_service(tools=[tool])
    due = soon(1)
    task_id = await create(service, "flaky", due)
    note = await next_notification(service)
    assert note["status"] == "succeeded"
    [run] = await runs_of(service, task_id)
    assert run.fire_time == due and tool.runs[0].fire_time == due  # not "now"
    assert run.started_at is not None and run.started_at >= due
    assert (run.kind, run.attempt, run.status) == ("scheduled", 1, "succeeded")


async def test_a_second_claim_of_a_fire_time_fails_cleanly(start_service: ServiceFactory) -> None:
    """Two services (separate write locks, separate connections) fire the same time."""
    tools = [FlakyTool(), FlakyTool()]
    first = await start_service(tools=[tools[0]])
    second = await start_service(tools=[tools[1]])
    task_id = await create(first, "flaky", soon(3600))
    due = (await task_row(first, task_id)).next_run_at
    assert due is not None
    await asyncio.gather(
        first.runner.on_fire(task_id, [due]), second.runner.on_fire(task_id, [due])
    )

    async def recorded() -> bool:  # on PostgreSQL the run went through the run queue
        return [r.status for r in await runs_of(first, task_id)] == ["succeeded"]

    await wait_for(recorded)
    assert len(tools[0].runs) + len(tools[1].runs) == 1
    assert [(r.fire_time, r.status) for r in await runs_of(first, task_id)] == [(due, "succeeded")]
    assert await first.runner.claims.attempt(task_id, due, "scheduled", 1) is None


async def test_manual_run_neither_blocks_nor_consumes_the_scheduled_one(
    start_service: ServiceFactory,
) -> None:
    gate = GateTool()
    service = await start_service(tools=[gate], max_concurrent_tasks=3)
    due = soon(1.5)
    task_id = await create(service, "gate", due, parameters={"name": "x"})
    out = await service.scheduler_tool.run(
        "execute_task_now", {"task_id": task_id, "wait": False}, context=CTX
    )
    assert out["run"]["kind"] == "manual" and out["run"]["status"] == "queued"
    await gate.wait_started(2)  # the manual run is still blocked when the schedule fires
    gate.gate("x").set()
    statuses = {(await next_notification(service))["status"] for _ in range(2)}
    assert statuses == {"succeeded"}
    runs = await runs_of(service, task_id)
    assert sorted((r.kind, r.status) for r in runs) == [
        ("manual", "succeeded"),
        ("scheduled", "succeeded"),
    ]
    assert next(r for r in runs if r.kind == "scheduled").fire_time == due
    task = await task_row(service, task_id)
    assert (task.status, task.run_count) == ("completed", 1)


# -- 2. recovery and reconciliation at start ----------------------------------------------
async def _leave_dead_run(
    service: SchedulerService, task_id: str, status: str, fire_time: datetime | None = None
) -> str:
    """What a killed process leaves behind: a claimed run that never finished, recorded
    with the worker id of that (dead) process."""
    run_id = new_id("run")
    async with service.db.write() as session:
        task = await session.get(ScheduledTask, task_id)
        assert task is not None
        fire_time = fire_time or task.next_run_at or utcnow()
        if task.frequency == "once":
            task.next_run_at = None  # the claim moved it on
        session.add(
            TaskRun(
                id=run_id,
                task_id=task_id,
                user_id=task.user_id,
                kind="scheduled",
                fire_time=fire_time,
                attempt=1,
                status=status,
                queued_at=utcnow(),
                started_at=utcnow() if status == "running" else None,
                worker=f"deadhost:4242:{uuid.uuid4().hex}",
            )
        )
    return run_id


async def test_start_marks_runs_of_a_dead_process_interrupted(
    start_service: ServiceFactory,
) -> None:
    service = await start_service(tools=[FlakyTool()])
    once = await create(service, "flaky", soon(3600))
    every = await create(service, "flaky", soon(3600), frequency="hourly")
    every_next = (await task_row(service, every)).next_run_at
    await _leave_dead_run(service, once, "running")
    await _leave_dead_run(service, every, "queued", soon(-86_400))  # long past its grace
    await service.stop()

    again = await start_service(tools=[FlakyTool()])
    notes = {n["task_id"]: n for n in [await next_notification(again) for _ in range(2)]}
    assert {n["status"] for n in notes.values()} == {"interrupted"}
    [run_once] = await runs_of(again, once)
    [run_every] = await runs_of(again, every)
    assert (run_once.status, run_once.error) == ("interrupted", INTERRUPTED)
    assert (run_every.status, run_every.error) == ("interrupted", NOT_STARTED)
    assert (await task_row(again, once)).status == "failed"  # a one-time task is settled
    assert not await again.jobs.exists(once)
    every_task = await task_row(again, every)
    assert (every_task.status, every_task.next_run_at) == ("scheduled", every_next)
    assert every_task.consecutive_failures == 0  # a crash is not the task's failure
    assert await again.jobs.next_run_time(every) == every_next


async def test_a_claimed_run_that_never_started_runs_at_recovery_within_grace(
    start_service: ServiceFactory,
) -> None:
    """Claimed, never started (no ``running`` commit): it never acted, so while its fire
    time is within the grace time the next leader runs it instead of interrupting it."""
    tool = FlakyTool()
    service = await start_service(tools=[tool])
    task_id = await create(service, "flaky", soon(3600), frequency="hourly")
    run_id = await _leave_dead_run(service, task_id, "queued", soon(-1))
    await service.stop()

    again = await start_service(tools=[tool])
    note = await next_notification(again)
    assert (note["run_id"], note["status"]) == (run_id, "succeeded")
    [run] = await runs_of(again, task_id)
    assert (run.id, run.status, run.worker) == (run_id, "succeeded", again.runner.worker)


async def test_start_removes_jobs_without_tasks_and_adds_missing_jobs(
    start_service: ServiceFactory,
) -> None:
    service = await start_service(tools=[FlakyTool()])
    kept = await create(service, "flaky", soon(3600))
    missed = await create(service, "flaky", soon(3600))
    ghost_trigger = build_trigger(Schedule("once", "UTC", soon(3600)))
    await service.jobs.schedule("task_ghost", ghost_trigger, soon(3600))
    await service.jobs.schedule_retry("task_ghost", soon(-60), 2, soon(3600))
    kept_next = (await task_row(service, kept)).next_run_at
    await service.jobs.remove(kept)
    await service.jobs.remove(missed)
    async with service.db.write() as session:  # its due time passed while it had no job
        await session.execute(
            update(ScheduledTask)
            .where(ScheduledTask.id == missed)
            .values(next_run_at=utcnow() - timedelta(hours=2))
        )
    await service.stop()

    again = await start_service(tools=[FlakyTool()], misfire_grace_time=60)
    assert sorted(await again.jobs.job_ids()) in ([kept], sorted([kept, missed]))
    assert await again.jobs.next_run_time(kept) == kept_next
    note = await next_notification(again)  # the job went back at its stored next run
    assert (note["task_id"], note["status"]) == (missed, "missed")
    assert [r.status for r in await runs_of(again, missed)] == ["missed"]
    assert (await task_row(again, missed)).status == "missed"


async def test_the_background_trigger_check_gives_a_job_its_tasks_trigger(
    start_service: ServiceFactory,
) -> None:
    """The check a new leader runs after it starts firing: a job whose trigger is not
    the task's gets the task's, at the task's next run; agreeing jobs are left alone."""
    service = await start_service(tools=[FlakyTool()])
    await service.lead.stop_trigger_check()  # the start's own check would race the test's
    drifted = await create(service, "flaky", soon(3600), frequency="daily")
    fine = await create(service, "flaky", soon(3600), frequency="daily")
    row = await task_row(service, drifted)
    right = build_trigger(Schedule.from_dict(row.schedule))
    await service.jobs.modify(drifted, IntervalTrigger(hours=1, timezone=UTC), row.next_run_at)

    assert await check_triggers(service.db, service.jobs) == 1
    for task_id in (drifted, fine):
        job = await asyncio.to_thread(service.scheduler.get_job, task_id)
        assert same_trigger(job.trigger, right if task_id == drifted else job.trigger)
        assert job.next_run_time == (await task_row(service, task_id)).next_run_at
    assert await check_triggers(service.db, service.jobs) == 0


@pytest.mark.parametrize("drift", ["trigger", "job_moved_on"])
async def test_start_fixes_a_job_that_disagrees_without_dropping_the_due_run(
    start_service: ServiceFactory, drift: str
) -> None:
    tool = FlakyTool()
    service = await start_service(tools=[tool])
    due = soon(2.5)
    task_id = await create(service, "flaky", due, frequency="minutely")
    right = build_trigger(Schedule.from_dict((await task_row(service, task_id)).schedule))
    wrong = IntervalTrigger(hours=1, start_date=due, timezone=UTC) if drift == "trigger" else right
    # A crash between writing the task and its job, or between the job store moving on
    # and the claim: the job no longer fires ``due``.
    await service.jobs.modify(task_id, wrong, due + timedelta(hours=1))

    assert (await service.reconcile())["fixed"] == 1
    assert await service.jobs.next_run_time(task_id) == due
    job = await asyncio.to_thread(service.scheduler.get_job, task_id)
    assert same_trigger(job.trigger, right)
    assert (await service.reconcile())["fixed"] == 0

    note = await next_notification(service)
    assert note["status"] == "succeeded" and tool.runs[0].fire_time == due
    assert (await task_row(service, task_id)).next_run_at == due + timedelta(minutes=1)
    assert await service.jobs.next_run_time(task_id) == due + timedelta(minutes=1)


async def test_a_deleted_tasks_job_is_removed_when_it_fires(start_service: ServiceFactory) -> None:
    tool = FlakyTool()
    service = await start_service(tools=[tool])
    task_id = await create(service, "flaky", soon(1), frequency="minutely")
    async with service.db.write() as session:  # the row goes, the job stays (drift)
        await session.execute(delete(ScheduledTask).where(ScheduledTask.id == task_id))

    async def job_gone() -> bool:
        return not await service.jobs.exists(task_id)

    await wait_for(job_gone)
    assert tool.runs == [] and await runs_of(service, task_id) == []


# -- 3. retries and pausing ---------------------------------------------------------------
async def test_retries_are_new_attempts_of_the_same_fire_time(
    start_service: ServiceFactory,
) -> None:
    tool = FlakyTool(failures=2)
    service = await start_service(tools=[tool], retry_backoff_base=0.1)
    due = soon(1)
    task_id = await create(service, "flaky", due)
    note = await next_notification(service)
    assert note["status"] == "succeeded" and "after 3 attempts" in note["message"]
    runs = await runs_of(service, task_id)
    assert [(r.fire_time, r.attempt, r.status) for r in runs] == [
        (due, 1, "failed"),
        (due, 2, "failed"),
        (due, 3, "succeeded"),
    ]
    assert [r.kind for r in runs] == ["scheduled", "retry", "retry"]
    assert len(await notifications_of(service, task_id)) == 1


async def test_after_the_last_attempt_one_failure_and_the_schedule_is_unchanged(
    start_service: ServiceFactory,
) -> None:
    service = await start_service(tools=[FlakyTool(failures=99)], retry_backoff_base=0.1)
    due = soon(1)
    task_id = await create(service, "flaky", due, frequency="minutely", max_retries=2)
    note = await next_notification(service)
    assert note["status"] == "failed" and "after 3 attempts" in note["message"]
    assert [(r.attempt, r.status) for r in await runs_of(service, task_id)] == [
        (1, "failed"),
        (2, "failed"),
        (3, "failed"),
    ]
    task = await task_row(service, task_id)
    nxt = due + timedelta(minutes=1)
    assert (task.status, task.next_run_at, task.consecutive_failures) == ("scheduled", nxt, 1)
    assert await service.jobs.next_run_time(task_id) == nxt
    assert len(await notifications_of(service, task_id)) == 1


@pytest.mark.parametrize("lose_retry_job", [False, True])
async def test_a_pending_retry_survives_a_restart(
    start_service: ServiceFactory, database_url: str, lose_retry_job: bool
) -> None:
    service = await start_service(tools=[FlakyTool(failures=1)], retry_backoff_base=1)
    due = soon(1)
    task_id = await create(service, "flaky", due)

    async def first_attempt_failed() -> bool:
        return [r.status for r in await runs_of(service, task_id)] == ["failed"]

    await wait_for(first_attempt_failed)
    retry_ids = [j for j in await service.jobs.job_ids() if j.startswith("retry:")]
    assert len(retry_ids) == 1  # the retry is a job in the job store
    await service.stop()
    if lose_retry_job:  # a crash between recording attempt 1 and storing its retry
        database_execute(database_url, "delete from task_scheduler_jobs where id like 'retry:%'")

    # No grace: had start-up put back a job at the claimed fire time, it would be missed.
    again = await start_service(tools=[FlakyTool()], retry_backoff_base=1, misfire_grace_time=0)
    assert task_id not in await again.jobs.job_ids()
    note = await next_notification(again)
    assert note["status"] == "succeeded" and "after 2 attempts" in note["message"]
    runs = await runs_of(again, task_id)
    assert [(r.fire_time, r.attempt, r.status) for r in runs] == [
        (due, 1, "failed"),
        (due, 2, "succeeded"),
    ]


async def test_a_paused_task_does_not_run_its_pending_retry(
    start_service: ServiceFactory,
) -> None:
    tool = FlakyTool(failures=1)
    service = await start_service(tools=[tool], retry_backoff_base=60)
    due = soon(1)
    task_id = await create(service, "flaky", due, frequency="hourly")

    async def first_attempt_failed() -> bool:
        return [r.status for r in await runs_of(service, task_id)] == ["failed"]

    await wait_for(first_attempt_failed)
    await service.scheduler_tool.run("pause_task", {"task_id": task_id}, context=CTX)
    assert await service.runner.on_retry(task_id, due, 2) is None  # as the retry job would
    assert [r.attempt for r in await runs_of(service, task_id)] == [1]
    note = await next_notification(service)  # the fire time's one failure notification
    assert note["status"] == "failed" and "not retried: the task is paused" in note["message"]
    assert await service.runner.on_retry(task_id, due, 2) is None
    assert len(await notifications_of(service, task_id)) == 1


async def test_a_task_failing_n_fire_times_in_a_row_pauses_itself(
    start_service: ServiceFactory,
) -> None:
    service = await start_service(tools=[FlakyTool(failures=99)], max_consecutive_failures=2)
    task_id = await create(service, "flaky", soon(3600), frequency="hourly", max_retries=0)
    for expected in ("failed", "paused"):  # fire two scheduled times, as APScheduler would
        fire_time = (await task_row(service, task_id)).next_run_at
        assert fire_time is not None
        await service.runner.on_fire(task_id, [fire_time])
        note = await next_notification(service)
        assert note["status"] == expected
    assert "2 times in a row and was paused" in note["message"]
    assert f"resume_task (task_id {task_id})" in note["message"]
    assert (await task_row(service, task_id)).status == "paused"
    assert await service.jobs.exists(task_id) and await service.jobs.next_run_time(task_id) is None

    await service.scheduler_tool.run("resume_task", {"task_id": task_id}, context=CTX)
    task = await task_row(service, task_id)
    assert (task.status, task.consecutive_failures) == ("scheduled", 0)
    assert await service.jobs.next_run_time(task_id) == task.next_run_at


# -- 4. concurrency and timeouts ----------------------------------------------------------
async def test_concurrency_is_bounded_and_excess_runs_wait_in_order(
    start_service: ServiceFactory,
) -> None:
    gate = GateTool()
    service = await start_service(tools=[gate], max_concurrent_tasks=2)
    start = soon(1.5)
    names = [str(i) for i in range(6)]
    ids = [
        await create(
            service, "gate", start + timedelta(milliseconds=100 * i), parameters={"name": n}
        )
        for i, n in enumerate(names)
    ]
    await gate.wait_started(2)

    async def four_queued() -> bool:
        async with service.db.read() as session:
            rows = await session.scalars(select(TaskRun).where(TaskRun.status == "queued"))
            return len(rows.all()) == 4

    await wait_for(four_queued)
    for i, name in enumerate(names):  # release one at a time: the next in line starts
        gate.gate(name).set()
        await gate.wait_started(min(i + 3, len(names)))
    for _ in ids:
        assert (await next_notification(service))["status"] == "succeeded"
    assert gate.started == names and gate.max_in_flight == 2


async def test_runs_waiting_for_a_slot_hold_no_task_each(start_service: ServiceFactory) -> None:
    """A burst's runs wait for a slot as entries, not as suspended tasks (whose coroutine
    chains every full garbage collection walks while the loop waits)."""
    gate = GateTool()
    service = await start_service(tools=[gate], max_concurrent_tasks=1)
    due = soon(1.5)
    names = [str(i) for i in range(16)]
    for name in names:
        await create(service, "gate", due, parameters={"name": name})
    tasks_before = len(asyncio.all_tasks())
    await gate.wait_started(1)

    async def fifteen_queued() -> bool:
        async with service.db.read() as session:
            rows = await session.scalars(select(TaskRun).where(TaskRun.status == "queued"))
            return len(rows.all()) == 15

    await wait_for(fifteen_queued)
    assert len(asyncio.all_tasks()) <= tasks_before + 3, "one task per waiting run"
    for name in names:
        gate.gate(name).set()
    for _ in names:
        assert (await next_notification(service))["status"] == "succeeded"
    assert sorted(gate.started) == sorted(names) and gate.max_in_flight == 1


async def test_more_due_jobs_than_live_job_starts_all_run_once(
    start_service: ServiceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Due jobs beyond ``MAX_LIVE_JOBS`` wait as plain starts and begin as earlier ones
    end, and beyond ``DUE_JOBS_PER_WAKEUP`` wait in the job store for the next wake-up
    (which waits until the started ones are under way): none lost, none started twice."""
    monkeypatch.setattr(executor, "MAX_LIVE_JOBS", 2)
    monkeypatch.setattr(scheduler, "DUE_JOBS_PER_WAKEUP", 3)
    monkeypatch.setattr(jobstore, "DUE_JOBS_PER_WAKEUP", 3)
    tool = FlakyTool()
    service = await start_service(tools=[tool])
    due = soon(1.5)
    ids = {await create(service, "flaky", due) for _ in range(9)}
    notes = [await next_notification(service) for _ in ids]
    assert {n["task_id"] for n in notes} == ids
    assert {n["status"] for n in notes} == {"succeeded"}
    assert len(tool.runs) == 9 and len({r.task_id for r in tool.runs}) == 9


async def test_a_run_past_its_timeout_is_cancelled_or_abandoned(
    start_service: ServiceFactory,
) -> None:
    thread_tool = BlockingThreadTool()
    service = await start_service(tools=[HangTool(), thread_tool])
    due = soon(1)
    hang = await create(service, "hang", due, timeout=1, max_retries=0)
    blocked = await create(service, "blocking_thread", due, timeout=1, max_retries=0)
    try:
        notes = {n["task_id"]: n for n in [await next_notification(service) for _ in range(2)]}
    finally:
        thread_tool.release.set()
    assert {n["status"] for n in notes.values()} == {"timed_out"}
    [hung] = await runs_of(service, hang)
    [abandoned] = await runs_of(service, blocked)
    assert hung.status == "timed_out" and "timeout of 1 s" in (hung.error or "")
    assert "abandoned" not in (hung.error or "")
    assert abandoned.status == "timed_out" and "was abandoned" in (abandoned.error or "")
    assert (abandoned.details or {})["abandoned_thread"] is True


# -- 5. never stalls ----------------------------------------------------------------------
async def test_a_database_error_in_a_wakeup_does_not_stop_the_scheduler(
    start_service: ServiceFactory,
) -> None:
    tool = FlakyTool()
    service = await start_service(tools=[tool], check_interval=1)
    failures: list[str] = []

    def fail_once(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.startswith("DELETE FROM task_scheduler_jobs") and not failures:
            failures.append(statement)
            raise sqlite3.OperationalError("disk I/O error (injected)")

    event.listen(service.db.sync_engine, "before_cursor_execute", fail_once)
    first = await create(service, "flaky", soon(1))
    second = await create(service, "flaky", soon(2.5))
    notes = [await next_notification(service) for _ in range(2)]
    assert failures, "the fault was not injected"
    assert [(n["task_id"], n["status"]) for n in notes] == [
        (first, "succeeded"),
        (second, "succeeded"),
    ]
    # The failed removal made the job fire again; the claim fenced it off.
    assert [r.fire_time for r in tool.runs] == [
        (await runs_of(service, t))[0].fire_time for t in (first, second)
    ]
    assert await service.jobs.job_ids() == []


@pytest.mark.parametrize("form", ["write", "write_sync"])
async def test_a_locked_database_is_retried(tmp_path: Path, form: str) -> None:
    """Both forms of write transaction wait out another process's write lock, past the
    busy timeout, instead of failing at once."""
    path = tmp_path / "locked.db"
    db = Database(f"sqlite+aiosqlite:///{path}", busy_timeout_ms=20)
    async with db.write() as session:
        await session.execute(text("create table t (x integer)"))
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    retried = asyncio.Event()
    handler = _EventHandler(retried, asyncio.get_running_loop())
    with _logging_to(handler):

        async def write() -> None:
            if form == "write_sync":
                await db.write_sync(lambda conn: conn.execute(text("insert into t values (1)")))
                return
            async with db.write() as session:
                await session.execute(text("insert into t values (1)"))

        writing = asyncio.create_task(write())
        await asyncio.wait_for(retried.wait(), 10)
        assert not writing.done()
        other.execute("COMMIT")
        await asyncio.wait_for(writing, 10)
    other.close()
    async with db.read() as session:
        assert (await session.execute(text("select x from t"))).scalars().all() == [1]
    await db.dispose()


class _EventHandler(logging.Handler):
    def __init__(self, flag: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.WARNING)
        self.flag, self.loop = flag, loop

    def emit(self, record: logging.LogRecord) -> None:
        if "database is locked" in record.getMessage():
            self.loop.call_soon_threadsafe(self.flag.set)


@contextlib.contextmanager
def _logging_to(handler: logging.Handler) -> Iterator[None]:
    logger = logging.getLogger("scheduler_service.storage.retry")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


# -- 6. graceful stop ---------------------------------------------------------------------
async def test_stop_waits_for_running_tasks_then_interrupts_them(
    start_service: ServiceFactory, database_url: str
) -> None:
    """Within the grace a running run finishes; after it, one still running is
    interrupted; a run that never started goes back to the queue, unassigned, with no
    notification (the next worker runs it)."""
    gate = GateTool()
    service = await start_service(tools=[gate], max_concurrent_tasks=2, shutdown_grace=0.5)
    start = soon(1.5)
    ids = [
        await create(
            service, "gate", start + timedelta(milliseconds=100 * i), parameters={"name": str(i)}
        )
        for i in range(3)
    ]

    async def third_queued() -> bool:
        return [r.status for r in await runs_of(service, ids[2])] == ["queued"]

    await gate.wait_started(2)
    await wait_for(third_queued)
    stopping = asyncio.create_task(service.stop())
    await asyncio.sleep(0)  # let stop begin before the first run can finish
    gate.gate("0").set()  # finishes within the grace period; "1" never does
    await stopping
    assert gate.started == ["0", "1"]
    rows = {
        r["task_id"]: (r["status"], r["error"], r["worker"] is None)
        for r in database_rows(
            database_url, "select task_id, status, error, worker from task_scheduler_runs"
        )
    }
    assert rows == {
        ids[0]: ("succeeded", None, False),
        ids[1]: ("interrupted", INTERRUPTED, False),
        ids[2]: ("queued", None, True),
    }
    notes = database_rows(database_url, "select task_id, status from task_scheduler_notifications")
    assert sorted((n["task_id"], n["status"]) for n in notes) == sorted(
        [(ids[0], "succeeded"), (ids[1], "interrupted")]
    )


async def test_a_fire_whose_claim_fails_is_claimed_once_the_database_answers(
    start_service: ServiceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """APScheduler moved the job on, then the claim transaction failed again and again
    (longer than any fixed retry budget): the fire time must not vanish. The claim is
    retried until the database answers, and the run happens, late, once."""
    from sqlalchemy.exc import OperationalError

    import scheduler_service.storage.retry as retry_module

    monkeypatch.setattr(retry_module, "TRANSIENT_DELAY_S", 0.01)
    service = await start_service(tools=[FlakyTool()], min_interval=1)
    real_claim = service.runner.claims.fire_many
    failed: list[list[datetime]] = []

    async def failing_six_times(fires: list[tuple[str, list[datetime]]], now: datetime) -> Any:
        if len(failed) < 6:
            failed.extend(run_times for _, run_times in fires)
            raise OperationalError(
                "INSERT INTO task_scheduler_runs", {}, Exception("disk I/O error")
            )
        return await real_claim(fires, now)

    monkeypatch.setattr(service.runner.claims, "fire_many", failing_six_times)
    t0 = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    rule = f"DTSTART:{t0:%Y%m%dT%H%M%SZ}\nRRULE:FREQ=SECONDLY;INTERVAL=5"
    out = await service.scheduler_tool.run(
        "create_task",
        {
            "name": "every 5 s",
            "frequency": "custom",
            "custom_schedule": rule,
            "tool_name": "flaky",
            "operation": "act",
        },
        context=CTX,
    )
    task_id = out["task"]["task_id"]
    assert (await next_notification(service))["status"] == "succeeded"
    assert failed == [[t0]] * 6  # every attempt was at t0's claim
    rows = await runs_of(service, task_id)
    assert [(r.fire_time, r.status) for r in rows] == [(t0, "succeeded")]


async def test_recording_an_outcome_survives_a_database_error(
    start_service: ServiceFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run whose outcome write fails once is still recorded, once, with its notification
    (left ``running`` it would block execute_task_now and never notify)."""
    from sqlalchemy.exc import OperationalError

    import scheduler_service.storage.retry as retry_module

    monkeypatch.setattr(retry_module, "TRANSIENT_DELAY_S", 0.01)
    service = await start_service(tools=[FlakyTool()])
    real_record = service.runner.record
    failures: list[str] = []

    async def record_failing_once(run: TaskRun, outcome: Any) -> Any:
        if not failures:
            failures.append(run.id)
            raise OperationalError("UPDATE task_scheduler_runs", {}, Exception("disk I/O error"))
        return await real_record(run, outcome)

    monkeypatch.setattr(service.runner, "record", record_failing_once)
    task_id = await create(service, "flaky", soon(3600), frequency="hourly")
    out = await service.scheduler_tool.run("execute_task_now", {"task_id": task_id}, context=CTX)
    assert failures and out["run"]["status"] == "succeeded"
    assert [r.status for r in await runs_of(service, task_id)] == ["succeeded"]
    assert len(await notifications_of(service, task_id)) == 1
