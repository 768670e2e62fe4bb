"""The run queue's take and hand-back, on SQLite and PostgreSQL alike.

* A worker's take assigns the runs to it; on PostgreSQL the same single statement also
  records them ``running`` and returns their tasks (one round trip, not three
  transactions).
* Two workers taking at one instant never take the same run, and lose none.
* A run handed back at a stop (its tool never started) is queued and unassigned again,
  whether its take already started it or not, and the next take finds it.
* A take reads the queue through its own index, in order, however the database plans it
  (a prepared statement's generic plan on PostgreSQL): it never reads and sorts the
  whole queue, which made a burst's takes cost the square of its size.
* A pooled PostgreSQL connection that died is replaced before the next statement needs
  it (its failure marks it for a test at the next checkout).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import create_engine, event, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from scheduler_service import SchedulerService
from scheduler_service.runs.claims import Claims
from scheduler_service.statuses import RunKind, RunStatus
from scheduler_service.storage.db import (
    create_sync_engine,
    ping_when_idle,
    pool_size_for,
    sync_url,
)
from scheduler_service.storage.models import ScheduledTask, TaskRun, utcnow
from tests.conftest import (
    ServiceFactory,
    _pg_admin,
    client_service,
    stored_run,
)
from tools import ToolContext

CTX = ToolContext(user_id="u1", conversation_id="c1")


async def queue_runs(service: SchedulerService, count: int) -> list[str]:
    """``count`` tasks, each with one unassigned queued run (as a client's manual run)."""
    ids: list[str] = []
    for i in range(count):
        out = await service.scheduler_tool.run(
            "create_task",
            {
                "name": f"queued {i}",
                "frequency": "daily",
                "scheduled_time": "03:00",
                "tool_name": "recording_tool",
                "operation": "record",
            },
            context=CTX,
        )
        async with service.db.write() as session:
            task = await session.get(ScheduledTask, out["task"]["task_id"])
            assert task is not None
            run = service.runner.claims.new_run(task, utcnow(), RunKind.MANUAL, 1, worker=None)
            session.add(run)
        ids.append(run.id)
    return ids


def worker_claims(service: SchedulerService, name: str) -> Claims:
    """Claims as a worker named ``name`` with the recording tool would make them."""
    claims = Claims(
        db=service.db, cfg=service.settings.scheduler, notifier=service.notifier, overlaps=bool
    )
    claims.worker = name
    claims.tools = lambda: ["recording_tool"]
    return claims


async def test_a_take_assigns_the_runs_and_on_postgresql_starts_them(
    start_service: ServiceFactory,
) -> None:
    service = await client_service(start_service)
    [run_id] = await queue_runs(service, 1)
    claims = worker_claims(service, "w1")

    [(run, task)] = await claims.take_queued(5)
    row = await stored_run(service, run_id)
    assert (run.id, run.worker, row.worker) == (run_id, "w1", "w1")
    if service.db.sqlite:  # started afterwards, by mark_running_many
        assert task is None and row.status == RunStatus.QUEUED and row.started_at is None
    else:  # the take's own statement started it and read its task
        assert task is not None and task.id == row.task_id
        assert row.status == RunStatus.RUNNING and row.started_at is not None
    assert await claims.take_queued(5) == []  # taken once


async def test_a_run_handed_back_is_queued_unassigned_and_taken_again(
    start_service: ServiceFactory,
) -> None:
    service = await client_service(start_service)
    [run_id] = await queue_runs(service, 1)
    first = worker_claims(service, "w1")
    [(run, _task)] = await first.take_queued(5)

    assert await first.release_many([run]) == [True]
    row = await stored_run(service, run_id)
    assert (row.status, row.worker, row.started_at) == (RunStatus.QUEUED, None, None)

    second = worker_claims(service, "w2")
    [(again, _task)] = await second.take_queued(5)
    assert (again.id, again.worker) == (run_id, "w2")
    assert await first.release_many([run]) == [False]  # no longer w1's: left alone


async def test_two_workers_taking_at_one_instant_share_the_runs_without_overlap(
    start_service: ServiceFactory,
) -> None:
    service = await client_service(start_service)
    ids = await queue_runs(service, 12)
    one, two = worker_claims(service, "w1"), worker_claims(service, "w2")

    first, second = await asyncio.gather(one.take_queued(8), two.take_queued(8))
    taken_one = {run.id for run, _ in first}
    taken_two = {run.id for run, _ in second}
    assert not taken_one & taken_two
    rest = {run.id for run, _ in await one.take_queued(20)}
    assert taken_one | taken_two | rest == set(ids)
    async with service.db.read() as session:
        workers = dict((await session.execute(select(TaskRun.id, TaskRun.worker))).all())
    assert all(workers[i] == ("w2" if i in taken_two else "w1") for i in ids)


async def test_a_take_on_postgresql_is_one_statement(
    start_service: ServiceFactory, database_url: str
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("the single-statement take is PostgreSQL's (SQLite reads, then writes)")
    service = await client_service(start_service)
    await queue_runs(service, 3)
    claims = worker_claims(service, "w1")
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(service.db.engine.sync_engine, "before_cursor_execute", count)
    try:
        taken = await claims.take_queued(5)
    finally:
        event.remove(service.db.engine.sync_engine, "before_cursor_execute", count)
    assert len(taken) == 3
    assert len(statements) == 1, statements


async def take_sql(service: SchedulerService) -> tuple[str, Any]:
    """The SQL and parameters a take sends (its read, on SQLite)."""
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        sent.append((statement, parameters))

    engine = service.db.sync_engine if service.db.sqlite else service.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        await worker_claims(service, "w1").take_queued(1)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    return next((sql, params) for sql, params in sent if "task_scheduler_runs" in sql)


async def test_a_take_reads_the_queue_in_order_through_its_index(
    start_service: ServiceFactory, database_url: str
) -> None:
    service = await client_service(start_service)
    await queue_runs(service, 3)
    sql, params = await take_sql(service)
    if service.db.sqlite:
        with service.db.sync_engine.connect() as conn:
            plan = "\n".join(
                str(row[-1]) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)
            )
        assert "TEMP B-TREE" not in plan, plan
    else:
        args = ", ".join(["NULL"] * len(params))  # a generic plan ignores the values
        admin = create_engine(sync_url(database_url))
        with admin.connect() as conn:
            conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
            conn.exec_driver_sql(f"PREPARE take AS {sql}")
            plan = "\n".join(
                row[0] for row in conn.exec_driver_sql(f"EXPLAIN EXECUTE take({args})")
            )
        admin.dispose()
        assert "Sort" not in plan, plan
    assert "ix_task_scheduler_runs_queue" in plan, plan


def terminate(engine: Engine) -> int:
    """End the pool's one connection from the server side; its backend pid."""
    with engine.connect() as conn:
        backend: int = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    admin = _pg_admin()
    admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
    admin.close()
    return backend


def test_a_connection_that_died_while_idle_is_replaced_unseen(pg_url: str) -> None:
    """Idle past the limit, a pooled connection is tested at checkout: one the server
    ended meanwhile is replaced before the caller's statement."""
    engine = create_engine(sync_url(pg_url), pool_size=1, max_overflow=0)
    ping_when_idle(engine, idle_s=0.0)
    try:
        backend = terminate(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != backend
    finally:
        engine.dispose()


def test_a_dead_pooled_connection_is_replaced_before_it_is_used_again(pg_url: str) -> None:
    """The server ends every connection (a restart, a proxy): the statement that meets
    the dead connection fails, and the next checkout tests it and connects afresh."""
    engine = create_sync_engine(sync_url(pg_url), pool_size=1, max_overflow=0)
    try:
        backend = terminate(engine)
        with pytest.raises(DBAPIError), engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != backend
    finally:
        engine.dispose()


async def test_the_pool_keeps_a_connection_for_each_run_and_the_services_own(
    start_service: ServiceFactory, database_url: str
) -> None:
    """A pool smaller than the work's concurrency opens and closes a connection for each
    surplus checkout: in a burst, dozens of new server backends a second."""
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite has no server connections to keep")
    small = await start_service(max_concurrent_tasks=2, enabled=False)
    large = await start_service(max_concurrent_tasks=40, enabled=False)
    sizes = [service.db.engine.pool.size() for service in (small, large)]  # type: ignore[attr-defined]
    assert sizes == [pool_size_for(2), pool_size_for(40)]
    assert pool_size_for(40) - pool_size_for(2) == 38
