"""The run path's statements: every read and write between a fire and its notification.

Claims, the run queue, starts, releases and outcomes decide *what* to write
(``runs.policy``, ``runs.claims``, ``runs.outcomes``); this module holds *how*: each
statement, built once (building one cost as much as the database's work on it), and a
typed function that executes it on the session or connection the caller's transaction
gives. The transaction mode belongs to the caller and is named in each docstring:

- ``write_orm``: a claim or a record — several statements, one transaction, a group
  commit for many runs (on SQLite in the write thread, holding the write lock);
- ``write_one``: one statement that is atomic by itself (on PostgreSQL in autocommit,
  one round trip): the PostgreSQL take and start, a release;
- ``read_sync``: a lock-free read (SQLite's queue read, the claim's plan read).

Nothing here decides: a function returns rows, ids or ORM objects and the caller
applies the policy. Both backends run every function (``tests/service/test_run_store.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import (
    JSON,
    ColumnElement,
    Integer,
    Select,
    String,
    Table,
    any_,
    bindparam,
    case,
    column,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, aliased, object_session
from sqlalchemy.orm.attributes import instance_state

from scheduler_service.statuses import ACTIVE_RUN, ExecutionMode, RunKind, RunStatus
from scheduler_service.storage.models import (
    ScheduledTask,
    TaskNotification,
    TaskRun,
    UTCDateTime,
    is_value,
)

RUNS = cast(Table, TaskRun.__table__)
TASKS = cast(Table, ScheduledTask.__table__)
NOTES = cast(Table, TaskNotification.__table__)
RUN_COLUMNS = tuple(RUNS.c)
NOTE_COLUMNS = tuple(c.name for c in NOTES.columns)

# A run taken from the queue, with its task when the take also started it.
Taken = tuple[TaskRun, ScheduledTask | None]
# A run's status and start as stored (the record reads them under the task's lock).
RunState = tuple[str, datetime | None]
# What a fire plan is computed from: (task id, status, schedule, next_run_at).
PlanRow = tuple[str, str, dict[str, Any], datetime | None]


def any_of(column: Any, name: str) -> ColumnElement[bool]:
    """PostgreSQL's ``column = ANY(:name)``, the values bound as one array: the statement
    stays the same text for any number of values, where an expanding ``IN`` is rewritten
    on every execution (a regex pass over the SQL) and prepared again for every new
    count of values."""
    return cast(ColumnElement[bool], column == any_(bindparam(name, type_=ARRAY(String))))


# -- the claim (``write_orm``; its plan read ``read_sync``) -------------------------------
def plan_rows(session: Session, task_ids: Sequence[str]) -> list[PlanRow]:
    """The columns a fire plan is computed from, as plain rows (no ORM objects)."""
    query = select(
        ScheduledTask.id, ScheduledTask.status, ScheduledTask.schedule, ScheduledTask.next_run_at
    ).where(ScheduledTask.id.in_(task_ids))
    return [cast(PlanRow, tuple(row)) for row in session.execute(query).all()]


def claimed_fire_times(
    session: Session, task_ids: Sequence[str], since: datetime
) -> set[tuple[str, datetime]]:
    """(task, fire time) pairs from ``since`` on that some row already claims, whatever
    its attempt or status."""
    query = select(TaskRun.task_id, TaskRun.fire_time).where(
        TaskRun.task_id.in_(task_ids), TaskRun.fire_time >= since
    )
    return {(task_id, fire) for task_id, fire in session.execute(query).all()}


def busy_tasks(session: Session, task_ids: Sequence[str]) -> set[str]:
    """The tasks among ``task_ids`` with a scheduled or retry run queued or running, in
    any process."""
    query = select(TaskRun.task_id).where(
        TaskRun.task_id.in_(task_ids),
        TaskRun.status.in_(ACTIVE_RUN),
        TaskRun.kind.in_((RunKind.SCHEDULED, RunKind.RETRY)),
    )
    return set(session.scalars(query.distinct()).all())


# -- the manual claim's fences (``Database.write``, under the task's lock) ---------------
async def active_run_count(session: AsyncSession, task_id: str) -> int:
    """Runs of the task queued or running, in any process."""
    query = select(func.count()).select_from(TaskRun)
    query = query.where(TaskRun.task_id == task_id, TaskRun.status.in_(ACTIVE_RUN))
    return int(await session.scalar(query) or 0)


async def last_manual_queued_at(session: AsyncSession, task_id: str) -> datetime | None:
    """When the task's latest manual run was claimed."""
    query = select(func.max(TaskRun.queued_at)).where(
        TaskRun.task_id == task_id, is_value(TaskRun.kind, RunKind.MANUAL)
    )
    return cast(datetime | None, await session.scalar(query))


