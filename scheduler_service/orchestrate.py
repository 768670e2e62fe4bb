"""Orchestrated runs: give Claude the task and exactly the tools the task allows."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from config import Settings
from scheduler_service.models import ScheduledTask, TaskRun, utcnow
from scheduler_service.orchestration import (
    OrchestrationLimits,
    build_system_prompt,
    run_orchestration,
)
from scheduler_service.schedules import Schedule, describe
from tools import ToolContext, ToolError, ToolRegistry

if TYPE_CHECKING:
    import anthropic

    from scheduler_service.runner import Outcome

SCHEDULER_TOOL = "scheduler_tool"


def allowed_tool_names(task: ScheduledTask, registry: ToolRegistry) -> list[str]:
    """The task's available_tools, or every registered tool except scheduler_tool."""
    if task.available_tools:
        return [name for name in task.available_tools if name in registry]
    return [name for name in registry.names() if name != SCHEDULER_TOOL]


class OrchestratedExecution:
    """Runs one orchestrated task through the Messages API tool-use loop."""

    def __init__(
        self,
        settings: Settings,
        registry: ToolRegistry,
        client: anthropic.AsyncAnthropic | None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.client = client

    def limits(self, task: ScheduledTask, timeout: float) -> OrchestrationLimits:
        cfg = self.settings.scheduler
        options = task.options or {}
        return OrchestrationLimits(
            max_iterations=int(options.get("max_iterations") or cfg.max_iterations),
            max_tokens=int(options.get("max_tokens") or cfg.max_tokens),
            token_budget=options.get("token_budget") or cfg.token_budget,
            timeout=timeout,
        )

    async def run(
        self, task: ScheduledTask, run: TaskRun, context: ToolContext, timeout: float
    ) -> Outcome:
        from scheduler_service.runner import Outcome

        names = allowed_tool_names(task, self.registry)
        definitions = [self.registry.get(name).definition() for name in names]

        async def call_tool(name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
            operation = tool_input.get("operation")
            if not isinstance(operation, str) or not operation:
                raise ToolError(
                    "invalid_input",
                    'operation: required; call the tool as {"operation": "<name>", '
                    '"kwargs": {...}}',
                )
            return await self.registry.call(
                name, operation, tool_input.get("kwargs"), context=context
            )

        zone = ZoneInfo(task.timezone)
        system = build_system_prompt(
            task.task_prompt or self.settings.scheduler.default_system_prompt,
            task_name=task.name,
            schedule=describe(Schedule.from_dict(task.schedule)),
            run_number=task.run_count + 1,
            local_now=utcnow().astimezone(zone),
        )
        result = await run_orchestration(
            self.client,
            model=self.settings.scheduler.orchestration_model,
            system=system,
            task_description=task.task_description or "",
            tools=definitions,
            call_tool=call_tool,
            limits=self.limits(task, timeout),
        )
        record = result.to_dict()
        details = {
            "model": result.model,
            "iterations": result.iterations,
            "tool_calls": record.get("tool_calls", []),
            "tools_offered": names,
        }
        if result.ok:
            return Outcome(
                "succeeded",
                result={"message": result.final_text, "text": result.final_text},
                usage=result.usage,
                details=details,
            )
        status = "timed_out" if result.error_kind == "timeout" else "failed"
        return Outcome(
            status,
            result={"text": result.final_text} if result.final_text else None,
            error=result.error,
            error_kind=result.error_kind,
            retryable=result.retryable or result.error_kind == "timeout",
            usage=result.usage,
            details=json.loads(json.dumps(details, default=str)),
        )
