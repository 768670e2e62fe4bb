"""The operator CLI against a real SQLite file: listings, actions, db, health, exit codes."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from scheduler_service.cli import commands as cli
from scheduler_service.cluster.health import LeaderHeartbeat, check_health
from scheduler_service.service import SchedulerService
from scheduler_service.storage.models import utcnow
from scheduler_service.threaded import ThreadedScheduler
from scheduler_service.tools import Tool, ToolContext
from tests.conftest import make_settings

REMINDER = {
    "name": "Water plants",
    "frequency": "daily",
    "scheduled_time": "09:00",
    "timezone": "Europe/Paris",
    "tool_name": "reminder_tool",
    "operation": "add_reminder",
    "parameters": {"title": "Water the plants", "date": "today"},
}


@pytest.fixture
def url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"  # the plain spelling is accepted too


@pytest.fixture(autouse=True)
def _keep_pytest_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI configures the root logger for its process; not inside pytest's."""
    monkeypatch.setattr(cli, "configure_logging", lambda *a, **k: None)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run_cli(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_db_upgrade_then_current(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, _ = run_cli(capsys, "db", "upgrade", "--database-url", url)
    assert code == 0 and "at head" in out
    current = run_json(capsys, "db", "current", "--database-url", url)
    assert current["at_head"] and current["revision"] == [current["head"]]


def test_tool_tasks_task_runs_notifications_and_actions(
    capsys: pytest.CaptureFixture[str], url: str, db_path: Path
) -> None:
    db = ("--database-url", url)
    created = run_json(
        capsys, "tool", "create_task", json.dumps(REMINDER), "--user", "u1",
        "--conversation", "c1", *db,
    )  # fmt: skip
    task_id = created["task"]["task_id"]
    run_json(capsys, "tool", "create_task", json.dumps({**REMINDER, "name": "Other"}),
             "--user", "u2", *db)  # fmt: skip

    assert {t["user_id"] for t in run_json(capsys, "tasks", *db)} == {"u1", "u2"}
    mine = run_json(capsys, "tasks", "--user", "u1", *db)
    assert [t["task_id"] for t in mine] == [task_id]
    code, out, _ = run_cli(capsys, "tasks", *db)
    assert code == 0 and "Water plants" in out and "SCHEDULE" in out

    task = run_json(capsys, "task", task_id, *db)
    assert len(task["next_runs"]) == 5 and task["next_runs"][0].endswith(("+01:00", "+02:00"))

    with ThreadedScheduler(make_settings(db_path), role="worker"):  # runs execute there
        code, out, _ = run_cli(capsys, "run-now", task_id, *db)
    assert code == 0 and "succeeded" in out
    runs = run_json(capsys, "runs", task_id, *db)
    assert [(r["kind"], r["status"]) for r in runs] == [("manual", "succeeded")]

    pending = run_json(capsys, "notifications", "--conversation", "c1", *db)
    assert [n["task_id"] for n in pending] == [task_id]
    assert run_json(capsys, "notifications", "--conversation", "c1", *db) == pending  # not marked

    assert run_json(capsys, "pause", task_id, *db)["status"] == "paused"
    assert run_json(capsys, "tasks", "--status", "paused", *db)[0]["task_id"] == task_id
    assert run_json(capsys, "resume", task_id, *db)["status"] == "scheduled"
    assert run_json(capsys, "cancel", task_id, *db)["status"] == "cancelled"


def test_failures_exit_non_zero_with_one_line(capsys: pytest.CaptureFixture[str], url: str) -> None:
    run_cli(capsys, "db", "upgrade", "--database-url", url)
    code, _, err = run_cli(capsys, "task", "task_missing", "--database-url", url)
    assert code == 1 and err.strip() == (
        "error: not_found: task_id: no task 'task_missing'; list them with `tasks`"
    )
    code, _, err = run_cli(
        capsys, "tool", "create_task", '{"name": "x"}', "--user", "u1", "--database-url", url
    )
    assert code == 1 and err.startswith("error: invalid_input:") and "frequency" in err
    code, _, err = run_cli(capsys, "tasks", "--database-url", "mysql://x@h/db")
    assert code == 2 and "DATABASE_URL" in err


def test_health_fails_without_a_leader(capsys: pytest.CaptureFixture[str], url: str) -> None:
    run_cli(capsys, "db", "upgrade", "--database-url", url)
    code, out, _ = run_cli(capsys, "health", "--database-url", url)
    assert code == 1 and "no leader has woken" in out and "UNHEALTHY" in out


def test_health_of_a_missing_database_creates_none(
    capsys: pytest.CaptureFixture[str], url: str, db_path: Path
) -> None:
    code, out, _ = run_cli(capsys, "health", "--database-url", url)
    assert code == 1 and "no database at" in out and not db_path.exists()


def test_health_fails_before_migration(capsys: pytest.CaptureFixture[str], url: str) -> None:
    sqlite3.connect(url.removeprefix("sqlite:///")).close()  # an empty database file
    report = run_cli(capsys, "health", "--json", "--database-url", url)
    assert report[0] == 1
    data = json.loads(report[1])
    assert data["reachable"] and not data["at_head"] and "db upgrade" in data["problems"][0]


async def test_health_follows_the_leaders_heartbeat(service: SchedulerService) -> None:
    interval = service.settings.scheduler.check_interval
    report = await asyncio.to_thread(check_health, service.settings.database_url, interval)
    assert report.ok, report.problems
    assert report.leader == service.leadership.worker

    async with service.db.write() as session:  # a leader that stopped waking up
        await session.execute(
            update(LeaderHeartbeat).values(beat_at=utcnow() - timedelta(seconds=interval * 3))
        )
    report = await asyncio.to_thread(check_health, service.settings.database_url, interval)
    assert not report.ok and "no leader has woken" in report.problems[0]


class WorkerOnlyTool(Tool):
    """A tool only the worker process has (the CLI never registers it)."""

    name = "worker_only_tool"
    description = "Says which process ran it."
    input_schema = {"type": "object", "properties": {}}

    async def run(
        self, operation: str, kwargs: dict[str, Any] | str | None, *, context: ToolContext
    ) -> dict[str, Any]:
        return {"ran": "worker"}


def test_run_now_goes_to_the_worker_that_has_the_tool(
    capsys: pytest.CaptureFixture[str], url: str, db_path: Path
) -> None:
    """`run-now` from a shell without the tool: the worker executes it with its tools,
    the CLI waits for the record, and no run names the CLI as its worker."""
    db = ("--database-url", url)
    with ThreadedScheduler(
        make_settings(db_path), tools=[WorkerOnlyTool()], role="worker"
    ) as worker:
        created = run_json(
            capsys, "tool", "create_task",
            json.dumps({"name": "Only there", "frequency": "daily", "scheduled_time": "09:00",
                        "tool_name": "worker_only_tool", "operation": "go"}),
            "--user", "u1", *db,
        )  # fmt: skip
        task_id = created["task"]["task_id"]
        result = run_json(capsys, "run-now", task_id, *db)
        worker_id = worker.service.runner.worker
    assert result["run"]["status"] == "succeeded" and result["run"]["result"] == {"ran": "worker"}
    runs = run_json(capsys, "runs", task_id, *db)
    assert [(r["kind"], r["status"]) for r in runs] == [("manual", "succeeded")]
    with sqlite3.connect(db_path) as con:
        workers = {row[0] for row in con.execute("select worker from task_scheduler_runs")}
    assert workers == {worker_id}


def test_run_now_without_a_worker_says_so(capsys: pytest.CaptureFixture[str], url: str) -> None:
    db = ("--database-url", url)
    created = run_json(capsys, "tool", "create_task", json.dumps(REMINDER), "--user", "u1", *db)
    code, _, err = run_cli(capsys, "run-now", created["task"]["task_id"], *db)
    assert code == 1 and "no worker is running" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "run-now", created["task"]["task_id"], *db)
    assert code == 1 and "already running" in err  # its run waits in the queue: fenced
    other = run_json(capsys, "tool", "create_task", json.dumps(REMINDER), "--user", "u1", *db)
    queued = run_json(capsys, "run-now", other["task"]["task_id"], "--no-wait", *db)
    assert queued["run"]["status"] == "queued" and queued["run"]["kind"] == "manual"


@pytest.mark.parametrize(
    "command",
    [
        ("tasks",),
        ("task", "task_x"),
        ("runs", "task_x"),
        ("notifications",),
        ("workers",),
        ("pause", "task_x"),
    ],
)
def test_read_only_commands_never_create_a_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: tuple[str, ...]
) -> None:
    missing = tmp_path / "typo" / "tasks.db"
    code, _out, err = run_cli(capsys, *command, "--database-url", f"sqlite:///{missing}")
    assert code == 2 and "no database at" in err and len(err.strip().splitlines()) == 1
    assert not missing.exists() and not missing.parent.exists()


