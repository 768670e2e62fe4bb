"""The run lifecycle's decisions, pure: no I/O, no database, no clock of its own.

* ``Outcome``: what one execution produced.
* ``retryable`` / ``retry_time``: the one place that decides whether a failed attempt is
  tried again, and when. A failure caused by a moment's state (the tool or the model
  provider unavailable, a timeout, an exception, a tool not registered yet) is retried
  up to the task's ``max_retries`` with exponential backoff; a refusal (invalid input,
  not found, forbidden, the model's own limits) is not, nor is a manual run, nor a run
  that changed tasks through ``scheduler_tool`` (a retry would repeat the changes).
* ``fire_plan``: which fire times a claim covers (those the job store handed over, and
  any earlier one consumed but never claimed), and the next fire after them.
* ``split_missed``: which of them are too late to run (beyond the misfire grace time).
* ``fire_times_between`` / ``backfill_plan``: which past fire times a backfill runs.
* ``grace_start``: the instant a queued run's misfire grace counts from.
* ``on_overlap``: what a fire does while a run of its task is in flight.

The run path (``claims``, ``outcomes``, ``runner``) stores what these decide.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from apscheduler.triggers.base import BaseTrigger

from scheduler_service.config import SchedulerConfig
from scheduler_service.runs.chains import TASK_CHANGES
from scheduler_service.schedules import Schedule, build_trigger
from scheduler_service.statuses import ON_REQUEST, Overlap, RunKind, RunStatus
from scheduler_service.storage.models import ScheduledTask, TaskRun

MAX_BACKFILL = 1000  # at most this many earlier fire times recovered by one claim
SAME_INSTANT = timedelta(milliseconds=1)  # job-store times are floats: allow rounding

# Failures of a moment: the tool's or the provider's state, not the task's request.
RETRYABLE_KINDS = frozenset(
    {
        "unavailable",  # a tool's ToolError codes
        "execution_failed",
        "exception",  # a tool raised
        "timeout",  # the run overran its timeout (direct or orchestrated)
        "tool_missing",  # not registered in this worker (yet)
        "rate_limit",  # the model provider
        "overloaded",
        "server_error",
        "connection",
    }
)


INTERRUPTED = "the service stopped while this run was in progress"
NOT_STARTED = "the service stopped before this run started; it did not run"


@dataclass
class Outcome:
    """What one execution produced, before it is written down."""

    status: str  # succeeded | failed | timed_out | interrupted | skipped
    result: dict[str, Any] | None = None
    error: str | None = None
    error_kind: str | None = None
    usage: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)


def interrupted(error: str) -> Outcome:
    return Outcome(RunStatus.INTERRUPTED, error=error, error_kind="interrupted")


def retryable_kind(error_kind: str | None) -> bool:
    """Whether a failure of this kind may succeed when tried again."""
    return error_kind in RETRYABLE_KINDS


def retryable(outcome: Outcome) -> bool:
    """Whether this attempt's failure is tried again (attempts and manual runs aside)."""
    if outcome.status in (RunStatus.SUCCEEDED, RunStatus.SKIPPED, RunStatus.INTERRUPTED):
        return False
    if TASK_CHANGES in (outcome.details or {}):  # a retry would repeat the changes
        return False
    return retryable_kind(outcome.error_kind)


def retry_time(
    cfg: SchedulerConfig, task: ScheduledTask, row: TaskRun, outcome: Outcome, now: datetime
) -> datetime | None:
    """When the next attempt of this fire time runs, or None if this one is final."""
    if not retryable(outcome):
        return None
    if row.kind in ON_REQUEST:  # asked for once: the user sees the failure and decides
        return None
    max_retries = cfg.max_retries if task.max_retries is None else task.max_retries
    if row.attempt > max_retries:
        return None
    delay = min(
        cfg.retry_backoff_cap,
        cfg.retry_backoff_base * cfg.retry_backoff_factor ** (row.attempt - 1),
    )
    return now + timedelta(seconds=delay)


def grace_start(kind: str, fire_time: datetime, queued_at: datetime | None) -> datetime:
    """The instant a queued run's misfire grace counts from: its fire time, except for a
    backfill run, whose fire time is in the past on purpose: from when it was queued."""
    return queued_at if kind == RunKind.BACKFILL and queued_at is not None else fire_time


def split_missed(
    run_times: list[datetime], now: datetime, grace: float
) -> tuple[list[datetime], datetime | None]:
    """(fire times too late to run, the one to run now or None): only the latest runs;
    earlier ones are missed, and so is the latest beyond ``grace`` seconds late."""
    due: datetime | None = run_times[-1]
    assert due is not None
    if (now - due).total_seconds() > grace:
        return run_times, None
    return run_times[:-1], due


