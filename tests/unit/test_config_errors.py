"""Bad configuration stops start-up with one line naming the variable; secrets never show."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scheduler_service.config import (
    ConfigError,
    iana_zone_names,
    load_settings,
    normalize_database_url,
    unknown_variables,
    warn_unknown_variables,
)
from scheduler_service.logs import JsonFormatter
from scheduler_service.service import SchedulerService
from tests.conftest import make_settings


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    for name in list(os.environ):
        if name.upper().startswith(("SCHEDULER", "DATABASE_URL", "TOOLS")):
            monkeypatch.delenv(name)
    return tmp_path


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("SCHEDULER__LOG_LEVEL", "VERBOSE", "DEBUG, INFO, WARNING, ERROR, CRITICAL"),
        ("TOOLS", "weather", "JSON list"),
        ("SCHEDULER__LOG_FORMAT", "xml", "'text' or 'json'"),
        ("DATABASE_URL", "mysql://root:hunter2@db/app", "postgresql://"),
    ],
)
def test_bad_value_is_one_line_naming_the_variable(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, accepted: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message
    assert name in message and accepted in message
    assert "hunter2" not in message


def test_postgres_urls_map_to_asyncpg() -> None:
    for url in ("postgres://u:p@h/db", "postgresql://u:p@h/db", "postgresql+psycopg://u:p@h/db"):
        assert normalize_database_url(url) == "postgresql+asyncpg://u:p@h/db"
    assert normalize_database_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"


def test_log_level_is_case_insensitive(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEDULER__LOG_LEVEL", "debug")
    assert load_settings().scheduler.log_level == "DEBUG"


def test_unknown_scheduler_variables_are_named() -> None:
    env = {
        "SCHEDULER__MAX_CONCURENT_TASKS": "3",  # typo
        "SCHEDULER__CHECK_INTERVAL": "5",
        "SCHEDULER_TOOL__MAX_TASK_PER_USER": "1",  # typo
        "SCHEDULER_TOOL__ENABLED": "true",
        "UNRELATED": "x",
    }
    assert unknown_variables(env) == [
        "SCHEDULER_TOOL__MAX_TASK_PER_USER",
        "SCHEDULER__MAX_CONCURENT_TASKS",
    ]


async def test_service_warns_about_unknown_variables(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SCHEDULER__MAX_CONCURENT_TASKS", "3")
    with caplog.at_level(logging.WARNING, logger="scheduler_service"):
        async with SchedulerService(make_settings(db_path)):
            pass
    assert any(
        "SCHEDULER__MAX_CONCURENT_TASKS" in r.getMessage()
        and "MAX_CONCURRENT_TASKS" in r.getMessage()
        for r in caplog.records
    )


def test_json_log_lines() -> None:
    record = logging.LogRecord("scheduler_service.x", logging.INFO, "f", 1, "ran %s", ("t1",), None)
    record.task_id = "task_1"
    line = JsonFormatter().format(record)
    import json

    entry = json.loads(line)
    assert entry["message"] == "ran t1" and entry["level"] == "INFO"
    assert entry["task_id"] == "task_1"


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler_service", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=cwd,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        ({"SCHEDULER__LOG_LEVEL": "VERBOSE"}, ["run", "--run-for", "0"], "SCHEDULER__LOG_LEVEL"),
        ({"TOOLS": '["nowhere.mod:Tool"]'}, ["run", "--run-for", "0"], "TOOLS entry"),
        (
            {},
            ["tasks", "--database-url", "postgresql://op:hunter2@127.0.0.1:9/db"],
            "unavailable",
        ),
    ],
)
def test_cli_reports_one_line_without_traceback_or_password(
    tmp_path: Path, env: dict[str, str], args: list[str], expected: str
) -> None:
    done = _cli(*args, env=env, cwd=tmp_path)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert expected in lines[0]
    assert "Traceback" not in done.stderr and "hunter2" not in done.stderr + done.stdout


def test_limits_typos_and_near_misses_of_database_url_are_named() -> None:
    env = {
        "LIMITS__MAX_NAME_CHAR": "50",  # typo
        "LIMITS__RETENTION_DAYS": "7",
        "DATABSE_URL": "postgresql://u@h/db",  # typo, while DATABASE_URL is unset
        "TEST_DATABASE_URL": "sqlite:///t.db",  # another setting of the host: not ours
        "DATABASE_URL_RO": "sqlite:///r.db",
    }
    assert unknown_variables(env) == ["DATABSE_URL", "LIMITS__MAX_NAME_CHAR"]
    # With DATABASE_URL set, a look-alike is some other program's variable.
    assert unknown_variables({**env, "DATABASE_URL": "sqlite:///x.db"}) == ["LIMITS__MAX_NAME_CHAR"]


def test_warnings_say_what_was_meant(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("scheduler_service.test")
    env = {"DATABASE_ULR": "postgresql://u@h/db", "LIMITS__MAX_NAME_CHAR": "5"}
    with caplog.at_level(logging.WARNING, logger="scheduler_service"):
        warn_unknown_variables(log, env)
    messages = [r.getMessage() for r in caplog.records]
    assert any("DATABASE_ULR" in m and "did you mean DATABASE_URL?" in m for m in messages)
    assert any(
        "LIMITS__MAX_NAME_CHAR" in m and "did you mean LIMITS__MAX_NAME_CHARS?" in m
        for m in messages
    )


@pytest.mark.parametrize("zone", ["localtime", "Factory", "posixrules", "posix/Europe/Paris"])
def test_host_dependent_zones_are_refused(zone: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(default_timezone=zone)
    assert "DEFAULT_TIMEZONE" in str(info.value) and "Area/Location" in str(info.value)
    assert "Europe/Paris" in iana_zone_names() and zone not in iana_zone_names()


def test_cli_warns_about_a_mistyped_database_url_name(tmp_path: Path) -> None:
    done = _cli("tasks", env={"DATABSE_URL": "sqlite:///elsewhere.db"}, cwd=tmp_path)
    assert done.returncode == 2
    assert "DATABSE_URL" in done.stderr and "did you mean DATABASE_URL?" in done.stderr
    assert "Traceback" not in done.stderr
