"""scheduler_tool: how an LLM creates and manages scheduled tasks.

A thin adapter: parse kwargs, validate them against the operation's pydantic model,
call the TaskManager, and shape the answer: the result fields plus a ``message`` the LLM
can read back to the user.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from scheduler_service.limits import check_json
from scheduler_service.runs.notify_policy import NOTIFY_POLICIES
from scheduler_service.statuses import ExecutionMode, Frequency, Overlap, RunStatus, TaskStatus
from scheduler_service.tasks.inputs import (
    TASK_ID_CHARS,
    Backfill,
    CreateTask,
    ExecuteNow,
    ListTasks,
    PauseTask,
    PreviewSchedule,
    TaskFields,
    TaskRef,
    UpdateTask,
)
from scheduler_service.tasks.paging import Total
from scheduler_service.tools.base import Tool, ToolContext, ToolError, parse_kwargs, quote
from scheduler_service.tools.validation import Model, validate

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from scheduler_service.tasks.manager import TaskManager

DESCRIPTION = """\
Schedule tasks that run later or repeatedly without the user present, and manage them.
Use it when the user asks for something to happen at a time ("remind me every Monday at 9",
"send me a sales summary each week", "in 2 hours check ..."). Each call is
{"operation": <name>, "kwargs": {...}}.

Operations:
- create_task: name, frequency (once|minutely|hourly|daily|weekly|monthly|custom),
  scheduled_time ("HH:MM" or "9am" = next occurrence in the task's timezone, an ISO 8601
  datetime, or for once "in 2 hours", "tomorrow at 7", "next tuesday at 9"), day_of_week
  (weekly only: 0=Monday..6=Sunday or a list), day_of_month (monthly only: 1-31, -1 = last
  day), custom_schedule (frequency custom only: "every weekday at 9am", "every mon-thu at
  18:30", "every other tuesday at 9", "twice a day at 8 and 20", "first monday of the month
  at 10", "last business day of the month at 16", "on the 1st and 15th at 9", "every year on
  March 3 at 9", "every quarter on the 1st at 9", "every 15 minutes between 9 and 17 on
  weekdays", "every hour on the half hour", "in 2 hours", cron "30 8 * * 1-5" (Quartz
  L/W/# understood), or "RRULE:FREQ=..."; clauses in any order: "at 6:30 every day except
  weekends (Berlin)", "every 3 weeks on Thursday starting Feb 4", "every 10 minutes for the
  next hour", "every monday until June 30"; the answer's warnings state any reading taken),
  timezone (IANA such as "America/New_York", not "EST"; ask the user if
  unsure), optional except_dates (["2026-12-25", ...]: local dates without runs), end_time,
  max_runs, optional spread (true: each run starts at a fixed offset after its time, at most
  10% of the period and 15 min, so many tasks at :00 do not start together; the answer
  states the offset). One schedule per task: "weekdays at 8 and weekends at 10" is two tasks.
  Then either execution_mode "direct" with tool_name, operation, parameters (one fixed tool
  call), or "orchestrated" with task_description (plain-language instructions an assistant
  will follow at run time) and optional available_tools, task_prompt.
  Optional notify: when the user hears of a run (every run is recorded): "always" (default),
  "on_change" (only when the result differs from the last successful run's), "model_decides"
  (orchestrated only: the run's model answers NOTHING_TO_REPORT when nothing is worth telling;
  use it for "check the price every hour and tell me only if it drops below 50", with the
  condition in task_description), or "on_failure". A failure is always told; repeats at most
  once per alert interval (an hour by default) until a success, which is told too.
  Optional overlap
  (skip|buffer_one|allow|cancel_previous, default skip): what a run due while the task's
  previous run is still going does (skipped, waits for it, runs alongside, or stops it
  and then runs).
- get_tasks: optional status, frequency, execution_mode, limit, cursor (next_cursor of the
  previous page) or offset. Ordered by next run.
- get_task: task_id. Includes recent runs (each says whether it notified, and why not),
  notify, last_notified_at and pause_note; where a daily token budget per user is set,
  daily_token_budget (daily_limit, used_today, spent, resets_at). While it is spent, the
  user's orchestrated runs are recorded skipped until resets_at (not a failure; nothing to
  fix) and direct runs go on.
- update_task: task_id plus any create_task fields to change; the schedule is recomputed.
- delete_task: task_id. Removes the task and its history.
- cancel_task: task_id. Stops future runs, keeps the task and its history.
- pause_task: task_id, optional note (why, shown by get_task until resumed).
- resume_task: task_id. A task paused after repeated failures (pause_note says why) needs
  the cause fixed first; execute_task_now tests it.
- execute_task_now: task_id, optional wait (default true). Runs it once now; the schedule is
  not changed. Use it to test a task right after creating it.
- backfill_task: task_id, start, end (ISO 8601 date or datetime; naive = the task's
  timezone; end not in the future), optional max_backfill_runs (default 100). Runs the
  task's past fire times in [start, end) that never ran (e.g. while it was paused) once
  each, oldest first; a fire time that already has a run of any outcome is not run again,
  and there are none before the task's schedule began (its creation or last schedule
  change). Returns how many were queued, already done and left out by the cap (then call
  again with start=continue_from).
