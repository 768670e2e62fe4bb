"""Quiet runs and failure alerts, through the service on both backends: real short
schedules fired by APScheduler, real tools, the real anthropic client over the scripted
transport, and the operator CLI."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from scheduler_service import SchedulerService
from scheduler_service.cli import commands as cli
from scheduler_service.runs.notify_policy import NOTHING_TO_REPORT
from scheduler_service.runs.outcomes import Outcome, record_outcomes
from scheduler_service.storage.models import (
    ScheduledTask,
    TaskNotification,
    TaskRun,
    new_id,
    utcnow,
)
from scheduler_service.testing import FakeAnthropic, text_message
from tests.conftest import ServiceFactory, next_notification
from tools import Tool, ToolContext, ToolError

EVERY_SECOND = {"frequency": "custom", "custom_schedule": "every 1 second"}


class PriceTool(Tool):
    """A price feed: each call takes the next price of its script (the last one repeats),
    or fails while ``failing``. ``called`` is set on every call."""

    name = "price_tool"
    description = "Current price of a product. Operation `current`."
    input_schema = {
        "type": "object",
        "properties": {"operation": {"enum": ["current"]}, "kwargs": {"type": "object"}},
        "required": ["operation"],
    }

    def __init__(self, *prices: float) -> None:
        self.prices = list(prices) or [62.0]
        self.calls = 0
        self.failing = False
        self.called = asyncio.Event()

    async def run(self, operation: str, kwargs: Any, *, context: ToolContext) -> dict[str, Any]:
        self.calls += 1
        self.called.set()
        if self.failing:
            raise ToolError("unavailable", "the price service is down")
        price = self.prices[min(self.calls, len(self.prices)) - 1]
        return {"price": price, "message": f"price {price:g}"}

    async def wait_calls(self, count: int) -> None:
        """Until the tool has been called ``count`` times in all."""
        async with asyncio.timeout(15):
            while self.calls < count:
                self.called.clear()
                await self.called.wait()


async def create(service: SchedulerService, ctx: ToolContext, **fields: Any) -> str:
    base: dict[str, Any] = {
        "name": "Price check",
        **EVERY_SECOND,
        "execution_mode": "direct",
        "tool_name": "price_tool",
        "operation": "current",
        "max_retries": 0,
    }
    out = await service.scheduler_tool.run("create_task", base | fields, context=ctx)
    return str(out["task"]["task_id"])


async def get_task(service: SchedulerService, ctx: ToolContext, task_id: str) -> dict[str, Any]:
    return await service.scheduler_tool.run("get_task", {"task_id": task_id}, context=ctx)


async def succeeded_runs(service: SchedulerService, task_id: str) -> list[TaskRun]:
    async with service.db.read() as session:
        query = select(TaskRun).where(TaskRun.task_id == task_id, TaskRun.status == "succeeded")
        return list((await session.scalars(query.order_by(TaskRun.fire_time))).all())


async def runs_between(
    service: SchedulerService, task_id: str, after: str, before: str
) -> list[TaskRun]:
    """The task's runs recorded after run ``after`` and before run ``before``."""
    async with service.db.read() as session:
        first, last = await session.get(TaskRun, after), await session.get(TaskRun, before)
        assert first is not None and last is not None
        query = select(TaskRun).where(
            TaskRun.task_id == task_id,
            TaskRun.finished_at > first.finished_at,
            TaskRun.finished_at < last.finished_at,
        )
        return list((await session.scalars(query.order_by(TaskRun.finished_at))).all())


async def run_row(service: SchedulerService, run_id: str) -> TaskRun:
    async with service.db.read() as session:
        run = await session.get(TaskRun, run_id)
    assert run is not None
    return run


async def stored_notifications(service: SchedulerService, task_id: str) -> list[TaskNotification]:
    async with service.db.read() as session:
        query = select(TaskNotification).where(TaskNotification.task_id == task_id)
        return list((await session.scalars(query.order_by(TaskNotification.created_at))).all())


async def next_of(service: SchedulerService, *statuses: str) -> dict[str, Any]:
    """The next notification with one of ``statuses`` (a run that overlapped a slow one
    on a busy machine is notified ``skipped``: not what these tests count)."""
    while True:
        note = await next_notification(service, timeout=15)
        if note["status"] in statuses:
            return note


