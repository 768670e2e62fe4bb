"""backfill_task's window and report: what the model asks for, and what it is told.

The window is read in the task's timezone (an ISO date or datetime without an offset
is local), must lie in the past, and may hold at most ``policy.BACKFILL_SCAN`` fire
times. The report says what happened to every fire time of the window, so a model can
tell the user, and knows where to continue when the cap left some out.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from scheduler_service.runs.policy import BACKFILL_SCAN, BackfillPlan, fire_times_between
from scheduler_service.schedules import Schedule, build_trigger
from scheduler_service.tools import ToolError


def instant(text: str, zone: str) -> datetime:
    """An ISO 8601 date or datetime (validated by the input model) as an aware instant;
    without an offset it is read in ``zone``."""
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=ZoneInfo(zone)) if value.tzinfo is None else value


def check_window(start: datetime, end: datetime, now: datetime, zone: str) -> None:
    """A backfill runs past fire times only: ``start`` before ``end``, ``end`` not after
    ``now``."""
    local_now = now.astimezone(ZoneInfo(zone)).isoformat(timespec="seconds")
    if end > now:
        raise ToolError(
            "invalid_input",
            f"end: {end.astimezone(ZoneInfo(zone)).isoformat()} is in the future (now is "
            f"{local_now}); backfill_task runs past fire times only: give an end up to now "
            "(future runs happen on schedule; execute_task_now runs the task once now)",
        )
    if start >= end:
        raise ToolError(
            "invalid_input",
            "start: must be before end (the window is [start, end): start included, end not)",
        )


def window_times(schedule: dict[str, Any], start: datetime, end: datetime) -> list[datetime]:
    """The task's fire times in [start, end) (a computation: run in the evaluation pool)."""
    times = fire_times_between(build_trigger(Schedule.from_dict(schedule)), start, end)
    if times is None:
        raise ToolError(
            "invalid_input",
            f"start/end: the window holds more than {BACKFILL_SCAN:,} fire times of this task; "
            "give a shorter window (backfill a long period in several calls)",
        )
    return times


def report(
    name: str, zone: str, plan: BackfillPlan, first_fire: datetime | None, max_runs: int
) -> dict[str, Any]:
    """backfill_task's answer: counts, the fire times queued, and a message saying what
    happened and what to do next. ``first_fire``: the task's schedule's first fire time."""
    tz = ZoneInfo(zone)

    def local(t: datetime) -> str:
        return t.astimezone(tz).isoformat()

    total = len(plan.queued) + len(plan.done) + len(plan.pending) + len(plan.capped)
    if total == 0:
        since = f" (its schedule starts at {local(first_fire)})" if first_fire else ""
        message = f"Task '{name}' has no fire time in that window{since}; nothing was queued."
    elif plan.queued:
        span = local(plan.queued[0])
        if len(plan.queued) > 1:
            span += f" to {local(plan.queued[-1])}"
        message = (
            f"Queued {len(plan.queued)} past run(s) of task '{name}' ({span}); they run "
            "shortly, oldest first, and each reports its result as a notification."
        )
    else:
        message = f"Nothing new to run for task '{name}' in that window."
    if plan.done:
        message += (
            f" {len(plan.done)} fire time(s) already had a run (of any outcome) and were not "
            "run again."
        )
    if plan.pending:
        message += (
            f" {len(plan.pending)} fire time(s) are still to be claimed by the schedule "
            "itself (run or recorded missed), so backfill left them alone."
        )
    if plan.capped:
        message += (
            f" {len(plan.capped)} more were not queued (at most {max_runs} a call): call "
            f"backfill_task again with start={local(plan.capped[0])} to queue them."
        )
    return {
        "fire_times": total,
        "queued": len(plan.queued),
        "queued_times": [local(t) for t in plan.queued],
        "already_done": len(plan.done),
        "left_to_schedule": len(plan.pending),
        "capped": len(plan.capped),
        "continue_from": local(plan.capped[0]) if plan.capped else None,
        "message": message,
    }
