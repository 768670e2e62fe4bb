"""Views: tasks and runs as scheduler_tool returns them (plain JSON, local times).

Every time is shown in the task's own zone with its UTC offset, so the LLM can read the
schedule back to the user as they will experience it.
"""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace
from typing import Any
from zoneinfo import ZoneInfo

from scheduler_service.runs.policy import overlap_of
from scheduler_service.schedules import Schedule, describe
from scheduler_service.statuses import TaskStatus
from scheduler_service.storage.models import ScheduledTask, TaskRun


def _iso(value: datetime | None, zone: str) -> str | None:
    if value is None:
        return None
    return value.astimezone(ZoneInfo(zone)).isoformat()


def task_to_dict(task: ScheduledTask | SimpleNamespace) -> dict[str, Any]:
    """The task as scheduler_tool returns it: plain JSON, times in the task's zone (a
    stored task, or a new one's ``draft_task``)."""
    tz = task.timezone
    return {
        "id": task.id,
        "task_id": task.id,
        "name": task.name,
        "description": task.description,
        "status": task.status,
        "frequency": task.frequency,
        "schedule": describe(Schedule.from_dict(task.schedule)),
        "scheduled_time": task.scheduled_time,
        "day_of_week": task.day_of_week,
        "day_of_month": task.day_of_month,
        "custom_schedule": task.custom_schedule,
        "timezone": tz,
        "end_time": _iso(task.end_time, tz),
        "max_runs": task.max_runs,
        "next_run_time": _iso(task.next_run_at, tz)
        if task.status == TaskStatus.SCHEDULED
        else None,
        "execution_mode": task.execution_mode,
        "tool_name": task.tool_name,
        "operation": task.operation,
        "parameters": task.parameters,
        "task_description": task.task_description,
        "task_prompt": task.task_prompt,
        "available_tools": task.available_tools,
        "timeout": task.timeout,
        "max_retries": task.max_retries,
        "overlap": overlap_of(task.options),
        "run_count": task.run_count,
        "success_count": task.success_count,
        "failure_count": task.failure_count,
        "last_run_time": _iso(task.last_run_at, tz),
        "last_status": task.last_status,
        "last_result": task.last_result,
        "last_error": task.last_error,
        "notify": task.notify_policy or "always",
        "last_notified_at": _iso(task.last_notified_at, tz),
        "pause_note": task.pause_note,
        "conversation_id": task.conversation_id,
        "created_at": _iso(task.created_at, tz),
        "updated_at": _iso(task.updated_at, tz),
    }


def run_to_dict(run: TaskRun, zone: str) -> dict[str, Any]:
    return {
        "run_id": run.id,
        "kind": run.kind,
        "status": run.status,
        "fire_time": _iso(run.fire_time, zone),
        "attempt": run.attempt,
        "started_at": _iso(run.started_at, zone),
        "finished_at": _iso(run.finished_at, zone),
        "duration_ms": run.duration_ms,
        "result": run.result,
        "error": run.error,
        "usage": run.usage,
        "details": run.details,
    }
