"""Bad input is ``invalid_input`` naming the field, on SQLite and PostgreSQL, and changes
nothing; errors quote at most ~100 characters of a bad value."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from scheduler_service import SchedulerService
from scheduler_service.storage.models import BudgetNotice, ScheduledTask, utcnow
from scheduler_service.tasks.retention import purge_expired
from tests.conftest import RecordingTool, ServiceFactory, next_notification
from tools import Tool, ToolContext, ToolError

USER = ToolContext(user_id="u1", conversation_id="c1")
DAILY: dict[str, Any] = {
    "name": "digest",
    "frequency": "daily",
    "scheduled_time": "09:00",
    "execution_mode": "direct",
    "tool_name": "reminder_tool",
    "operation": "add_reminder",
    "parameters": {"title": "x", "due_date": "2030-01-01"},
}


async def call(service: SchedulerService, operation: Any, kwargs: Any) -> dict[str, Any]:
    tool = service.tools.get("scheduler_tool")
    return await tool.run(operation, kwargs, context=USER)


async def refused(service: SchedulerService, operation: Any, kwargs: Any, field: str) -> str:
    with pytest.raises(ToolError) as info:
        await call(service, operation, kwargs)
    assert info.value.code == "invalid_input", info.value
    assert info.value.message.startswith(field), info.value.message
    assert len(info.value.message) < 800
    return info.value.message


async def count_tasks(service: SchedulerService) -> int:
    return int((await call(service, "get_tasks", {}))["total"])


@pytest.mark.parametrize("operation", [["create_task"], {"op": 1}, 7, None, "x" * 10_000])
async def test_operation_of_any_type_is_invalid_input(
    service: SchedulerService, operation: Any
) -> None:
    message = await refused(service, operation, {}, "operation")
    assert len(message) < 400


DEEP: Any = 1
for _ in range(30):
    DEEP = [DEEP]

BAD: list[tuple[str, dict[str, Any], str]] = [
    ("nul in name", {"name": "a\x00b"}, "kwargs.name"),
    ("nul in parameters", {"parameters": {"k": "\x00"}}, "kwargs.parameters.k"),
    ("nul in a key", {"parameters": {"\x00": 1}}, "kwargs.parameters"),
    ("lone surrogate", {"name": "\ud800"}, "kwargs.name"),
    ("deep parameters", {"parameters": {"a": DEEP}}, "kwargs.parameters.a"),
    ("long custom_schedule", {"frequency": "custom", "custom_schedule": "x" * 201}, "custom_schedule"),
    ("long scheduled_time", {"scheduled_time": "9" * 41}, "scheduled_time"),
    ("long timezone", {"timezone": "A" * 300}, "timezone"),
    ("unknown timezone path", {"timezone": "../../etc/passwd"}, "timezone"),
    ("long name", {"name": "n" * 201}, "name"),
    ("long description", {"description": "d" * 2001}, "description"),
    ("huge parameters", {"parameters": {"blob": "p" * 20_000}}, "parameters"),
    ("too many tools", {"execution_mode": "orchestrated", "task_description": "t",
                        "available_tools": [f"t{i}" for i in range(60)]}, "available_tools"),
    ("day_of_month overflow", {"frequency": "monthly", "day_of_month": 2**63}, "day_of_month"),
    ("max_tokens above the model", {"execution_mode": "orchestrated", "task_description": "t",
                                    "max_tokens": 60_000}, "max_tokens"),
    ("dtstart before 1000", {"frequency": "custom",
                             "custom_schedule": "DTSTART:09000101T000000 RRULE:FREQ=DAILY"},
     "custom_schedule"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "change", "field"), BAD, ids=[b[0] for b in BAD])
async def test_bad_create_is_invalid_input_and_stores_nothing(
    service: SchedulerService, label: str, change: dict[str, Any], field: str
) -> None:
    message = await refused(service, "create_task", {**DAILY, **change}, field)
    assert "zoneinfo" not in message and "/usr/" not in message
    assert await count_tasks(service) == 0


async def test_kwargs_nested_100000_deep_is_invalid_input(service: SchedulerService) -> None:
    await refused(service, "create_task", "[" * 100_000, "kwargs")
    await refused(service, "create_task", '{"a":' * 100_000, "kwargs")


async def test_offset_beyond_int64_is_invalid_input(service: SchedulerService) -> None:
    await refused(service, "get_tasks", {"offset": 2**63}, "offset")
    assert (await call(service, "get_tasks", {"offset": 1_000_000_000}))["count"] == 0


async def test_error_quotes_at_most_about_100_characters(service: SchedulerService) -> None:
    message = await refused(service, "create_task", {**DAILY, "frequency": "f" * 100_000}, "")
    assert len(message) < 600
    message = await refused(service, "get_task", {"task_id": "t" * 1_000_000}, "task_id")
    assert len(message) < 300


async def test_lists_are_deduplicated(service: SchedulerService) -> None:
    weekly = {**DAILY, "frequency": "weekly", "day_of_week": [0, 0, 2, 2, 0]}
    task = (await call(service, "create_task", weekly))["task"]
    assert task["day_of_week"] == [0, 2]


async def test_valid_values_at_the_column_limits_are_stored(service: SchedulerService) -> None:
    """At the limit, every backend stores the value (no "unavailable" from PostgreSQL)."""
    task = (await call(service, "create_task", {**DAILY, "name": "n" * 200}))["task"]
    assert task["name"] == "n" * 200
    zone = "America/Argentina/ComodRivadavia"
    task = (await call(service, "create_task", {**DAILY, "timezone": zone}))["task"]
    assert task["timezone"] == zone


async def test_bad_context_is_forbidden(service: SchedulerService) -> None:
    tool = service.tools.get("scheduler_tool")
    for context in (
        ToolContext(user_id="u" * 201),
        ToolContext(user_id="a\x00b"),
        ToolContext(user_id="u1", conversation_id="c\nforged"),
    ):
        with pytest.raises(ToolError) as info:
            await tool.run("get_tasks", {}, context=context)
        assert info.value.code == "forbidden"


class BigTool(Tool):
    """Returns and fails with megabytes (a careless or hostile tool)."""

    name = "big_tool"
    description = "Returns a lot."
    input_schema = {
        "type": "object",
        "properties": {"operation": {"type": "string", "enum": ["big", "fail"]}},
    }

    async def run(self, operation: str, kwargs: Any, *, context: ToolContext) -> dict[str, Any]:
        if operation == "fail":
            raise ToolError("invalid_input", "E" * 5_000_000)
        return {"message": "M" * 5_000_000}


BIG = {**DAILY, "tool_name": "big_tool", "operation": "big", "parameters": {}}


async def test_stored_results_errors_and_notifications_are_cut(
    start_service: ServiceFactory,
) -> None:
    service = await start_service(tools=[BigTool()])
    limit = service.settings.limits.max_stored_chars
    for operation in ("big", "fail"):
        task = (await call(service, "create_task", {**BIG, "operation": operation}))["task"]
        run = (await call(service, "execute_task_now", {"task_id": task["task_id"]}))["run"]
        stored = json.dumps([run["result"], run["error"]])
        assert len(stored) < limit + 500 and "truncated" in stored
        note = await next_notification(service)
        assert len(note["message"]) <= limit + 200
        got = (await call(service, "get_task", {"task_id": task["task_id"]}))["task"]
        assert len(json.dumps([got["last_result"], got["last_error"]])) < limit + 500


async def test_execute_now_refused_on_finished_and_rate_limited(
    start_service: ServiceFactory,
) -> None:
    service = await start_service(tools=[RecordingTool()])
    direct = {**DAILY, "tool_name": "recording_tool", "operation": "record", "parameters": {}}
    task_id = (await call(service, "create_task", direct))["task"]["task_id"]
    assert (await call(service, "execute_task_now", {"task_id": task_id}))["run"]
    with pytest.raises(ToolError) as info:
        await call(service, "execute_task_now", {"task_id": task_id})
    assert info.value.code == "quota_exceeded" and "once every" in info.value.message
    await call(service, "cancel_task", {"task_id": task_id})
    service.settings.limits.manual_run_interval = 0
    with pytest.raises(ToolError) as info:
        await call(service, "execute_task_now", {"task_id": task_id})
    assert info.value.code == "conflict" and "cancelled" in info.value.message


async def test_finished_tasks_are_capped_and_expire(start_service: ServiceFactory) -> None:
    service = await start_service()
    service.settings.limits.max_finished_tasks_per_user = 3
    for _ in range(6):
        task_id = (await call(service, "create_task", DAILY))["task"]["task_id"]
        await call(service, "cancel_task", {"task_id": task_id})
    await call(service, "create_task", DAILY)
    statuses = [t["status"] for t in (await call(service, "get_tasks", {}))["tasks"]]
    assert sorted(statuses) == ["cancelled"] * 3 + ["scheduled"]
    later = utcnow() + timedelta(days=service.settings.limits.retention_days + 1)
    assert await purge_expired(service.db, service.settings.limits.retention_days, later) == 3
    statuses = [t["status"] for t in (await call(service, "get_tasks", {}))["tasks"]]
    assert statuses == ["scheduled"]


async def test_budget_notices_expire_with_the_retention_period(
    start_service: ServiceFactory,
) -> None:
    """One row per user who spent a daily token budget: kept while it may still silence
    that day's skips, deleted once its day ended ``retention_days`` ago."""
    service = await start_service()
    days = service.settings.limits.retention_days
    now = utcnow()
    async with service.db.write() as session:
        session.add(BudgetNotice(user_id="old", quiet_until=now - timedelta(days=days + 1)))
        session.add(BudgetNotice(user_id="recent", quiet_until=now - timedelta(hours=1)))
        session.add(BudgetNotice(user_id="today", quiet_until=now + timedelta(hours=5)))
    await purge_expired(service.db, days, now)
    async with service.db.read() as session:
        users = sorted((await session.scalars(select(BudgetNotice.user_id))).all())
    assert users == ["recent", "today"]


