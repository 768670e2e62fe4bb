"""Recovery: what the leader puts right before it fires jobs (and keeps putting right).

* ``recover_interrupted``: runs a dead worker left queued or running (or this worker's
  own rows it lost track of) are settled: one that never started is taken over and run
  while within its grace time; any other becomes ``interrupted`` (final, never re-run:
  the tool may have acted), and its task is settled as after any final attempt.
* ``reconcile``: the task row and its job agree — a live task has exactly one job, at the
  task's next unclaimed fire time, with the task's trigger; a job without a live task is
  removed; a retry job lost in a crash is put back.

Both run while this process's scheduler is started paused, before any job fires.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from sqlalchemy import select
from sqlalchemy.orm import aliased

from scheduler_service.config import SchedulerConfig
from scheduler_service.engine import JobControl, retry_job_id, task_of_job
from scheduler_service.runs.claims import SAME_INSTANT, schedule_of
from scheduler_service.runs.notifications import Notifier
from scheduler_service.runs.outcomes import (
    INTERRUPTED,
    NOT_STARTED,
    interrupted,
    update_task,
    write_run,
)
from scheduler_service.schedules import build_trigger
from scheduler_service.statuses import ACTIVE_RUN, LIVE_TASK, RunKind, RunStatus, TaskStatus
from scheduler_service.storage.db import Database
from scheduler_service.storage.models import ScheduledTask, TaskNotification, TaskRun, utcnow

log = logging.getLogger(__name__)

IsAlive = Callable[[str | None], Awaitable[bool]]  # is the worker that recorded a run alive?


# -- runs dead workers left ----------------------------------------------------------------
ORPHAN_AGE = timedelta(seconds=2)  # own rows younger than this may be a claim in progress


@dataclass
class Recovered:
    """What one recovery pass did: runs settled ``interrupted``, and runs never started
    that this worker took over to run now (still within their grace time)."""

    interrupted: int = 0
    adopted: list[TaskRun] = field(default_factory=list)


async def recover_interrupted(
    db: Database,
    cfg: SchedulerConfig,
    notifier: Notifier,
    *,
    worker: str | None,
    claimed_here: Callable[[str], bool],
    is_alive: IsAlive | None = None,
) -> Recovered:
    """Settle the runs nobody will finish: those of dead workers, and this worker's own
    rows it no longer tracks (a claim whose commit succeeded while the connection broke).

    A run that never started (``queued``) never acted: while its fire time is within the
    grace time it is adopted — recorded as this worker's — and returned for the caller
    to run. Any other becomes ``interrupted`` (final, never re-run: the tool may have
    acted), with a notification, and its task is settled as after any final attempt.
    Runs of a worker ``is_alive`` says is alive (a standby executing a manual run) are
    left to it; without ``is_alive`` every other worker counts as dead, which is only
    safe while no other process runs. ``claimed_here(run_id)`` says whether this process
    is executing the run (it is then never touched here)."""
    orphans = await _orphaned_runs(db, worker, claimed_here, is_alive)
    if not orphans:
        return Recovered()
    recovered = Recovered()
    published: list[TaskNotification] = []
    now = utcnow()
    async with db.write() as session:
        for task_id in sorted({task_id for _, task_id in orphans}):  # the lock order
            await db.lock_task(session, task_id)
        rows = (
            await session.scalars(
                select(TaskRun)
                .where(TaskRun.id.in_([run_id for run_id, _ in orphans]))
                .where(TaskRun.status.in_(ACTIVE_RUN))
                .order_by(TaskRun.queued_at)
            )
        ).all()
        for row in rows:
            if claimed_here(row.id):
                continue
            task = await session.get(ScheduledTask, row.task_id)
            if task is not None and _may_run_late(cfg, task, row, now):
                row.worker = worker
                recovered.adopted.append(row)
                continue
            error = INTERRUPTED if row.status == RunStatus.RUNNING else NOT_STARTED
            outcome = interrupted(error)
            write_run(row, outcome, now)
            recovered.interrupted += 1
            if task is not None:
                _job, note = update_task(cfg, task, row, outcome, now)
                published.append(note)
        session.add_all(published)
    if published:
        await notifier.publish(published)
    return recovered


def _may_run_late(cfg: SchedulerConfig, task: ScheduledTask, row: TaskRun, now: datetime) -> bool:
    """A claimed fire time that never started, of a task still scheduled, within grace."""
    if row.status != RunStatus.QUEUED or row.kind not in (RunKind.SCHEDULED, RunKind.RETRY):
        return False
    if task.status != TaskStatus.SCHEDULED:
        return False
    grace = cfg.misfire_grace_time if task.misfire_grace_time is None else task.misfire_grace_time
    return (now - row.fire_time).total_seconds() <= grace


async def _orphaned_runs(
    db: Database,
    worker: str | None,
    claimed_here: Callable[[str], bool],
    is_alive: IsAlive | None,
) -> list[tuple[str, str]]:
    """(run id, task id) of queued/running runs whose worker is dead, or which are this
    worker's own but not in flight here. Liveness is asked once per worker, outside any
    write transaction: on PostgreSQL the answer is a query."""
    async with db.read() as session:
        active = (
            await session.execute(
                select(TaskRun.id, TaskRun.task_id, TaskRun.worker, TaskRun.queued_at).where(
                    TaskRun.status.in_(ACTIVE_RUN)
                )
            )
        ).all()
    alive: dict[str | None, bool] = {}
    for _run_id, _task_id, owner, _queued in active:
        if owner not in alive:
            alive[owner] = is_alive is not None and await is_alive(owner)
    for owner in (w for w, live in alive.items() if live and w != worker):
        log.info("leaving the runs of live worker %s to it", owner)
    settled_before = utcnow() - ORPHAN_AGE
    orphans = []
    for run_id, task_id, owner, queued_at in active:
        mine = worker is not None and owner == worker
        if mine and (claimed_here(run_id) or (queued_at or settled_before) > settled_before):
            continue
        if mine or not alive[owner]:
            orphans.append((run_id, task_id))
    return orphans


# -- task rows and jobs agree --------------------------------------------------------------


def same_trigger(a: BaseTrigger, b: BaseTrigger) -> bool:
    """Triggers agree when they are the same class with the same pickled state."""
    return type(a) is type(b) and a.__getstate__() == b.__getstate__()


def same_instant(a: datetime | None, b: datetime | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= SAME_INSTANT


async def reconcile(db: Database, jobs: JobControl) -> dict[str, int]:
    """Make task rows and jobs agree without losing a fire time.

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
    scheduled = task.status == TaskStatus.SCHEDULED
    want = task.next_run_at if scheduled else None
    if scheduled and want is None:
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
            TaskRun.status.in_((RunStatus.FAILED, RunStatus.TIMED_OUT)),
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
