"""The service end to end on a real SQLite file, with APScheduler really firing jobs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select

from config import ConfigError, Settings, load_settings
from scheduler_service import SchedulerService, lifespan
from scheduler_service.storage.db import SchemaError, migrate_to_head, sync_url
from scheduler_service.storage.models import TaskNotification, TaskRun
from tests.conftest import RecordingTool, ServiceFactory, make_settings, next_notification
from tools import Tool, ToolContext

ROOT = Path(__file__).resolve().parents[2]


async def runs_of(service: SchedulerService, task_id: str) -> list[TaskRun]:
    async with service.db.read() as session:
        return list(
            (await session.scalars(select(TaskRun).where(TaskRun.task_id == task_id))).all()
        )


async def test_once_task_two_seconds_ahead_runs_once(
    service: SchedulerService, ctx: ToolContext
) -> None:
    """The example reminder, as a `once` task really fired by APScheduler."""
    due = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0) + timedelta(seconds=1)
    out = await service.scheduler_tool.run(
        "create_task",
        {
            "name": "Inventory reminder",
            "frequency": "once",
            "scheduled_time": due.isoformat(),
            "tool_name": "reminder_tool",
            "operation": "add_reminder",
            "parameters": {"title": "Check inventory levels", "date": "today"},
        },
        context=ctx,
    )
    task_id = out["task"]["task_id"]
    assert datetime.fromisoformat(out["task"]["next_run_time"]) == due

    notification = await next_notification(service)
    assert notification["task_id"] == task_id and notification["status"] == "succeeded"
    assert notification["conversation_id"] == "c1"
    assert "Check inventory levels" in notification["message"]

    runs = await runs_of(service, task_id)
    assert len(runs) == 1
    run = runs[0]
    assert run.status == "succeeded" and run.kind == "scheduled"
    assert run.fire_time == due, "the run knows its real scheduled fire time"
    assert run.started_at is not None and run.started_at >= due
    # Lateness is measured in bench/ (docs/performance.md); here only a sanity bound.
    assert run.started_at - due < timedelta(seconds=2)

    reminders = await service.tools.call("reminder_tool", "get_reminders", {}, context=ctx)
    assert [r["title"] for r in reminders["reminders"]] == ["Check inventory levels"]
    assert reminders["reminders"][0]["source_task_id"] == task_id
    task = (await service.scheduler_tool.run("get_task", {"task_id": task_id}, context=ctx))["task"]
    assert task["status"] == "completed" and task["next_run_time"] is None
    assert task["run_count"] == 1 and task["last_status"] == "succeeded"
    assert not await service.jobs.exists(task_id)
    assert len(await service.get_notifications("c1")) == 1


async def test_restart_keeps_tasks_schedules_and_history(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    first = await start_service()
    tool = first.scheduler_tool
    daily = await tool.run(
        "create_task",
        {
            "name": "daily",
            "frequency": "daily",
            "scheduled_time": "09:00",
            "timezone": "Europe/Paris",
            "tool_name": "reminder_tool",
            "operation": "add_reminder",
            "parameters": {"title": "t"},
        },
        context=ctx,
    )
    task_id = daily["task"]["task_id"]
    await tool.run("execute_task_now", {"task_id": task_id}, context=ctx)
    before = (await tool.run("get_task", {"task_id": task_id}, context=ctx))["task"]
    await first.stop()

    second = await start_service()
    after = (await second.scheduler_tool.run("get_task", {"task_id": task_id}, context=ctx))["task"]
    assert after == before
    assert await second.jobs.next_run_time(task_id) == datetime.fromisoformat(
        before["next_run_time"]
    )
    assert len(after["recent_runs"]) == 1
    assert [n["task_id"] for n in await second.get_notifications("c1")] == [task_id]


async def test_notifications_most_urgent_first_then_oldest(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    seen: list[dict[str, Any]] = []

    async def callback(notification: dict[str, Any]) -> None:
        seen.append(notification)

    service = await start_service(tools=[RecordingTool()])
    service.add_notification_callback(callback)
    tool = service.scheduler_tool
    ids = {}
    for name, operation in (("ok-1", "record"), ("bad", "fail"), ("ok-2", "record")):
        created = await tool.run(
            "create_task",
            {
                "name": name,
                "frequency": "daily",
                "scheduled_time": "09:00",
                "tool_name": "recording_tool",
                "operation": operation,
                "parameters": {},
            },
            context=ctx,
        )
        ids[name] = created["task"]["task_id"]
        await tool.run("execute_task_now", {"task_id": ids[name]}, context=ctx)
    pending = await service.get_notifications("c1")
    assert [n["task_name"] for n in pending] == ["bad", "ok-1", "ok-2"]
    assert [n["status"] for n in pending] == ["failed", "succeeded", "succeeded"]
    assert [n["id"] for n in seen] == [pending[1]["id"], pending[0]["id"], pending[2]["id"]]
    assert await service.get_notifications("other-conversation") == []
    assert await service.mark_notifications_displayed([pending[0]["id"]]) == 1
    assert [n["task_name"] for n in await service.get_notifications("c1")] == ["ok-1", "ok-2"]
    async with service.db.read() as session:
        row = await session.get(TaskNotification, pending[0]["id"])
        assert row is not None and row.displayed_at is not None


class SyncTool(Tool):
    name = "sync_tool"
    description = "A plain-def tool (tests only)."
    input_schema = {"type": "object", "properties": {"operation": {"enum": ["where"]}}}

    def run(self, operation: str, kwargs: Any, *, context: ToolContext) -> dict[str, Any]:  # type: ignore[override]
        return {"thread": threading.get_ident(), "user": context.user_id}


async def test_sync_tool_runs_in_a_thread_with_owner_context(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    service = await start_service(tools=[SyncTool()])
    created = await service.scheduler_tool.run(
        "create_task",
        {"name": "sync", "frequency": "hourly", "tool_name": "sync_tool", "operation": "where"},
        context=ctx,
    )
    out = await service.scheduler_tool.run(
        "execute_task_now", {"task_id": created["task"]["task_id"]}, context=ctx
    )
    result = out["run"]["result"]
    assert result["user"] == "u1"
    assert result["thread"] != threading.get_ident(), "sync tools never run on the loop thread"


async def test_direct_run_gets_owner_context(
    start_service: ServiceFactory, ctx: ToolContext
) -> None:
    tool = RecordingTool()
    service = await start_service(tools=[tool])
    created = await service.scheduler_tool.run(
        "create_task",
        {
            "name": "ctx",
            "frequency": "daily",
            "scheduled_time": "09:00",
            "timezone": "Asia/Tokyo",
            "tool_name": "recording_tool",
            "operation": "record",
            "parameters": {"a": 1},
        },
        context=ctx,
    )
    await service.scheduler_tool.run(
        "execute_task_now", {"task_id": created["task"]["task_id"]}, context=ctx
    )
    operation, kwargs, context = tool.calls[0]
    assert (operation, kwargs) == ("record", {"a": 1})
    assert context.user_id == "u1" and context.conversation_id == "c1"
    assert context.scheduled_run and context.task_id == created["task"]["task_id"]
    assert context.timezone == "Asia/Tokyo"


# -- reminder_tool -----------------------------------------------------------------------
async def test_reminder_tool_operations(service: SchedulerService, ctx: ToolContext) -> None:
    call = service.tools.call
    today = datetime.now(UTC).date()
    added = await call(
        "reminder_tool", "add_reminder", {"title": "a", "date": "tomorrow"}, context=ctx
    )
    assert added["reminder"]["date"] == (today + timedelta(days=1)).isoformat()
    friday = await call(
        "reminder_tool", "add_reminder", {"title": "b", "date": "Friday"}, context=ctx
    )
    day = datetime.fromisoformat(friday["reminder"]["date"]).date()
    assert day.weekday() == 4 and 1 <= (day - today).days <= 7
    exact = await call(
        "reminder_tool", "add_reminder", {"title": "c", "date": "2030-01-02T18:00"}, context=ctx
    )
    assert exact["reminder"]["due_at"] == "2030-01-02T18:00:00+00:00"
    await call("reminder_tool", "add_reminder", {"title": "d", "date": "2030-01-03"}, context=ctx)

    listed = await call("reminder_tool", "get_reminders", {}, context=ctx)
    assert [r["title"] for r in listed["reminders"]][-2:] == ["c", "d"]
    on_day = await call("reminder_tool", "get_reminders", {"date": "2030-01-03"}, context=ctx)
    assert [r["title"] for r in on_day["reminders"]] == ["d"]

    rid = added["reminder"]["reminder_id"]
    done = await call("reminder_tool", "complete_reminder", {"reminder_id": rid}, context=ctx)
    assert done["reminder"]["completed"] is True
    pending = await call("reminder_tool", "get_reminders", {"status": "pending"}, context=ctx)
    assert rid not in [r["reminder_id"] for r in pending["reminders"]]
    completed = await call("reminder_tool", "get_reminders", {"status": "completed"}, context=ctx)
    assert [r["reminder_id"] for r in completed["reminders"]] == [rid]
    await call("reminder_tool", "delete_reminder", {"reminder_id": rid}, context=ctx)
    everything = await call("reminder_tool", "get_reminders", {"status": "all"}, context=ctx)
    assert rid not in [r["reminder_id"] for r in everything["reminders"]]


@pytest.mark.parametrize(
    ("operation", "kwargs", "code", "needle"),
    [
        ("add_reminder", {"date": "today"}, "invalid_input", "title"),
        ("add_reminder", {"title": "x", "date": "someday"}, "invalid_input", "tomorrow"),
        ("get_reminders", {"status": "old"}, "invalid_input", "status"),
        ("complete_reminder", {"reminder_id": "rem_nope"}, "not_found", "reminder_id"),
        ("snooze", {}, "invalid_input", "add_reminder"),
    ],
)
async def test_reminder_tool_errors(
    service: SchedulerService,
    ctx: ToolContext,
    operation: str,
    kwargs: dict[str, Any],
    code: str,
    needle: str,
) -> None:
    from tools import ToolError

    with pytest.raises(ToolError) as info:
        await service.tools.call("reminder_tool", operation, kwargs, context=ctx)
    assert info.value.code == code and needle in info.value.message


async def test_reminders_are_private(service: SchedulerService, ctx: ToolContext) -> None:
    added = await service.tools.call(
        "reminder_tool", "add_reminder", {"title": "mine"}, context=ctx
    )
    other = ToolContext(user_id="u2")
    listed = await service.tools.call("reminder_tool", "get_reminders", {}, context=other)
    assert listed["count"] == 0
    from tools import ToolError

    with pytest.raises(ToolError):
        await service.tools.call(
            "reminder_tool",
            "delete_reminder",
            {"reminder_id": added["reminder"]["reminder_id"]},
            context=other,
        )


# -- configuration, schema, running it ---------------------------------------------------
def test_settings_defaults_match_the_design_document() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    s = settings.scheduler
    assert (s.enabled, s.check_interval, s.log_level) == (True, 60, "INFO")
    assert (s.max_concurrent_tasks, s.task_timeout) == (5, 300)
    assert s.orchestration_model == "claude-haiku-5-5"
    assert s.default_system_prompt.startswith("You are a task automation assistant")
    assert settings.scheduler_tool.enabled and settings.scheduler_tool.max_tasks_per_user == 20
    assert settings.database_url == "sqlite+aiosqlite:///tasks.db"
    assert settings.default_timezone == "UTC" and settings.tools == []


def test_settings_from_environment_and_dotenv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "SCHEDULER_TOOL__MAX_TASKS_PER_USER=50\nDEFAULT_TIMEZONE=Asia/Tokyo\n"
    )
    monkeypatch.setenv("SCHEDULER__MAX_CONCURRENT_TASKS", "10")
    monkeypatch.setenv("TOOLS", '["tests.service.test_service:SyncTool"]')
    settings = load_settings()
    assert settings.scheduler.max_concurrent_tasks == 10
    assert settings.scheduler_tool.max_tasks_per_user == 50
    assert settings.default_timezone == "Asia/Tokyo"
    assert settings.tools == ["tests.service.test_service:SyncTool"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SCHEDULER__MAX_CONCURRENT_TASKS", "lots"),
        ("SCHEDULER__TASK_TIMEOUT", "0"),
        ("DEFAULT_TIMEZONE", "Mars/Base"),
        ("DATABASE_URL", "mysql://x"),
    ],
)
def test_invalid_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert name in str(info.value)


async def test_extra_tools_from_settings_are_registered(db_path: Path) -> None:
    settings = make_settings(db_path)
    settings.tools = ["tests.service.test_service:SyncTool"]
    async with SchedulerService(settings) as service:
        assert "sync_tool" in service.tools.names()
        assert {"reminder_tool", "scheduler_tool"} <= set(service.tools.names())


def test_migrations_run_with_alembic_and_refuse_unknown_revisions(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    import sqlite3

    con = sqlite3.connect(tmp_path / "m.db")
    tables = {row[0] for row in con.execute("select name from sqlite_master where type='table'")}
    assert {
        "task_scheduler_tasks",
        "task_scheduler_runs",
        "task_scheduler_notifications",
        "task_scheduler_reminders",
        "task_scheduler_jobs",
        "task_scheduler_heartbeat",
        "task_scheduler_workers",
        "task_scheduler_model_gate",
        "task_scheduler_model_leases",
        "task_scheduler_budget_notices",
        "task_scheduler_alembic_version",
    } == tables
    con.execute("update task_scheduler_alembic_version set version_num='9999_future'")
    con.commit()
    con.close()
    with pytest.raises(SchemaError, match="9999_future"):
        migrate_to_head(sync_url(url))


async def test_lifespan_starts_and_stops_the_service(db_path: Path) -> None:
    app = SimpleNamespace(state=SimpleNamespace())
    async with lifespan(app, make_settings(db_path)) as state:
        service = state["scheduler"]
        assert app.state.scheduler is service and service.started
        assert service.scheduler.running
    assert not service.started and not service.scheduler.running


def test_cli_demo_does_real_work(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"}
    env.pop("ANTHROPIC_API_KEY", None)
    done = subprocess.run(
        [sys.executable, "-m", "scheduler_service", "--demo", "--run-for", "6"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "Daily Inventory Check' succeeded" in out
    assert "Stretch break' succeeded" in out, "the once task fired within the run"
    assert '"Check inventory levels", "Stand up and stretch"' in out


async def fire_next(service: SchedulerService, task_id: str) -> dict[str, Any]:
    """Fire the task's next scheduled time through the job function's code path."""
    task = (await service.scheduler_tool.run("get_task", {"task_id": task_id}, context=CTX))["task"]
    await service.runner.on_fire(task_id, [datetime.fromisoformat(task["next_run_time"])])
    return await next_notification(service)


CTX = ToolContext(user_id="u1", conversation_id="c1")


async def test_max_runs_completes_the_task(service: SchedulerService) -> None:
    created = await service.scheduler_tool.run(
        "create_task",
        {
            "name": "twice",
            "frequency": "daily",
            "scheduled_time": "09:00",
            "max_runs": 2,
            "tool_name": "reminder_tool",
            "operation": "add_reminder",
            "parameters": {"title": "x"},
        },
        context=CTX,
    )
    task_id = created["task"]["task_id"]
    assert "at most 2 runs" in created["task"]["schedule"]
    assert (await fire_next(service, task_id))["status"] == "succeeded"
    last = await fire_next(service, task_id)
    assert "run 2 of 2" in last["message"]
    task = (await service.scheduler_tool.run("get_task", {"task_id": task_id}, context=CTX))["task"]
    assert task["status"] == "completed" and task["next_run_time"] is None
    assert task["run_count"] == 2
    assert not await service.jobs.exists(task_id)


async def test_end_time_completes_the_task(service: SchedulerService) -> None:
    end = (datetime.now(UTC) + timedelta(days=1, hours=1)).isoformat()
    created = await service.scheduler_tool.run(
        "create_task",
        {
            "name": "until tomorrow",
            "frequency": "daily",
            "scheduled_time": (datetime.now(UTC) + timedelta(hours=1)).strftime("%H:%M"),
            "end_time": end,
            "tool_name": "reminder_tool",
            "operation": "add_reminder",
            "parameters": {"title": "x"},
        },
        context=CTX,
    )
    task_id = created["task"]["task_id"]
    await fire_next(service, task_id)
    await fire_next(service, task_id)
    task = (await service.scheduler_tool.run("get_task", {"task_id": task_id}, context=CTX))["task"]
    assert task["status"] == "completed" and task["next_run_time"] is None
    assert task["run_count"] == 2
    assert not await service.jobs.exists(task_id)


def test_cli_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    import signal

    env = {**os.environ, "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'term.db'}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler_service"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until it is serving
        if "scheduler running" in line:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=30)  # bound: shutdown_grace (10 s) and then some
    assert proc.returncode == 0, rest
    assert "scheduler service stopped" in rest
