"""The daily token budget per user, through the service on both backends: real schedules
fired by APScheduler, the real anthropic client over the scripted transport, two
services recording at once on one database, and the statements the run path sends."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import event, select

from config import LimitsConfig
from scheduler_service import SchedulerService
from scheduler_service.runs.outcomes import Outcome, record_outcomes
from scheduler_service.runs.token_budget import TokenBudget, day_of
from scheduler_service.storage.models import (
    BudgetNotice,
    ScheduledTask,
    TaskNotification,
    TaskRun,
    new_id,
    utcnow,
)
from scheduler_service.testing import FakeAnthropic, text_message
from tests.conftest import RecordingTool, ServiceFactory, next_notification
from tools import ToolContext

EVERY_SECOND = {"frequency": "custom", "custom_schedule": "every 1 second", "scheduled_time": None}
DAILY = {"frequency": "daily", "scheduled_time": "09:00"}
PARIS = ZoneInfo("Europe/Paris")
SIXTY = {"input_tokens": 40, "output_tokens": 20}  # each scripted answer's usage


def budget(tokens: int, **more: Any) -> LimitsConfig:
    return LimitsConfig(daily_token_budget_per_user=tokens, **more)


async def create(service: SchedulerService, ctx: ToolContext, **fields: Any) -> str:
    base: dict[str, Any] = {
        "name": "Price watch",
        **DAILY,
        "timezone": "Europe/Paris",
        "execution_mode": "orchestrated",
        "task_description": "Check the price of product 42 and tell me.",
        "max_retries": 0,
    }
    out = await service.scheduler_tool.run("create_task", base | fields, context=ctx)
    return str(out["task"]["task_id"])


async def runs_of(service: SchedulerService, task_id: str) -> list[TaskRun]:
    async with service.db.read() as session:
        query = select(TaskRun).where(TaskRun.task_id == task_id).order_by(TaskRun.queued_at)
        return list((await session.scalars(query)).all())


async def task_row(service: SchedulerService, task_id: str) -> ScheduledTask:
    async with service.db.read() as session:
        task = await session.get(ScheduledTask, task_id, populate_existing=True)
    assert task is not None
    return task


async def notifications_of(service: SchedulerService, user_id: str) -> list[TaskNotification]:
    async with service.db.read() as session:
        query = select(TaskNotification).where(TaskNotification.user_id == user_id)
        return list((await session.scalars(query.order_by(TaskNotification.created_at))).all())


def budget_skips(runs: list[TaskRun]) -> list[TaskRun]:
    return [r for r in runs if r.error_kind == "daily_token_budget"]


def notified(run: TaskRun) -> str:
    return str((run.details or {}).get("notification"))


async def spend(
    service: SchedulerService, user_id: str, task_id: str, tokens: int, at: datetime
) -> None:
    """A finished run of the user's that used ``tokens`` (input only), finished ``at``."""
    run = TaskRun(
        id=new_id("run"),
        task_id=task_id,
        user_id=user_id,
        kind="manual",
        fire_time=at,
        status="succeeded",
        queued_at=at,
        started_at=at,
        finished_at=at,
        usage={"input_tokens": tokens, "output_tokens": 0},
    )
    async with service.db.write() as session:
        session.add(run)


async def running(service: SchedulerService, task_id: str, user_id: str) -> TaskRun:
    """A scheduled run of the task, started, as the runner holds it before recording."""
    now = utcnow()
    run = TaskRun(
        id=new_id("run"),
        task_id=task_id,
        user_id=user_id,
        kind="scheduled",
        fire_time=now - timedelta(seconds=1),
        attempt=1,
        status="running",
        queued_at=now,
        started_at=now,
    )
    async with service.db.write() as session:
        session.add(run)
    return run