- preview_schedule: the schedule fields of create_task (or a task_id, plus fields to change)
  and count (default 5, max 100). Stores nothing; returns description, next_runs and
  warnings (DST gaps/overlaps, days clamped to month end, times in the past). Use it when
  unsure, and read the schedule back to the user before creating.
Answers of create_task, update_task and preview_schedule carry now: the current time in the
task's timezone (ISO 8601 with offset). Work out relative dates ("tomorrow", "next Friday",
"tonight") from it, never from your own idea of the date; a first preview_schedule call tells
you now before you create. Answers carry next_run_time (ISO 8601 with offset, in the task's
timezone); tell the user the schedule in words and the next run so they can catch mistakes.
Errors name the field to fix and the accepted values.
"""

OPERATIONS = (
    "create_task",
    "get_tasks",
    "get_task",
    "update_task",
    "delete_task",
    "execute_task_now",
    "cancel_task",
    "pause_task",
    "resume_task",
    "preview_schedule",
    "backfill_task",
)


def _kwargs_schema() -> dict[str, Any]:
    properties: dict[str, Any] = {"task_id": {"type": "string", "description": "The task's id"}}
    for name, info in TaskFields.model_fields.items():
        prop: dict[str, Any] = {"description": info.description or name}
        properties[name] = prop
    for name in (
        "name",
        "description",
        "scheduled_time",
        "custom_schedule",
        "timezone",
        "end_time",
        "tool_name",
        "operation",
        "task_description",
        "task_prompt",
    ):
        properties[name]["type"] = "string"
    properties["frequency"]["enum"] = [f.value for f in Frequency]
    properties["execution_mode"]["enum"] = [m.value for m in ExecutionMode]
    properties["notify"].update({"type": "string", "enum": list(NOTIFY_POLICIES)})
    properties["overlap"]["enum"] = [o.value for o in Overlap]
    for name in (
        "day_of_month",
        "max_runs",
        "timeout",
        "max_retries",
        "misfire_grace_time",
        "max_iterations",
        "max_tokens",
        "token_budget",
        "limit",
        "offset",
    ):
        properties.setdefault(name, {"description": name})["type"] = "integer"
    properties["day_of_week"]["anyOf"] = [
        {"type": "integer", "minimum": 0, "maximum": 6},
        {"type": "string"},
        {"type": "array", "items": {"type": ["integer", "string"]}},
    ]
    properties["parameters"]["type"] = "object"
    properties["available_tools"].update({"type": "array", "items": {"type": "string"}})
    properties["except_dates"].update({"type": "array", "items": {"type": "string"}})
    properties["status"] = {
        "description": "get_tasks filter",
        "enum": [s.value for s in TaskStatus],
    }
    properties["spread"]["type"] = "boolean"
    properties["note"] = {
        "type": "string",
        "description": PauseTask.model_fields["note"].description,
    }
    properties["wait"] = {"type": "boolean", "description": "execute_task_now: wait for result"}
    properties["count"] = {
        "type": "integer",
        "description": "preview_schedule: how many next runs (1-100, default 5)",
    }
    properties["limit"]["description"] = "get_tasks: page size (1-100, default 20)"
    properties["offset"]["description"] = "get_tasks: rows to skip"
    for name, info in Backfill.model_fields.items():
        if name != "task_id":
            kind = "integer" if name == "max_backfill_runs" else "string"
            properties[name] = {"type": kind, "description": info.description or name}
    properties["cursor"] = {
        "type": "string",
        "description": "get_tasks: next_cursor of the previous page (pages of any depth)",
    }
    return {"type": "object", "properties": properties}


INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "operation": {"type": "string", "enum": list(OPERATIONS)},
        "kwargs": {**_kwargs_schema(), "description": "The operation's arguments"},
    },
    "required": ["operation"],
}


CONTEXT_CHARS = 200  # user_id and conversation_id columns


def check_context(context: ToolContext) -> None:
    """The host's ToolContext must name a user the database can store."""
    if not isinstance(context, ToolContext) or not isinstance(context.user_id, str):
        raise ToolError("forbidden", "context: the host must supply a ToolContext with a user_id")
    for name in ("user_id", "conversation_id"):
        value = getattr(context, name)
        if value is None and name == "conversation_id":
            continue
        if (
            not isinstance(value, str)
            or not value
            or len(value) > CONTEXT_CHARS
            or "\x00" in value
            or not value.isprintable()
        ):
            raise ToolError(
                "forbidden",
                f"context: {name} must be printable text of 1-{CONTEXT_CHARS} characters",
            )


