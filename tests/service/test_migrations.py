"""Migrations: prefixed tables, own version table, upgrading databases of earlier versions,
and sharing a database with a host that has its own `reminders` and `alembic_version`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text

from scheduler_service import SchedulerService
from scheduler_service.storage.db import migrate_to_head, sync_url
from scheduler_service.storage.models import TaskRun
from scheduler_service.tools import ToolContext
from tests.conftest import make_settings

LEGACY_DUMP = Path(__file__).parent.parent / "fixtures" / "legacy_0002.sql"
OURS = {
    "task_scheduler_tasks",
    "task_scheduler_runs",
    "task_scheduler_notifications",
    "task_scheduler_reminders",
    "task_scheduler_jobs",
    "task_scheduler_heartbeat",
    "task_scheduler_model_gate",
    "task_scheduler_model_leases",
    "task_scheduler_budget_notices",
    "task_scheduler_workers",
    "task_scheduler_alembic_version",
}


def sqlite_names(path: Path, kind: str) -> set[str]:
    with sqlite3.connect(path) as con:
        rows = con.execute("select name from sqlite_master where type = ?", (kind,))
        return {row[0] for row in rows if not row[0].startswith("sqlite_")}


async def test_database_of_an_earlier_version_is_renamed_and_adopted(tmp_path: Path) -> None:
    """tests/fixtures/legacy_0002.sql is a database written by the previous release
    (unprefixed tables, revision 0002 in alembic_version, one task with one run)."""
    db = tmp_path / "legacy.db"
    with sqlite3.connect(db) as con:
        con.executescript(LEGACY_DUMP.read_text())
    assert "scheduled_tasks" in sqlite_names(db, "table")

    settings = make_settings(db)
    migrate_to_head(sync_url(settings.database_url))
    assert sqlite_names(db, "table") == OURS  # alembic_version held only ours: dropped
    assert all(name.startswith("ix_task_scheduler_") for name in sqlite_names(db, "index"))

    async with SchedulerService(settings) as service:
        ctx = ToolContext(user_id="legacy-user", conversation_id="legacy-conv")
        tasks = (await service.scheduler_tool.run("get_tasks", {}, context=ctx))["tasks"]
        assert [t["name"] for t in tasks] == ["Legacy daily"]
        got = await service.scheduler_tool.run(
            "get_task", {"task_id": tasks[0]["task_id"]}, context=ctx
        )
        task = got["task"]
        async with service.db.read() as session:  # the old run survived; the days
            statuses = (  # missed since the fixture was written may be recorded too
                await session.scalars(
                    select(TaskRun.status).where(TaskRun.task_id == task["task_id"])
                )
            ).all()
        assert statuses.count("succeeded") == 1 and set(statuses) <= {"succeeded", "missed"}
        assert service.scheduler.get_job(tasks[0]["task_id"]) is not None  # the job survived
        reminders = await service.tools.call("reminder_tool", "get_reminders", {}, context=ctx)
        assert [r["title"] for r in reminders["reminders"]] == ["Old reminder"]


def _host_schema(url: str) -> None:
    """A host app's own tables, as its own alembic history made them."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE reminders (id INTEGER PRIMARY KEY, body TEXT)"))
        conn.execute(text("CREATE INDEX ix_reminders_user_id ON reminders (body)"))
        conn.execute(text("INSERT INTO reminders (id, body) VALUES (1, 'host row')"))
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        conn.execute(text("INSERT INTO alembic_version VALUES ('host_rev_42')"))
    engine.dispose()


def _host_intact(url: str) -> None:
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == (
            "host_rev_42"
        )
        assert conn.execute(text("SELECT body FROM reminders")).scalar() == "host row"
    engine.dispose()


async def _service_works(settings: object) -> None:
    async with SchedulerService(settings) as service:  # type: ignore[arg-type]
        ctx = ToolContext(user_id="u1", conversation_id="c1")
        out = await service.tools.call(
            "reminder_tool", "add_reminder", {"title": "ours", "date": "today"}, context=ctx
        )
        assert out["reminder"]["title"] == "ours"


async def test_shares_a_sqlite_database_with_a_host(tmp_path: Path) -> None:
    db = tmp_path / "host.db"
    settings = make_settings(db)
    _host_schema(sync_url(settings.database_url))
    await _service_works(settings)
    _host_intact(sync_url(settings.database_url))
    assert sqlite_names(db, "table") >= OURS


async def test_shares_a_postgres_database_with_a_host(pg_url: str) -> None:
    settings = make_settings(Path("unused.db"))
    settings.database_url = pg_url.replace("postgresql+asyncpg://", "postgres://", 1)
    settings = type(settings).model_validate(settings.model_dump())  # re-validate the URL
    assert settings.database_url.startswith("postgresql+asyncpg://")
    _host_schema(sync_url(settings.database_url))
    await _service_works(settings)
    _host_intact(sync_url(settings.database_url))


def test_unknown_future_revision_is_refused(tmp_path: Path) -> None:
    from scheduler_service.storage.db import SchemaError

    url = sync_url(make_settings(tmp_path / "f.db").database_url)
    migrate_to_head(url)
    with sqlite3.connect(tmp_path / "f.db") as con:
        con.execute("update task_scheduler_alembic_version set version_num = '9999'")
    with pytest.raises(SchemaError, match="9999"):
        migrate_to_head(url)