async def manual_runs_of_user_since(
    session: AsyncSession, user_id: str, since: datetime
) -> list[datetime]:
    """When each of the user's manual runs claimed after ``since`` was claimed, oldest
    first."""
    query = (
        select(TaskRun.queued_at)
        .where(TaskRun.user_id == user_id, is_value(TaskRun.kind, RunKind.MANUAL))
        .where(TaskRun.queued_at > since)
        .order_by(TaskRun.queued_at)
    )
    return list((await session.scalars(query)).all())


async def run_of_attempt(
    session: AsyncSession, task_id: str, fire_time: datetime, attempt: int
) -> TaskRun | None:
    """The run row of one attempt of one fire time."""
    query = select(TaskRun).where(
        TaskRun.task_id == task_id, TaskRun.fire_time == fire_time, TaskRun.attempt == attempt
    )
    return cast(TaskRun | None, await session.scalar(query))


# -- the run queue ----------------------------------------------------------------------
def grace_start_column() -> ColumnElement[datetime]:
    """``policy.grace_start`` in SQL: a queued run's misfire grace counts from its fire
    time, a backfill run's from when it was queued."""
    return case((TaskRun.kind == RunKind.BACKFILL, TaskRun.queued_at), else_=TaskRun.fire_time)


def _runnable_here() -> ColumnElement[bool]:
    """Runs a worker with the tools ``take_tools`` can execute (orchestrated runs: any
    worker)."""
    return or_(
        ScheduledTask.execution_mode != ExecutionMode.DIRECT,
        any_of(ScheduledTask.tool_name, "take_tools"),
    )


@lru_cache(maxsize=4)
def take_statement(grace: int) -> Select[TaskRun, ScheduledTask]:
    """PostgreSQL's take, built once per default grace: pick unassigned
    queued runs in fire-time order (``SKIP LOCKED``), within their misfire grace, assign
    them to the worker and mark them ``running``, and return each with its task. The
    status is a literal: a bound one would keep the generic plan from the partial queue
    index (``models.is_value``)."""
    within = func.coalesce(ScheduledTask.misfire_grace_time, grace)
    pick = (
        select(TaskRun.id)
        .join(ScheduledTask, ScheduledTask.id == TaskRun.task_id)
        .where(is_value(TaskRun.status, RunStatus.QUEUED), TaskRun.worker.is_(None))
        .where(grace_start_column() >= func.now() - func.make_interval(0, 0, 0, 0, 0, 0, within))
        .where(_runnable_here())
        .order_by(TaskRun.fire_time, TaskRun.queued_at)
        .limit(bindparam("take_limit", type_=Integer))
        .with_for_update(skip_locked=True)
    )
    taken = (
        update(TaskRun)
        .where(TaskRun.id.in_(pick.scalar_subquery()))
        .values(
            worker=bindparam("take_worker", type_=String),
            status=RunStatus.RUNNING,
            # never before it was queued: a take that raced the record releasing a
            # waiting fire (overlap) read its clock before that record's
            started_at=func.greatest(bindparam("take_now", type_=UTCDateTime), TaskRun.queued_at),
        )
        .returning(*RUN_COLUMNS)
        .cte("taken")
    )
    run = aliased(TaskRun, taken)
    return select(run, ScheduledTask).join(ScheduledTask, ScheduledTask.id == run.task_id)


def take_and_start(
    session: Session,
    *,
    worker: str | None,
    tools: Sequence[str],
    grace: int,
    limit: int,
    now: datetime,
) -> list[Taken]:
    """PostgreSQL (``write_one``): take up to ``limit`` queued runs for ``worker``, start
    them, and return them with their tasks — one statement. It locks only run rows, so
    it never waits in a cycle with a transaction holding a task row."""
    params = {
        "take_limit": limit,
        "take_worker": worker,
        "take_now": now,
        "take_tools": list(tools),
    }
    rows = session.execute(take_statement(grace), params).all()
    return [(run, task) for run, task in rows]


# SQLite's queue read names its partial index: without statistics its planner prefers
# the status index and sorts every queued run, and SQLAlchemy has no way to say
# ``INDEXED BY``. Same conditions as ``take_statement`` (the grace in days: SQLite's
# date arithmetic is ``julianday``).
SQLITE_QUEUE_READ = (
    text(
        """
        SELECT r.id
        FROM task_scheduler_runs AS r INDEXED BY ix_task_scheduler_runs_queue
        JOIN task_scheduler_tasks AS t ON t.id = r.task_id
        WHERE r.status = 'queued' AND r.worker IS NULL
          AND (t.execution_mode != :direct OR t.tool_name IN :tools)
          AND julianday(CASE WHEN r.kind = :backfill THEN r.queued_at ELSE r.fire_time END)
              >= julianday(:now) - coalesce(t.misfire_grace_time, :grace) / 86400.0
        ORDER BY r.fire_time, r.queued_at
        LIMIT :limit
        """
    )
    .bindparams(bindparam("tools", expanding=True), bindparam("now", type_=UTCDateTime))
    .columns(column("id", String))
)