# -- the trip, through the schedule ---------------------------------------------------------
async def test_past_the_budget_runs_are_skipped_told_once_and_never_pause_the_task(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    """Two answers of 60 tokens spend a budget of 100; every later fire of the orchestrated
    task is recorded skipped without a model call, the user is told once, the task is
    not paused (two failures would pause it), and a direct task of the same user goes on."""
    fake = FakeAnthropic(
        text_message("Price: 62", usage=SIXTY), text_message("Price: 61", usage=SIXTY)
    )
    ticker = RecordingTool()
    service = await start_service(
        tools=[ticker],
        anthropic_client=fake.client(),
        limits=budget(100),
        min_interval=1,
        max_consecutive_failures=2,
    )
    watch = await create(service, ctx, **EVERY_SECOND, available_tools=["recording_tool"])
    tick = await create(
        service,
        ctx,
        name="Ticker",
        **EVERY_SECOND,
        execution_mode="direct",
        tool_name="recording_tool",
        operation="record",
        parameters={},
    )

    told: list[dict[str, Any]] = []  # the watch's notifications, in order
    skips: list[TaskRun] = []
    for _ in range(60):  # the ticker notifies every second: each is a moment to look
        note = await next_notification(service, timeout=15)
        if note["task_id"] == watch:
            told.append(note)
        skips = budget_skips(await runs_of(service, watch))
        if len(skips) >= 3:
            break
    assert len(skips) >= 3
    state = await service.scheduler_tool.run("get_task", {"task_id": watch}, context=ctx)
    for task_id in (watch, tick):
        await service.scheduler_tool.run("pause_task", {"task_id": task_id}, context=ctx)

    assert len(fake.requests) == 2 and fake.unexpected_requests == 0  # no call once spent
    ran = [r for r in await runs_of(service, watch) if r.status == "succeeded"]
    assert [r.usage and r.usage["input_tokens"] for r in ran] == [40, 40]
    assert [n["status"] for n in told].count("succeeded") == 2  # (a fire that overlapped
    # a slow run on a busy machine is told skipped too, with another reason)
    budget_notes = [n for n in told if "daily token budget" in n["message"]]
    assert len(budget_notes) == 1  # one notification, however many runs were skipped
    assert budget_notes[0]["status"] == "skipped"
    assert budget_notes[0]["message"].startswith(
        "Your daily token budget is spent: 120 of 100 tokens used by your orchestrated tasks "
        "since 00:00 (Europe/Paris). This run of 'Price watch' was skipped"
    )
    skips = budget_skips(await runs_of(service, watch))
    assert budget_notes[0]["run_id"] == skips[0].id
    assert skips[0].error is not None and skips[0].error.startswith(
        "daily token budget of 100 tokens for user 'u1' spent (120 used since 00:00 "
        "Europe/Paris); resumes at midnight ("
    )
    assert notified(skips[0]) == "sent: the user's daily token budget is spent (told once a day)"
    assert {notified(r) for r in skips[1:]} == {
        "not sent: the user was already told today that the daily token budget is spent"
    }
    assert {(r.status, r.attempt, r.usage) for r in skips} == {("skipped", 1, None)}
    assert all("retry_at" not in (r.details or {}) for r in skips)  # never retried

    row = await task_row(service, watch)  # neutral: not a run, not a failure
    assert (row.run_count, row.success_count, row.failure_count) == (2, 2, 0)
    assert (row.consecutive_failures, row.failure_alert_at) == (0, None)
    assert state["task"]["status"] == "scheduled"  # after more skips than pause after
    assert state["task"]["daily_token_budget"]["used_today"] == 120
    assert state["task"]["daily_token_budget"]["spent"] is True
    assert "The user's daily token budget is spent (120 of 100 tokens today)" in state["message"]
    assert len(ticker.calls) >= 3  # the direct task was never held
    await fake.aclose()


# -- one notice, whoever records ------------------------------------------------------------
async def test_two_services_recording_skips_at_once_tell_each_user_once(
    start_service: ServiceFactory,
) -> None:
    """Skips of one user recorded at the same moment by two processes (and two in one
    batch) meet on the user's notice row: exactly one notification per user."""
    first = await start_service(limits=budget(100))
    second = await start_service(limits=budget(100))
    users = [f"user{n}" for n in range(4)]
    pairs: list[tuple[ScheduledTask, ScheduledTask]] = []
    for user in users:
        ctx = ToolContext(user_id=user, conversation_id=f"c-{user}")
        tasks = [await create(first, ctx, name=f"Watch {n}") for n in (1, 2)]
        await spend(first, user, tasks[0], 150, utcnow())
        pairs.append((await task_row(first, tasks[0]), await task_row(first, tasks[1])))

    checker = TokenBudget(first.db, 100)  # the check an orchestrated run makes first
    records = []
    batched: list[tuple[TaskRun, Outcome]] = []
    for one, two in pairs:
        for index, task in enumerate((one, two)):
            run = await running(first, task.id, task.user_id)
            skip = await checker.check(task)
            assert skip is not None
            if task.user_id == users[-1]:  # the last user's two skips: one batch
                batched.append((run, skip))
                continue
            recorder = (first, second)[index]  # each of the pair by another process
            records.append(
                record_outcomes(
                    recorder.db, recorder.settings.scheduler, [(run, skip)], stopping=lambda: False
                )
            )
    records.append(
        record_outcomes(second.db, second.settings.scheduler, batched, stopping=lambda: False)
    )
    recorded = await asyncio.gather(*records)

    published = [n for batch in recorded for item in batch for n in item.published]
    assert sorted(n.user_id for n in published) == users  # one each
    for user in users:
        stored = await notifications_of(first, user)
        assert len(stored) == 1 and stored[0].status == "skipped"
    _start, end = day_of(utcnow(), PARIS)
    async with first.db.read() as session:
        notices = (await session.scalars(select(BudgetNotice))).all()
    assert sorted(n.user_id for n in notices) == users
    assert {n.quiet_until for n in notices} == {end}
    assert {n.run_id for n in notices} == {n.run_id for n in published}


# -- the day ends at local midnight -----------------------------------------------------------
async def test_tokens_and_notices_of_yesterday_do_not_count_today(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    """Times computed from the task's zone, not a patched clock: tokens spent a second
    before local midnight are yesterday's; a notice whose day is over is given again."""
    fake = FakeAnthropic(text_message("Price: 62", usage=SIXTY))
    service = await start_service(
        anthropic_client=fake.client(), limits=budget(100, manual_run_interval=0)
    )
    task_id = await create(service, ctx)
    start, _end = day_of(utcnow(), PARIS)
    await spend(service, "u1", task_id, 5000, start - timedelta(seconds=1))
    await spend(service, "u1", task_id, 50, start)

    out = await service.scheduler_tool.run("execute_task_now", {"task_id": task_id}, context=ctx)
    assert out["run"]["status"] == "succeeded"  # 50 used today: it runs, and spends 60
    assert len(fake.requests) == 1

    async with service.db.write() as session:  # told yesterday: that notice's day is over
        session.add(BudgetNotice(user_id="u1", quiet_until=start, run_id="run_yesterday"))
    skipped = await service.scheduler_tool.run(
        "execute_task_now", {"task_id": task_id}, context=ctx
    )
    assert skipped["run"]["status"] == "skipped"
    assert skipped["message"].startswith(
        "Ran task 'Price watch' now: skipped — daily token budget of 100 tokens for user 'u1' "
        "spent (110 used since 00:00 Europe/Paris)"
    )
    assert skipped["run"]["details"]["notification"] == (
        "sent: the user's daily token budget is spent (told once a day)"
    )
    again = await service.scheduler_tool.run("execute_task_now", {"task_id": task_id}, context=ctx)
    assert again["run"]["status"] == "skipped"  # the notice stands: a manual run still tells
    assert again["run"]["details"]["notification"] == "sent: manual run"
    assert len(fake.requests) == 1
    assert fake.unexpected_requests == 0
    await fake.aclose()


async def test_a_skip_of_a_one_time_task_ends_it_and_is_told(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    """A one-time task's only fire, skipped, will not come again: the task is missed and
    the user told, even after today's notice."""
    service = await start_service(limits=budget(100))
    task_id = await create(service, ctx, frequency="once", scheduled_time="23:59")
    await spend(service, "u1", task_id, 500, utcnow())
    _start, end = day_of(utcnow(), PARIS)
    async with service.db.write() as session:
        session.add(BudgetNotice(user_id="u1", quiet_until=end, run_id="run_earlier"))
        task = await session.get(ScheduledTask, task_id)
        assert task is not None
        task.next_run_at = None  # as the claim of its only fire leaves it
    run = await running(service, task_id, "u1")
    skip = await TokenBudget(service.db, 100).check(await task_row(service, task_id))
    assert skip is not None
    [recorded] = await record_outcomes(
        service.db, service.settings.scheduler, [(run, skip)], stopping=lambda: False
    )
    assert [n.message.endswith("This one-time task will not run.") for n in recorded.published] == [
        True
    ]
    assert notified(recorded.run) == "sent: the skip ended the task"
    row = await task_row(service, task_id)
    assert (row.status, row.last_status, row.run_count) == ("missed", "skipped", 0)


# -- off by default, and then free ----------------------------------------------------------
@contextmanager
def statements(service: SchedulerService) -> Iterator[list[str]]:
    """Every SQL statement the service sends meanwhile, on both of its engines."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    engines = {service.db.sync_engine, service.db.engine.sync_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


async def test_without_a_budget_an_orchestrated_run_sends_no_budget_statement(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    fake = FakeAnthropic(text_message("Price: 62"), text_message("Price: 61"))
    off = await start_service(
        anthropic_client=fake.client(), limits=LimitsConfig(manual_run_interval=0)
    )
    on = await start_service(
        anthropic_client=fake.client(), limits=budget(10_000, manual_run_interval=0)
    )
    assert off.execution.budget is None
    task_id = await create(off, ctx)
    for service, expected in ((off, False), (on, True)):
        with statements(service) as seen:
            out = await service.scheduler_tool.run(
                "execute_task_now", {"task_id": task_id}, context=ctx
            )
        assert out["run"]["status"] == "succeeded"
        assert any("usage IS NOT NULL" in s for s in seen) is expected, seen
        assert not any("budget_notices" in s for s in seen)  # only a budget skip claims
        got = await service.scheduler_tool.run("get_task", {"task_id": task_id}, context=ctx)
        assert ("daily_token_budget" in got["task"]) is expected
    await fake.aclose()