SPARSE = "RRULE:FREQ=SECONDLY;BYMONTH=2;BYMONTHDAY=29;BYHOUR=3;BYMINUTE=7;BYSECOND=0"


async def test_costly_schedule_is_refused_within_its_budget(service: SchedulerService) -> None:
    budget = service.settings.limits.schedule_eval_seconds
    loop = asyncio.get_running_loop()
    started = loop.time()
    message = await refused(
        service, "preview_schedule", {"frequency": "custom", "custom_schedule": SPARSE},
        "custom_schedule",
    )  # fmt: skip
    assert "to compute" in message
    assert loop.time() - started < budget + 2


async def test_count_beyond_the_limit_is_refused(service: SchedulerService) -> None:
    rule = "DTSTART:19000101T000000 RRULE:FREQ=DAILY;COUNT=100000"
    for operation in ("preview_schedule", "create_task"):
        kwargs = {**DAILY, "frequency": "custom", "custom_schedule": rule, "scheduled_time": None}
        if operation == "preview_schedule":
            kwargs = {"frequency": "custom", "custom_schedule": rule}
        message = await refused(service, operation, kwargs, "custom_schedule")
        assert "COUNT=100000" in message


async def test_costly_previews_do_not_starve_another_users_create(
    service: SchedulerService,
) -> None:
    """Costly previews at once: each is cut at its budget, one at a time for their
    user, so another user's create finds a free evaluation thread at once."""
    budget = service.settings.limits.schedule_eval_seconds
    loop = asyncio.get_running_loop()
    previews = [
        asyncio.ensure_future(
            call(service, "preview_schedule", {"frequency": "custom", "custom_schedule": SPARSE})
        )
        for _ in range(3)
    ]
    await asyncio.sleep(0)  # the previews are queued first
    started = loop.time()
    other = ToolContext(user_id="u2", conversation_id="c2")
    tool = service.tools.get("scheduler_tool")
    task = (await tool.run("create_task", DAILY, context=other))["task"]
    assert task["status"] == "scheduled"
    assert loop.time() - started < budget + 1
    results = await asyncio.gather(*previews, return_exceptions=True)
    assert all(isinstance(r, ToolError) and r.code == "invalid_input" for r in results)