def queued_on_sqlite(
    session: Session, *, tools: Sequence[str], grace: int, limit: int, now: datetime
) -> list[str]:
    """SQLite (``read_sync``): the oldest unassigned queued runs a worker with ``tools``
    can execute, none past its misfire grace at ``now``."""
    params = {
        "limit": limit,
        "grace": grace,
        "now": now,
        "tools": list(tools),
        "direct": ExecutionMode.DIRECT.value,
        "backfill": RunKind.BACKFILL.value,
    }
    return list(session.scalars(SQLITE_QUEUE_READ, params).all())


def assign_on_sqlite(session: Session, run_ids: Sequence[str], worker: str | None) -> list[TaskRun]:
    """SQLite (``write_orm``): assign to ``worker`` those of ``run_ids`` still queued and
    unassigned (read first without the lock); the runs assigned."""
    query = select(TaskRun).where(
        TaskRun.id.in_(run_ids), TaskRun.status == RunStatus.QUEUED, TaskRun.worker.is_(None)
    )
    taken = list(session.scalars(query).all())
    for run in taken:
        run.worker = worker
    return taken


def release(session: Session, run_ids: Sequence[str], worker: str | None) -> set[str]:
    """(``write_one``) Runs of ``worker`` still queued or running go back to the queue,
    unassigned and not started; the ids released. (Rare: a stop's runs, built here.)"""
    query = (
        update(TaskRun)
        .where(TaskRun.id.in_(run_ids))
        .where(TaskRun.status.in_(ACTIVE_RUN), TaskRun.worker == worker)
        .values(worker=None, status=RunStatus.QUEUED, started_at=None)
        .returning(TaskRun.id)
        .execution_options(synchronize_session=False)
    )
    return set(session.scalars(query).all())


# -- starts -----------------------------------------------------------------------------
START_SQLITE = (
    update(TaskRun)
    .where(TaskRun.id.in_(bindparam("start_ids", expanding=True)))
    .values(status=RunStatus.RUNNING, started_at=bindparam("start_now", type_=UTCDateTime))
    .returning(TaskRun.id)
    .execution_options(synchronize_session=False)
)


def start_on_sqlite(session: Session, run_ids: Sequence[str], now: datetime) -> set[str]:
    """SQLite (``write_orm``, the tasks already locked by the caller): mark the runs
    ``running``; the ids of those that still exist."""
    if not run_ids:
        return set()
    params = {"start_ids": sorted(run_ids), "start_now": now}
    return set(session.scalars(START_SQLITE, params).all())


def _start_statement() -> Select[str, ScheduledTask]:
    lock = (
        select(TaskRun.id)
        .where(any_of(TaskRun.id, "start_ids"))
        .order_by(TaskRun.id)
        .with_for_update()
    )
    started = (
        update(TaskRun)
        .where(TaskRun.id.in_(lock.scalar_subquery()))
        .values(status=RunStatus.RUNNING, started_at=bindparam("start_now", type_=UTCDateTime))
        .returning(TaskRun.id, TaskRun.task_id)
        .cte("started")
    )
    return select(started.c.id, ScheduledTask).join(
        ScheduledTask, ScheduledTask.id == started.c.task_id
    )


START_PG = _start_statement()


def start_on_pg(
    session: Session, run_ids: Sequence[str], now: datetime
) -> dict[str, ScheduledTask]:
    """PostgreSQL (``write_one``): lock the runs in id order, mark those still there
    ``running`` and return each one's task — one statement. It takes no task lock: the
    run executes the task as it is now, as after any start."""
    params = {"start_ids": sorted(set(run_ids)), "start_now": now}
    return {run_id: task for run_id, task in session.execute(START_PG, params).all()}


# -- the record (``write_orm``, a group commit) -----------------------------------------
def _lock_with_states(
    runs: ColumnElement[bool],
) -> Select[ScheduledTask, str, str, datetime | None]:
    return (
        select(ScheduledTask, TaskRun.id, TaskRun.status, TaskRun.started_at)
        .join(TaskRun, TaskRun.task_id == ScheduledTask.id)
        .where(runs)
        .order_by(ScheduledTask.id)
        .execution_options(populate_existing=True)
    )


