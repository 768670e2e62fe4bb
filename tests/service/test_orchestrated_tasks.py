"""Orchestrated tasks through the service: the real anthropic client over a scripted
transport, real tools, real run rows and notifications."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from scheduler_service import SchedulerService
from scheduler_service.storage.models import ScheduledTask, TaskRun
from scheduler_service.testing import (
    FakeAnthropic,
    Reply,
    error_body,
    text_message,
    tool_use_message,
)
from tests.conftest import ServiceFactory, next_notification
from tests.design_examples import SALES
from tools import Tool, ToolContext, ToolError


class SalesTool(Tool):
    name = "sales_tool"
    description = "Sales figures. Operation weekly_report returns last week's totals."
    input_schema = {
        "type": "object",
        "properties": {"operation": {"enum": ["weekly_report"]}, "kwargs": {"type": "object"}},
        "required": ["operation"],
    }

    async def run(self, operation: str, kwargs: Any, *, context: ToolContext) -> dict[str, Any]:
        return {"total": 1234.5, "top_products": ["tea", "scones"], "user": context.user_id}


class EmailTool(Tool):
    name = "email_tool"
    description = "Send an email. Operation send(to, subject, body)."
    input_schema = {
        "type": "object",
        "properties": {"operation": {"enum": ["send"]}, "kwargs": {"type": "object"}},
        "required": ["operation"],
    }

    def __init__(self, fail_first: bool = False) -> None:
        self.sent: list[tuple[dict[str, Any], ToolContext]] = []
        self.fail_first = fail_first

    async def run(self, operation: str, kwargs: Any, *, context: ToolContext) -> dict[str, Any]:
        if self.fail_first:
            self.fail_first = False
            raise ToolError("invalid_input", "to: must be an email address, e.g. team@example.com")
        self.sent.append((kwargs, context))
        return {"message": f"sent to {kwargs['to']}"}


REPORT_CALL = ("sales_tool", {"operation": "weekly_report", "kwargs": {}})
EMAIL_CALL = (
    "email_tool",
    {"operation": "send", "kwargs": {"to": "sales@example.com", "subject": "Week", "body": "..."}},
)


async def start(
    start_service: ServiceFactory, fake: FakeAnthropic, *tools: Tool, **scheduler: Any
) -> SchedulerService:
    return await start_service(
        tools=list(tools) or [SalesTool(), EmailTool()], anthropic_client=fake.client(), **scheduler
    )


async def create(service: SchedulerService, ctx: ToolContext, **fields: Any) -> str:
    base = {k: v for k, v in SALES.items() if k != "day_of_week" or "frequency" not in fields}
    out = await service.scheduler_tool.run("create_task", {**base, **fields}, context=ctx)
    return str(out["task"]["task_id"])


async def run_now(service: SchedulerService, ctx: ToolContext, task_id: str) -> dict[str, Any]:
    out = await service.scheduler_tool.run("execute_task_now", {"task_id": task_id}, context=ctx)
    return out


def tool_results(request: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in request["messages"][-1]["content"] if b["type"] == "tool_result"]


async def test_weekly_sales_analysis_runs_two_tools_then_answers(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    email = EmailTool()
    fake = FakeAnthropic(
        tool_use_message(REPORT_CALL, usage={"input_tokens": 100, "output_tokens": 20}),
        tool_use_message(
            EMAIL_CALL,
            usage={"input_tokens": 150, "output_tokens": 30, "cache_read_input_tokens": 80},
        ),
        text_message("Emailed the weekly summary: total 1234.5, top sellers tea and scones."),
    )
    service = await start(start_service, fake, SalesTool(), email)
    task_id = await create(service, ctx)
    out = await run_now(service, ctx, task_id)

    run = out["run"]
    assert run["status"] == "succeeded", run
    assert run["result"]["text"].startswith("Emailed the weekly summary")
    calls = run["details"]["tool_calls"]
    assert [c["name"] for c in calls] == ["sales_tool", "email_tool"]
    assert all(c["ok"] for c in calls) and calls[0]["output"]["total"] == 1234.5
    assert run["usage"]["input_tokens"] == 100 + 150 + 10
    assert run["usage"]["output_tokens"] == 20 + 30 + 5
    assert run["usage"]["cache_read_input_tokens"] == 80
    assert run["details"]["model"] and run["details"]["iterations"] == 3

    first = fake.requests[0]
    assert first["model"] == "claude-haiku-5-5"
    assert {t["name"] for t in first["tools"]} == {"sales_tool", "email_tool", "reminder_tool"}
    assert "Weekly Sales Analysis" in str(first["system"]) and "every Monday at 08:00" in str(
        first["system"]
    )
    assert first["messages"][0]["content"] == SALES["task_description"]
    assert (
        tool_results(fake.requests[1])[0]["tool_use_id"]
        == fake.requests[1]["messages"][1]["content"][0]["id"]
    )

    assert email.sent[0][1].user_id == "u1" and email.sent[0][1].scheduled_run
    notification = (await service.get_notifications("c1"))[0]
    assert notification["status"] == "succeeded" and "weekly summary" in notification["message"]


async def test_reminder_added_through_reminder_tool(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    fake = FakeAnthropic(
        tool_use_message(
            (
                "reminder_tool",
                {
                    "operation": "add_reminder",
                    "kwargs": {"title": "Call the bank", "date": "tomorrow"},
                },
            )
        ),
        text_message("Added a reminder to call the bank tomorrow."),
    )
    service = await start(start_service, fake)
    task_id = await create(
        service,
        ctx,
        task_description="Remind me to call the bank tomorrow.",
        available_tools=["reminder_tool"],
    )
    out = await run_now(service, ctx, task_id)
    assert out["run"]["status"] == "succeeded"
    assert [t["name"] for t in fake.requests[0]["tools"]] == ["reminder_tool"]
    stored = await service.tools.call("reminder_tool", "get_reminders", {}, context=ctx)
    assert [r["title"] for r in stored["reminders"]] == ["Call the bank"]
    assert stored["reminders"][0]["source_task_id"] == task_id


async def test_tool_error_goes_back_to_the_model_which_recovers(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    email = EmailTool(fail_first=True)
    fake = FakeAnthropic(
        tool_use_message(("email_tool", {"operation": "send", "kwargs": {"to": "sales"}})),
        tool_use_message(EMAIL_CALL),
        text_message("Sent."),
    )
    service = await start(start_service, fake, SalesTool(), email)
    out = await run_now(service, ctx, await create(service, ctx))
    assert out["run"]["status"] == "succeeded"
    error = tool_results(fake.requests[1])[0]
    assert error["is_error"] is True and "email address" in str(error["content"])
    assert [c["ok"] for c in out["run"]["details"]["tool_calls"]] == [False, True]


async def test_parallel_tool_calls_answered_in_one_message(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    both = tool_use_message(REPORT_CALL, EMAIL_CALL)
    fake = FakeAnthropic(both, text_message("Done."))
    service = await start(start_service, fake)
    out = await run_now(service, ctx, await create(service, ctx))
    assert out["run"]["status"] == "succeeded"
    results = tool_results(fake.requests[1])
    assert [r["tool_use_id"] for r in results] == [b["id"] for b in both["content"]]


async def test_scheduled_run_cannot_create_tasks_unless_allowed(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    sneaky = ("scheduler_tool", {"operation": "create_task", "kwargs": {"name": "spawn"}})
    fake = FakeAnthropic(tool_use_message(sneaky), text_message("I could not create it."))
    service = await start(start_service, fake)
    task_id = await create(service, ctx)
    out = await run_now(service, ctx, task_id)
    assert "scheduler_tool" not in {t["name"] for t in fake.requests[0]["tools"]}
    refused = tool_results(fake.requests[1])[0]
    assert refused["is_error"] is True and "not allowed" in str(refused["content"])
    assert out["run"]["details"]["tool_calls"][0]["ok"] is False
    async with service.db.read() as session:
        assert len((await session.scalars(select(ScheduledTask))).all()) == 1


async def test_task_that_allows_scheduler_tool_may_schedule(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    follow_up = {
        "operation": "create_task",
        "kwargs": {
            "name": "Follow-up",
            "frequency": "once",
            "scheduled_time": "23:59",
            "tool_name": "reminder_tool",
            "operation": "add_reminder",
            "parameters": {"title": "follow up"},
        },
    }
    fake = FakeAnthropic(
        tool_use_message(("scheduler_tool", follow_up)), text_message("Scheduled.")
    )
    service = await start(start_service, fake)
    # The run may give a task only tools it holds itself (see test_chains.py).
    task_id = await create(service, ctx, available_tools=["scheduler_tool", "reminder_tool"])
    out = await run_now(service, ctx, task_id)
    assert out["run"]["status"] == "succeeded"
    tasks = await service.scheduler_tool.run("get_tasks", {}, context=ctx)
    assert {t["name"] for t in tasks["tasks"]} == {"Weekly Sales Analysis", "Follow-up"}
    created = next(t for t in tasks["tasks"] if t["name"] == "Follow-up")
    assert created["conversation_id"] == "c1", "acts with the owner's identity"


async def test_refusal_fails_with_a_clear_message(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    fake = FakeAnthropic(text_message("I can't help with that.", stop_reason="refusal"))
    service = await start(start_service, fake)
    out = await run_now(service, ctx, await create(service, ctx))
    assert out["run"]["status"] == "failed" and "refus" in out["run"]["error"].lower()
    assert (await service.get_notifications("c1"))[0]["status"] == "failed"


async def test_iteration_limit_per_task(start_service: ServiceFactory, ctx: ToolContext) -> None:
    fake = FakeAnthropic(tool_use_message(REPORT_CALL), tool_use_message(REPORT_CALL))
    service = await start(start_service, fake)
    out = await run_now(service, ctx, await create(service, ctx, max_iterations=2))
    assert out["run"]["status"] == "failed"
    assert "iteration" in out["run"]["error"] and "2" in out["run"]["error"]
    assert len(fake.requests) == 2


async def test_timeout_ends_the_run(start_service: ServiceFactory, ctx: ToolContext) -> None:
    fake = FakeAnthropic(Reply(body=text_message("too late"), delay=5.0))
    service = await start(start_service, fake)
    out = await run_now(service, ctx, await create(service, ctx, timeout=1))
    assert out["run"]["status"] == "timed_out" and "timeout" in out["run"]["error"].lower()


async def test_no_api_key_fails_clearly(service: SchedulerService, ctx: ToolContext) -> None:
    created = await service.scheduler_tool.run("create_task", SALES, context=ctx)
    assert "ANTHROPIC_API_KEY" in created["message"]
    out = await run_now(service, ctx, created["task"]["task_id"])
    assert out["run"]["status"] == "failed" and "ANTHROPIC_API_KEY" in out["run"]["error"]
    notification = (await service.get_notifications("c1"))[0]
    assert notification["status"] == "failed" and "ANTHROPIC_API_KEY" in notification["message"]


async def test_rate_limit_is_retried_on_the_same_fire_time(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    fake = FakeAnthropic(error_body(429, "rate_limit_error", "slow down"), text_message("Done."))
    service = await start(start_service, fake, retry_backoff_base=0.5)
    due = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    task_id = await create(service, ctx, frequency="once", scheduled_time=due)
    notification = await next_notification(service)
    assert notification["status"] == "succeeded" and "after 2 attempts" in notification["message"]
    async with service.db.read() as session:
        runs = (
            await session.scalars(
                select(TaskRun).where(TaskRun.task_id == task_id).order_by(TaskRun.attempt)
            )
        ).all()
    assert [(r.attempt, r.status, r.error_kind) for r in runs] == [
        (1, "failed", "rate_limit"),
        (2, "succeeded", None),
    ]
    assert runs[0].fire_time == runs[1].fire_time
    assert len(await service.get_notifications("c1")) == 1, "one notification per fire time"


async def test_rate_limit_on_a_manual_run_fails_with_its_kind(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    fake = FakeAnthropic(error_body(429, "rate_limit_error", "Number of requests exceeded"))
    service = await start(start_service, fake)
    out = await run_now(service, ctx, await create(service, ctx))
    assert out["run"]["status"] == "failed"
    async with service.db.read() as session:
        run = (await session.scalars(select(TaskRun))).one()
    assert run.error_kind == "rate_limit" and "requests exceeded" in (run.error or "")
    notification = (await service.get_notifications("c1"))[0]
    assert notification["status"] == "failed" and "requests exceeded" in notification["message"]
