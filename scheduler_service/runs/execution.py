"""Execution: run one claimed attempt in its mode, within its timeout.

Two modes. **Direct**: call one registered tool with the task's fixed operation and
parameters. **Orchestrated**: give Claude the task's description and exactly the tools the
task allows, and let the Messages API tool-use loop (``orchestration``) decide the calls.
Either way the result is an ``Outcome``; nothing here writes to the database.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from scheduler_service.config import Settings
from scheduler_service.limits import cut, cut_json
from scheduler_service.runs.chains import SCHEDULER_TOOL, TASK_CHANGES, journal_for
from scheduler_service.runs.notify_policy import PROMPTS, policy_of
from scheduler_service.runs.outcomes import Outcome
from scheduler_service.schedules import Schedule, describe
from scheduler_service.statuses import ExecutionMode, RunKind, RunStatus
from scheduler_service.storage.models import ScheduledTask, TaskRun, utcnow
from scheduler_service.tools import ToolContext, ToolError, ToolRegistry

if TYPE_CHECKING:  # imported when an orchestrated run first needs them: the SDK is
    # large, and a service with only direct tasks never loads it (start-up time, memory)
    import anthropic

    from scheduler_service.runs.model_gate import ModelGate
    from scheduler_service.runs.orchestration import OrchestrationLimits
    from scheduler_service.runs.token_budget import TokenBudget

log = logging.getLogger(__name__)


def allowed_tool_names(task: ScheduledTask, registry: ToolRegistry) -> list[str]:
    """The task's available_tools, or every registered tool except scheduler_tool."""
    if task.available_tools:
        return [name for name in task.available_tools if name in registry]
    return [name for name in registry.names() if name != SCHEDULER_TOOL]


def notify_prompt(policy: str | None) -> str:
    """What the system prompt tells the model about the task's notify policy (only for
    the policies its final answer decides: on_change, model_decides)."""
    text = PROMPTS.get(policy_of(policy))
    return f"\n\n{text}" if text else ""


