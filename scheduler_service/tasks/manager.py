"""Task management: the logic behind scheduler_tool's operations.

Order of work for every change: validate everything (nothing written yet), write the
task row in one short transaction, then change the job store. Job-store calls never run
inside an open transaction (see engine.py); if the job-store step fails, the row change
is undone, so a caller never sees a half-written task.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any, ParamSpec, TypeVar

from apscheduler.triggers.base import BaseTrigger
from sqlalchemy import delete, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from scheduler_service.config import Settings
from scheduler_service.limits import json_size
from scheduler_service.runs.chains import (
    SCHEDULER_TOOL,
    check_tools,
    journal_of,
    release_create,
    reserve_create,
)
from scheduler_service.runs.notify_policy import NotifyPolicy
from scheduler_service.runs.runner import TaskRunner
from scheduler_service.runs.token_budget import BudgetState, read_state
from scheduler_service.schedules import (
    Schedule,
    ScheduleError,
    ScheduleInput,
    bounded_cost,
    build_trigger,
    fields_ignored_by,
    parse_schedule,
    preview,
    preview_input,
)
from scheduler_service.schedules.spread import with_spread
from scheduler_service.scheduling import JobControl
from scheduler_service.statuses import (
    FINISHED_TASK,
    LIVE_TASK,
    ExecutionMode,
    Frequency,
    TaskStatus,
)
from scheduler_service.storage.db import Database
from scheduler_service.storage.models import ScheduledTask, TaskRun, new_id, utcnow
from scheduler_service.tasks import backfill, paging
from scheduler_service.tasks.admission import admission, draft_task, insert_task
from scheduler_service.tasks.evaluation import BudgetExceeded, Evaluator
from scheduler_service.tasks.inputs import (
    OPTION_FIELDS,
    SCHEDULE_FIELDS,
    Backfill,
    CreateTask,
    ListTasks,
    PreviewSchedule,
    TaskFields,
    UpdateTask,
    known_zone,
)
from scheduler_service.tasks.paging import Cursor, Total
from scheduler_service.tasks.retention import prune_finished
from scheduler_service.tasks.views import run_to_dict, task_to_dict
from scheduler_service.tools import ToolContext, ToolError, ToolRegistry
from scheduler_service.tools.base import quote

log = logging.getLogger(__name__)
OUT_OF_RANGE = (
    "scheduled_time/custom_schedule: the schedule reaches beyond the year 9999; give times "
    "and intervals within it (e.g. 'in 3 days', 'every 2 weeks', an ISO date before 9999)"
)
WORKERS_TOOLS_TTL_S = 2.0  # how long a client trusts what it read of the workers' tools
P = ParamSpec("P")
R = TypeVar("R")


def schedule_input(fields: dict[str, Any]) -> ScheduleInput:
    return ScheduleInput(**{k: fields.get(k) for k in SCHEDULE_FIELDS})  # type: ignore[arg-type]


def schedule_preview(schedule: Schedule, now: datetime, trigger: BaseTrigger) -> dict[str, Any]:
    """The first runs and warnings create_task/update_task echo back to the LLM."""
    shown = preview(schedule, now=now, count=3, trigger=trigger)
    return {"next_runs": shown["next_runs"], "warnings": shown["warnings"], "now": shown["now"]}


def plan(schedule: Schedule, now: datetime) -> tuple[BaseTrigger, datetime | None, dict[str, Any]]:
    """Trigger, first run and preview of a schedule (run in a thread: see _schedule)."""
    trigger = build_trigger(schedule)
    return trigger, trigger.get_next_fire_time(None, now), schedule_preview(schedule, now, trigger)


def parse_and_plan(
    data: ScheduleInput,
    *,
    now: datetime,
    default_timezone: str,
    min_interval: int,
    spread_key: str | None = None,
) -> tuple[Schedule, BaseTrigger, datetime | None, dict[str, Any]]:
    """A new schedule parsed (spread by ``spread_key``, the task's id, if given), with its
    trigger, first run and preview: one trip to the evaluation pool for create_task."""
    schedule = parse_schedule(
        data, now=now, default_timezone=default_timezone, min_interval=min_interval
    )
    if spread_key is not None:
        schedule = with_spread(schedule, spread_key, now)
    return (schedule, *plan(schedule, now))


def one_time_fields(schedule: Schedule, fields: dict[str, Any]) -> dict[str, Any]:
    """A one-time phrase ('in 2 hours', 'tomorrow at 7') is stored as what it resolved to:
    a once task at an ISO time, so a later update does not re-read it from a new now."""
    given = f"{fields.get('scheduled_time') or ''}{fields.get('custom_schedule') or ''}"
    if schedule.frequency != Frequency.ONCE or not re.search(r"[a-su-y]", given.lower()):
        return {}
    local = schedule.start_at.astimezone(schedule.zone).isoformat()
    return {"frequency": Frequency.ONCE, "custom_schedule": None, "scheduled_time": local}


def first_fire(schedule: dict[str, Any], now: datetime) -> tuple[BaseTrigger, datetime | None]:
    """A stored schedule's trigger and its next fire after ``now`` (off the loop)."""
    trigger = build_trigger(Schedule.from_dict(schedule))
    return trigger, trigger.get_next_fire_time(None, now)


# Changing only these keeps the schedule's phase ("every 2 weeks" stays on its weeks).
LIMIT_FIELDS = ("end_time", "max_runs")
SHORT_QUOTA_BOUND = 10_000  # quota up to which a create counts few enough entries for the loop


class TaskManager:
    """Create, read, change and run tasks on behalf of a ToolContext's user."""

    def __init__(
        self,
        *,
        db: Database,
        settings: Settings,
        registry: ToolRegistry,
        runner: TaskRunner,
        jobs: JobControl,
        has_llm: bool,
    ) -> None:
        self.db = db
        self.settings = settings
        self.registry = registry
        self.runner = runner
        self.jobs = jobs
        self.has_llm = has_llm
        self._manual_reserved: set[str] = set()  # task ids with a manual run starting here
        # A client runs nothing itself: a task may name a tool only the workers have.
        self.workers_tools: Callable[[], Awaitable[list[list[str]]]] | None = None
        self._remote_tools: set[str] = set()
        self._remote_read_at = float("-inf")
        limits = settings.limits
        self._user_turns: dict[str, asyncio.Lock] = {}
        self.evaluator = Evaluator(
            workers=limits.schedule_eval_workers, budget=limits.schedule_eval_seconds
        )

    async def _evaluate(
        self, user: str, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """A schedule computation in the evaluation pool, within its time budget; a
        ScheduleError or an exceeded budget is ``invalid_input``. One user's
        computations run one at a time, so one user cannot occupy the whole pool."""
        lock = self._user_turns.setdefault(user, asyncio.Lock())
        try:
            async with lock:
                return await self.evaluator.run(fn, *args, **kwargs)
        except ScheduleError as exc:
            raise ToolError("invalid_input", str(exc)) from None
        except BudgetExceeded as exc:
            raise ToolError(
                "invalid_input",
                f"custom_schedule: the schedule needs more than {exc.seconds:g} s to compute; "
                "give a simpler one (a recent or no DTSTART, a smaller COUNT, fewer BY parts)",
            ) from None
        except OverflowError:  # a schedule that reaches past year 9999
            raise ToolError("invalid_input", OUT_OF_RANGE) from None
        finally:
            if not lock.locked() and self._user_turns.get(user) is lock:
                del self._user_turns[user]

    def _zone_for(self, context: ToolContext) -> str:
        """The zone of a task created without one: the user's, when the host put it in
        the context, else ``default_timezone``."""
        if known_zone(context.timezone):
            assert context.timezone is not None
            return context.timezone.strip()
        if context.timezone:
            log.warning("ignoring the context's timezone %r: not an IANA zone", context.timezone)
        return self.settings.default_timezone

    async def _plan_new(
        self, user: str, data: ScheduleInput, now: datetime, zone: str, spread_key: str | None
    ) -> tuple[Schedule, BaseTrigger, datetime | None, dict[str, Any]]:
        """``parse_and_plan`` for a new task: in the evaluation pool when the schedule
        walks a rule; here when its cost is bounded (a built-in frequency), where the
        pool's hop would cost more than the work and a busy pool would hold it up."""
        plan_new = functools.partial(
            parse_and_plan,
            data,
            now=now,
            default_timezone=zone,
            min_interval=self.settings.scheduler.min_interval,
            spread_key=spread_key,
        )
        if not bounded_cost(data):
            return await self._evaluate(user, plan_new)
        try:
            return plan_new()
        except ScheduleError as exc:
            raise ToolError("invalid_input", str(exc)) from None
        except OverflowError:
            raise ToolError("invalid_input", OUT_OF_RANGE) from None

    # -- validation ------------------------------------------------------------------
    async def _schedule(self, user: str, fields: dict[str, Any], now: datetime) -> Schedule:
        """Parse off the loop: an odd RRULE can take dateutil a noticeable moment."""
        return await self._evaluate(
            user,
            parse_schedule,
            schedule_input(fields),
            now=now,
            default_timezone=self.settings.default_timezone,
            min_interval=self.settings.scheduler.min_interval,
        )

    async def preview(self, data: PreviewSchedule, context: ToolContext) -> dict[str, Any]:
        """preview_schedule: what a schedule (or a task's, with changes) would do. Stores
        nothing."""
        fields = data.model_dump(exclude_unset=True, exclude={"task_id", "count"})
        if data.task_id is not None:
            task = await self.owned(data.task_id, context)
            if all(k in LIMIT_FIELDS for k in fields):  # the stored schedule, in its phase
                return await self._preview_stored(task, fields, context, data.count)
            fields = {k: v for k, v in self._merged(task, fields).items() if k in SCHEDULE_FIELDS}
        elif not fields.get("frequency"):
            raise ToolError(
                "invalid_input",
                "frequency: required (or give task_id to preview an existing task's schedule)",
            )
        return await self._evaluate(
            context.user_id,
            preview_input,
            schedule_input(fields),
            now=utcnow(),
            default_timezone=self._zone_for(context),
            min_interval=self.settings.scheduler.min_interval,
            count=data.count,
        )

    async def _preview_stored(
        self, task: ScheduledTask, limits: dict[str, Any], context: ToolContext, count: int
    ) -> dict[str, Any]:
        """A task's own schedule as stored — its phase kept (an "every hour" task stays on
        the minute and second it was created at), with a new end_time/max_runs if given,
        as update_task would apply them."""
        now = utcnow()
        schedule = Schedule.from_dict(task.schedule)
        if limits:
            merged = {k: v for k, v in self._merged(task, limits).items() if k in SCHEDULE_FIELDS}
            schedule = await self._updated_schedule(task, limits, merged, now)
        return await self._evaluate(context.user_id, preview, schedule, now=now, count=count)

    def _check_execution(self, fields: dict[str, Any]) -> str:
        mode = fields.get("execution_mode")
        if mode is None:
            if fields.get("tool_name"):
                mode = ExecutionMode.DIRECT
            elif fields.get("task_description"):
                mode = ExecutionMode.ORCHESTRATED
            else:
                raise ToolError(
                    "invalid_input",
                    "execution_mode: required; use 'direct' (with tool_name, operation and "
                    "parameters) or 'orchestrated' (with task_description)",
                )
        if mode == ExecutionMode.DIRECT:
            self._check_direct(fields)
        else:
            self._check_orchestrated(fields)
        if (
            fields.get("notify") == NotifyPolicy.MODEL_DECIDES
            and mode != ExecutionMode.ORCHESTRATED
        ):
            raise ToolError(
                "invalid_input",
                "notify: 'model_decides' needs execution_mode 'orchestrated' (a model must "
                "judge each result); for a direct task use 'on_change' (tell when the result "
                "differs from the last one), 'on_failure' or 'always'",
            )
        return str(mode)

    async def _refresh_workers_tools(self) -> None:
        """A client learns the tools the live workers have (read at most every 2 s)."""
        if self.workers_tools is None:
            return
        now = asyncio.get_running_loop().time()
        if now - self._remote_read_at < WORKERS_TOOLS_TTL_S:
            return
        self._remote_tools = {tool for tools in await self.workers_tools() for tool in tools}
        self._remote_read_at = now

    def _has_tool(self, name: str) -> bool:
        return name in self.registry or name in self._remote_tools

    def _available(self) -> list[str]:
        names = set(self.registry.names()) | self._remote_tools
        return sorted(names - {SCHEDULER_TOOL})

    def _check_direct(self, fields: dict[str, Any]) -> None:
        name = fields.get("tool_name")
        available = self._available()
        if not name:
            raise ToolError(
                "invalid_input",
                f"tool_name: required for direct tasks; available tools: {', '.join(available)}",
            )
        if name == SCHEDULER_TOOL or not self._has_tool(name):
            raise ToolError(
                "invalid_input",
                f"tool_name: {name!r} is not a tool a task can run; available tools: "
                f"{', '.join(available)}",
            )
        operation = fields.get("operation")
        schema = self.registry.get(name).input_schema if name in self.registry else {}
        allowed = schema.get("properties", {}).get("operation", {}).get("enum")
        if not operation:
            hint = f"; {name} accepts: {', '.join(allowed)}" if allowed else ""
            raise ToolError("invalid_input", f"operation: required for direct tasks{hint}")
        if allowed and operation not in allowed:
            raise ToolError(
                "invalid_input",
                f"operation: {operation!r} is not an operation of {name}; use one of "
                f"{', '.join(allowed)}",
            )
        limit = self.settings.limits.max_parameters_bytes
        size = json_size(fields.get("parameters") or {})
        if size > limit:
            raise ToolError(
                "invalid_input",
                f"parameters: {size} bytes as JSON, more than the limit of {limit}; pass "
                "less data (a direct task's parameters are stored with it and sent each run)",
            )

    def _check_orchestrated(self, fields: dict[str, Any]) -> None:
        if not (fields.get("task_description") or "").strip():
            raise ToolError(
                "invalid_input",
                "task_description: required for orchestrated tasks; describe in plain language "
                "what the task should accomplish",
            )
        names = fields.get("available_tools")
        if names is not None:
            unknown = [n for n in names if not self._has_tool(n)]
            if unknown or not names:
                what = f"unknown tool(s) {quote(', '.join(unknown))}" if unknown else "empty"
                raise ToolError(
                    "invalid_input",
                    f"available_tools: {what}; available tools: {', '.join(self._available())}",
                )

    # -- reading ---------------------------------------------------------------------
    async def owned(self, task_id: str, context: ToolContext) -> ScheduledTask:
        """The user's task, or ``not_found``: another user's task is answered exactly as
        an id that does not exist (any conversation of the user may manage it)."""
        task = await self.db.read_sync(lambda session: session.get(ScheduledTask, task_id))
        return self._users(task, task_id, context)

    @staticmethod
    def _users(task: ScheduledTask | None, task_id: str, context: ToolContext) -> ScheduledTask:
        """``task`` if it is the context user's, else ``not_found``."""
        if task is None or task.user_id != context.user_id:
            raise ToolError(
                "not_found",
                f"task_id: no task {quote(task_id, 60)} for this user; call get_tasks to see "
                "your tasks",
            )
        return task

    async def get_task(self, task_id: str, context: ToolContext) -> dict[str, Any]:
        """The task, its recent runs and, with a daily token budget configured, the
        user's budget for the day of the task's zone (``daily_token_budget``)."""
        recent = select(TaskRun).where(TaskRun.task_id == task_id)
        recent = recent.order_by(TaskRun.queued_at.desc()).limit(5)
        limit = self.settings.limits.daily_token_budget_per_user
        now = utcnow()

        def read(
            session: Session,
        ) -> tuple[ScheduledTask | None, Sequence[TaskRun], BudgetState | None]:
            task = session.get(ScheduledTask, task_id)
            if task is None or task.user_id != context.user_id:
                return task, [], None
            budget = None
            if limit is not None:
                budget = read_state(session, limit, task.user_id, task.timezone, now)
            return task, session.scalars(recent).all(), budget

        found, runs, budget = await self.db.read_sync(read)  # all in one trip
        task = self._users(found, task_id, context)
        data = task_to_dict(task)
        data["recent_runs"] = [run_to_dict(r, task.timezone) for r in runs]
        if budget is not None:
            data["daily_token_budget"] = budget.to_dict()
        return data

    async def list_tasks(
        self, query: ListTasks, context: ToolContext
    ) -> tuple[list[dict[str, Any]], Total, str | None]:
        """A page of the user's tasks, soonest next run first; the total (exact up to
        ``paging.COUNT_BOUND``); and the cursor of the next page (None on the last). With
        ``cursor`` every page costs the same (see ``paging``) and reports the total counted
        for the first page; ``offset`` still works, counts again, and costs more the
        deeper it goes."""
        conditions = [ScheduledTask.user_id == context.user_id]
        for column, value in (
            (ScheduledTask.status, query.status),
            (ScheduledTask.frequency, query.frequency),
            (ScheduledTask.execution_mode, query.execution_mode),
        ):
            if value is not None:
                values = value if isinstance(value, list) else [value]
                conditions.append(column.in_(values))
        after = Cursor.decode(query.cursor) if query.cursor else None
        rows, total = await self.db.read_sync(
            lambda session: paging.read_page(
                session, conditions, after, limit=query.limit, offset=query.offset
            )
        )
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        cursor = Cursor.after(rows[-1], total).encode() if more and rows else None
        return [task_to_dict(t) for t in rows], total, cursor

    # -- changing --------------------------------------------------------------------
    async def create_task(
        self, data: CreateTask, context: ToolContext
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Returns the task and its schedule preview (first runs, warnings)."""
        await self._refresh_workers_tools()
        fields = data.model_dump()
        journal = journal_of(context)
        if journal is None:
            return await self._create(fields, context)
        fields["execution_mode"] = self._check_execution(fields)
        if fields["execution_mode"] == ExecutionMode.ORCHESTRATED and not fields.get(
            "available_tools"
        ):  # the default (every tool) may exceed the run's: name the run's tools instead
            fields["available_tools"] = sorted(journal.grantable) or None
        check_tools(journal, self._task_tools(fields), self._tools_field(fields))
        reserve_create(journal, self.settings.limits.max_creates_per_run)
        try:
            task, shown = await self._create(fields, context)
        except BaseException:
            release_create(journal)
            raise
        journal.record(f"created task '{task['name']}' ({task['task_id']})")
        return task, shown

    async def _create(
        self, fields: dict[str, Any], context: ToolContext
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        now = utcnow()
        zone = self._zone_for(context)
        task_id = new_id("task")  # before the plan: a spread is derived from it
        schedule, trigger, next_run, shown = await self._plan_new(
            context.user_id,
            schedule_input(fields),
            now,
            zone,
            task_id if fields.get("spread") else None,
        )
        if zone != self.settings.default_timezone and schedule.timezone == zone:
            shown = {**shown, "timezone_from_context": zone}
        fields |= one_time_fields(schedule, fields)
        mode = self._check_execution(fields)
        task = draft_task(
            id=task_id,
            user_id=context.user_id,
            conversation_id=context.conversation_id,
            schedule=schedule.to_dict(),
            start_at=schedule.start_at,
            status=TaskStatus.SCHEDULED,
            execution_mode=mode,
            next_run_at=next_run,
            run_count=0,
            success_count=0,
            failure_count=0,
            consecutive_failures=0,
            created_at=now,
            updated_at=now,
        )
        self._apply(task, fields)
        job = self.jobs.new_job_row(task.id, trigger, next_run)
        await self._create_write()(lambda connection: self._insert(connection, task, job))
        await self.jobs.stored(next_run)
        return task_to_dict(task), shown

    def _create_write(self) -> Callable[[Callable[[Connection], None]], Awaitable[None]]:
        """How the create transaction is written: ``write_short`` (on SQLite, on the loop
        when the lock is free) while its quota count is bounded small; with a quota above
        ``SHORT_QUOTA_BOUND`` the count may read that many index entries (milliseconds),
        so it stays in a thread."""
        if self.settings.scheduler_tool.max_tasks_per_user <= SHORT_QUOTA_BOUND:
            return self.db.write_short
        return self.db.write_sync

    def _insert(self, connection: Connection, task: SimpleNamespace, job: dict[str, Any]) -> None:
        """The create transaction (one trip off the loop): the user's quota, the task and
        its job together, and the user's oldest finished tasks beyond the limit."""
        limit = self.settings.scheduler_tool.max_tasks_per_user
        keep = self.settings.limits.max_finished_tasks_per_user
        self.db.lock_user(connection, task.user_id)
        count, crowded = admission(connection, task.user_id, up_to=limit, keep=keep)
        if count >= limit:
            raise ToolError(
                "quota_exceeded",
                f"this user already has {count} active tasks, the limit is {limit}; "
                "delete or cancel a task first",
            )
        insert_task(connection, task)
        self.jobs.insert_job.execute(connection, job)
        if crowded:
            prune_finished(connection, task.user_id, keep)

    @staticmethod
    def _apply(task: ScheduledTask | SimpleNamespace, fields: dict[str, Any]) -> None:
        """Copy validated input fields onto the row (a stored task or a new one's draft)."""
        plain = [
            "name",
            "description",
            "frequency",
            "scheduled_time",
            "day_of_month",
            "custom_schedule",
            "timezone",
            "max_runs",
            "tool_name",
            "operation",
            "parameters",
            "task_description",
            "task_prompt",
            "available_tools",
            "timeout",
            "max_retries",
            "misfire_grace_time",
            "execution_mode",
        ]
        for key in plain:
            if key in fields and fields[key] is not None:
                setattr(task, key, fields[key])
        if fields.get("notify") is not None:
            task.notify_policy = fields["notify"]
        for key in ("scheduled_time", "day_of_week", "day_of_month", "custom_schedule"):
            if key in fields and fields[key] is None:  # cleared: the schedule was parsed so
                setattr(task, key, None)
        if "day_of_week" in fields and fields["day_of_week"] is not None:
            dow = fields["day_of_week"]
            task.day_of_week = dow if isinstance(dow, list) else [dow]
        options = dict(task.options or {})
        options.update({k: fields[k] for k in OPTION_FIELDS if fields.get(k) is not None})
        task.options = options or None
        schedule = Schedule.from_dict(task.schedule)
        task.timezone = schedule.timezone
        task.end_time = schedule.end_time
        task.max_runs = schedule.max_runs
        if task.execution_mode == ExecutionMode.DIRECT:
            task.parameters = dict(task.parameters or {})

    def _merged(self, task: ScheduledTask, changes: dict[str, Any]) -> dict[str, Any]:
        current = {
            "name": task.name,
            "frequency": task.frequency,
            "scheduled_time": task.scheduled_time,
            "day_of_week": task.day_of_week,
            "day_of_month": task.day_of_month,
            "custom_schedule": task.custom_schedule,
            "timezone": task.timezone,
            "end_time": task.end_time.isoformat() if task.end_time else None,
            "max_runs": task.max_runs,
            "except_dates": (task.schedule or {}).get("except_dates") or None,
            "execution_mode": task.execution_mode,
            "tool_name": task.tool_name,
            "operation": task.operation,
            "parameters": task.parameters,
            "task_description": task.task_description,
            "available_tools": task.available_tools,
            "notify": task.notify_policy,
        }
        merged = {**current, **changes}
        if any(k in changes for k in SCHEDULE_FIELDS):
            # Stored fields the (new) frequency ignores are cleared; given now, refused.
            for name in fields_ignored_by(str(merged["frequency"])):
                if name not in changes and merged.get(name) is not None:
                    merged[name] = changes[name] = None
        return merged

    async def update_task(
        self, data: UpdateTask, context: ToolContext
    ) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
        """Returns the task, the names of the fields that changed, and its preview."""
        await self._refresh_workers_tools()
        task = await self.owned(data.task_id, context)
        if task.status in FINISHED_TASK:
            raise ToolError(
                "conflict",
                f"task_id: task {task.id!r} is {task.status} and can no longer change; "
                "create a new task instead",
            )
        changes = data.model_dump(exclude_unset=True, exclude={"task_id"})
        if not changes:
            raise ToolError(
                "invalid_input",
                f"no fields to update; give any of: {', '.join(f for f in TaskFields.model_fields)}",
            )
        now = utcnow()
        merged = self._merged(task, changes)
        reschedule = any(k in changes for k in SCHEDULE_FIELDS) or "spread" in changes
        schedule = await self._updated_schedule(task, changes, merged, now)
        if reschedule:
            schedule = self._spread(task, changes, schedule, now)
        if any(
            k in changes
            for k in (
                "execution_mode",
                "tool_name",
                "operation",
                "task_description",
                "available_tools",
                "parameters",
                "notify",
            )
        ):
            merged["execution_mode"] = self._check_execution(
                {**merged, "execution_mode": changes.get("execution_mode", task.execution_mode)}
            )
        changes |= one_time_fields(schedule, merged)
        journal = journal_of(context)
        if journal is not None:
            check_tools(journal, self._task_tools(merged), self._tools_field(merged))
        trigger, first, shown = await self._evaluate(context.user_id, plan, schedule, now)
        next_run = first if reschedule else task.next_run_at
        before = task_to_dict(task)
        values = {**changes, "execution_mode": merged.get("execution_mode")}

        def write(session: Session) -> ScheduledTask:
            """The task and its job row in one transaction, under the task's lock; an
            update that lost to a cancel or delete is refused, not stored."""
            row = self.db.lock_tasks_sync(session, [task.id]).get(task.id)
            if row is None:
                raise ToolError("not_found", f"task_id: task {task.id!r} was deleted meanwhile")
            if row.status in FINISHED_TASK:
                raise ToolError(
                    "conflict",
                    f"task_id: task {row.id!r} is now {row.status} (changed meanwhile) and can "
                    "no longer change; create a new task instead",
                )
            if reschedule:
                row.schedule = schedule.to_dict()
                row.start_at = schedule.start_at
                row.next_run_at = next_run if row.status == TaskStatus.SCHEDULED else None
                self.jobs.put_job_sync(session.connection(), row.id, trigger, row.next_run_at)
            self._apply(row, values)
            row.updated_at = now
            return row

        task = await self.db.write_orm(write)
        if reschedule:
            await self.jobs.stored(task.next_run_at)
        after = task_to_dict(task)
        changed = [k for k in after if after[k] != before.get(k) and k not in ("updated_at",)]
        if journal is not None:
            journal.record(
                f"updated task '{task.name}' ({task.id}): {', '.join(changed) or 'nothing'}"
            )
        return after, changed, shown

    def _task_tools(self, fields: dict[str, Any]) -> set[str]:
        """The tools a task with these fields can use when it runs."""
        if fields.get("execution_mode") == ExecutionMode.DIRECT:
            return {str(fields.get("tool_name"))}
        names = fields.get("available_tools")
        return set(names) if names else {n for n in self.registry.names() if n != SCHEDULER_TOOL}

    @staticmethod
    def _tools_field(fields: dict[str, Any]) -> str:
        direct = fields.get("execution_mode") == ExecutionMode.DIRECT
        return "tool_name" if direct else "available_tools"

    def _check_run_may_start(self, task: ScheduledTask, context: ToolContext) -> None:
        """A run may not start (resume, run now) a task with more powers than it has."""
        journal = journal_of(context)
        if journal is not None:
            fields = {
                "execution_mode": task.execution_mode,
                "tool_name": task.tool_name,
                "available_tools": task.available_tools,
            }
            check_tools(journal, self._task_tools(fields), "task_id")

    @staticmethod
    def _journal(context: ToolContext, change: str) -> None:
        journal = journal_of(context)
        if journal is not None:
            journal.record(change)

    @staticmethod
    def _spread(
        task: ScheduledTask, changes: dict[str, Any], schedule: Schedule, now: datetime
    ) -> Schedule:
        """The rescheduled task's schedule with its spread: as ``changes`` set it, else as
        it was (a new schedule keeps the task's spread, with the offset of its period; a
        one-time one drops it)."""
        asked = changes.get("spread")
        if not (asked or (asked is None and Schedule.from_dict(task.schedule).spread)):
            return dataclasses.replace(schedule, spread=0)
        try:
            return with_spread(schedule, task.id, now)
        except ScheduleError as exc:
            if asked is None:  # kept from before, and the new schedule has no period
                return dataclasses.replace(schedule, spread=0)
            raise ToolError("invalid_input", str(exc)) from None

    async def _updated_schedule(
        self, task: ScheduledTask, changes: dict[str, Any], merged: dict[str, Any], now: datetime
    ) -> Schedule:
        """The task's schedule after ``changes``: re-parsed when its shape changes; with only
        end_time/max_runs changed, the stored schedule keeps its phase and takes the new
        limits. max_runs may not fall to or below the runs already made."""
        stored = Schedule.from_dict(task.schedule)
        if not any(k in changes for k in SCHEDULE_FIELDS):
            return stored
        max_runs = changes.get("max_runs")
        if max_runs is not None and max_runs <= task.run_count:
            raise ToolError(
                "invalid_input",
                f"max_runs: {max_runs} would end a task that has already run {task.run_count} "
                f"time(s); give more than {task.run_count}, or cancel_task to stop it now",
            )
        parsed = await self._schedule(task.user_id, merged, now)
        if all(k in LIMIT_FIELDS for k in changes if k in SCHEDULE_FIELDS):
            return dataclasses.replace(stored, end_time=parsed.end_time, max_runs=parsed.max_runs)
        return parsed

    async def delete_task(self, task_id: str, context: ToolContext) -> ScheduledTask:
        """The task, its runs and its jobs go in one transaction, under the task's lock
        (no run of it starts or ends meanwhile)."""
        task = await self.owned(task_id, context)

        def delete_all(session: Session) -> None:
            if task_id not in self.db.lock_tasks_sync(session, [task_id]):
                raise ToolError("not_found", f"task_id: no task {task_id!r}")
            session.execute(delete(TaskRun).where(TaskRun.task_id == task_id))
            session.execute(delete(ScheduledTask).where(ScheduledTask.id == task_id))
            self.jobs.remove_jobs_sync(session.connection(), task_id)

        await self.db.write_orm(delete_all)
        await self.jobs.stored(None)
        self._journal(context, f"deleted task '{task.name}' ({task.id})")
        return task

    async def set_status(
        self, task_id: str, context: ToolContext, status: str, note: str | None = None
    ) -> tuple[ScheduledTask, bool]:
        """cancel / pause / resume. Returns the task and whether anything changed. A pause
        keeps ``note`` (why) until the task is resumed."""
        task = await self.owned(task_id, context)
        if status == TaskStatus.SCHEDULED:
            self._check_run_may_start(task, context)
        if task.status == status:
            return task, False
        allowed: dict[str, tuple[str, ...]] = {
            TaskStatus.CANCELLED: LIVE_TASK,
            TaskStatus.PAUSED: (TaskStatus.SCHEDULED,),
            TaskStatus.SCHEDULED: (TaskStatus.PAUSED,),
        }
        if task.status not in allowed[status]:
            verbs: dict[str, str] = {
                TaskStatus.CANCELLED: "cancel",
                TaskStatus.PAUSED: "pause",
                TaskStatus.SCHEDULED: "resume",
            }
            verb = verbs[status]
            raise ToolError(
                "conflict",
                f"task_id: cannot {verb} task {task.id!r} because it is {task.status}",
            )
        now = utcnow()
        next_run: datetime | None = None
        trigger: BaseTrigger | None = None
        if status == TaskStatus.SCHEDULED:
            trigger, next_run = await self._evaluate(
                context.user_id, first_fire, task.schedule, now
            )
            if next_run is None or next_run <= now:
                raise ToolError(
                    "conflict",
                    f"task_id: task {task.id!r} has no run left to resume (its last scheduled "
                    "time has passed); create a new task with a future scheduled_time",
                )
        change = functools.partial(
            self._change_status, task, status, allowed[status], trigger, next_run, now, note
        )
        task, changed = await self.db.write_orm(change)
        if changed:
            await self.jobs.stored(next_run)
            self._journal(context, f"set task '{task.name}' ({task.id}) {status}")
        return task, changed

    def _change_status(
        self,
        read: ScheduledTask,
        status: str,
        allowed: tuple[str, ...],
        trigger: BaseTrigger | None,
        next_run: datetime | None,
        now: datetime,
        note: str | None,
        session: Session,
    ) -> tuple[ScheduledTask, bool]:
        """cancel / pause / resume in one transaction with the task's job row, under the
        task's lock: the transition is checked against the row as it is now (another
        process may have changed it since it was read), so the last answer given is what
        is stored, and the task and its job always agree."""
        row = self.db.lock_tasks_sync(session, [read.id]).get(read.id)
        if row is None:
            raise ToolError("not_found", f"task_id: task {read.id!r} was deleted meanwhile")
        if row.status == status:
            return row, False
        if row.status not in allowed:
            raise ToolError(
                "conflict",
                f"task_id: task {row.id!r} is now {row.status} (changed meanwhile); "
                "get_task shows it as it is",
            )
        connection = session.connection()
        if status == TaskStatus.CANCELLED:
            self.jobs.remove_jobs_sync(connection, row.id)
        else:
            if status == TaskStatus.SCHEDULED and row.schedule != read.schedule:
                trigger, next_run = first_fire(row.schedule, now)  # updated meanwhile
                if next_run is None or next_run <= now:
                    raise ToolError(
                        "conflict", f"task_id: task {row.id!r} has no run left to resume"
                    )
            if trigger is None:
                trigger = build_trigger(Schedule.from_dict(row.schedule))
            self.jobs.put_job_sync(connection, row.id, trigger, next_run)
        row.status, row.next_run_at, row.updated_at = status, next_run, now
        if status == TaskStatus.PAUSED:
            row.pause_note = note
        if status == TaskStatus.SCHEDULED:  # a fresh start: its first failure is told
            row.consecutive_failures, row.pause_note, row.failure_alert_at = 0, None, None
        return row, True

    async def execute_now(self, task_id: str, context: ToolContext, wait: bool) -> dict[str, Any]:
        """A manual run. Two calls at once (LLMs call tools in parallel, or two
        processes) get one run and one ``conflict``: the task is reserved in this
        process before the first await, and the claim itself is fenced under the task's
        lock (no manual run while a run of the task is queued or running; the manual
        rate), so another process's call is refused too."""
        task = await self.owned(task_id, context)  # ownership first: not_found, never conflict
        self._check_run_may_start(task, context)
        if task_id in self._manual_reserved:
            raise self._already_running(task_id)
        self._manual_reserved.add(task_id)
        try:
            return await self._execute_now(task_id, context, wait)
        finally:
            self._manual_reserved.discard(task_id)

    @staticmethod
    def _already_running(task_id: str) -> ToolError:
        return ToolError(
            "conflict",
            f"task_id: task {task_id!r} is already running; wait for it to finish "
            "(get_task shows its recent runs)",
        )

    async def _execute_now(self, task_id: str, context: ToolContext, wait: bool) -> dict[str, Any]:
        task = await self.owned(task_id, context)
        if task.status in FINISHED_TASK:
            raise ToolError(
                "conflict",
                f"task_id: task {task.id!r} is {task.status} and does not run any more; "
                "create a new task instead",
            )
        self._journal(context, f"ran task '{task.name}' ({task.id}) now")
        run = await self.runner.run_now(task, wait=wait)
        fresh = await self.owned(task_id, context) if wait else task
        return {
            "task": task_to_dict(fresh),
            "run": run_to_dict(run, task.timezone) if run else None,
        }

    async def backfill_task(self, data: Backfill, context: ToolContext) -> dict[str, Any]:
        """Queue the task's past fire times in [start, end) that no run row covers, at
        most ``max_backfill_runs`` (``runs.backfill``: exactly once, across processes)."""
        task = await self.owned(data.task_id, context)
        if task.status in FINISHED_TASK:
            raise ToolError(
                "conflict",
                f"task_id: task {task.id!r} is {task.status} and does not run any more; "
                "create a new task instead",
            )
        self._check_run_may_start(task, context)
        start, end = (
            backfill.instant(data.start, task.timezone),
            backfill.instant(data.end, task.timezone),
        )
        backfill.check_window(start, end, utcnow(), task.timezone)
        times = await self._evaluate(
            context.user_id, backfill.window_times, task.schedule, start, end
        )
        max_runs = data.max_backfill_runs or self.settings.limits.max_backfill_runs
        plan = await self.runner.backfill(task.id, times, max_runs)
        if plan.queued:
            self._journal(
                context, f"backfilled {len(plan.queued)} run(s) of task '{task.name}' ({task.id})"
            )
        answer = backfill.report(task.name, task.timezone, plan, task.start_at, max_runs)
        return {"task_id": task.id, **answer}

    def close(self) -> None:
        self.evaluator.close()
