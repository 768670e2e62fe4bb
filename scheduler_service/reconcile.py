"""Start-up reconciliation: make task rows and APScheduler jobs agree (invariant 3).

Runs while this process's scheduler is started paused, before any job fires.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime

from apscheduler.triggers.base import BaseTrigger
from sqlalchemy import select
from sqlalchemy.orm import aliased

from scheduler_service.db import Database
from scheduler_service.engine import JobControl, retry_job_id, task_of_job
from scheduler_service.models import ScheduledTask, TaskRun, utcnow
from scheduler_service.runner import LIVE_TASK, SAME_INSTANT, schedule_of
from scheduler_service.schedules import build_trigger

log = logging.getLogger(__name__)


def same_trigger(a: BaseTrigger, b: BaseTrigger) -> bool:
    """Triggers agree when they are the same class with the same pickled state."""
    return type(a) is type(b) and a.__getstate__() == b.__getstate__()


def same_instant(a: datetime | None, b: datetime | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= SAME_INSTANT


async def reconcile(db: Database, jobs: JobControl) -> dict[str, int]:
    """Make task rows and jobs agree (invariant 3) without losing a fire time.

    A job without a live task is removed (retry jobs go with their task). A live task
    without a job gets one at its stored next run, so a time missed while down is
    still seen as missed. A job whose trigger or next run disagrees with its task
    gets the task's trigger and the task's ``next_run_at``: that field names the
    oldest unclaimed fire time, so a time the job store consumed but never claimed
    (a crash in between) is put back, and a claimed one is not fired again.
    """
    async with db.read() as session:
        tasks = {t.id: t for t in (await session.scalars(select(ScheduledTask))).all()}
    states = await jobs.states()
    counts: Counter[str] = Counter()
    for job_id in states:
        task = tasks.get(task_of_job(job_id))
        if task is None or (job_id == task.id and task.status not in LIVE_TASK):
            await jobs.remove(job_id)
            counts["removed"] += 1
    for task in tasks.values():
        if task.status in LIVE_TASK:
            counts[await _reconcile_task(jobs, task, states.get(task.id))] += 1
    counts["retries_restored"] = await restore_retries(db, jobs, set(states))
    result = {k: counts[k] for k in ("added", "removed", "fixed", "retries_restored")}
    if any(result.values()):
        log.warning("reconciled jobs with tasks: %s", result)
    return result


async def _reconcile_task(
    jobs: JobControl, task: ScheduledTask, state: tuple[datetime | None, BaseTrigger] | None
) -> str:
    trigger = build_trigger(schedule_of(task))
    want = task.next_run_at if task.status == "scheduled" else None
    if task.status == "scheduled" and want is None:
        # Every fire time is claimed; the task settles when its last run (or retry)
        # finishes. A job here could only fire a claimed time again.
        if state is not None:
            await jobs.remove(task.id)
            return "removed"
        return "ok"
    if state is None:
        await jobs.schedule(task.id, trigger, want)
        return "added"
    if same_trigger(state[1], trigger) and same_instant(state[0], want):
        return "ok"
    log.warning(
        "job of task %s disagreed with it (next %s, task says %s); fixed",
        task.id,
        state[0],
        want,
    )
    await jobs.modify(task.id, trigger, want)
    return "fixed"


async def restore_retries(db: Database, jobs: JobControl, job_ids: set[str]) -> int:
    """Re-add retry jobs lost between recording a failed attempt and storing its retry
    (a crash, or a stop that came before the retry could start)."""
    later = aliased(TaskRun)
    query = (
        select(TaskRun)
        .join(ScheduledTask, ScheduledTask.id == TaskRun.task_id)
        .where(
            ScheduledTask.status.in_(LIVE_TASK),
            TaskRun.status.in_(("failed", "timed_out")),
            TaskRun.details["retry_at"].as_string().is_not(None),
            ~select(later.id)
            .where(
                later.task_id == TaskRun.task_id,
                later.fire_time == TaskRun.fire_time,
                later.attempt > TaskRun.attempt,
            )
            .exists(),
        )
    )
    async with db.read() as session:
        rows = (await session.scalars(query)).all()
    restored = 0
    for row in rows:
        if retry_job_id(row.task_id, row.fire_time, row.attempt + 1) in job_ids:
            continue
        at = max(datetime.fromisoformat(str((row.details or {})["retry_at"])), utcnow())
        await jobs.schedule_retry(row.task_id, row.fire_time, row.attempt + 1, at)
        restored += 1
    return restored
