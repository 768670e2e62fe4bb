"""The run store's contract: every statement of the run path, on SQLite and PostgreSQL.

Each test runs one ``runs.store`` function in the transaction mode its docstring names,
on real rows in a migrated database, and checks what it returned and what it stored:

* the claim's reads: plan rows, fire times already claimed, tasks busy elsewhere;
* the manual claim's fences: active runs, the last manual run, a user's recent ones;
* the take (PostgreSQL: one statement that also starts; SQLite: a read through the
  queue index, then the assignment): the oldest within the limit, only runs the worker
  has the tool for, none past its misfire grace, none assigned already;
* release: only the worker's unfinished runs go back, unassigned and not started;
* starts: the runs that still exist are marked ``running`` (PostgreSQL: with tasks);
* the record: tasks locked with run states, outcome columns, task columns (a change to
  any other column is refused before anything is written), notifications.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from scheduler_service import SchedulerService
from scheduler_service.runs import notifications, store
from scheduler_service.statuses import RunKind, RunStatus
from scheduler_service.storage.models import (
    ScheduledTask,
    TaskNotification,
    TaskRun,
    new_id,
    utcnow,
)
from tests.conftest import ServiceFactory, client_service, stored_run
from tools import ToolContext

CTX = ToolContext(user_id="u1", conversation_id="c1")


async def make_task(service: SchedulerService, tool: str = "recording_tool", **extra: Any) -> str:
    out = await service.scheduler_tool.run(
        "create_task",
        {
            "name": "stored",
            "frequency": "daily",
            "scheduled_time": "03:00",
            "tool_name": tool,
            "operation": "record",
            **extra,
        },
        context=CTX,
    )
    return str(out["task"]["task_id"])


async def add_run(service: SchedulerService, task_id: str, **fields: Any) -> str:
    """A run row of the task: by default an unassigned queued scheduled run due now."""
    now = utcnow()
    values: dict[str, Any] = {
        "kind": RunKind.SCHEDULED,
        "fire_time": now,
        "attempt": 1,
        "status": RunStatus.QUEUED,
        "queued_at": now,
        "worker": None,
        **fields,
    }
    run = TaskRun(id=new_id("run"), task_id=task_id, user_id=CTX.user_id, **values)
    async with service.db.write() as session:
        session.add(run)
    return run.id


async def take(service: SchedulerService, worker: str, tools: list[str], limit: int) -> set[str]:
    """The backend's take, as ``Claims.take_queued`` runs it; the ids taken."""
    grace = service.settings.scheduler.misfire_grace_time
    if not service.db.sqlite:
        taken = await service.db.write_one(
            lambda s: store.take_and_start(
                s, worker=worker, tools=tools, grace=grace, limit=limit, now=utcnow()
            )
        )
        return {run.id for run, _task in taken}
    ids = await service.db.read_sync(
        lambda s: store.queued_on_sqlite(s, tools=tools, grace=grace, limit=limit, now=utcnow())
    )
    runs = await service.db.write_orm(lambda s: store.assign_on_sqlite(s, ids, worker))
    return {run.id for run in runs}


async def test_the_claims_reads_name_plans_claimed_times_and_busy_tasks(
    start_service: ServiceFactory,
) -> None:
    service = await client_service(start_service)
    first, second, other = [await make_task(service) for _ in range(3)]
    t0 = utcnow().replace(microsecond=0)
    await add_run(service, first, fire_time=t0 - timedelta(hours=1), status=RunStatus.SUCCEEDED)
    await add_run(service, first, fire_time=t0, status=RunStatus.MISSED, kind=RunKind.MISSED)
    await add_run(service, second, fire_time=t0, attempt=2, kind=RunKind.RETRY)
    await add_run(service, other, fire_time=t0, kind=RunKind.MANUAL)

    plans = await service.db.read_sync(lambda s: store.plan_rows(s, [first, second]))
    assert sorted(task_id for task_id, *_ in plans) == sorted([first, second])
    for _id, status, schedule, next_run in plans:
        assert status == "scheduled" and schedule["frequency"] == "daily"
        assert isinstance(next_run, datetime)

    claimed = await service.db.write_orm(lambda s: store.claimed_fire_times(s, [first, second], t0))
    assert claimed == {(first, t0), (second, t0)}  # whatever the status or attempt

    busy = await service.db.write_orm(lambda s: store.busy_tasks(s, [first, second, other]))
    assert busy == {second}  # a queued retry; a final run or a manual one is not busy


