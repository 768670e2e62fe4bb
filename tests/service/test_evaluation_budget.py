"""A schedule too costly to compute is refused as invalid_input within its time budget,
stores nothing, and the service keeps answering meanwhile (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from scheduler_service import SchedulerService
from tools import ToolContext, ToolError

USER = ToolContext(user_id="u1", conversation_id="c1")
OTHER = ToolContext(user_id="u2", conversation_id="c2")
TASK: dict[str, Any] = {
    "name": "never",
    "frequency": "custom",
    "execution_mode": "direct",
    "tool_name": "reminder_tool",
    "operation": "add_reminder",
    "parameters": {"title": "x", "due_date": "2030-01-01"},
}
# Never matches (no 100th day of the year in January): dateutil would walk day by day
# to the year 9999, ~10 s or more.
NEVER = "RRULE:FREQ=DAILY;BYMONTH=1;BYYEARDAY=100"


async def test_a_rule_that_never_matches_is_refused_within_the_budget_and_stores_nothing(
    service: SchedulerService,
) -> None:
    tool = service.tools.get("scheduler_tool")
    budget = service.settings.limits.schedule_eval_seconds
    loop = asyncio.get_running_loop()
    started = loop.time()
    create = asyncio.ensure_future(
        tool.run("create_task", {**TASK, "custom_schedule": NEVER}, context=USER)
    )
    answered = await tool.run("get_tasks", {}, context=OTHER)  # served meanwhile
    assert answered["total"] == 0 and not create.done()
    with pytest.raises(ToolError) as info:
        await create
    assert loop.time() - started < budget + 2
    assert info.value.code == "invalid_input"
    assert info.value.message.startswith("custom_schedule: ") and "to compute" in info.value.message
    assert (await tool.run("get_tasks", {}, context=USER))["total"] == 0
    # The evaluation threads are free again: a costly-but-fine custom rule is created.
    weekly = {**TASK, "custom_schedule": "RRULE:FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0"}
    assert (await tool.run("create_task", weekly, context=USER))["task"]["status"] == "scheduled"


async def test_30_february_is_refused_at_once(service: SchedulerService) -> None:
    tool = service.tools.get("scheduler_tool")
    loop = asyncio.get_running_loop()
    for rule in ("RRULE:FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "0 9 30 2 *"):
        started = loop.time()
        with pytest.raises(ToolError) as info:
            await tool.run("preview_schedule", {"frequency": "custom", "custom_schedule": rule},
                           context=USER)  # fmt: skip
        assert loop.time() - started < 1
        assert info.value.code == "invalid_input"
        assert info.value.message.startswith("custom_schedule: ") and "never meet" in str(
            info.value
        )