def notified(run: TaskRun) -> str:
    return str((run.details or {}).get("notification"))


# -- on_change, direct ----------------------------------------------------------------------
async def test_on_change_tells_only_results_that_differ_from_the_last_success(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    tool = PriceTool(60, 60, 48, 48, 70)
    service = await start_service(tools=[tool], min_interval=1)
    task_id = await create(service, ctx, notify="on_change")

    told = [await next_of(service, "succeeded") for _ in range(3)]
    assert [n["message"] for n in told] == ["price 60", "price 48", "price 70"]
    await service.scheduler_tool.run("pause_task", {"task_id": task_id}, context=ctx)

    runs = (await succeeded_runs(service, task_id))[:5]  # every run is recorded
    assert [r.result and r.result["price"] for r in runs] == [60, 60, 48, 48, 70]
    assert [notified(r).split(":")[0] for r in runs] == [
        "sent", "not sent", "sent", "not sent", "sent",
    ]  # fmt: skip
    assert notified(runs[1]) == "not sent: on_change: same result as the last successful run"
    assert [n.run_id for n in await stored_notifications(service, task_id)] == [
        runs[0].id, runs[2].id, runs[4].id,
    ]  # fmt: skip

    task = (await get_task(service, ctx, task_id))["task"]
    assert task["notify"] == "on_change"
    assert datetime.fromisoformat(task["last_notified_at"]) == datetime.fromisoformat(
        told[-1]["created_at"]
    )
    shown = {r["run_id"]: r["details"]["notification"] for r in task["recent_runs"]}
    assert shown[runs[4].id] == "sent: on_change: the result changed"


async def test_two_processes_recording_the_same_change_at_once_tell_it_once(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    """The change is judged under the task's row lock, in the transaction that records the
    outcome: the second recorder sees the first one's fingerprint, whatever the timing."""
    first = await start_service(tools=[PriceTool()])
    second = await start_service(tools=[PriceTool()])  # another process, same database
    daily = {"frequency": "daily", "scheduled_time": "09:00", "custom_schedule": None}
    task_id = await create(first, ctx, **daily, notify="on_change")
    now = utcnow()
    runs = [
        TaskRun(
            id=new_id("run"),
            task_id=task_id,
            user_id="u1",
            kind="scheduled",
            fire_time=now - timedelta(minutes=minutes),
            attempt=1,
            status="running",
            queued_at=now,
            started_at=now,
        )
        for minutes in (2, 1)
    ]
    async with first.db.write() as session:
        session.add_all(runs)
    cfg = first.settings.scheduler
    recorded = await asyncio.gather(
        *(
            record_outcomes(
                service.db,
                cfg,
                [(run, Outcome("succeeded", result={"price": 48}))],
                stopping=lambda: False,
            )
            for service, run in ((first, runs[0]), (second, runs[1]))
        )
    )
    assert sorted(len(r[0].published) for r in recorded) == [0, 1]
    assert len(await stored_notifications(first, task_id)) == 1
    told = sorted([notified(await run_row(first, run.id)) for run in runs])
    assert told == [
        "not sent: on_change: same result as the last successful run",
        "sent: on_change: the result changed",
    ]


# -- orchestrated: model_decides and on_change --------------------------------------------
def answers(*texts: str) -> FakeAnthropic:
    return FakeAnthropic(*(text_message(text) for text in texts))


async def create_orchestrated(
    service: SchedulerService, ctx: ToolContext, runs: int, **fields: Any
) -> str:
    out = await service.scheduler_tool.run(
        "create_task",
        {
            "name": "Price watch",
            **EVERY_SECOND,
            "max_runs": runs,
            "execution_mode": "orchestrated",
            "task_description": "Check the price and tell me only if it drops below 50.",
            "available_tools": ["price_tool"],
            "max_retries": 0,
            **fields,
        },
        context=ctx,
    )
    return str(out["task"]["task_id"])


async def test_model_decides_is_quiet_when_the_model_answers_nothing_to_report(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    fake = answers(
        f"{NOTHING_TO_REPORT}\nprice 62",
        f"**{NOTHING_TO_REPORT}**\nprice 55",
        "The price dropped to 48, below your limit of 50.",
    )
    service = await start_service(
        tools=[PriceTool()], anthropic_client=fake.client(), min_interval=1
    )
    task_id = await create_orchestrated(service, ctx, 3, notify="model_decides")

    note = await next_of(service, "succeeded")  # the last run's: the first two were quiet
    assert "dropped to 48" in note["message"]
    assert "that was run 3 of 3" in note["message"]
    runs = await succeeded_runs(service, task_id)
    assert [r.result and r.result["text"] for r in runs][:2] == [
        f"{NOTHING_TO_REPORT}\nprice 62",
        f"**{NOTHING_TO_REPORT}**\nprice 55",
    ]  # recorded with their answers
    assert notified(runs[0]) == f"not sent: model_decides: the model answered {NOTHING_TO_REPORT}"
    assert notified(runs[2]) == "sent: model_decides"
    assert [n.run_id for n in await stored_notifications(service, task_id)] == [runs[2].id]

    system = str(fake.requests[0]["system"])
    assert "## Telling the user" in system
    assert f"first line of your final answer exactly {NOTHING_TO_REPORT}" in system
    assert fake.unexpected_requests == 0
    await fake.aclose()


async def test_orchestrated_on_change_compares_final_answers(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    fake = answers("Price: 62", "Price: 62", "Price: 48")
    service = await start_service(
        tools=[PriceTool()], anthropic_client=fake.client(), min_interval=1
    )
    task_id = await create_orchestrated(service, ctx, 3, notify="on_change")

    told = [await next_of(service, "succeeded") for _ in range(2)]
    assert [n["message"].split(" — ")[0] for n in told] == ["Price: 62", "Price: 48"]
    runs = await succeeded_runs(service, task_id)
    assert [notified(r).split(":")[0] for r in runs] == ["sent", "not sent", "sent"]
    system = str(fake.requests[0]["system"])
    assert "only if your final answer differs from the previous run's" in system
    assert NOTHING_TO_REPORT not in system
    await fake.aclose()


async def test_a_task_without_a_policy_gets_no_notification_instructions(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    fake = answers("Price: 62")
    service = await start_service(tools=[PriceTool()], anthropic_client=fake.client())
    task_id = await create_orchestrated(
        service, ctx, 1, frequency="daily", scheduled_time="09:00", custom_schedule=None
    )
    out = await service.scheduler_tool.run("execute_task_now", {"task_id": task_id}, context=ctx)
    assert out["run"]["details"]["notification"] == "sent: manual run"
    assert "Telling the user" not in str(fake.requests[0]["system"])
    await fake.aclose()


# -- failure alerts -------------------------------------------------------------------------
async def test_failures_alert_once_per_interval_until_a_success(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    tool = PriceTool()
    tool.failing = True
    interval = 4.0  # several fires of the 1 s schedule fall within it, even on a busy machine
    service = await start_service(
        tools=[tool], min_interval=1, failure_alert_interval=interval, max_consecutive_failures=50
    )
    task_id = await create(service, ctx, notify="on_failure")

    first = await next_of(service, "failed", "succeeded")
    assert first["status"] == "failed" and "the price service is down" in first["message"]
    assert "at most once every 4 seconds, until it succeeds" in first["message"]
    second = await next_of(service, "failed", "succeeded")
    assert second["status"] == "failed"
    gap = datetime.fromisoformat(second["created_at"]) - datetime.fromisoformat(first["created_at"])
    assert gap.total_seconds() >= interval
    quiet = await runs_between(service, task_id, first["run_id"], second["run_id"])
    quiet = [r for r in quiet if r.status != "skipped"]  # a fire overlapping a slow run
    assert quiet and {r.status for r in quiet} == {"failed"}  # recorded, not told
    assert all(notified(r).startswith("not sent: failure already reported") for r in quiet)

    tool.failing = False  # it works again: told once, even under on_failure
    back = await next_of(service, "failed", "succeeded")
    assert back["status"] == "succeeded"
    assert notified(await run_row(service, back["run_id"])) == (
        "sent: succeeded after a reported failure"
    )
    await tool.wait_calls(tool.calls + 2)  # two more successes, quiet under on_failure
    tool.failing = True
    again = await next_of(service, "failed", "succeeded")  # a new streak: told at once
    assert again["status"] == "failed"
    quiet = await runs_between(service, task_id, back["run_id"], again["run_id"])
    quiet = [r for r in quiet if r.status != "skipped"]
    assert len(quiet) >= 1 and {r.status for r in quiet} == {"succeeded"}
    assert {notified(r) for r in quiet} == {"not sent: on_failure: the run succeeded"}
    await service.scheduler_tool.run("pause_task", {"task_id": task_id}, context=ctx)


async def test_a_runs_notification_bears_the_time_it_was_recorded_at(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    """The notification of a run is stamped with its record's clock, the one the
    failure-alert interval is measured on: two alerts are then never closer than the
    interval, even when building the first took longer than building the second."""
    tool = PriceTool()
    tool.failing = True
    service = await start_service(tools=[tool], min_interval=1)
    task_id = await create(service, ctx)
    note = await next_of(service, "failed")
    run = await run_row(service, note["run_id"])
    assert datetime.fromisoformat(note["created_at"]) == run.finished_at
    await service.scheduler_tool.run("pause_task", {"task_id": task_id}, context=ctx)


async def test_the_auto_pause_tells_why_and_how_to_resume_and_resume_starts_afresh(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    tool = PriceTool()
    tool.failing = True
    service = await start_service(tools=[tool], min_interval=1, max_consecutive_failures=2)
    task_id = await create(service, ctx)

    assert (await next_of(service, "failed", "paused"))["status"] == "failed"
    paused = await next_of(service, "failed", "paused")  # within the hour, yet told
    assert paused["status"] == "paused"
    assert "failed 2 times in a row and was paused" in paused["message"]
    assert f"resume it with resume_task (task_id {task_id})" in paused["message"]
    out = await get_task(service, ctx, task_id)
    note = (
        "Paused automatically after 2 failed runs in a row; last error: the price service is down"
    )
    assert out["task"]["pause_note"] == note
    assert out["message"].endswith(f"Paused: {note}")

    resumed = await service.scheduler_tool.run("resume_task", {"task_id": task_id}, context=ctx)
    assert resumed["status"] == "scheduled"
    assert (await get_task(service, ctx, task_id))["task"]["pause_note"] is None
    again = await next_of(service, "failed", "paused")  # the first failure after a resume
    assert again["status"] == "failed"
    await service.scheduler_tool.run("pause_task", {"task_id": task_id}, context=ctx)


# -- pause notes and bad input ------------------------------------------------------------
async def test_a_pause_note_round_trips_through_scheduler_tool(
    service: SchedulerService, ctx: ToolContext
) -> None:
    daily = {"frequency": "daily", "scheduled_time": "09:00", "custom_schedule": None}
    task_id = await create(
        service, ctx, **daily, tool_name="reminder_tool", operation="get_reminders"
    )
    out = await service.scheduler_tool.run(
        "pause_task", {"task_id": task_id, "note": "  on holiday until Monday "}, context=ctx
    )
    assert out["status"] == "paused"
    got = await get_task(service, ctx, task_id)
    assert got["task"]["pause_note"] == "on holiday until Monday"
    assert "Paused: on holiday until Monday" in got["message"]
    listed = await service.scheduler_tool.run("get_tasks", {}, context=ctx)
    assert listed["tasks"][0]["pause_note"] == "on holiday until Monday"
    await service.scheduler_tool.run("resume_task", {"task_id": task_id}, context=ctx)
    assert (await get_task(service, ctx, task_id))["task"]["pause_note"] is None


async def test_bad_notify_and_note_are_refused_naming_the_field_and_change_nothing(
    service: SchedulerService, ctx: ToolContext
) -> None:
    tool = service.scheduler_tool
    base = {"name": "x", "frequency": "daily", "scheduled_time": "09:00"}
    direct = {**base, "tool_name": "reminder_tool", "operation": "get_reminders"}
    with pytest.raises(ToolError) as bad:
        await tool.run("create_task", {**direct, "notify": "sometimes"}, context=ctx)
    assert bad.value.code == "invalid_input"
    assert bad.value.message.startswith("notify:") and "'on_change'" in bad.value.message
    with pytest.raises(ToolError) as direct_model:
        await tool.run("create_task", {**direct, "notify": "model_decides"}, context=ctx)
    assert direct_model.value.message.startswith("notify: 'model_decides' needs execution_mode")
    assert (await tool.run("get_tasks", {}, context=ctx))["count"] == 0

    task_id = (await tool.run("create_task", {**direct, "notify": "ON_CHANGE"}, context=ctx))[
        "task"
    ]["task_id"]
    with pytest.raises(ToolError) as update:
        await tool.run("update_task", {"task_id": task_id, "notify": "model_decides"}, context=ctx)
    assert "orchestrated" in update.value.message
    changed = await tool.run(
        "update_task", {"task_id": task_id, "notify": "on_failure"}, context=ctx
    )
    assert changed["task"]["notify"] == "on_failure" and "notify" in changed["message"]
    with pytest.raises(ToolError) as long_note:
        await tool.run("pause_task", {"task_id": task_id, "note": "n" * 501}, context=ctx)
    assert long_note.value.message.startswith("note:") and "500" in long_note.value.message
    task = (await get_task(service, ctx, task_id))["task"]
    assert (task["status"], task["notify"], task["pause_note"]) == ("scheduled", "on_failure", None)

    async with service.db.read() as session:
        row = await session.get(ScheduledTask, task_id)
    assert row is not None and row.notify_policy == "on_failure"


# -- the operator CLI ---------------------------------------------------------------------
@pytest.fixture
def _keep_pytest_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI configures the root logger for its process; not inside pytest's."""
    monkeypatch.setattr(cli, "configure_logging", lambda *a, **k: None)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


@pytest.mark.usefixtures("_keep_pytest_logging")
def test_a_pause_note_round_trips_through_the_cli(
    capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    db = ("--database-url", database_url)
    task = {
        "name": "Water plants",
        "frequency": "daily",
        "scheduled_time": "09:00",
        "tool_name": "reminder_tool",
        "operation": "get_reminders",
        "notify": "on_change",
    }
    code, out, err = run_cli(capsys, "tool", "create_task", json.dumps(task), "--user", "u1", "--json", *db)  # fmt: skip
    assert code == 0, err
    task_id = json.loads(out)["task"]["task_id"]

    code, out, err = run_cli(capsys, "pause", task_id, "--note", "new pump first", *db)
    assert code == 0 and "paused" in out, err
    code, out, _ = run_cli(capsys, "task", task_id, *db)
    assert "pause_note" in out and "new pump first" in out and "on_change" in out
    code, out, _ = run_cli(capsys, "tasks", *db)
    assert "NOTE" in out and "new pump first" in out
    code, out, _ = run_cli(capsys, "task", task_id, "--json", *db)
    assert json.loads(out)["pause_note"] == "new pump first"

    code, _, err = run_cli(capsys, "pause", task_id, "--note", " ", *db)
    assert code == 2 and "--note" in err and "must not be empty" in err
    assert run_cli(capsys, "resume", task_id, *db)[0] == 0
    code, out, _ = run_cli(capsys, "task", task_id, "--json", *db)
    assert json.loads(out)["pause_note"] is None


# -- what the model is told -----------------------------------------------------------------
def test_the_tool_definition_offers_notify_and_note() -> None:
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

    from scheduler_service.tasks.scheduler_tool import DESCRIPTION, INPUT_SCHEMA

    kwargs = INPUT_SCHEMA["properties"]["kwargs"]["properties"]
    assert kwargs["notify"]["enum"] == ["always", "on_change", "model_decides", "on_failure"]
    assert NOTHING_TO_REPORT in kwargs["notify"]["description"]
    assert kwargs["note"]["type"] == "string" and "pause_task" in kwargs["note"]["description"]
    assert "tell me only if it drops below 50" in DESCRIPTION and "pause_note" in DESCRIPTION
    validator = Draft202012Validator(INPUT_SCHEMA)
    validator.validate({"operation": "create_task", "kwargs": {"notify": "on_change"}})
    assert not validator.is_valid({"operation": "create_task", "kwargs": {"notify": "never"}})
