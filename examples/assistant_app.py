"""A small assistant web app that embeds the scheduler: FastAPI + Claude + scheduler_tool.

Run it (from a checkout, with an API key)::

    pip install -e ".[dev]"   # or: pip install task-scheduler fastapi uvicorn
    ANTHROPIC_API_KEY=... uvicorn examples.assistant_app:app

    curl -X POST localhost:8000/conversations/c1/messages \\
         -H 'content-type: application/json' \\
         -d '{"user_id": "u1", "text": "remind me every weekday at 9 to stretch"}'
    curl 'localhost:8000/conversations/c1/notifications?user_id=u1'

``POST /conversations/{id}/messages`` hands the user's message to Claude with
``scheduler_tool`` and ``reminder_tool``, through the same tool-use loop the scheduler
uses for orchestrated tasks (``scheduler_service.orchestration.run_orchestration``); the
tool calls act for that user and conversation. ``GET /conversations/{id}/notifications``
returns what scheduled runs reported to the conversation and marks it displayed.

Each message is answered on its own (no chat history is kept), which is enough to show
the wiring; a real assistant would pass its conversation history along.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Query, Request
from pydantic import BaseModel, Field

from scheduler_service import lifespan as scheduler_lifespan
from scheduler_service.config import Settings
from scheduler_service.runs.orchestration import OrchestrationLimits, run_orchestration
from scheduler_service.tools import ToolContext, ToolError

if TYPE_CHECKING:
    import anthropic

    from scheduler_service import SchedulerService

ASSISTANT_TOOLS = ("scheduler_tool", "reminder_tool")
SYSTEM_PROMPT = (
    "You are a helpful assistant. When the user wants something to happen later or "
    "repeatedly, use scheduler_tool to create a task; for a simple reminder, make it a direct "
    "task calling reminder_tool add_reminder. Use the user's timezone ({timezone}). "
    "Now is {now}. Confirm the schedule and the next run in one or two sentences."
)


class Message(BaseModel):
    """A user's message to the assistant."""

    user_id: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1)
    timezone: str = "UTC"


class Reply(BaseModel):
    """The assistant's answer and the tool calls it made to get there."""

    reply: str
    ok: bool
    error: str | None = None
    tool_calls: list[dict[str, Any]]


def create_app(
    settings: Settings | None = None,
    *,
    anthropic_client: anthropic.AsyncAnthropic | None = None,
) -> FastAPI:
    """The app; tests pass their own settings and a client over a fake transport."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with scheduler_lifespan(
            app, settings=settings, anthropic_client=anthropic_client
        ) as state:
            yield state

    app = FastAPI(title="Assistant with scheduled tasks", lifespan=lifespan)

    def service_of(request: Request) -> SchedulerService:
        service: SchedulerService = request.app.state.scheduler
        return service

    @app.post("/conversations/{conversation_id}/messages")
    async def post_message(conversation_id: str, message: Message, request: Request) -> Reply:
        service = service_of(request)
        context = ToolContext(
            user_id=message.user_id,
            conversation_id=conversation_id,
            timezone=message.timezone,
        )

        async def call_tool(name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
            if name not in ASSISTANT_TOOLS:
                raise ToolError("not_found", f"tool_name: use one of {', '.join(ASSISTANT_TOOLS)}")
            operation = str(tool_input.get("operation") or "")
            return await service.tools.call(
                name, operation, tool_input.get("kwargs"), context=context
            )

        cfg = service.settings.scheduler
        result = await run_orchestration(
            service.execution.client,
            model=cfg.orchestration_model,
            system=SYSTEM_PROMPT.format(
                timezone=message.timezone, now=datetime.now(UTC).isoformat(timespec="seconds")
            ),
            task_description=message.text,
            tools=[service.tools.get(name).definition() for name in ASSISTANT_TOOLS],
            call_tool=call_tool,
            limits=OrchestrationLimits(
                max_iterations=cfg.max_iterations, max_tokens=cfg.max_tokens, timeout=60
            ),
        )
        return Reply(
            reply=result.final_text,
            ok=result.ok,
            error=result.error,
            tool_calls=[
                {"name": c.name, "input": c.input, "ok": c.ok, "error": c.error}
                for c in result.tool_calls
            ],
        )

    @app.get("/conversations/{conversation_id}/notifications")
    async def get_notifications(
        conversation_id: str,
        request: Request,
        user_id: Annotated[str, Query(min_length=1, max_length=200)],
    ) -> list[dict[str, Any]]:
        """The user's notifications in the conversation. ``user_id`` is required: without
        it the service would answer for every user of the conversation."""
        service = service_of(request)
        pending = await service.get_notifications(conversation_id, user_id=user_id)
        if pending:
            await service.mark_notifications_displayed([n["id"] for n in pending], user_id=user_id)
        return pending

    return app


app = create_app()