async def test_the_manual_fences_count_what_they_guard(start_service: ServiceFactory) -> None:
    service = await client_service(start_service)
    task_id, idle = await make_task(service), await make_task(service)
    t0 = utcnow()
    old = await add_run(service, task_id, kind=RunKind.MANUAL, queued_at=t0 - timedelta(minutes=5))
    await add_run(service, task_id, kind=RunKind.MANUAL, queued_at=t0 - timedelta(seconds=20))
    await add_run(service, idle, kind=RunKind.MANUAL, queued_at=t0 - timedelta(seconds=10),
                  status=RunStatus.SUCCEEDED)  # fmt: skip
    await add_run(service, idle, queued_at=t0 - timedelta(seconds=5), status=RunStatus.FAILED)

    async with service.db.write() as session:
        assert await store.active_run_count(session, task_id) == 2
        assert await store.active_run_count(session, idle) == 0
        last = await store.last_manual_queued_at(session, task_id)
        assert last is not None and abs((last - (t0 - timedelta(seconds=20))).total_seconds()) < 1
        recent = await store.manual_runs_of_user_since(
            session, CTX.user_id, t0 - timedelta(minutes=1)
        )
        assert len(recent) == 2 and recent == sorted(recent)  # both tasks' manual runs, in order
        first = await store.run_of_attempt(
            session, task_id, (await stored_run(service, old)).fire_time, 1
        )
        assert first is not None and first.id == old


async def test_a_take_returns_the_oldest_runnable_runs_within_their_grace(
    start_service: ServiceFactory,
) -> None:
    service = await client_service(start_service)
    mine = await make_task(service)
    foreign = await make_task(service, "reminder_tool", operation="get_reminders")
    now = utcnow()
    oldest = await add_run(service, mine, fire_time=now - timedelta(seconds=30))
    newer = await add_run(service, mine, fire_time=now - timedelta(seconds=10), attempt=2)
    newest = await add_run(service, mine, fire_time=now - timedelta(seconds=5), attempt=3)
    await add_run(service, mine, fire_time=now - timedelta(hours=2), attempt=4)  # past grace
    await add_run(service, mine, fire_time=now - timedelta(seconds=40), attempt=5, worker="w0")
    await add_run(service, foreign, fire_time=now - timedelta(seconds=50))  # a tool w1 lacks

    assert await take(service, "w1", ["recording_tool"], 2) == {oldest, newer}
    assert await take(service, "w2", ["recording_tool"], 5) == {newest}
    assert await take(service, "w3", ["recording_tool"], 5) == set()
    taken = await stored_run(service, oldest)
    assert taken.worker == "w1"
    if service.db.sqlite:  # started afterwards (start_on_sqlite)
        assert (taken.status, taken.started_at) == (RunStatus.QUEUED, None)
    else:  # the take's statement also started it
        assert taken.status == RunStatus.RUNNING and taken.started_at is not None


async def test_release_hands_back_only_the_workers_unfinished_runs(
    start_service: ServiceFactory,
) -> None:
    service = await client_service(start_service)
    task_id = await make_task(service)
    now = utcnow()
    queued = await add_run(service, task_id, worker="w1")
    running = await add_run(service, task_id, attempt=2, worker="w1",
                            status=RunStatus.RUNNING, started_at=now)  # fmt: skip
    done = await add_run(service, task_id, attempt=3, worker="w1", status=RunStatus.SUCCEEDED)
    theirs = await add_run(service, task_id, attempt=4, worker="w2", status=RunStatus.RUNNING)

    ids = [queued, running, done, theirs, "run_gone"]
    released = await service.db.write_one(lambda s: store.release(s, ids, "w1"))
    assert released == {queued, running}
    for run_id in released:
        back = await stored_run(service, run_id)
        assert (back.status, back.worker, back.started_at) == (RunStatus.QUEUED, None, None)
    assert (await stored_run(service, done)).status == RunStatus.SUCCEEDED
    assert (await stored_run(service, theirs)).worker == "w2"


async def test_a_start_marks_the_runs_that_still_exist_running(
    start_service: ServiceFactory,
) -> None:
    service = await client_service(start_service)
    task_id = await make_task(service)
    runs = [await add_run(service, task_id, attempt=i, worker="w1") for i in (1, 2)]
    now = utcnow().replace(microsecond=0)
    ids = [*runs, "run_gone"]
    if service.db.sqlite:
        started: set[str] = await service.db.write_orm(lambda s: store.start_on_sqlite(s, ids, now))
    else:
        tasks = await service.db.write_one(lambda s: store.start_on_pg(s, ids, now))
        assert {task.id for task in tasks.values()} == {task_id}
        started = set(tasks)
    assert started == set(runs)
    for run_id in runs:
        started_run = await stored_run(service, run_id)
        assert (started_run.status, started_run.started_at) == (RunStatus.RUNNING, now)


