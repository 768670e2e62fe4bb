"""create_task writes the task and its job in one transaction, on both backends: a
created task always has its job (with the task's next run), and a create whose job
cannot be stored leaves nothing behind."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scheduler_service.storage import names
from tests.conftest import ServiceFactory, database_execute, database_rows
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