def _warning_words(shown: dict[str, Any]) -> str:
    warnings = shown.get("warnings") or []
    return (" Warnings: " + " ".join(warnings)) if warnings else ""


def _next_run_words(task: dict[str, Any]) -> str:
    nxt = task.get("next_run_time")
    return f"Next run: {nxt}." if nxt else "No run is scheduled."


def _found_words(shown: int, total: Total) -> str:
    """'3 tasks', '20 of 57 tasks', or '20 of more than 10,000 tasks' (a bounded count)."""
    if total.lower_bound:
        return f"{shown} of more than {total.count:,} tasks"
    of = f"{shown} of {total.count}" if total.count > shown else f"{total.count}"
    return f"{of} task{'s' if total.count != 1 else ''}"


class SchedulerTool(Tool):
    """The LLM-facing task management tool, bound to one service's TaskManager."""

    name = "scheduler_tool"
    description = DESCRIPTION
    input_schema = INPUT_SCHEMA

    def __init__(self, tasks: TaskManager) -> None:
        self._tasks = tasks
        self._ops: dict[str, Callable[[dict[str, Any], ToolContext], Awaitable[dict[str, Any]]]] = {
            "create_task": self._create,
            "get_tasks": self._list,
            "get_task": self._get,
            "update_task": self._update,
            "delete_task": self._delete,
            "execute_task_now": self._execute_now,
            "cancel_task": self._cancel,
            "pause_task": self._pause,
            "resume_task": self._resume,
            "preview_schedule": self._preview,
            "backfill_task": self._backfill,
        }

    async def run(
        self,
        operation: str,
        kwargs: dict[str, Any] | str | None,
        *,
        context: ToolContext,
    ) -> dict[str, Any]:
        handler = self._ops.get(operation) if isinstance(operation, str) else None
        if handler is None:
            raise ToolError(
                "invalid_input",
                f"operation: {quote(operation)} is not an operation of scheduler_tool; use one "
                f"of {', '.join(OPERATIONS)}",
            )
        check_context(context)
        try:
            args = parse_kwargs(kwargs)
            check_json(args, "kwargs", max_depth=self._tasks.settings.limits.max_depth)
            task_id = args.get("task_id")
            takes_id = operation not in ("create_task", "get_tasks")
            if takes_id and isinstance(task_id, str) and 0 < len(task_id) <= TASK_ID_CHARS:
                # Ownership first: another user's task answers exactly as a missing one,
                # whatever else is wrong with the call or whatever state the task is in.
                await self._tasks.owned(task_id, context)
            return await handler(args, context)
        except ToolError:
            raise
        except SQLAlchemyError as exc:
            log.exception("scheduler_tool %s: database error", operation)
            raise ToolError(
                "unavailable",
                f"the task database is unavailable ({type(exc).__name__}); try again shortly",
            ) from None
        except Exception as exc:  # never a traceback to the caller: every error is a ToolError
            log.exception("scheduler_tool %s failed unexpectedly", operation)
            raise ToolError(
                "execution_failed",
                f"{operation} failed unexpectedly ({type(exc).__name__}: {quote(str(exc))}); "
                "this is a scheduler bug, not a problem with your input",
            ) from None

    def _valid(self, model: type[Model], kwargs: dict[str, Any]) -> Model:
        return validate(model, kwargs, self._tasks.settings)

    async def _create(self, kwargs: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        task, shown = await self._tasks.create_task(self._valid(CreateTask, kwargs), context)
        message = (
            f"Created task '{task['name']}' ({task['task_id']}): {task['schedule']}. "
            f"{_next_run_words(task)}{_warning_words(shown)}"
        )
        if shown.get("timezone_from_context"):
            message += (
                f" Timezone {shown['timezone_from_context']}: the user's, from the conversation "
                "(give timezone to choose another)."
            )
        if task["execution_mode"] == ExecutionMode.ORCHESTRATED and not self._tasks.has_llm:
            message += (
                " Note: orchestrated runs need an Anthropic API key (ANTHROPIC_API_KEY); "
                "none is configured, so its runs will fail until one is set."
            )
        return {"task": task, "message": message, **shown}

    async def _list(self, kwargs: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        query = self._valid(ListTasks, kwargs)
        tasks, total, next_cursor = await self._tasks.list_tasks(query, context)
        message = f"Found {_found_words(len(tasks), total)}."
        if next_cursor is not None:
            message += " Pass cursor=next_cursor for more"
            if query.cursor is None:
                message += f" (or offset={query.offset + len(tasks)})"
            message += "."
        return {
            "tasks": tasks,
            "count": len(tasks),
            "total": total.count,
            "total_is_lower_bound": total.lower_bound,
            "next_cursor": next_cursor,
            "message": message,
        }

    async def _get(self, kwargs: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        ref = self._valid(TaskRef, kwargs)
        task = await self._tasks.get_task(ref.task_id, context)
        message = f"Task '{task['name']}' is {task['status']}. {_next_run_words(task)}"
        if task["status"] == TaskStatus.PAUSED and task.get("pause_note"):
            message += f" Paused: {task['pause_note']}"
        budget = task.get("daily_token_budget")
        if budget and budget["spent"]:
            message += (
                f" The user's daily token budget is spent ({budget['used_today']} of "
                f"{budget['daily_limit']} tokens today): orchestrated runs are skipped until "
                f"{budget['resets_at']}, then resume by themselves."
            )
        return {"task": task, "message": message}

    async def _update(self, kwargs: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        task, changed, shown = await self._tasks.update_task(
            self._valid(UpdateTask, kwargs), context
        )
        what = ", ".join(changed) if changed else "nothing changed"
        message = (
            f"Updated task '{task['name']}' ({what}): {task['schedule']}. "
            f"{_next_run_words(task)}{_warning_words(shown)}"
        )
        return {"task": task, "message": message, **shown}

    async def _preview(self, kwargs: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        shown = await self._tasks.preview(self._valid(PreviewSchedule, kwargs), context)
        runs = shown["next_runs"]
        message = f"{shown['description']}. " + (
            f"Next runs: {', '.join(runs)}." if runs else "No run would happen."
        )
        return {**shown, "message": message + _warning_words(shown)}

    async def _delete(self, kwargs: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        ref = self._valid(TaskRef, kwargs)
        task = await self._tasks.delete_task(ref.task_id, context)
        return {"task_id": task.id, "message": f"Deleted task '{task.name}' and its history."}

    async def _status(
        self, kwargs: dict[str, Any], context: ToolContext, status: str, done: str
    ) -> dict[str, Any]:
        ref = self._valid(PauseTask if status == TaskStatus.PAUSED else TaskRef, kwargs)
        note = ref.note if isinstance(ref, PauseTask) else None
        task, changed = await self._tasks.set_status(ref.task_id, context, status, note)
        state = done if changed else f"was already {task.status}"
        message = f"Task '{task.name}' {state}."
        if status == TaskStatus.SCHEDULED:
            from scheduler_service.tasks.views import task_to_dict

            message += " " + _next_run_words(task_to_dict(task))
        return {"task_id": task.id, "status": task.status, "message": message}

    async def _cancel(self, kwargs: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        return await self._status(
            kwargs, context, TaskStatus.CANCELLED, "cancelled; its history is kept"
        )

    async def _pause(self, kwargs: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        return await self._status(
            kwargs, context, TaskStatus.PAUSED, "paused; resume it with resume_task"
        )

    async def _resume(self, kwargs: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        return await self._status(kwargs, context, TaskStatus.SCHEDULED, "resumed")

    async def _execute_now(self, kwargs: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        args = self._valid(ExecuteNow, kwargs)
        out = await self._tasks.execute_now(args.task_id, context, args.wait)
        run = out["run"]
        name = out["task"]["name"]
        if run is None or run["status"] in (RunStatus.QUEUED, RunStatus.RUNNING):
            message = f"Started task '{name}'; its result will arrive as a notification."
        elif run["status"] == RunStatus.SUCCEEDED:
            after = (
                "The regular schedule is unchanged."
                if out["task"]["next_run_time"]
                else f"The task is {out['task']['status']} and has no upcoming run."
            )
            message = f"Ran task '{name}' now: succeeded. {after}"
        else:
            message = f"Ran task '{name}' now: {run['status']} — {run['error']}."
        return {"task_id": args.task_id, "run": run, "task": out["task"], "message": message}

    async def _backfill(self, kwargs: dict[str, Any], context: ToolContext) -> dict[str, Any]:
        return await self._tasks.backfill_task(self._valid(Backfill, kwargs), context)