async def test_the_record_locks_tasks_with_run_states_and_reads_final_rows(
    start_service: ServiceFactory,
) -> None:
    service = await client_service(start_service)
    first, second = await make_task(service), await make_task(service)
    now = utcnow().replace(microsecond=0)
    running = await add_run(service, first, worker="w1", status=RunStatus.RUNNING, started_at=now)
    final = await add_run(service, second, worker="w1", status=RunStatus.INTERRUPTED)
    ids = [running, final, "run_gone"]

    def lock(s: Any) -> tuple[dict[str, ScheduledTask], dict[str, store.RunState]]:
        return store.lock_with_states(s, service.db.sqlite, ids)

    tasks, states = await service.db.write_orm(lock)
    assert set(tasks) == {first, second}
    assert states == {running: ("running", now), final: ("interrupted", None)}
    kept = await service.db.write_orm(lambda s: store.runs_by_id(s, [final]))
    assert kept[final].status == RunStatus.INTERRUPTED


async def test_outcomes_tasks_and_notifications_are_written_as_set(
    start_service: ServiceFactory,
) -> None:
    service = await client_service(start_service)
    task_id = await make_task(service)
    run_id = await add_run(service, task_id, worker="w1", status=RunStatus.RUNNING)
    now = utcnow().replace(microsecond=0)

    def record(s: Any) -> TaskNotification:
        tasks, _states = store.lock_with_states(s, service.db.sqlite, [run_id])
        task = tasks[task_id]
        run = s.get(TaskRun, run_id)
        s.expunge(run)
        run.status, run.finished_at, run.result = RunStatus.SUCCEEDED, now, {"ok": 1}
        run.usage = None  # SQL NULL, not the JSON text null
        task.run_count, task.last_status = 1, RunStatus.SUCCEEDED
        note = notifications.build(task, run, RunStatus.SUCCEEDED, "done", now)
        store.write_task_outcomes(s, [task], now)  # first: any statement would autoflush it
        store.write_outcomes(s, [run])
        store.insert_notifications(s, [note])
        return note

    note = await service.db.write_orm(record)
    recorded = await stored_run(service, run_id)
    assert (recorded.status, recorded.finished_at, recorded.result) == ("succeeded", now, {"ok": 1})
    async with service.db.read() as session:
        task = await session.get(ScheduledTask, task_id, populate_existing=True)
        assert task is not None and (task.run_count, task.updated_at) == (1, now)
        notes = (await session.scalars(select(TaskNotification))).all()
        assert [n.id for n in notes] == [note.id]
        usage_is_null = await session.scalar(
            select(TaskRun.usage.is_(None)).where(TaskRun.id == run_id)
        )
        assert usage_is_null


async def test_a_task_change_outside_the_outcome_columns_is_refused(
    start_service: ServiceFactory,
) -> None:
    service = await client_service(start_service)
    task_id = await make_task(service)

    def stray(s: Any) -> None:
        task = s.get(ScheduledTask, task_id)
        task.run_count = 7
        task.name = "renamed"  # not an outcome column
        store.write_task_outcomes(s, [task], utcnow())

    with pytest.raises(RuntimeError, match="name"):
        await service.db.write_orm(stray)
    async with service.db.read() as session:
        task = await session.get(ScheduledTask, task_id, populate_existing=True)
        assert task is not None and (task.name, task.run_count) == ("stored", 0)


async def test_a_take_never_starts_a_run_before_it_was_queued(
    start_service: ServiceFactory,
) -> None:
    """A take that reads its clock just before a record releases a waiting fire (overlap)
    and then takes it must not stamp it started before it was queued (which is when the
    run it waited for ended). PostgreSQL's take starts the run itself; SQLite's start
    follows the take, under the write lock, on a later clock."""
    service = await client_service(start_service)
    task_id = await make_task(service)
    ahead = utcnow() + timedelta(milliseconds=300)  # the record's clock, later than the take's
    run_id = await add_run(service, task_id, queued_at=ahead)
    assert await take(service, "w1", ["recording_tool"], 1) == {run_id}
    taken = await stored_run(service, run_id)
    if not service.db.sqlite:
        assert taken.started_at == ahead