class Execution:
    """Executes one attempt of a task, direct or orchestrated."""

    def __init__(
        self,
        settings: Settings,
        registry: ToolRegistry,
        client: anthropic.AsyncAnthropic | None,
        gate: ModelGate | None = None,
        budget: TokenBudget | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.client = client
        self.gate = gate  # shared by every orchestrated run's model calls (runs.model_gate)
        self.budget = budget  # the user's daily token budget (runs.token_budget), if set

    def limits(self, task: ScheduledTask, timeout: float) -> OrchestrationLimits:
        from scheduler_service.runs.orchestration import OrchestrationLimits

        cfg = self.settings.scheduler
        options = task.options or {}
        return OrchestrationLimits(
            max_iterations=int(options.get("max_iterations") or cfg.max_iterations),
            max_tokens=int(options.get("max_tokens") or cfg.max_tokens),
            token_budget=options.get("token_budget") or cfg.token_budget,
            timeout=timeout,
        )

    async def run(self, task: ScheduledTask, run: TaskRun) -> Outcome:
        """Execute ``run`` of ``task`` as the task's user, within the task's timeout."""
        context = ToolContext(
            user_id=task.user_id,
            conversation_id=task.conversation_id,
            scheduled_run=True,
            task_id=task.id,
            run_id=run.id,
            timezone=task.timezone,
        )
        timeout = float(task.timeout or self.settings.scheduler.task_timeout)
        with journal_for(run.id, self.tools_held(task)) as journal:
            if task.execution_mode == ExecutionMode.ORCHESTRATED:
                past = run.fire_time if run.kind == RunKind.BACKFILL else None
                outcome = await self.orchestrated(task, context, timeout, backfill_of=past)
            else:
                outcome = await self.direct(task, context, timeout)
        return self.bounded(outcome, journal.changes)

    def tools_held(self, task: ScheduledTask) -> list[str]:
        """The tools a run of ``task`` can call (what tasks it touches may hold)."""
        if task.execution_mode == ExecutionMode.ORCHESTRATED:
            return allowed_tool_names(task, self.registry)
        return [task.tool_name] if task.tool_name else []

    def bounded(self, outcome: Outcome, changes: list[str]) -> Outcome:
        """The outcome as stored: result and error cut to ``limits.max_stored_chars``
        (a tool or model may return megabytes), and the run's changes to tasks listed."""
        limit = self.settings.limits.max_stored_chars
        outcome.result = cut_json(outcome.result, limit)
        outcome.error = cut(outcome.error, limit) if outcome.error is not None else None
        if changes:  # never retried (policy.retryable); the notification lists them instead
            text = cut("; ".join(changes), limit)
            outcome.details = {**(outcome.details or {}), TASK_CHANGES: text}
        details = cut_json(outcome.details or None, limit)
        outcome.details = details or {}
        return outcome

    async def direct(self, task: ScheduledTask, context: ToolContext, timeout: float) -> Outcome:
        """One tool call with the task's fixed operation and parameters."""
        assert task.tool_name and task.operation
        if task.tool_name not in self.registry:
            # Not the task's fault: the host has not registered the tool (yet) in this
            # process. Retrying gives a host that registers it late another chance.
            return Outcome(
                RunStatus.FAILED,
                error=f"tool_name: no tool named {task.tool_name!r} is registered in this "
                f"process (registered: {', '.join(self.registry.names()) or 'none'}); pass it "
                "to SchedulerService(tools=[...]) or list it in TOOLS so it exists before start",
                error_kind="tool_missing",
            )
        try:
            async with asyncio.timeout(timeout):
                result = await self.registry.call(
                    task.tool_name, task.operation, dict(task.parameters or {}), context=context
                )
        except TimeoutError:
            return self._timed_out(task, timeout)
        except ToolError as exc:
            return Outcome(
                RunStatus.FAILED,
                error=exc.message,
                error_kind=exc.code,
            )
        except Exception as exc:
            log.exception("task %s: tool %s raised", task.id, task.tool_name)
            return Outcome(
                RunStatus.FAILED,
                error=f"{task.tool_name}.{task.operation} raised {type(exc).__name__}: {exc}",
                error_kind="exception",
            )
        return Outcome(RunStatus.SUCCEEDED, result=result)

    def _timed_out(self, task: ScheduledTask, timeout: float) -> Outcome:
        """A sync tool's thread cannot be cancelled: say that it was left running."""
        assert task.tool_name
        tool = self.registry.get(task.tool_name) if task.tool_name in self.registry else None
        thread = tool is not None and not inspect.iscoroutinefunction(tool.run)
        note = " (the tool runs in a thread that cannot be cancelled; it was abandoned)"
        return Outcome(
            RunStatus.TIMED_OUT,
            error=f"the run exceeded its timeout of {timeout:g} s{note if thread else ''}",
            error_kind="timeout",
            details={"abandoned_thread": thread},
        )

    async def orchestrated(
        self,
        task: ScheduledTask,
        context: ToolContext,
        timeout: float,
        *,
        backfill_of: datetime | None = None,
    ) -> Outcome:
        """Claude works through the task with the tools it allows (see ``orchestration``);
        ``backfill_of``: the past fire time a backfill run stands for. A user whose
        daily token budget is spent gets the skip instead, before any model call."""
        if self.budget is not None and (skip := await self.budget.check(task)) is not None:
            return skip
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

        from scheduler_service.runs.orchestration import build_system_prompt, run_orchestration

        zone = ZoneInfo(task.timezone)
        system = build_system_prompt(
            task.task_prompt or self.settings.scheduler.default_system_prompt,
            task_name=task.name,
            schedule=describe(Schedule.from_dict(task.schedule)),
            run_number=task.run_count + 1,
            local_now=utcnow().astimezone(zone),
            backfill_of=backfill_of.astimezone(zone) if backfill_of else None,
        )
        system += notify_prompt(task.notify_policy)
        result = await run_orchestration(
            self.client,
            model=self.settings.scheduler.orchestration_model,
            system=system,
            task_description=task.task_description or "",
            tools=definitions,
            call_tool=call_tool,
            limits=self.limits(task, timeout),
            gate=self.gate,
        )
        record = result.to_dict()
        details = {
            "model": result.model,
            "iterations": result.iterations,
            "tool_calls": record.get("tool_calls", []),
            "tools_offered": names,
        }
        if result.refusals:  # waited out at the model gate
            details["refusals"] = result.refusals
        if result.ok:
            return Outcome(
                RunStatus.SUCCEEDED,
                result={"message": result.final_text, "text": result.final_text},
                usage=result.usage,
                details=details,
            )
        status = RunStatus.TIMED_OUT if result.error_kind == "timeout" else RunStatus.FAILED
        return Outcome(
            status,
            result={"text": result.final_text} if result.final_text else None,
            error=result.error,
            error_kind=result.error_kind,
            usage=result.usage,
            details=json.loads(json.dumps(details, default=str)),
        )