async def test_a_built_in_frequency_is_created_while_every_evaluation_thread_is_busy(
    service: SchedulerService,
) -> None:
    """A daily task's schedule costs a bounded few steps: create_task plans it without
    the evaluation pool, so costly custom rules filling every evaluation thread do not
    hold it up (a custom rule still goes to the pool: see the budget tests above)."""
    workers = service.settings.limits.schedule_eval_workers
    previews = [
        asyncio.ensure_future(
            service.tools.get("scheduler_tool").run(
                "preview_schedule",
                {"frequency": "custom", "custom_schedule": SPARSE},
                context=ToolContext(user_id=f"busy{i}", conversation_id="c"),
            )
        )
        for i in range(workers)
    ]
    await asyncio.sleep(0)  # the previews take every evaluation thread first
    task = (await call(service, "create_task", DAILY))["task"]
    assert task["status"] == "scheduled" and task["next_run_time"]
    assert not any(preview.done() for preview in previews)
    results = await asyncio.gather(*previews, return_exceptions=True)
    assert all(isinstance(r, ToolError) and r.code == "invalid_input" for r in results)


async def test_count_rule_keeps_its_runs_after_rebasing(service: SchedulerService) -> None:
    rule = "DTSTART:20300101T090000 RRULE:FREQ=DAILY;INTERVAL=2;COUNT=5"
    shown = await call(
        service, "preview_schedule", {"frequency": "custom", "custom_schedule": rule, "count": 10}
    )
    assert [r[:10] for r in shown["next_runs"]] == [
        "2030-01-01", "2030-01-03", "2030-01-05", "2030-01-07", "2030-01-09",
    ]  # fmt: skip


async def test_schedule_work_is_off_the_loop_and_outside_write_transactions(
    service: SchedulerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """resume_task computes its next run in the evaluation pool, and a fire's plan is
    computed before the claim's write transaction (on SQLite its in-process write lock
    is free meanwhile)."""
    from scheduler_service.runs import claims
    from scheduler_service.tasks import manager

    seen: list[tuple[str, bool]] = []

    def spy(real: Any) -> Any:
        def wrapped(*args: Any) -> Any:
            locked = service.db.sqlite and service.db.write_lock.locked()
            seen.append((threading.current_thread().name, locked))
            return real(*args)

        return wrapped

    monkeypatch.setattr(manager, "first_fire", spy(manager.first_fire))
    monkeypatch.setattr(claims, "fire_plans", spy(claims.fire_plans))
    task_id = (await call(service, "create_task", DAILY))["task"]["task_id"]
    await call(service, "pause_task", {"task_id": task_id})
    await call(service, "resume_task", {"task_id": task_id})
    assert seen and seen[0][0].startswith("schedule-eval"), seen
    async with service.db.read() as session:
        row = await session.get(ScheduledTask, task_id)
        assert row is not None and row.next_run_at is not None
        due = row.next_run_at
    seen.clear()
    await service.runner.claims.fire(task_id, [due], due)
    assert seen and seen[0][0] != threading.main_thread().name and not seen[0][1], seen
