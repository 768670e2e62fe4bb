"""scheduler_tool: every operation's happy path and every kind of bad input."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from scheduler_service import SchedulerService
from scheduler_service.storage.models import ScheduledTask, TaskRun
from scheduler_service.tasks import paging
from scheduler_service.tasks.paging import Cursor, Total
from tests.conftest import RecordingTool, ServiceFactory, next_notification
from tests.design_examples import INVENTORY, SALES
from tools import ToolContext, ToolError


async def call(service: SchedulerService, op: str, kwargs: Any, ctx: ToolContext) -> dict[str, Any]:
    return await service.scheduler_tool.run(op, kwargs, context=ctx)


async def create(service: SchedulerService, ctx: ToolContext, **fields: Any) -> dict[str, Any]:
    out = await call(service, "create_task", {**INVENTORY, **fields}, ctx)
    return out["task"]


async def counts(service: SchedulerService) -> tuple[int, int]:
    async with service.db.read() as session:
        tasks = await session.scalar(select(func.count()).select_from(ScheduledTask))
    jobs = len(await service.jobs.job_ids())
    return int(tasks or 0), jobs


async def expect_error(
    service: SchedulerService, op: str, kwargs: Any, ctx: ToolContext, code: str, *needles: str
) -> ToolError:
    before = await counts(service)
    with pytest.raises(ToolError) as info:
        await call(service, op, kwargs, ctx)
    assert info.value.code == code, info.value
    for needle in needles:
        assert needle in info.value.message, info.value.message
    assert await counts(service) == before, "bad input must change nothing"
    return info.value


# -- the example create_task calls, as written --------------------------------------------
async def test_design_document_direct_example(service: SchedulerService, ctx: ToolContext) -> None:
    out = await call(service, "create_task", INVENTORY, ctx)
    task = out["task"]
    assert set(out) == {"task", "message", "next_runs", "warnings", "now"}
    assert out["next_runs"][0] == task["next_run_time"] and len(out["next_runs"]) == 3
    assert out["warnings"] == []
    assert task["status"] == "scheduled"
    assert task["frequency"] == "daily" and task["execution_mode"] == "direct"
    assert task["schedule"] == "every day at 09:00 (UTC)"
    nxt = datetime.fromisoformat(task["next_run_time"])
    now = datetime.now(UTC)
    assert nxt.hour == 9 and nxt.minute == 0 and now < nxt <= now + timedelta(days=1)
    assert task["task_id"] in out["message"] and task["next_run_time"] in out["message"]
    assert await service.jobs.next_run_time(task["task_id"]) == nxt


async def test_design_document_orchestrated_example(
    service: SchedulerService, ctx: ToolContext
) -> None:
    out = await call(service, "create_task", SALES, ctx)
    task = out["task"]
    assert task["execution_mode"] == "orchestrated"
    assert datetime.fromisoformat(task["next_run_time"]).weekday() == 0
    assert task["schedule"] == "every Monday at 08:00 (UTC)"
    assert "ANTHROPIC_API_KEY" in out["message"], "no key configured: say runs need one"


async def test_design_document_management_examples(
    service: SchedulerService, ctx: ToolContext
) -> None:
    task_id = (await create(service, ctx))["task_id"]
    listed = await call(service, "get_tasks", {"status": "scheduled"}, ctx)
    assert set(listed) >= {"tasks", "count", "message"} and listed["count"] == 1
    got = await call(service, "get_task", {"task_id": task_id}, ctx)
    assert got["task"]["task_id"] == task_id
    updated = await call(
        service, "update_task", {"task_id": task_id, "scheduled_time": "10:00:00"}, ctx
    )
    assert datetime.fromisoformat(updated["task"]["next_run_time"]).hour == 10
    ran = await call(service, "execute_task_now", {"task_id": task_id}, ctx)
    assert ran["task_id"] == task_id and ran["run"]["status"] == "succeeded"
    cancelled = await call(service, "cancel_task", {"task_id": task_id}, ctx)
    assert cancelled["task_id"] == task_id and "cancelled" in cancelled["message"]
    deleted = await call(service, "delete_task", {"task_id": task_id}, ctx)
    assert deleted["task_id"] == task_id and "message" in deleted


# -- create_task -------------------------------------------------------------------------
async def test_kwargs_may_be_a_json_string(service: SchedulerService, ctx: ToolContext) -> None:
    out = await call(service, "create_task", json.dumps(INVENTORY), ctx)
    assert out["task"]["name"] == "Daily Inventory Check"
    listed = await call(service, "get_tasks", '{"status": "scheduled"}', ctx)
    assert listed["count"] == 1


async def test_task_is_owned_by_the_context(service: SchedulerService, ctx: ToolContext) -> None:
    task = await create(service, ctx)
    assert task["conversation_id"] == "c1"
    other = ToolContext(user_id="u2", conversation_id="c2")
    await expect_error(service, "get_task", {"task_id": task["task_id"]}, other, "not_found")
    await expect_error(service, "delete_task", {"task_id": task["task_id"]}, other, "not_found")
    assert (await call(service, "get_tasks", {}, other))["count"] == 0


@pytest.mark.parametrize(
    ("kwargs", "needles"),
    [
        ({"frequency": "fortnightly"}, ["frequency", "once", "custom"]),
        ({"scheduled_time": "25:00"}, ["scheduled_time", "HH:MM"]),
        ({"scheduled_time": "tomorrow-ish"}, ["scheduled_time", "ISO 8601"]),
        ({"timezone": "Mars/Olympus"}, ["timezone", "IANA"]),
        ({"frequency": "weekly"}, ["day_of_week", "0=Monday"]),
        ({"frequency": "weekly", "day_of_week": 7}, ["day_of_week", "6=Sunday"]),
        ({"frequency": "monthly"}, ["day_of_month", "-1"]),
        ({"frequency": "monthly", "day_of_month": 32}, ["day_of_month", "1–31"]),
        (
            {"frequency": "custom", "custom_schedule": "whenever"},
            ["custom_schedule", "every 3 days"],
        ),
        ({"frequency": "custom"}, ["custom_schedule", "required"]),
        ({"frequency": "once", "scheduled_time": "2020-01-01T09:00"}, ["scheduled_time", "past"]),
        ({"end_time": "2020-01-01T00:00"}, ["end_time", "past"]),
        ({"max_runs": 0}, ["max_runs"]),
        ({"tool_name": "no_such_tool"}, ["tool_name", "reminder_tool"]),
        ({"tool_name": "scheduler_tool", "operation": "create_task"}, ["tool_name"]),
        ({"operation": "launch_rockets"}, ["operation", "add_reminder"]),
        ({"operation": None}, ["operation", "required"]),
        ({"execution_mode": "psychic"}, ["execution_mode", "direct"]),
        ({"timeout": 0}, ["timeout"]),
        ({"colour": "blue"}, ["colour", "unknown field", "frequency"]),
        ({"name": ""}, ["name"]),
        ({"max_runs": 10**30}, ["max_runs", "less than or equal"]),
        ({"misfire_grace_time": 10**30}, ["misfire_grace_time"]),
        ({"frequency": "once", "scheduled_time": "9999-12-31T23:59:59-05:00"}, ["out of range"]),
        ({"end_time": "0001-01-01T00:00:00+14:00"}, ["end_time", "out of range"]),
        ({"frequency": "custom", "custom_schedule": "RRULE:FREQ=DAILY;INTERVAL=0"}, ["INTERVAL"]),
        ({"name": None}, ["name"]),
    ],
)
async def test_create_task_rejects_bad_input(
    service: SchedulerService, ctx: ToolContext, kwargs: dict[str, Any], needles: list[str]
) -> None:
    fields = {**INVENTORY, **kwargs}
    fields = {k: v for k, v in fields.items() if v is not None}
    await expect_error(service, "create_task", fields, ctx, "invalid_input", *needles)


async def test_orchestrated_task_needs_description_and_known_tools(
    service: SchedulerService, ctx: ToolContext
) -> None:
    no_description = {k: v for k, v in SALES.items() if k != "task_description"}
    await expect_error(
        service, "create_task", no_description, ctx, "invalid_input", "task_description"
    )
    await expect_error(
        service,
        "create_task",
        {**SALES, "available_tools": ["reminder_tool", "email_tool"]},
        ctx,
        "invalid_input",
        "available_tools",
        "'email_tool'",
        "reminder_tool",
    )


async def test_missing_execution_mode_is_inferred_or_explained(
    service: SchedulerService, ctx: ToolContext
) -> None:
    direct = {k: v for k, v in INVENTORY.items() if k != "execution_mode"}
    assert (await call(service, "create_task", direct, ctx))["task"]["execution_mode"] == "direct"
    bare = {"name": "x", "frequency": "daily", "scheduled_time": "09:00"}
    await expect_error(
        service, "create_task", bare, ctx, "invalid_input", "execution_mode", "orchestrated"
    )


async def test_kwargs_that_are_not_an_object(service: SchedulerService, ctx: ToolContext) -> None:
    await expect_error(service, "create_task", "{not json", ctx, "invalid_input", "kwargs", "JSON")
    await expect_error(service, "create_task", "[1, 2]", ctx, "invalid_input", "kwargs", "object")


async def test_unknown_operation(service: SchedulerService, ctx: ToolContext) -> None:
    await expect_error(service, "explode", {}, ctx, "invalid_input", "operation", "create_task")


async def test_quota_per_user(start_service: ServiceFactory, ctx: ToolContext) -> None:
    service = await start_service()
    service.settings.scheduler_tool.max_tasks_per_user = 2
    await create(service, ctx)
    await create(service, ctx)
    await expect_error(service, "create_task", INVENTORY, ctx, "quota_exceeded", "limit is 2")
    other = ToolContext(user_id="u2", conversation_id="c2")
    assert (await create(service, other))["status"] == "scheduled"


# -- get_tasks ---------------------------------------------------------------------------
async def test_get_tasks_filters_pages_and_orders_by_next_run(
    service: SchedulerService, ctx: ToolContext
) -> None:
    late = await create(service, ctx, name="late", scheduled_time="23:59")
    early = await create(service, ctx, name="early", frequency="hourly")
    weekly = await create(service, ctx, name="weekly", frequency="weekly", day_of_week=[0, 3])
    await call(service, "cancel_task", {"task_id": weekly["task_id"]}, ctx)

    everything = await call(service, "get_tasks", {}, ctx)
    assert everything["count"] == 3
    names = [t["name"] for t in everything["tasks"]]
    assert names[:2] == sorted(
        ["late", "early"], key=lambda n: {"late": late, "early": early}[n]["next_run_time"]
    )
    assert names[-1] == "weekly", "tasks without a next run come last"

    scheduled = await call(service, "get_tasks", {"status": "scheduled"}, ctx)
    assert {t["name"] for t in scheduled["tasks"]} == {"late", "early"}
    hourly = await call(service, "get_tasks", {"frequency": "hourly"}, ctx)
    assert [t["name"] for t in hourly["tasks"]] == ["early"]
    page = await call(service, "get_tasks", {"limit": 1, "offset": 1}, ctx)
    assert page["count"] == 1 and page["total"] == 3 and "offset=2" in page["message"]
    await expect_error(service, "get_tasks", {"status": "sleeping"}, ctx, "invalid_input", "status")
    await expect_error(service, "get_tasks", {"limit": 0}, ctx, "invalid_input", "limit")


async def test_get_tasks_pages_with_a_cursor_at_any_depth(
    service: SchedulerService, ctx: ToolContext
) -> None:
    """Cursor pages, concatenated, are the whole list in order — across the tasks with a
    next run and those without — with no task twice; offsets give the same pages."""
    for i in range(7):
        task = await create(service, ctx, name=f"t{i}", scheduled_time=f"{10 + i}:00")
        if i % 3 == 0:  # paused: no next run, listed after the scheduled ones
            await call(service, "pause_task", {"task_id": task["task_id"]}, ctx)
    whole = [t["task_id"] for t in (await call(service, "get_tasks", {"limit": 100}, ctx))["tasks"]]
    assert len(whole) == 7

    paged: list[str] = []
    cursor: str | None = None
    while True:
        kwargs: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await call(service, "get_tasks", kwargs, ctx)
        assert page["total"] == 7
        paged += [t["task_id"] for t in page["tasks"]]
        offset_page = await call(
            service, "get_tasks", {"limit": 2, "offset": len(paged) - page["count"]}, ctx
        )
        assert [t["task_id"] for t in offset_page["tasks"]] == paged[-page["count"] :]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert "cursor=next_cursor" in page["message"]
    assert paged == whole

    scheduled = await call(service, "get_tasks", {"status": "scheduled", "limit": 2}, ctx)
    rest = await call(
        service, "get_tasks", {"status": "scheduled", "cursor": scheduled["next_cursor"]}, ctx
    )
    assert [t["task_id"] for t in scheduled["tasks"] + rest["tasks"]] == whole[:4]
    assert rest["next_cursor"] is None
    await expect_error(service, "get_tasks", {"cursor": "garbage"}, ctx, "invalid_input", "cursor")


# -- get_task / update_task --------------------------------------------------------------
async def test_get_task_unknown_id(service: SchedulerService, ctx: ToolContext) -> None:
    await expect_error(service, "get_task", {"task_id": "task_nope"}, ctx, "not_found", "task_id")
    await expect_error(service, "get_task", {}, ctx, "invalid_input", "task_id", "required")


async def test_update_revalidates_and_reschedules(
    service: SchedulerService, ctx: ToolContext
) -> None:
    task = await create(service, ctx)
    out = await call(
        service,
        "update_task",
        {
            "task_id": task["task_id"],
            "frequency": "weekly",
            "day_of_week": "friday",
            "timezone": "America/New_York",
            "scheduled_time": "07:30",
        },
        ctx,
    )
    updated = out["task"]
    nxt = datetime.fromisoformat(updated["next_run_time"])
    assert (nxt.weekday(), nxt.hour, nxt.minute) == (4, 7, 30)
    assert nxt.utcoffset() in (timedelta(hours=-5), timedelta(hours=-4))
    assert await service.jobs.next_run_time(task["task_id"]) == nxt
    assert "frequency" in out["message"]


async def test_update_with_bad_input_changes_nothing(
    service: SchedulerService, ctx: ToolContext
) -> None:
    task = await create(service, ctx)
    before = (await call(service, "get_task", {"task_id": task["task_id"]}, ctx))["task"]
    await expect_error(
        service,
        "update_task",
        {"task_id": task["task_id"], "frequency": "monthly"},
        ctx,
        "invalid_input",
        "day_of_month",
    )
    await expect_error(
        service, "update_task", {"task_id": task["task_id"]}, ctx, "invalid_input", "no fields"
    )
    await expect_error(
        service,
        "update_task",
        {"task_id": task["task_id"], "tool_name": "ghost_tool"},
        ctx,
        "invalid_input",
        "tool_name",
    )
    after = (await call(service, "get_task", {"task_id": task["task_id"]}, ctx))["task"]
    assert after == before
    assert await service.jobs.next_run_time(task["task_id"]) == datetime.fromisoformat(
        before["next_run_time"]
    )


async def test_update_without_schedule_change_keeps_next_run(
    service: SchedulerService, ctx: ToolContext
) -> None:
    task = await create(service, ctx, frequency="hourly")
    out = await call(service, "update_task", {"task_id": task["task_id"], "name": "renamed"}, ctx)
    assert out["task"]["name"] == "renamed"
    assert out["task"]["next_run_time"] == task["next_run_time"]


async def test_cannot_update_a_cancelled_task(service: SchedulerService, ctx: ToolContext) -> None:
    task = await create(service, ctx)
    await call(service, "cancel_task", {"task_id": task["task_id"]}, ctx)
    await expect_error(
        service,
        "update_task",
        {"task_id": task["task_id"], "scheduled_time": "10:00"},
        ctx,
        "conflict",
        "cancelled",
    )


# -- cancel / pause / resume / delete ----------------------------------------------------
async def test_cancel_stops_runs_and_keeps_history(
    service: SchedulerService, ctx: ToolContext
) -> None:
    task = await create(service, ctx)
    await call(service, "execute_task_now", {"task_id": task["task_id"]}, ctx)
    out = await call(service, "cancel_task", {"task_id": task["task_id"]}, ctx)
    assert out["status"] == "cancelled"
    assert not await service.jobs.exists(task["task_id"])
    got = (await call(service, "get_task", {"task_id": task["task_id"]}, ctx))["task"]
    assert got["status"] == "cancelled" and got["next_run_time"] is None
    assert len(got["recent_runs"]) == 1
    again = await call(service, "cancel_task", {"task_id": task["task_id"]}, ctx)
    assert "already cancelled" in again["message"]


async def test_pause_and_resume(service: SchedulerService, ctx: ToolContext) -> None:
    task = await create(service, ctx)
    await call(service, "pause_task", {"task_id": task["task_id"]}, ctx)
    assert await service.jobs.next_run_time(task["task_id"]) is None
    paused = (await call(service, "get_task", {"task_id": task["task_id"]}, ctx))["task"]
    assert paused["status"] == "paused" and paused["next_run_time"] is None
    resumed = await call(service, "resume_task", {"task_id": task["task_id"]}, ctx)
    assert "Next run" in resumed["message"]
    assert await service.jobs.next_run_time(task["task_id"]) == datetime.fromisoformat(
        task["next_run_time"]
    )


async def test_delete_removes_task_job_and_runs(
    service: SchedulerService, ctx: ToolContext
) -> None:
    task = await create(service, ctx)
    await call(service, "execute_task_now", {"task_id": task["task_id"]}, ctx)
    await call(service, "delete_task", {"task_id": task["task_id"]}, ctx)
    assert await counts(service) == (0, 0)
    async with service.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(TaskRun)) == 0
    await expect_error(service, "delete_task", {"task_id": task["task_id"]}, ctx, "not_found")


# -- execute_task_now --------------------------------------------------------------------
async def test_execute_now_leaves_schedule_alone(
    service: SchedulerService, ctx: ToolContext
) -> None:
    task = await create(service, ctx)
    out = await call(service, "execute_task_now", {"task_id": task["task_id"]}, ctx)
    assert out["run"]["kind"] == "manual" and out["run"]["status"] == "succeeded"
    assert out["run"]["result"]["reminder"]["title"] == "Check inventory levels"
    assert out["task"]["next_run_time"] == task["next_run_time"]
    assert out["task"]["run_count"] == 0, "manual runs do not count toward max_runs"
    assert out["task"]["success_count"] == 1 and out["task"]["last_status"] == "succeeded"
    assert await service.jobs.next_run_time(task["task_id"]) == datetime.fromisoformat(
        task["next_run_time"]
    )


async def test_execute_now_conflict_while_running(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    tool = RecordingTool()
    service = await start_service(tools=[tool])
    service.settings.limits.manual_run_interval = 0  # the rate limit is tested in test_limits
    task = await create(service, ctx, tool_name="recording_tool", operation="block", parameters={})
    first = await call(
        service, "execute_task_now", {"task_id": task["task_id"], "wait": False}, ctx
    )
    assert first["run"]["status"] == "queued" and "notification" in first["message"]
    await tool.called.wait()
    await expect_error(
        service,
        "execute_task_now",
        {"task_id": task["task_id"]},
        ctx,
        "conflict",
        "already running",
    )
    tool.release.set()
    await service.runner.settled()
    second = await call(service, "execute_task_now", {"task_id": task["task_id"]}, ctx)
    assert second["run"]["status"] == "succeeded"


async def test_execute_now_reports_tool_failure(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    service = await start_service(tools=[RecordingTool()])
    task = await create(
        service,
        ctx,
        tool_name="recording_tool",
        operation="fail",
        parameters={"message": "disk full"},
    )
    out = await call(service, "execute_task_now", {"task_id": task["task_id"]}, ctx)
    assert out["run"]["status"] == "failed" and "disk full" in out["message"]
    pending = await service.get_notifications("c1")
    assert pending[0]["status"] == "failed" and "disk full" in pending[0]["message"]


def test_input_schema_is_a_valid_anthropic_tool_definition(service: SchedulerService) -> None:
    definition = service.scheduler_tool.definition()
    assert definition["name"] == "scheduler_tool"
    schema = definition["input_schema"]
    assert schema["type"] == "object" and schema["required"] == ["operation"]
    assert "create_task" in schema["properties"]["operation"]["enum"]
    kwargs = schema["properties"]["kwargs"]["properties"]
    assert {"frequency", "scheduled_time", "task_description", "task_id"} <= set(kwargs)
    json.dumps(definition)
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

    Draft202012Validator.check_schema(schema)


# -- preview_schedule ---------------------------------------------------------------------
DESIGN_EXAMPLE_SCHEDULES = [
    {"frequency": "daily", "scheduled_time": "09:00:00"},
    {"frequency": "weekly", "day_of_week": 0, "scheduled_time": "08:00:00"},
    {"frequency": "once", "scheduled_time": "10:00:00"},
    {"frequency": "minutely"},
    {"frequency": "hourly"},
    {"frequency": "monthly", "day_of_month": 15, "scheduled_time": "09:00"},
    {"frequency": "custom", "custom_schedule": "every 3 days"},
]


@pytest.mark.parametrize("fields", DESIGN_EXAMPLE_SCHEDULES)
async def test_preview_answers_every_design_document_schedule(
    service: SchedulerService, ctx: ToolContext, fields: dict[str, Any]
) -> None:
    before = await counts(service)
    out = await call(service, "preview_schedule", {**fields, "count": 4}, ctx)
    assert set(out) >= {"description", "next_runs", "warnings", "message"}
    expected = 1 if fields["frequency"] == "once" else 4
    assert len(out["next_runs"]) == expected
    times = [datetime.fromisoformat(t) for t in out["next_runs"]]
    assert times == sorted(times) and times[0] > datetime.now(UTC)
    assert "(UTC)" in out["description"]
    assert await counts(service) == before, "a preview stores nothing"


async def test_preview_warns_about_dst_and_month_ends(
    service: SchedulerService, ctx: ToolContext
) -> None:
    dst = await call(
        service,
        "preview_schedule",
        {"frequency": "daily", "scheduled_time": "02:30", "timezone": "America/New_York"},
        ctx,
    )
    assert any("02:30" in w for w in dst["warnings"]), dst["warnings"]
    month_end = await call(
        service,
        "preview_schedule",
        {"frequency": "monthly", "day_of_month": 31, "scheduled_time": "09:00", "count": 12},
        ctx,
    )
    assert month_end["warnings"] and len(month_end["next_runs"]) == 12
    past = await call(
        service,
        "preview_schedule",
        {"frequency": "once", "scheduled_time": "2020-01-01T09:00"},
        ctx,
    )
    assert past["next_runs"] == [] and past["warnings"]


async def test_preview_of_an_existing_task_with_changes(
    service: SchedulerService, ctx: ToolContext
) -> None:
    task = await create(service, ctx)
    same = await call(service, "preview_schedule", {"task_id": task["task_id"], "count": 1}, ctx)
    assert same["next_runs"] == [task["next_run_time"]]
    moved = await call(
        service, "preview_schedule", {"task_id": task["task_id"], "scheduled_time": "10:30"}, ctx
    )
    assert datetime.fromisoformat(moved["next_runs"][0]).hour == 10
    unchanged = (await call(service, "get_task", {"task_id": task["task_id"]}, ctx))["task"]
    assert unchanged["next_run_time"] == task["next_run_time"]


@pytest.mark.parametrize(
    ("kwargs", "code", "needle"),
    [
        ({}, "invalid_input", "frequency"),
        ({"frequency": "daily", "scheduled_time": "09:00", "count": 0}, "invalid_input", "count"),
        ({"frequency": "daily", "scheduled_time": "09:00", "count": 101}, "invalid_input", "count"),
        ({"frequency": "custom", "custom_schedule": "sometimes"}, "invalid_input", "every 3 days"),
        ({"task_id": "task_missing"}, "not_found", "task_id"),
    ],
)
async def test_preview_rejects_bad_input(
    service: SchedulerService, ctx: ToolContext, kwargs: dict[str, Any], code: str, needle: str
) -> None:
    await expect_error(service, "preview_schedule", kwargs, ctx, code, needle)


async def test_create_echoes_warnings(service: SchedulerService, ctx: ToolContext) -> None:
    out = await call(
        service, "create_task", {**INVENTORY, "frequency": "monthly", "day_of_month": 31}, ctx
    )
    assert out["warnings"] and "Warnings:" in out["message"]


# -- found in review: concurrency, phases, limits, job-store failures ----------------------
async def test_parallel_execute_now_runs_once(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    """LLMs issue tool calls in parallel: two execute_task_now at once give one run."""
    tool = RecordingTool()
    service = await start_service(tools=[tool])
    task = await create(service, ctx, tool_name="recording_tool", operation="block", parameters={})
    first = asyncio.create_task(
        call(service, "execute_task_now", {"task_id": task["task_id"]}, ctx)
    )
    second = asyncio.create_task(
        call(service, "execute_task_now", {"task_id": task["task_id"]}, ctx)
    )
    await tool.called.wait()
    tool.release.set()
    outcomes = await asyncio.gather(first, second, return_exceptions=True)
    errors = [o for o in outcomes if isinstance(o, ToolError)]
    assert len(errors) == 1 and errors[0].code == "conflict"
    assert len(tool.calls) == 1


async def test_changing_only_limits_keeps_the_schedule_phase(
    service: SchedulerService, ctx: ToolContext
) -> None:
    task = await create(
        service, ctx, frequency="custom", custom_schedule="every 2 weeks on monday at 09:00"
    )
    async with service.db.read() as session:
        before = (await session.get(ScheduledTask, task["task_id"])).schedule  # type: ignore[union-attr]
    end = (datetime.now(UTC) + timedelta(days=90)).isoformat()
    await call(
        service, "update_task", {"task_id": task["task_id"], "end_time": end, "max_runs": 5}, ctx
    )
    async with service.db.read() as session:
        after = (await session.get(ScheduledTask, task["task_id"])).schedule  # type: ignore[union-attr]
    assert after["max_runs"] == 5 and after["end_time"] is not None
    assert {k: v for k, v in after.items() if k not in ("end_time", "max_runs")} == {
        k: v for k, v in before.items() if k not in ("end_time", "max_runs")
    }, "the anchor (start_at) of 'every 2 weeks' must not move"


async def test_max_runs_cannot_fall_below_runs_made(
    service: SchedulerService, ctx: ToolContext
) -> None:
    task = await create(service, ctx)
    for _ in range(2):
        fire = (await call(service, "get_task", {"task_id": task["task_id"]}, ctx))["task"]
        await service.runner.on_fire(
            task["task_id"], [datetime.fromisoformat(fire["next_run_time"])]
        )
        await next_notification(service)  # the run finished (queued first on PostgreSQL)
    await expect_error(
        service,
        "update_task",
        {"task_id": task["task_id"], "max_runs": 2},
        ctx,
        "invalid_input",
        "max_runs",
        "already run 2",
    )


async def test_resuming_a_once_task_whose_time_passed_is_refused(
    service: SchedulerService, ctx: ToolContext
) -> None:
    due = datetime.now(UTC) + timedelta(seconds=1)
    task = await create(service, ctx, frequency="once", scheduled_time=due.isoformat())
    await call(service, "pause_task", {"task_id": task["task_id"]}, ctx)
    await asyncio.sleep((due - datetime.now(UTC)).total_seconds() + 0.1)  # let the time pass
    await expect_error(
        service, "resume_task", {"task_id": task["task_id"]}, ctx, "conflict", "has passed"
    )
    got = (await call(service, "get_task", {"task_id": task["task_id"]}, ctx))["task"]
    assert got["status"] == "paused"


async def test_job_store_failure_on_resume_changes_nothing(
    service: SchedulerService, ctx: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = await create(service, ctx)
    await call(service, "pause_task", {"task_id": task["task_id"]}, ctx)

    def broken(*args: Any, **kwargs: Any) -> Any:  # the job row's write, in the transaction
        raise OperationalError("UPDATE task_scheduler_jobs", {}, OSError("disk I/O error"))

    monkeypatch.setattr(service.jobs, "put_job_sync", broken)
    with pytest.raises(ToolError) as info:
        await call(service, "resume_task", {"task_id": task["task_id"]}, ctx)
    assert info.value.code == "unavailable" and "try again" in info.value.message
    monkeypatch.undo()
    got = (await call(service, "get_task", {"task_id": task["task_id"]}, ctx))["task"]
    assert got["status"] == "paused" and got["next_run_time"] is None
    assert await service.jobs.next_run_time(task["task_id"]) is None


async def test_unexpected_errors_reach_the_caller_as_tool_errors(
    service: SchedulerService, ctx: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def bug(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("boom")

    monkeypatch.setattr(service.tasks, "list_tasks", bug)
    with pytest.raises(ToolError) as info:
        await call(service, "get_tasks", {}, ctx)
    assert info.value.code == "execution_failed" and "KeyError" in info.value.message


# -- schedules as people say them, through the tool ------------------------------------
async def test_answers_carry_now_in_the_task_zone(
    service: SchedulerService, ctx: ToolContext
) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    out = await call(service, "create_task", {**INVENTORY, "timezone": "Asia/Kolkata"}, ctx)
    now = datetime.fromisoformat(out["now"])
    assert now.utcoffset() == timedelta(hours=5, minutes=30)
    assert before <= now <= datetime.now(UTC)
    updated = await call(
        service, "update_task", {"task_id": out["task"]["task_id"], "max_runs": 5}, ctx
    )
    assert datetime.fromisoformat(updated["now"]).utcoffset() == timedelta(hours=5, minutes=30)
    shown = await call(
        service, "preview_schedule", {"frequency": "daily", "scheduled_time": "9am"}, ctx
    )
    assert "now" in shown
    assert "now" in service.scheduler_tool.definition()["description"]


async def test_one_time_phrase_is_stored_as_a_once_task(
    service: SchedulerService, ctx: ToolContext
) -> None:
    task = await create(service, ctx, frequency="custom", custom_schedule="in 2 hours")
    assert task["frequency"] == "once" and task["custom_schedule"] is None
    due = datetime.fromisoformat(task["next_run_time"])
    assert abs(due - (datetime.now(UTC) + timedelta(hours=2))) < timedelta(minutes=1)
    assert datetime.fromisoformat(task["scheduled_time"]) == due


async def test_changing_frequency_clears_fields_the_new_one_ignores(
    service: SchedulerService, ctx: ToolContext
) -> None:
    out = await call(service, "create_task", SALES, ctx)  # weekly on Monday
    task_id = out["task"]["task_id"]
    updated = await call(service, "update_task", {"task_id": task_id, "frequency": "daily"}, ctx)
    assert updated["task"]["day_of_week"] is None
    assert updated["task"]["schedule"].startswith("every day at 08:00")


async def test_except_dates_through_the_tool(service: SchedulerService, ctx: ToolContext) -> None:
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    task = await create(
        service, ctx, scheduled_time="00:00", timezone="UTC", except_dates=[tomorrow]
    )
    assert f"except {tomorrow}" in task["schedule"]
    assert not task["next_run_time"].startswith(tomorrow)


@pytest.mark.parametrize(
    ("kwargs", "needles"),
    [
        ({"frequency": "monthly", "day_of_month": "last"}, ["day_of_month", "-1"]),
        ({"timezone": "EST"}, ["timezone", "America/New_York"]),
        ({"custom_schedule": "every weekday at 9"}, ["custom_schedule", "frequency custom"]),
        ({"day_of_week": "monday"}, ["day_of_week", "weekly"]),
        ({"frequency": "once", "scheduled_time": "2027-02-29T09:00"}, ["2027 is not a leap year"]),
        (
            {
                "frequency": "custom",
                "custom_schedule": "every weekday at 08:00 and every weekend at 10:00",
            },
            ["two tasks"],
        ),
        ({"frequency": "custom", "custom_schedule": "every 30 seconds"}, ["every minute"]),
    ],
)
async def test_bad_schedules_say_the_fix(
    service: SchedulerService, ctx: ToolContext, kwargs: dict[str, Any], needles: list[str]
) -> None:
    await expect_error(
        service, "create_task", {**INVENTORY, **kwargs}, ctx, "invalid_input", *needles
    )


async def test_except_dates_are_updated_and_previewed(
    service: SchedulerService, ctx: ToolContext
) -> None:
    task = await create(service, ctx, scheduled_time="00:00", timezone="UTC")
    skipped = datetime.fromisoformat(task["next_run_time"]).date().isoformat()
    out = await call(
        service, "update_task", {"task_id": task["task_id"], "except_dates": [skipped]}, ctx
    )
    assert f"except {skipped}" in out["task"]["schedule"]
    assert not out["task"]["next_run_time"].startswith(skipped)
    shown = await call(service, "preview_schedule", {"task_id": task["task_id"]}, ctx)
    assert f"except {skipped}" in shown["description"]
    assert not any(run.startswith(skipped) for run in shown["next_runs"])


async def test_pages_by_cursor_report_the_total_counted_for_the_first_page(
    service: SchedulerService, ctx: ToolContext
) -> None:
    """The count is a snapshot taken with the first page: the following pages carry it
    in their cursor instead of counting every task of the user again. A new first page
    counts afresh."""
    for i in range(3):
        await create(service, ctx, name=f"t{i}", scheduled_time=f"{10 + i}:00")
    first = await call(service, "get_tasks", {"limit": 2}, ctx)
    assert first["total"] == 3
    await create(service, ctx, name="t3", scheduled_time="14:00")
    second = await call(service, "get_tasks", {"limit": 2, "cursor": first["next_cursor"]}, ctx)
    assert second["total"] == 3
    assert (await call(service, "get_tasks", {"limit": 2}, ctx))["total"] == 4


async def test_get_tasks_counts_the_total_exactly_only_up_to_a_bound(
    service: SchedulerService, ctx: ToolContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first page counts at most ``paging.COUNT_BOUND`` + 1 tasks, so it costs the same
    however many tasks the user has: up to the bound the total is exact; beyond it the
    answer gives the bound, says so (``total_is_lower_bound``) and the message says "more
    than". Pages by cursor carry both."""
    monkeypatch.setattr(paging, "COUNT_BOUND", 3)
    for i in range(3):
        await create(service, ctx, name=f"t{i}", scheduled_time=f"{10 + i}:00")
    exact = await call(service, "get_tasks", {"limit": 2}, ctx)
    assert (exact["total"], exact["total_is_lower_bound"]) == (3, False)
    assert exact["message"].startswith("Found 2 of 3 tasks.")

    for i in range(3, 5):
        await create(service, ctx, name=f"t{i}", scheduled_time=f"{10 + i}:00")
    first = await call(service, "get_tasks", {"limit": 2}, ctx)
    assert (first["total"], first["total_is_lower_bound"]) == (3, True)
    assert first["message"].startswith("Found 2 of more than 3 tasks.")
    second = await call(service, "get_tasks", {"limit": 2, "cursor": first["next_cursor"]}, ctx)
    assert (second["total"], second["total_is_lower_bound"]) == (3, True)
    assert second["message"].startswith("Found 2 of more than 3 tasks.")

    hourly = await call(service, "get_tasks", {"frequency": "hourly"}, ctx)
    assert (hourly["total"], hourly["total_is_lower_bound"]) == (0, False), "filters count too"
    assert hourly["message"] == "Found 0 tasks."


def test_a_cursor_carries_its_total_and_an_older_cursor_still_pages() -> None:
    """The total (and whether it is a lower bound) survives the cursor's round trip; a
    cursor given before the bound existed (no ``b``) reads as an exact total, and one
    without a total at all makes the page count again."""
    now = datetime.now(UTC)
    cursor = Cursor(now, now, "task_x", Total(10_000, lower_bound=True))
    assert Cursor.decode(cursor.encode()) == cursor
    older = base64.urlsafe_b64encode(
        json.dumps({"v": 1, "n": None, "c": now.isoformat(), "i": "task_x", "t": 7}).encode()
    ).decode()
    assert Cursor.decode(older).total == Total(7, lower_bound=False)
    untotalled = Cursor(None, now, "task_x")
    assert Cursor.decode(untotalled.encode()).total is None
    bad = base64.urlsafe_b64encode(
        json.dumps({"v": 1, "n": None, "c": now.isoformat(), "i": "x", "t": 7, "b": "yes"}).encode()
    ).decode()
    with pytest.raises(ToolError) as info:
        Cursor.decode(bad)
    assert info.value.code == "invalid_input"
