"""create_task writes the task and its job in one transaction, on both backends: a
created task always has its job (with the task's next run), and a create whose job
cannot be stored leaves nothing behind."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from apscheduler.job import Job
from sqlalchemy import event, text

from scheduler_service.jobs import JOB_FUNCTION
from scheduler_service.storage import inline, names
from scheduler_service.storage.db import create_sync_engine, sync_url
from scheduler_service.tasks import manager
from tests.conftest import ServiceFactory, database_execute, database_rows, wait_for
from tools import ToolContext, ToolError

USER = ToolContext(user_id="u1", conversation_id="c1")
DAILY = {
    "name": "standup",
    "frequency": "daily",
    "scheduled_time": "09:00",
    "execution_mode": "direct",
    "tool_name": "reminder_tool",
    "operation": "add_reminder",
    "parameters": {"title": "standup"},
}

REFUSE_JOBS = {
    "sqlite": [
        f"CREATE TRIGGER refuse_jobs BEFORE INSERT ON {names.JOBS} "
        "BEGIN SELECT RAISE(ABORT, 'job store refuses writes'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_jobs() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'job store refuses writes'; END $$",
        f"CREATE TRIGGER refuse_jobs BEFORE INSERT ON {names.JOBS} "
        "FOR EACH ROW EXECUTE FUNCTION refuse_jobs()",
    ],
}


async def test_a_created_task_has_its_job_with_the_tasks_next_run(
    start_service: ServiceFactory, database_url: str
) -> None:
    service = await start_service()
    made = await service.scheduler_tool.run("create_task", DAILY, context=USER)
    task_id = made["task"]["task_id"]
    jobs = database_rows(database_url, f"select id, next_run_time from {names.JOBS}")
    tasks = database_rows(database_url, "select id, next_run_at from task_scheduler_tasks")
    assert [j["id"] for j in jobs] == [task_id] == [t["id"] for t in tasks]
    job_next = await service.jobs.next_run_time(task_id)
    stored = tasks[0]["next_run_at"]  # a string from SQLite, a datetime from PostgreSQL
    task_next = datetime.fromisoformat(stored) if isinstance(stored, str) else stored
    assert job_next is not None and job_next == task_next.replace(tzinfo=task_next.tzinfo or UTC)


async def test_a_created_tasks_job_is_the_job_apscheduler_would_store(
    start_service: ServiceFactory,
) -> None:
    """create_task writes the job row itself (in the task's transaction); what it stores
    is what ``add_job`` would have: the same state, the scheduler's job defaults."""
    service = await start_service()
    task_id = (await service.scheduler_tool.run("create_task", DAILY, context=USER))["task"][
        "task_id"
    ]
    stored = service.scheduler.get_job(task_id)
    expected = Job(
        service.scheduler,
        id=task_id,
        func=JOB_FUNCTION,
        trigger=stored.trigger,
        executor="default",
        args=[task_id],
        kwargs={},
        name=task_id,
        next_run_time=stored.next_run_time,
        **service.scheduler._job_defaults,
    )
    assert stored.__getstate__() == expected.__getstate__()
    assert stored.next_run_time == await service.jobs.next_run_time(task_id)


async def test_a_create_whose_job_cannot_be_stored_leaves_no_task(
    start_service: ServiceFactory, database_url: str
) -> None:
    service = await start_service()
    backend = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    for statement in REFUSE_JOBS[backend]:
        database_execute(database_url, statement)
    with pytest.raises(ToolError) as refused:
        await service.scheduler_tool.run("create_task", DAILY, context=USER)
    assert refused.value.code == "unavailable"
    assert database_rows(database_url, "select id from task_scheduler_tasks") == []
    assert database_rows(database_url, f"select id from {names.JOBS}") == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_quota_count_reads_the_index_alone(start_service: ServiceFactory) -> None:
    """Creating a task counts the user's live tasks: from the (user_id, status) index
    alone, so a create does not slow down with every task the user already has.
    (SQLite's plan: PostgreSQL picks its plan from statistics at run time.)"""
    service = await start_service()
    seen: list[str] = []  # every statement sqlite3 runs, with its values written in

    def trace(dbapi_connection: Any, *_: Any) -> None:
        dbapi_connection.set_trace_callback(seen.append)

    for engine in service.db.sync_engines:
        event.listen(engine, "checkout", trace)
    await service.scheduler_tool.run("create_task", DAILY, context=USER)
    for engine in service.db.sync_engines:
        event.remove(engine, "checkout", trace)
    [count] = [s for s in seen if "count(*)" in s]
    with service.db.sync_engine.connect() as conn:
        plan = " ".join(str(row) for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {count}"))
    assert "COVERING INDEX ix_task_scheduler_tasks_user_status" in plan


@contextmanager
def another_writer(database_url: str) -> Iterator[None]:
    """Another process in the middle of a write that a create must wait for: on SQLite
    it holds the database's write lock, on PostgreSQL the user's quota lock."""
    engine = create_sync_engine(sync_url(database_url))
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                    {"key": f"task_scheduler:quota:{USER.user_id}"},
                )
            yield
            conn.rollback()
    finally:
        engine.dispose()


async def test_a_create_waits_for_another_writer_without_blocking_the_loop(
    start_service: ServiceFactory, database_url: str
) -> None:
    """On SQLite a create runs on the event loop only if the write lock is free at once;
    held by another process, the create waits for it in a thread, and the loop runs on."""
    service = await start_service()
    await service.scheduler_tool.run("create_task", {**DAILY, "name": "first"}, context=USER)
    with another_writer(database_url):
        create = asyncio.create_task(service.scheduler_tool.run("create_task", DAILY, context=USER))
        await asyncio.sleep(0.3)  # the loop is free meanwhile; the create still waits
        assert not create.done()
    made = await create
    task_id = made["task"]["task_id"]
    assert await service.jobs.next_run_time(task_id) is not None
    tasks = database_rows(database_url, "select name from task_scheduler_tasks order by name")
    assert [t["name"] for t in tasks] == ["first", "standup"]


async def test_creates_on_the_loop_leave_checkpoints_to_a_thread(
    start_service: ServiceFactory, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creates written on the event loop never checkpoint the WAL themselves (it can take
    milliseconds); every ``CHECKPOINT_EVERY`` of them a passive checkpoint runs in a
    thread, so the WAL does not grow without bound between other writes."""
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL has no WAL file to checkpoint: creates run in a transaction")
    monkeypatch.setattr(inline, "CHECKPOINT_EVERY", 4)
    service = await start_service()
    [loop_engine] = [e for e in service.db.sync_engines if e is not service.db.sync_engine]
    with loop_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    checkpoints: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "wal_checkpoint" in statement:
            checkpoints.append(statement)

    event.listen(service.db.sync_engine, "before_cursor_execute", seen)
    for done in (1, 2):
        for i in range(4):
            task = {**DAILY, "name": f"t{done}-{i}"}
            await service.scheduler_tool.run("create_task", task, context=USER)

        async def checkpointed(count: int = done) -> bool:
            return len(checkpoints) == count

        await wait_for(checkpointed)
    assert checkpoints == ["PRAGMA wal_checkpoint(PASSIVE)"] * 2


async def test_a_create_under_a_huge_quota_counts_in_a_thread(
    start_service: ServiceFactory, database_url: str
) -> None:
    """The quota count reads up to the quota's number of index entries: above
    ``SHORT_QUOTA_BOUND`` that can take milliseconds, so the create leaves the loop."""
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL creates always run through the async driver")
    service = await start_service()
    [loop_engine] = [e for e in service.db.sync_engines if e is not service.db.sync_engine]
    on_loop: list[int] = []

    def seen(*_args: Any) -> None:
        on_loop.append(1)

    event.listen(loop_engine, "checkout", seen)
    service.settings.scheduler_tool.max_tasks_per_user = manager.SHORT_QUOTA_BOUND + 1
    await service.scheduler_tool.run("create_task", {**DAILY, "name": "huge"}, context=USER)
    assert on_loop == []
    service.settings.scheduler_tool.max_tasks_per_user = manager.SHORT_QUOTA_BOUND
    await service.scheduler_tool.run("create_task", {**DAILY, "name": "bounded"}, context=USER)
    assert on_loop == [1]
