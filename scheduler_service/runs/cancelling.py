"""Stopping a run in flight: the overlap policy ``cancel_previous``.

A fire of a ``cancel_previous`` task that finds a scheduled or retry run of the task in
flight asks it to stop, in the claim's transaction under the task's lock, and waits as a
``buffered`` run (``runs.buffering``) until it has ended:

* a run still in the run queue, taken by no worker, never started: it is recorded
  ``skipped`` there and then (its row is locked first, so a worker taking it at that
  instant either has it, and it is asked to stop, or does not);
* a run a worker holds, waiting for a slot or running: its row is stamped
  ``cancel_requested_at``. Every worker with runs in flight looks for its stamped runs
  about once a second (``STOP_POLL_S``, a partial index holds only stamped rows), so a
  run is stopped by whichever worker executes it, in any process. A stopped run is
  recorded ``interrupted`` (error kind ``cancelled``), and that record queues the
  waiting fire.

A sync tool's thread cannot be stopped: its run is recorded at once and the thread is
left to finish, as after a timeout.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from scheduler_service.runs import notifications
from scheduler_service.runs.buffering import SCHEDULED_KINDS
from scheduler_service.runs.policy import Outcome
from scheduler_service.statuses import ACTIVE_RUN, RunStatus
from scheduler_service.storage.models import ScheduledTask, TaskNotification, TaskRun

STOP_POLL_S = 1.0  # how often a worker with runs in flight looks for stop requests
REPLACED = "a newer run of this task was due and replaces it (overlap cancel_previous)"


def stopped() -> Outcome:
    """The outcome of a run stopped for a newer one."""
    return Outcome(RunStatus.INTERRUPTED, error=f"stopped: {REPLACED}", error_kind="cancelled")


def stop_previous(
    session: Session, task: ScheduledTask, now: datetime
) -> tuple[list[TaskNotification], bool]:
    """Stop the task's scheduled and retry runs in flight: those no worker took are
    recorded skipped (their notifications are returned), the others are asked to stop.
    Also returns whether any is still to stop (the new fire must wait for it)."""
    query = (
        select(TaskRun)
        .where(
            TaskRun.task_id == task.id,
            TaskRun.status.in_(ACTIVE_RUN),
            TaskRun.kind.in_(SCHEDULED_KINDS),
        )
        .with_for_update()
    )
    published: list[TaskNotification] = []
    still_running = False
    for row in session.scalars(query).all():
        if row.status == RunStatus.QUEUED and row.worker is None:
            row.status, row.finished_at = RunStatus.SKIPPED, now
            row.error, row.error_kind = REPLACED, "cancelled"
            message = f"skipped the run due at {row.fire_time.isoformat()}: {REPLACED}"
            published.append(notifications.build(task, row, RunStatus.SKIPPED, message, now))
        else:
            row.cancel_requested_at = row.cancel_requested_at or now
            still_running = True
    return published, still_running


def stop_requests(worker: str | None) -> Select[str]:
    """The ids of this worker's active runs asked to stop."""
    return select(TaskRun.id).where(
        TaskRun.worker == worker,
        TaskRun.cancel_requested_at.is_not(None),
        TaskRun.status.in_(ACTIVE_RUN),
    )
