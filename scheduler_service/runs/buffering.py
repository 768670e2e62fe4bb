"""Buffered runs: a fire held back by the overlap policy ``buffer_one`` (or by
``cancel_previous`` until the run it stops has ended).

A scheduled fire that finds a run of its task in flight is, under ``buffer_one``, stored
as a run row with status ``buffered`` (worker NULL) in the claim's transaction, under
the task's lock; a second such fire finds that row and is recorded skipped. When a
scheduled or retry run of the task stops being active — its outcome recorded, or
interrupted by recovery — the same transaction turns the buffered row into an ordinary
``queued`` run, and the run queue starts it like any other. The task's lock orders
claims and outcomes, so two replicas never both buffer, nor both release, one fire.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Update, exists, select, update
from sqlalchemy.orm import Session

from scheduler_service.runs.policy import overlap_of
from scheduler_service.statuses import ACTIVE_RUN, Overlap, RunKind, RunStatus
from scheduler_service.storage.models import ScheduledTask, TaskRun

SCHEDULED_KINDS = (RunKind.SCHEDULED, RunKind.RETRY)  # the runs the overlap policy is about


WAITING_POLICIES = (Overlap.BUFFER_ONE, Overlap.CANCEL_PREVIOUS)


def buffers(task: ScheduledTask | None) -> bool:
    """Whether the task's overlap policy keeps a fire waiting for the run in flight
    (``buffer_one``; ``cancel_previous`` while the run it stopped ends)."""
    return task is not None and overlap_of(task.options) in WAITING_POLICIES


def has_buffered(session: Session, task_id: str) -> bool:
    """Whether a fire of the task is already waiting."""
    query = select(exists().where(TaskRun.task_id == task_id, TaskRun.status == RunStatus.BUFFERED))
    return bool(session.scalar(query))


def has_active(session: Session, task_id: str) -> bool:
    """Whether a scheduled or retry run of the task is queued or running, in any
    process (a released buffered run that no worker has taken yet included)."""
    query = select(
        exists().where(
            TaskRun.task_id == task_id,
            TaskRun.status.in_(ACTIVE_RUN),
            TaskRun.kind.in_(SCHEDULED_KINDS),
        )
    )
    return bool(session.scalar(query))


def overlapped(session: Session, task: ScheduledTask) -> bool:
    """Under a waiting policy, whether a scheduled or retry run of the task is active in
    the database (the process's own count misses a released fire no worker took yet)."""
    return buffers(task) and has_active(session, task.id)


def release(task_ids: Iterable[str], now: datetime) -> Update:
    """The statement that queues the waiting fire of each of these tasks (whose running
    run just ended); it returns the ids of the runs it queued."""
    return (
        update(TaskRun)
        .where(TaskRun.task_id.in_(sorted(set(task_ids))), TaskRun.status == RunStatus.BUFFERED)
        .values(status=RunStatus.QUEUED, queued_at=now)
        .returning(TaskRun.id)
        .execution_options(synchronize_session=False)
    )