def fire_plan(
    schedule: dict[str, Any],
    next_run_at: datetime | None,
    run_times: list[datetime],
    now: datetime,
) -> tuple[list[datetime], datetime | None]:
    """(fire times the task still names before ``run_times``, the next fire after them).

    ``next_run_at`` names the oldest unclaimed fire time. If it is earlier than what
    APScheduler hands us, a fire was consumed by the job store but never claimed (a
    database error or a crash in between): those times are claimed now too — run or
    recorded missed — instead of vanishing."""
    trigger = build_trigger(Schedule.from_dict(schedule))
    earlier: list[datetime] = []
    fire = next_run_at
    while fire is not None and fire < run_times[0] - SAME_INSTANT and len(earlier) < MAX_BACKFILL:
        earlier.append(fire)
        fire = trigger.get_next_fire_time(fire, now)
    return earlier, trigger.get_next_fire_time(run_times[-1], now)


Fire = tuple[str, list[datetime]]  # a task and the fire times APScheduler handed over
FirePlan = tuple[list[datetime], datetime | None]  # earlier unclaimed times, next fire


# What a fire plan is computed from: task id, schedule, next_run_at, the fire times.
PlanInput = tuple[str, dict[str, Any], datetime | None, list[datetime]]


def fire_plans(fires: Sequence[PlanInput], now: datetime) -> dict[str, FirePlan]:
    """``fire_plan`` for each task: one thread hop for a whole batch."""
    plans: dict[str, FirePlan] = {}
    for task_id, schedule, next_run_at, run_times in fires:
        plans[task_id] = fire_plan(schedule, next_run_at, run_times, now)
    return plans


BACKFILL_SCAN = 10_000  # a backfill window holding more fire times than this is refused


def fire_times_between(
    trigger: BaseTrigger, start: datetime, end: datetime, limit: int = BACKFILL_SCAN
) -> list[datetime] | None:
    """The trigger's fire times in [start, end), oldest first; None when there are more
    than ``limit`` (the window is too large to walk)."""
    times: list[datetime] = []
    fire = trigger.get_next_fire_time(None, start)
    while fire is not None and fire < end:
        if fire >= start:
            if len(times) == limit:
                return None
            times.append(fire)
        fire = trigger.get_next_fire_time(fire, start)
    return times


@dataclass(frozen=True)
class BackfillPlan:
    """What a backfill does with the fire times of its window (each list oldest first)."""

    queued: list[datetime]  # run now, through the run queue
    done: list[datetime]  # already have a run row (any outcome): never run again
    pending: list[datetime]  # not claimed yet: the schedule itself runs or records them
    capped: list[datetime]  # beyond the backfill's max_runs: not queued


def backfill_plan(
    times: Sequence[datetime],
    claimed: Sequence[datetime],
    next_run_at: datetime | None,
    max_runs: int,
) -> BackfillPlan:
    """Which of ``times`` a backfill queues. A time some row already claims (within the
    job store's rounding) is done; a time at or after ``next_run_at`` (the oldest fire
    time the scheduled path has not claimed) is left to that path, so the two never both
    run it; of the rest, the oldest ``max_runs`` are queued."""
    seen = sorted(claimed)

    def is_claimed(fire: datetime) -> bool:
        at = bisect.bisect_left(seen, fire - SAME_INSTANT)
        return at < len(seen) and seen[at] <= fire + SAME_INSTANT

    done = [t for t in times if is_claimed(t)]
    open_times = [t for t in times if not is_claimed(t)]
    horizon = None if next_run_at is None else next_run_at - SAME_INSTANT
    pending = [t for t in open_times if horizon is not None and t >= horizon]
    runnable = [t for t in open_times if horizon is None or t < horizon]
    return BackfillPlan(runnable[:max_runs], done, pending, runnable[max_runs:])


def overlap_of(options: dict[str, Any] | None) -> str:
    """A task's overlap policy (stored with its options; ``skip`` unless set)."""
    return str((options or {}).get("overlap") or Overlap.SKIP)


def on_overlap(policy: str, one_waiting: bool) -> str:
    """What a due scheduled fire does while a run of its task is in flight: ``run``
    (alongside, ``allow``), ``buffer`` (wait for it, ``buffer_one``, when no fire waits
    yet), ``cancel`` (stop it and wait until it has stopped, ``cancel_previous``, when no
    fire waits yet) or ``skip`` (recorded skipped: ``skip``, or a fire already waits)."""
    if policy == Overlap.ALLOW:
        return "run"
    if one_waiting:
        return "skip"
    if policy == Overlap.BUFFER_ONE:
        return "buffer"
    if policy == Overlap.CANCEL_PREVIOUS:
        return "cancel"
    return "skip"