LOCK_WITH_STATES_SQLITE = _lock_with_states(TaskRun.id.in_(bindparam("run_ids", expanding=True)))
LOCK_WITH_STATES = _lock_with_states(any_of(TaskRun.id, "run_ids")).with_for_update(
    of=ScheduledTask
)


def lock_with_states(
    session: Session, sqlite: bool, run_ids: Sequence[str]
) -> tuple[dict[str, ScheduledTask], dict[str, RunState]]:
    """The runs' tasks, locked in id order (the lock order), and each run's status and
    start as stored, in one statement. A run missing here went with its task. (SQLite's
    ``BEGIN IMMEDIATE`` already holds the one write lock.)"""
    query = LOCK_WITH_STATES_SQLITE if sqlite else LOCK_WITH_STATES
    tasks: dict[str, ScheduledTask] = {}
    states: dict[str, RunState] = {}
    for task, run_id, status, started in session.execute(query, {"run_ids": list(run_ids)}):
        tasks[task.id] = task
        states[run_id] = (status, started)
    return tasks, states


def runs_by_id(session: Session, run_ids: Sequence[str]) -> dict[str, TaskRun]:
    """The run rows, as stored."""
    query = select(TaskRun).where(TaskRun.id.in_(run_ids))
    return {row.id: row for row in session.scalars(query).all()}


# What an outcome sets on a run row (``outcomes.write_run``).
OUTCOME_COLUMNS = (
    "status",
    "finished_at",
    "duration_ms",
    "result",
    "error",
    "error_kind",
    "usage",
    "details",
)

# What recording a final attempt may change on a task (update_task, settle, the notify
# policy, notifications.build, token_budget.settle_skip).
TASK_OUTCOME_COLUMNS = (
    "status",
    "run_count",
    "success_count",
    "failure_count",
    "consecutive_failures",
    "last_run_at",
    "last_status",
    "last_result",
    "last_error",
    "next_run_at",
    "last_notified_at",
    "result_fingerprint",
    "failure_alert_at",
    "pause_note",
    "updated_at",
)
TASK_OUTCOME_SET = frozenset(TASK_OUTCOME_COLUMNS)


def _param(table: Table, name: str) -> Any:
    """A bound value for the column ``name``: its own type, except that a JSON ``None``
    is SQL NULL (as the ORM writes it), not the JSON text ``null``."""
    kind = table.c[name].type
    return bindparam(f"b_{name}", type_=JSON(none_as_null=True) if isinstance(kind, JSON) else kind)


def _write_by_id(table: Table, columns: Sequence[str]) -> Any:
    """``UPDATE table SET columns… WHERE id = :b_id``, for an executemany."""
    values = {name: _param(table, name) for name in columns}
    return update(table).where(table.c.id == bindparam("b_id")).values(values)


WRITE_OUTCOME = _write_by_id(RUNS, OUTCOME_COLUMNS)
WRITE_TASK_OUTCOME = _write_by_id(TASKS, TASK_OUTCOME_COLUMNS)


def write_outcomes(session: Session, runs: Sequence[TaskRun]) -> None:
    """The runs' outcome columns, as set on the objects, in one executemany UPDATE."""
    if runs:
        rows = [
            {"b_id": run.id, **{f"b_{c}": getattr(run, c) for c in OUTCOME_COLUMNS}} for run in runs
        ]
        session.execute(WRITE_OUTCOME, rows)


def write_task_outcomes(session: Session, tasks: Iterable[ScheduledTask], now: datetime) -> None:
    """The tasks' changed state in one executemany UPDATE of a fixed column list, instead
    of the ORM's flush (a unit of work per object cost a third of recording a run). The
    tasks leave the session first, so nothing flushes them again; a change outside the
    list is a programming error, refused before anything is written. Call it before any
    other statement once the tasks are changed: that statement would autoflush them
    through the ORM first."""
    rows: list[dict[str, Any]] = []
    for task in tasks:
        changed = instance_state(task).committed_state.keys()
        if object_session(task) is session:
            session.expunge(task)
        if not changed:
            continue
        stray = set(changed) - TASK_OUTCOME_SET
        if stray:
            raise RuntimeError(f"recording an outcome changed task columns {sorted(stray)}")
        task.updated_at = now
        rows.append({"b_id": task.id, **{f"b_{c}": getattr(task, c) for c in TASK_OUTCOME_COLUMNS}})
    if rows:
        session.execute(WRITE_TASK_OUTCOME, rows)


def insert_notifications(session: Session, notes: Sequence[TaskNotification]) -> None:
    """The notifications in one executemany INSERT."""
    if notes:
        session.execute(insert(NOTES), [{c: getattr(n, c) for c in NOTE_COLUMNS} for n in notes])
