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

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from sqlalchemy import select
from sqlalchemy.orm import aliased

from scheduler_service.config import SchedulerConfig
from scheduler_service.runs import buffering
from scheduler_service.runs.claims import schedule_of
from scheduler_service.runs.notifications import Notifier
from scheduler_service.runs.outcomes import (
    INTERRUPTED,
    NOT_STARTED,
    interrupted,
    update_task,
    write_run,
)
from scheduler_service.runs.policy import SAME_INSTANT, grace_start
from scheduler_service.schedules import Schedule, build_trigger
from scheduler_service.scheduling import JobControl, retry_job_id, task_of_job
from scheduler_service.statuses import (
    ACTIVE_RUN,
    LIVE_TASK,
    ExecutionMode,
    RunKind,
    RunStatus,
    TaskStatus,
)
from scheduler_service.stopping import pause
from scheduler_service.storage.db import Database
from scheduler_service.storage.models import ScheduledTask, TaskNotification, TaskRun, utcnow
from scheduler_service.storage.sql import one_of

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
    queue: bool = False,
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
    is executing the run (it is then never touched here). With a run ``queue``, runs
    nobody was assigned yet are waiting for a replica to take them: left alone until
    their fire time is past the grace time (no replica took them: all were down)."""
    orphans = await _orphaned_runs(
        db, worker, claimed_here, is_alive, queue, cfg.misfire_grace_time
    )
    if not orphans:
        return Recovered()
    recovered = Recovered()
    published: list[TaskNotification] = []
    ended: set[str] = set()  # tasks whose scheduled run was interrupted
    now = utcnow()
    async with db.write() as session:
        await db.lock_tasks(session, [task_id for _, task_id, _ in orphans])  # the lock order
        owners = {run_id: owner for run_id, _, owner in orphans}
        rows = (
            await session.scalars(
                select(TaskRun)
                .where(TaskRun.id.in_(list(owners)))
                .where(TaskRun.status.in_(ACTIVE_RUN))
                .order_by(TaskRun.queued_at)
            )
        ).all()
        for row in rows:
            if claimed_here(row.id) or row.worker != owners[row.id]:
                continue  # another replica took it from the queue meanwhile
            task = await session.get(ScheduledTask, row.task_id)
            if task is not None and _may_run_late(cfg, task, row, now):
                row.worker = worker
                recovered.adopted.append(row)
                continue
            error = INTERRUPTED if row.status == RunStatus.RUNNING else NOT_STARTED
            if row.worker is None:  # waited in the queue: no worker took it in time
                error = _not_taken(task)
            outcome = interrupted(error)
            write_run(row, outcome, now)
            recovered.interrupted += 1
            if task is not None:
                _job, note = update_task(cfg, task, row, outcome, now)
                if note is not None:  # the task's notify policy may leave it out
                    published.append(note)
                if row.kind in buffering.SCHEDULED_KINDS and buffering.buffers(task):
                    ended.add(task.id)
        if ended:  # the fire that waited for an interrupted run goes to the run queue
            await session.execute(buffering.release(ended, now))
        session.add_all(published)
    if published:
        await notifier.publish(published)
    return recovered


def _not_taken(task: ScheduledTask | None) -> str:
    """Why a queued run nobody took did not run, naming the tool a worker needs."""
    needs = ""
    if task is not None and task.execution_mode == ExecutionMode.DIRECT:
        needs = f" with the tool {task.tool_name!r}"
    return (
        f"no worker{needs} was running to take this run within its misfire grace time, "
        f"so it did not run; keep a worker{needs} running (`task-scheduler run`, or the "
        "host app as a worker)"
    )


def _may_run_late(cfg: SchedulerConfig, task: ScheduledTask, row: TaskRun, now: datetime) -> bool:
    """A claimed fire time that never started, of a task still scheduled (a backfill run:
    still live, as when it was asked for), within grace."""
    if row.status != RunStatus.QUEUED:
        return False
    if row.kind in (RunKind.SCHEDULED, RunKind.RETRY):
        runs_while: tuple[str, ...] = (TaskStatus.SCHEDULED,)
    elif row.kind == RunKind.BACKFILL:
        runs_while = LIVE_TASK
    else:
        return False
    if task.status not in runs_while:
        return False
    grace = cfg.misfire_grace_time if task.misfire_grace_time is None else task.misfire_grace_time
    since = grace_start(row.kind, row.fire_time, row.queued_at)
    return (now - since).total_seconds() <= grace


async def _orphaned_runs(
    db: Database,
    worker: str | None,
    claimed_here: Callable[[str], bool],
    is_alive: IsAlive | None,
    queue: bool,
    grace: float = 0.0,
) -> list[tuple[str, str, str | None]]:
    """(run id, task id, worker) of queued/running runs whose worker is dead, or which
    are this worker's own but not in flight here. Liveness is asked once per worker,
    outside any write transaction: on PostgreSQL the answer is a query."""
    async with db.read() as session:
        active = (
            await session.execute(
                select(
                    TaskRun.id,
                    TaskRun.task_id,
                    TaskRun.worker,
                    TaskRun.queued_at,
                    TaskRun.fire_time,
                    TaskRun.status,
                    TaskRun.kind,
                ).where(TaskRun.status.in_(ACTIVE_RUN))
            )
        ).all()
    alive: dict[str | None, bool] = {}
    for _run_id, _task_id, owner, _queued, _fire, _status, _kind in active:
        if owner not in alive:
            alive[owner] = is_alive is not None and await is_alive(owner)
    for owner in (w for w, live in alive.items() if live and w != worker):
        log.info("leaving the runs of live worker %s to it", owner)
    now = utcnow()
    settled_before = now - ORPHAN_AGE
    orphans = []
    for run_id, task_id, owner, queued_at, fire_time, status, kind in active:
        mine = worker is not None and owner == worker
        if mine and (claimed_here(run_id) or (queued_at or settled_before) > settled_before):
            continue
        waiting = owner is None and queue and status == RunStatus.QUEUED
        if waiting and (now - grace_start(kind, fire_time, queued_at)).total_seconds() <= grace:
            continue
        if mine or not alive[owner]:
            orphans.append((run_id, task_id, owner))
    return orphans


# -- task rows and jobs agree --------------------------------------------------------------


def same_trigger(a: BaseTrigger, b: BaseTrigger) -> bool:
    """Triggers agree when they are the same class with the same pickled state."""
    return type(a) is type(b) and a.__getstate__() == b.__getstate__()


def same_instant(a: datetime | None, b: datetime | None) -> bool:
    if a is None or b is None:
        return a is b
    return abs(a - b) <= SAME_INSTANT


TaskTimes = dict[str, tuple[str, datetime | None]]  # task id → (status, next_run_at)
CHUNK = 500  # tasks loaded, or their ids and times streamed, at a time
CHECK_CHUNK = 20  # triggers the background check compares at a time (on the loop)


async def reconcile(db: Database, jobs: JobControl, *, triggers: bool = True) -> dict[str, int]:
    """Make task rows and jobs agree without losing a fire time.

    A job without a task is removed, and so is a task's job once the task is finished
    (retry jobs of a task that still exists stay: they settle its last failure). A live
    task without a job gets one at its stored next run, so a time missed while down is
    still seen as missed. A job whose next run disagrees with its task gets the task's
    trigger and the task's ``next_run_at``: that field names the oldest unclaimed fire
    time, so a time the job store consumed but never claimed (a crash in between) is
    put back, and a claimed one is not fired again.

    This compares ids and times only — no job is unpickled, no task row loaded whole —
    so it costs little at any number of tasks. ``triggers`` also compares every live
    job's trigger with its task's (it unpickles every job: ``check_triggers``); the
    leader runs that part in the background after it starts firing.
    """
    job_times = await jobs.next_run_times()
    tasks = await task_times(db)
    counts: Counter[str] = Counter()
    # 100k ids compared in pure Python: in a thread, so the loop keeps serving.
    to_remove, to_fix = await asyncio.to_thread(disagreements, job_times, tasks)
    for job_id in to_remove:
        await jobs.remove(job_id)
        counts["removed"] += 1
    for chunk in _chunks(to_fix):
        for task in await _load_tasks(db, chunk):
            counts[await _reconcile_task(jobs, task, task.id in job_times)] += 1
    if triggers:
        counts["fixed"] += await check_triggers(db, jobs)
    counts["retries_restored"] = await restore_retries(db, jobs, set(job_times))
    result = {k: counts[k] for k in ("added", "removed", "fixed", "retries_restored")}
    if any(result.values()):
        log.warning("reconciled jobs with tasks: %s", result)
    return result


def disagreements(
    job_times: dict[str, datetime | None], tasks: TaskTimes
) -> tuple[list[str], list[str]]:
    """(jobs to remove, live tasks whose job is missing or names another next run)."""
    to_remove: list[str] = []
    for job_id in job_times:
        owner = tasks.get(task_of_job(job_id))
        is_task_job = job_id == task_of_job(job_id)
        if owner is None or (is_task_job and owner[0] not in LIVE_TASK):
            to_remove.append(job_id)
    to_fix: list[str] = []
    for task_id, (status, next_run_at) in tasks.items():
        if status not in LIVE_TASK:
            continue
        if status == TaskStatus.SCHEDULED and next_run_at is None:
            # Every fire time is claimed; the task settles when its last run (or retry)
            # finishes. A job here could only fire a claimed time again.
            if task_id in job_times:
                to_remove.append(task_id)
            continue
        want = next_run_at if status == TaskStatus.SCHEDULED else None
        if task_id not in job_times or not same_instant(job_times[task_id], want):
            to_fix.append(task_id)
    return to_remove, to_fix


async def check_triggers(
    db: Database, jobs: JobControl, *, stop: asyncio.Event | None = None, rest: float = 0.0
) -> int:
    """Give every live task's job the task's trigger where they differ (a crash between
    changing a task's schedule and its job). Returns the number of jobs fixed.

    A small chunk at a time, reading only what it compares (no ORM rows, no write lock).
    The triggers are built and compared on the loop, in those small chunks (a few ms
    each), not in a thread: a CPU-bound thread would hold the interpreter lock in 5 ms
    slices against every hand-off of the claims and runs (with 100k tasks stored, fire
    delay p99 was 78 ms with the check in a thread, 16–21 ms this way, 16 ms without a
    check). Run in the background, it also rests after each chunk ``rest`` times as long
    as the chunk took, and ends early, between chunks, once ``stop`` is set."""
    fixed = 0
    live = await _live_task_ids(db)
    for chunk in _chunks(live, CHECK_CHUNK):
        if stop is not None and stop.is_set():
            break
        began = asyncio.get_running_loop().time()
        schedules = await _load_schedules(db, chunk)
        stored = await jobs.triggers(list(schedules))
        for task_id, trigger, want in _mismatched(schedules, stored):
            log.warning("job of task %s had another trigger; fixed", task_id)
            await jobs.modify(task_id, trigger, want)
            fixed += 1
        if rest:
            seconds = rest * (asyncio.get_running_loop().time() - began)
            await (pause(stop, seconds) if stop is not None else asyncio.sleep(seconds))
    return fixed


TaskSchedule = tuple[str, dict[str, Any], datetime | None]  # status, schedule, next run


def _mismatched(
    schedules: dict[str, TaskSchedule], stored: dict[str, BaseTrigger]
) -> list[tuple[str, BaseTrigger, datetime | None]]:
    """(task, its trigger, its next run or None if paused) for each job whose stored
    trigger is not the one the task's schedule builds."""
    wrong = []
    for task_id, (status, schedule, next_run) in schedules.items():
        wanted = build_trigger(Schedule.from_dict(schedule))
        if task_id in stored and not same_trigger(stored[task_id], wanted):
            wrong.append((task_id, wanted, next_run if status == TaskStatus.SCHEDULED else None))
    return wrong


async def _load_schedules(db: Database, task_ids: list[str]) -> dict[str, TaskSchedule]:
    query = select(
        ScheduledTask.id, ScheduledTask.status, ScheduledTask.schedule, ScheduledTask.next_run_at
    ).where(ScheduledTask.id.in_(task_ids))
    async with db.read() as session:
        rows = (await session.execute(query)).all()
    return {task_id: (status, schedule, next_run) for task_id, status, schedule, next_run in rows}


async def _live_task_ids(db: Database) -> list[str]:
    """Every live task's id, streamed in chunks. Ids only: converting 100k stored times
    on the loop held it ~0.25 s, slowing every tool call of the first seconds of a
    leader's term."""
    query = select(ScheduledTask.id).where(one_of(ScheduledTask.status, LIVE_TASK))
    ids: list[str] = []
    async with db.read() as session:
        result = await session.stream_scalars(query.execution_options(yield_per=CHUNK))
        async for partition in result.partitions():
            ids.extend(partition)
    return ids


async def task_times(db: Database) -> TaskTimes:
    """Every task's status and next run, streamed in chunks (the loop is never held long)."""
    query = select(ScheduledTask.id, ScheduledTask.status, ScheduledTask.next_run_at)
    times: TaskTimes = {}
    async with db.read() as session:
        result = await session.stream(query.execution_options(yield_per=CHUNK))
        async for partition in result.partitions():
            times.update((task_id, (status, next_run)) for task_id, status, next_run in partition)
    return times


async def _load_tasks(db: Database, task_ids: list[str]) -> list[ScheduledTask]:
    async with db.read() as session:
        query = select(ScheduledTask).where(ScheduledTask.id.in_(task_ids))
        return list((await session.scalars(query)).all())


def _chunks(items: list[str], size: int = CHUNK) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def _reconcile_task(jobs: JobControl, task: ScheduledTask, has_job: bool) -> str:
    """Give a live task's job the task's trigger and next run (adding it if missing)."""
    trigger = await asyncio.to_thread(build_trigger, schedule_of(task))
    want = task.next_run_at if task.status == TaskStatus.SCHEDULED else None
    if not has_job:
        await jobs.schedule(task.id, trigger, want)
        return "added"
    log.warning("job of task %s disagreed with it (task says next %s); fixed", task.id, want)
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