def test_check_reports_and_repairs_a_missing_job(
    capsys: pytest.CaptureFixture[str], url: str, db_path: Path
) -> None:
    db = ("--database-url", url)
    created = run_json(capsys, "tool", "create_task", json.dumps(REMINDER), "--user", "u1", *db)
    assert run_json(capsys, "check", *db)["ok"]
    with sqlite3.connect(db_path) as con:
        con.execute("delete from task_scheduler_jobs")
    code, out, _ = run_cli(capsys, "check", *db)
    assert code == 1 and "job is missing" in out and created["task"]["task_id"] in out
    repaired = run_json(capsys, "check", "--repair", *db)
    assert repaired["ok"] and repaired["repaired"]["added"] == 1


# -- what reaches the terminal ------------------------------------------------------------
HOSTILE = "\x1b]0;owned\x07\x1b[2J\r\nu9  Fake row  scheduled\x9b31m\u202eevil\u2028end\x7f"


def _controls(text: str) -> list[str]:
    """Characters that could steer a terminal (the newlines between lines excepted)."""
    from scheduler_service.logs.escape import is_control

    return [c for c in text if c != "\n" and is_control(c)]


def test_stored_text_is_escaped_in_every_output(
    capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    """A task name, a run error and a notification text written by a user (or a model)
    with escape sequences, a forged row and bidi overrides: the table, the text and the
    JSON output show them escaped, on both backends."""
    from tests.conftest import database_execute

    db = ("--database-url", database_url)
    if database_url.startswith("sqlite"):
        run_cli(capsys, "db", "upgrade", *db)
    created = run_json(
        capsys, "tool", "create_task", json.dumps({**REMINDER, "name": HOSTILE}),
        "--user", "u1", "--conversation", "c1", *db,
    )  # fmt: skip
    task_id = created["task"]["task_id"]
    quoted = HOSTILE.replace("'", "''")
    database_execute(
        database_url,
        "INSERT INTO task_scheduler_notifications (id, task_id, user_id, conversation_id, "
        "task_name, status, priority, title, message, created_at) VALUES ('n1', "
        f"'{task_id}', 'u1', 'c1', '{quoted}', 'failed', 1, '{quoted}', '{quoted}', "
        "CURRENT_TIMESTAMP)",
    )
    database_execute(
        database_url,
        "INSERT INTO task_scheduler_runs (id, task_id, user_id, kind, fire_time, attempt, "
        f"status, queued_at, error) VALUES ('r1', '{task_id}', 'u1', 'manual', "
        f"CURRENT_TIMESTAMP, 1, 'failed', CURRENT_TIMESTAMP, '{quoted}')",
    )
    commands = [
        ("tasks",), ("task", task_id), ("runs", task_id), ("notifications",),
        ("tool", "get_tasks", "--user", "u1"), ("pause", task_id),
    ]  # fmt: skip
    for command in commands:
        for extra in ((), ("--json",)):
            code, out, err = run_cli(capsys, *command, *extra, *db)
            assert code == 0, err
            assert not _controls(out + err), (command, extra, out)
            assert "\\x1b" in out or "\\u001b" in out, (command, out)  # shown, escaped
            if extra:
                json.loads(out)  # still valid JSON
    code, out, _ = run_cli(capsys, "tasks", *db)
    assert len(out.strip().splitlines()) == 3  # heading, one row, the count: no forged row


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("runs", "task_x", "--limit", str(10**20)), "--limit"),
        (("runs", "task_x", "--limit", "0"), "use 1 to 1000"),
        (("runs", "task_x", "--limit", "many"), "not a whole number"),
        (("run", "--metrics-port", "99999"), "use 1 to 65535"),
        (("run", "--run-for", "nan"), "--run-for"),
        (("run", "--run-for", "-1"), "--run-for"),
        (("mcp", "--user", "", "--conversation", "c1"), "--user: must not be empty"),
        (("mcp", "--user", "u1", "--conversation", " "), "--conversation: must not be empty"),
        (("tool", "get_tasks", "--user", ""), "--user: must not be empty"),
        (("tool", "get_tasks", "--user", "u" * 300), "at most 200"),
        (("tool", "get_tasks", "--user", "u\x1b[2J"), "control characters"),
        (("tasks", "--status", "\x1b[2Jx"), "--status"),
        (("task", "t" * 201), "at most 200"),
        (("nonsense",), "invalid choice"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], url: str, argv: tuple[str, ...], expected: str
) -> None:
    code, out, err = run_cli(capsys, *argv, "--database-url", url)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and expected in err, err
    assert not _controls(err)


