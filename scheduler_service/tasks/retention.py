"""Retention: the store does not grow without bound.

The task quota counts live tasks only, so create-then-cancel cycles, and the runs and
notifications every task leaves behind, would otherwise grow the database forever. Two
bounds (``limits`` settings, docs/limits.md):

* ``retention_days``: finished tasks (completed, cancelled, failed, missed) not changed
  for that long are deleted with their runs and notifications; so are finished runs and
  displayed notifications of live tasks older than that, and daily token budget notices
  whose day ended that long ago.
* ``max_finished_tasks_per_user``: when a user creates a task, their oldest finished
  tasks beyond this number are deleted, in the same transaction.

Neither ever removes what someone still needs: a finished task with an unread
notification or a run still queued or running (its result and notification are still to
come) is kept, and so is each live task's latest run (``get_task`` shows it).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, bindparam, delete, exists, func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import aliased

from scheduler_service.config import LimitsConfig
from scheduler_service.statuses import ACTIVE_RUN, FINISHED_TASK
from scheduler_service.storage.db import Database
from scheduler_service.storage.models import (
    BudgetNotice,
    ScheduledTask,
    TaskNotification,
    TaskRun,
    utcnow,
)
from scheduler_service.storage.sql import one_of

log = logging.getLogger(__name__)
LATER = aliased(TaskRun)

BATCH = 500  # tasks deleted per statement: keeps each IN list and transaction short


def _delete_tasks(connection: Connection, ids: list[str]) -> None:
    connection.execute(delete(TaskNotification).where(TaskNotification.task_id.in_(ids)))
    connection.execute(delete(TaskRun).where(TaskRun.task_id.in_(ids)))
    connection.execute(delete(ScheduledTask).where(ScheduledTask.id.in_(ids)))


def _deletable() -> ColumnElement[bool]:
    """A finished task may go: nobody has yet to read one of its notifications, and none
    of its runs is still queued or running."""
    unread = exists().where(
        TaskNotification.task_id == ScheduledTask.id, TaskNotification.displayed_at.is_(None)
    )
    active = exists().where(TaskRun.task_id == ScheduledTask.id, one_of(TaskRun.status, ACTIVE_RUN))
    return ~unread & ~active


# A user's finished tasks beyond the ``keep`` newest. Built once: create_task's
# transaction checks it (see tasks.admission).
FINISHED_BEYOND = (
    select(ScheduledTask.id)
    .where(
        ScheduledTask.user_id == bindparam("user_id"), one_of(ScheduledTask.status, FINISHED_TASK)
    )
    .where(_deletable())
    .order_by(ScheduledTask.updated_at.desc(), ScheduledTask.id)
    .offset(bindparam("keep"))
    .limit(BATCH)
)


def prune_finished(connection: Connection, user_id: str, keep: int) -> int:
    """Delete the user's oldest finished tasks beyond ``keep``; returns how many. (In a
    ``Database.write_sync`` transaction.)"""
    found = connection.scalars(FINISHED_BEYOND, {"user_id": user_id, "keep": keep})
    ids = list(found.all())
    if ids:
        _delete_tasks(connection, ids)
    return len(ids)


def _purge_finished_batch(connection: Connection, cutoff: datetime) -> int:
    ids = list(
        connection.scalars(
            select(ScheduledTask.id)
            .where(ScheduledTask.status.in_(FINISHED_TASK), ScheduledTask.updated_at < cutoff)
            .where(_deletable())
            .limit(BATCH)
        ).all()
    )
    if ids:
        _delete_tasks(connection, ids)
    return len(ids)


def _purge_old_rows(connection: Connection, cutoff: datetime) -> None:
    """Finished runs (but each task's latest), displayed notifications of live tasks and
    budget notices (one row per user who ever spent a budget), older than ``cutoff``."""
    latest = (
        select(func.max(LATER.finished_at)).where(LATER.task_id == TaskRun.task_id)
    ).scalar_subquery()
    connection.execute(
        delete(TaskRun).where(
            TaskRun.status.not_in(ACTIVE_RUN),
            TaskRun.finished_at < cutoff,
            TaskRun.finished_at < latest,
        )
    )
    connection.execute(
        delete(TaskNotification).where(
            TaskNotification.displayed_at.is_not(None), TaskNotification.created_at < cutoff
        )
    )
    connection.execute(delete(BudgetNotice).where(BudgetNotice.quiet_until < cutoff))


async def purge_expired(db: Database, retention_days: float, now: datetime | None = None) -> int:
    """Delete what is older than ``retention_days`` (see the module docstring); returns
    the number of finished tasks deleted. Safe to run from any process at any time."""
    cutoff = (now or utcnow()) - timedelta(days=retention_days)
    deleted = 0
    while True:
        batch = await db.write_sync(lambda connection: _purge_finished_batch(connection, cutoff))
        deleted += batch
        if batch < BATCH:
            break
    await db.write_sync(lambda connection: _purge_old_rows(connection, cutoff))
    if deleted:
        log.info(
            "retention: deleted %d finished task(s) older than %g days", deleted, retention_days
        )
    return deleted


class Retention:
    """The leader purges expired rows once every ``PURGE_EVERY_S`` (the first time soon
    after it takes the lead)."""

    PURGE_EVERY_S = 3600.0

    def __init__(self, db: Database, limits: LimitsConfig) -> None:
        self.db = db
        self.limits = limits
        self._last: float | None = None

    async def purge_if_due(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._last is not None and now - self._last < self.PURGE_EVERY_S:
            return
        self._last = now
        try:
            await purge_expired(self.db, self.limits.retention_days)
        except Exception:
            log.exception("retention: purge failed; retrying in %.0f s", self.PURGE_EVERY_S)
