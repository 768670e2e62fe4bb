"""The store's invariants, checked (and, on request, repaired) from outside the run path.

``task-scheduler check`` asks what the service promises always holds:

* every live task has exactly one job, in its state (scheduled: due at the task's next
  unclaimed fire time; paused: paused), and no job exists without a live task;
* no fire time has two final outcomes;
* no run is left queued or running by a worker that is gone.

The run path keeps these by construction; this is the operator's way to see it, and the
background trigger check's and recovery's safety net made visible. ``--repair`` makes
jobs agree with tasks (what a leader does at start) and settles dead workers' runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, or_, select

from scheduler_service.runs.recovery import disagreements, task_times
from scheduler_service.scheduling import JobControl
from scheduler_service.statuses import ACTIVE_RUN
from scheduler_service.storage.db import Database
from scheduler_service.storage.models import TaskRun

IsAlive = Callable[[str | None], Awaitable[bool]]
SHOWN = 20  # ids listed per problem; the count is always complete


@dataclass
class Problem:
    what: str
    count: int
    examples: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    tasks: int = 0
    jobs: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}

    def add(self, what: str, ids: list[str]) -> None:
        if ids:
            self.problems.append(Problem(what, len(ids), sorted(ids)[:SHOWN]))


async def check_store(db: Database, jobs: JobControl, is_alive: IsAlive) -> CheckReport:
    """Read-only: what disagrees, by kind, with the ids concerned."""
    report = CheckReport()
    job_times = await jobs.next_run_times()
    tasks = await task_times(db)
    report.tasks, report.jobs = len(tasks), len(job_times)
    orphans, disagreeing = disagreements(job_times, tasks)
    report.add("jobs without a live task", orphans)
    report.add("live tasks whose job is missing or in another state", disagreeing)
    report.add("fire times with more than one final outcome", await _doubled(db))
    stranded = await _stranded(db, is_alive)
    report.add("runs left queued or running by a worker that is gone", stranded)
    return report


async def _doubled(db: Database) -> list[str]:
    """(task, fire time) pairs with two final outcomes that are not a failed attempt
    followed by its retry."""
    not_retried = or_(TaskRun.details.is_(None), TaskRun.details["retry_at"].as_string().is_(None))
    query = (
        select(TaskRun.task_id, TaskRun.fire_time)
        .where(TaskRun.status.not_in(ACTIVE_RUN), not_retried)
        .group_by(TaskRun.task_id, TaskRun.fire_time)
        .having(func.count() > 1)
    )
    async with db.read() as session:
        rows = (await session.execute(query)).all()
    return [f"{task_id}@{fire.isoformat()}" for task_id, fire in rows]


async def _stranded(db: Database, is_alive: IsAlive) -> list[str]:
    """Active runs assigned to a worker whose presence lock is free (queued runs nobody
    is assigned are waiting for a worker, not stranded)."""
    query = select(TaskRun.id, TaskRun.worker).where(
        TaskRun.status.in_(ACTIVE_RUN), TaskRun.worker.is_not(None)
    )
    async with db.read() as session:
        rows = (await session.execute(query)).all()
    alive: dict[str | None, bool] = {}
    stranded = []
    for run_id, worker in rows:
        if worker not in alive:
            alive[worker] = await is_alive(worker)
        if not alive[worker]:
            stranded.append(run_id)
    return stranded