def test_metrics_port_in_use_is_reported_as_such(
    capsys: pytest.CaptureFixture[str], url: str, db_path: Path
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        code, _out, err = run_cli(
            capsys, "run", "--metrics-port", port, "--run-for", "0", "--database-url", url
        )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"127.0.0.1:{port}" in err and "already in use" in err and "database" not in err
    assert not db_path.exists()  # refused before the service opened anything


def test_metrics_listen_on_loopback_unless_told() -> None:
    args = cli.build_parser().parse_args(["run", "--metrics-port", "9100"])
    assert args.metrics_host == "127.0.0.1"
    args = cli.build_parser().parse_args(["--metrics-host", "0.0.0.0"])
    assert args.metrics_host == "0.0.0.0"


@pytest.mark.parametrize("zone", ["localtime", "Factory"])
def test_host_dependent_zones_are_invalid_input(
    capsys: pytest.CaptureFixture[str], url: str, zone: str
) -> None:
    task = json.dumps({**REMINDER, "timezone": zone})
    code, _out, err = run_cli(capsys, "tool", "create_task", task, "--user", "u1",
                              "--database-url", url)  # fmt: skip
    assert code == 1 and "invalid_input" in err and "timezone" in err
    assert "host-dependent" in err and "Area/Location" in err


def test_task_shows_the_owners_daily_token_budget_when_one_is_set(
    capsys: pytest.CaptureFixture[str], url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = ("--database-url", url)
    created = run_json(capsys, "tool", "create_task", json.dumps(REMINDER), "--user", "u1", *db)
    task_id = created["task"]["task_id"]
    code, out, _ = run_cli(capsys, "task", task_id, *db)
    assert code == 0 and "tokens_today" not in out  # no budget: nothing to show
    monkeypatch.setenv("LIMITS__DAILY_TOKEN_BUDGET_PER_USER", "5000")
    code, out, _ = run_cli(capsys, "task", task_id, *db)
    assert code == 0 and "tokens_today      0 of 5000 (not spent; resets 20" in out
    budget = run_json(capsys, "task", task_id, *db)["daily_token_budget"]
    assert (budget["used_today"], budget["daily_limit"], budget["zone"]) == (
        0,
        5000,
        "Europe/Paris",
    )
