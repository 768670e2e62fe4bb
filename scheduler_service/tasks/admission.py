"""Admitting a new task: the one transaction that checks the user's quota, stores the
task with its job, and prunes the user's oldest finished tasks beyond their cap.

This is the hot path of ``create_task``; on SQLite the statements themselves take
microseconds, so building and dispatching them is the cost worth removing. They are built
once, here, with bound parameters, and run ``Prepared`` on a plain row: no ORM unit of
work, no statement built or looked up per call.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sqlalchemy import Table, bindparam, exists, func, insert, literal_column, select
from sqlalchemy.engine import Connection

from scheduler_service.statuses import LIVE_TASK
from scheduler_service.storage.models import ScheduledTask
from scheduler_service.storage.sql import Prepared, one_of
from scheduler_service.tasks.retention import FINISHED_BEYOND

TASKS: Table = ScheduledTask.__table__  # type: ignore[assignment]

_LIVE: Any = (
    select(literal_column("1"))  # not the id: the count then reads the index alone
    .where(ScheduledTask.user_id == bindparam("user_id"), one_of(ScheduledTask.status, LIVE_TASK))
    .limit(bindparam("up_to"))
)
LIVE_COUNT = select(func.count()).select_from(_LIVE.subquery())
# Both questions of a create in one statement: the live count, and whether finished
# tasks beyond the cap exist (the prune's own statement then runs only when they do).
ADMISSION = Prepared(select(LIVE_COUNT.scalar_subquery(), exists(FINISHED_BEYOND.limit(1))))
INSERT_TASK = Prepared(insert(TASKS))
COLUMNS = tuple(column.key for column in TASKS.columns)


def admission(connection: Connection, user_id: str, *, up_to: int, keep: int) -> tuple[int, bool]:
    """The user's live (scheduled or paused) tasks counted up to ``up_to``, and whether
    they have more than ``keep`` finished tasks. The count reads at most ``up_to`` index
    entries and the check ``keep + 1``, however many tasks the user has."""
    params = {"user_id": user_id, "up_to": up_to, "keep": keep}
    live, crowded = ADMISSION.first(connection, params) or (0, False)
    return int(live or 0), bool(crowded)


def draft_task(**values: Any) -> SimpleNamespace:
    """A new task as a plain object with every column (None unless given), read like a
    ``ScheduledTask``. A create only inserts the row and shows it back; the ORM object's
    attribute instrumentation cost more than the rest of the row's handling."""
    return SimpleNamespace(**(dict.fromkeys(COLUMNS) | values))


def insert_task(connection: Connection, task: SimpleNamespace) -> None:
    """Insert a new task's row (a ``draft_task``)."""
    INSERT_TASK.execute(connection, vars(task))
