"""Backfill: past fire times of a task queued as runs, each at most once.

``backfill_task`` asks for the fire times of a window in the past. In one transaction,
under the task's row lock (the lock every claim of the task takes), the fire times some
run row already covers — run, failed, skipped, missed, whatever the outcome — are left
alone, the ones the scheduled path has not reached yet (at or after ``next_run_at``)
are left to it, and the rest, up to a cap, become ``backfill`` runs in the run queue
(``worker`` NULL). So two backfills of one window, in one process or two, queue each
fire time once: the second waits for the lock and then sees the first one's rows, and
the unique (task, fire time, attempt) key backs that up. Queued runs execute like any
other queued run: a worker with the task's tool takes them within its free slots.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler_service.runs.policy import SAME_INSTANT, BackfillPlan, backfill_plan
from scheduler_service.statuses import LIVE_TASK, RunKind, TaskStatus
from scheduler_service.storage.db import Database
from scheduler_service.storage.models import ScheduledTask, TaskRun
from scheduler_service.tools import ToolError

NewRun = Callable[..., TaskRun]  # Claims.new_run: (task, fire_time, kind, attempt, **fields)


async def queue_backfill(
    db: Database, new_run: NewRun, task_id: str, times: list[datetime], max_runs: int
) -> BackfillPlan:
    """Queue the fire times of ``times`` (oldest first) no row covers yet, at most
    ``max_runs`` of them, in one transaction; what was done with each time."""
    return await db.write_orm(
        lambda session: _queue(db, session, new_run, task_id, times, max_runs)
    )


def _queue(
    db: Database,
    session: Session,
    new_run: NewRun,
    task_id: str,
    times: list[datetime],
    max_runs: int,
) -> BackfillPlan:
    task = db.lock_tasks_sync(session, [task_id]).get(task_id)
    if task is None:
        raise ToolError("not_found", f"task_id: task {task_id!r} was deleted meanwhile")
    if task.status not in LIVE_TASK:
        raise ToolError(
            "conflict",
            f"task_id: task {task_id!r} is now {task.status} (changed meanwhile) and does not "
            "run any more; create a new task instead",
        )
    next_run = task.next_run_at if task.status == TaskStatus.SCHEDULED else None
    plan = backfill_plan(times, _claimed(session, task, times), next_run, max_runs)
    fields: dict[str, Any] = {"worker": None}  # the run queue assigns them
    session.add_all(new_run(task, fire, RunKind.BACKFILL, 1, **fields) for fire in plan.queued)
    return plan


def _claimed(session: Session, task: ScheduledTask, times: list[datetime]) -> list[datetime]:
    """Fire times of the window some row of the task already claims (any kind, attempt
    or outcome)."""
    if not times:
        return []
    query = select(TaskRun.fire_time).where(
        TaskRun.task_id == task.id,
        TaskRun.fire_time >= times[0] - SAME_INSTANT,
        TaskRun.fire_time <= times[-1] + SAME_INSTANT,
    )
    return list(session.scalars(query).all())
