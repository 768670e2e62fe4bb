"""Database URLs: one parser, one redacted form in every message, TLS options from the URL
reaching both drivers, and malformed URLs as one line (exit 2) in every command."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from scheduler_service.cli import commands as cli
from scheduler_service.config import ConfigError, load_settings
from scheduler_service.service import SchedulerService
from scheduler_service.storage.db import Database, create_sync_engine
from scheduler_service.storage.urls import DatabaseUrlError, parse_database_url, redact
from scheduler_service.tools import ToolContext
from tests.conftest import database_execute, make_settings

SECRET = "hunter2"
MALFORMED = f"postgresql://op:{SECRET}@127.0.0.1:5432x/prod"


@pytest.fixture(autouse=True)
def _keep_pytest_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "configure_logging", lambda *a, **k: None)


def with_password(url: str) -> str:
    """The same database with a password in the URL (trust auth ignores it)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return url
    return parsed.set(password=SECRET).render_as_string(hide_password=False)


def with_option(url: str, option: str) -> str:
    return url + ("&" if "?" in url else "?") + option


# -- parsing ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (MALFORMED, "the port must be a number from 1 to 65535"),
        (f"postgresql://op:{SECRET}@h:99999/db", "port 99999 is not from 1 to 65535"),
        (f"postgresql://op:{SECRET}@h/db?sslmod=require", "accept sslmode, sslrootcert"),
        (f"postgresql://op:{SECRET}@h/db?sslmode=always", "disable, allow, prefer, require"),
        (f"postgresql://op:{SECRET}@h/db?sslmode=require&ssl=disable", "given twice"),
        (f"postgresql://op:{SECRET}@h/db?sslrootcert=/no/such/ca.pem", "no file at"),
        ("sqlite:///tasks.db?timeout=5", "SQLite URLs take no options"),
        (f"mysql://op:{SECRET}@h/db", "use sqlite:///path.db"),
        (f"op:{SECRET}@h/db", "not a database URL"),
    ],
)
def test_bad_urls_are_one_line_naming_what_is_accepted(url: str, expected: str) -> None:
    with pytest.raises(DatabaseUrlError) as info:
        parse_database_url(url)
    message = str(info.value)
    assert expected in message and "\n" not in message and SECRET not in message
    with pytest.raises(ConfigError) as config_info:
        load_settings(database_url=url)
    assert "DATABASE_URL" in str(config_info.value) and SECRET not in str(config_info.value)


def test_tls_options_keep_their_libpq_names_for_both_drivers(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked until a connection")
    parsed = parse_database_url(
        f"postgres://op:{SECRET}@db:6432/app?ssl=verify-full&sslrootcert={ca}"
    )
    assert parsed.async_url.startswith("postgresql+asyncpg://")
    assert parsed.sync_url.startswith("postgresql+psycopg://")
    for url in (parsed.async_url, parsed.sync_url):
        assert dict(make_url(url).query) == {"sslmode": "verify-full", "sslrootcert": str(ca)}
    assert SECRET not in parsed.redacted and "op:***@db:6432/app" in parsed.redacted


def test_redaction_without_parsing_and_scrubbing_encoded_passwords() -> None:
    assert redact("postgresql://op:pa/ss@host:54x/db") == "postgresql://op:***@host:54x/db"
    parsed = parse_database_url("postgresql://op:p%40ss%2Fw@host/db")
    assert parsed.scrub("auth failed for 'p@ss/w' (p%40ss%2Fw)") == "auth failed for '***' (***)"


# -- both backends --------------------------------------------------------------------------
async def test_a_service_on_a_url_with_tls_options(database_url: str) -> None:
    """PostgreSQL: sslmode in the URL reaches asyncpg (service engine, leadership, wake-up
    listener) and psycopg (migrations, job store): the whole service runs a task on it.
    SQLite: the same option is refused before anything opens."""
    url = with_option(database_url, "sslmode=disable")
    if make_url(database_url).get_backend_name() == "sqlite":
        with pytest.raises(ConfigError, match="SQLite URLs take no options"):
            load_settings(database_url=url)
        return
    settings = make_settings(load_settings(database_url=url).database_url)
    context = ToolContext(user_id="u1", conversation_id="c1")
    async with SchedulerService(settings) as service:
        created = await service.scheduler_tool.run(
            "create_task",
            {
                "name": "TLS check",
                "frequency": "daily",
                "scheduled_time": "09:00",
                "tool_name": "reminder_tool",
                "operation": "add_reminder",
                "parameters": {"title": "t", "date": "today"},
            },
            context=context,
        )
        ran = await service.scheduler_tool.run(
            "execute_task_now", {"task_id": created["task"]["task_id"]}, context=context
        )
        assert ran["run"]["status"] == "succeeded"
        assert service.is_leader  # the leadership engine (asyncpg) connected with it


async def test_sslmode_require_reaches_both_drivers(database_url: str) -> None:
    """The test server has no TLS: with sslmode=require both drivers must refuse to
    connect in clear, which shows the option reached each of them."""
    if make_url(database_url).get_backend_name() == "sqlite":
        with pytest.raises(ConfigError, match="SQLite URLs take no options"):
            load_settings(database_url=with_option(database_url, "sslmode=require"))
        return
    settings = load_settings(
        database_url=with_option(with_password(database_url), "sslmode=require")
    )
    db = Database(settings.database_url)
    try:
        with pytest.raises(Exception) as async_info:  # asyncpg
            async with db.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        assert "SSL" in str(async_info.value)
        with pytest.raises(Exception) as sync_info:  # psycopg
            await asyncio.to_thread(_connect_sync, settings.database.sync_url)
        assert "SSL" in str(sync_info.value)
    finally:
        await db.dispose()
    prefer = load_settings(database_url=with_option(database_url, "sslmode=prefer"))
    db = Database(prefer.database_url)  # prefer: falls back to clear text, as libpq does
    try:
        async with db.engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
        await asyncio.to_thread(_connect_sync, prefer.database.sync_url)
    finally:
        await db.dispose()


def _connect_sync(url: str) -> None:
    engine = create_sync_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def test_unreachable_over_tls_is_one_line_without_password(
    capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    if make_url(database_url).get_backend_name() == "sqlite":
        code, _out, err = run_cli(
            capsys, "tasks", "--database-url", with_option(database_url, "sslmode=require")
        )
        assert code == 2 and "SQLite URLs take no options" in err
        return
    url = with_option(with_password(database_url), "sslmode=require")
    for command in (["tasks"], ["health"], ["db", "current"], ["workers"]):
        code, out, err = run_cli(capsys, *command, "--database-url", url)
        shown = out + err
        assert code == 1, shown
        assert "SSL" in shown and SECRET not in shown and "op:" not in shown
        assert "Traceback" not in shown


@pytest.mark.parametrize("command", [["tasks"], ["health"], ["db", "current"]])
def test_a_database_newer_than_the_code_is_not_told_to_upgrade_it(
    capsys: pytest.CaptureFixture[str], database_url: str, command: list[str]
) -> None:
    run_cli(capsys, "db", "upgrade", "--database-url", database_url)
    database_execute(database_url, "UPDATE task_scheduler_alembic_version SET version_num = '9999'")
    code, out, err = run_cli(capsys, *command, "--json", "--database-url", database_url)
    shown = out + err
    if command == ["tasks"]:  # read-only commands refuse it (storage.db.check_at_head)
        assert code == 2 and "9999" in err
        return
    data = json.loads(out)
    assert "9999" in json.dumps(data)
    assert "newer version" in shown and "db upgrade" not in shown
    if command == ["db", "current"]:
        assert data["newer_than_installed"] and not data["at_head"]
    else:
        assert code == 1


# -- every command, as a real process -------------------------------------------------------
@pytest.mark.parametrize(
    "command", [["tasks"], ["health"], ["db", "upgrade"], ["run", "--run-for", "0"]]
)
def test_malformed_url_is_one_line_exit_2_in_every_command(
    tmp_path: Path, command: list[str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scheduler_service", *command, "--database-url", MALFORMED],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "port must be a number" in lines[0], done.stderr
    assert SECRET not in done.stderr + done.stdout and "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir())  # nothing created


# -- against a server that speaks TLS (opt-in) -------------------------------------------
TLS_URL = os.environ.get("PG_TLS_TEST_URL")  # e.g. postgresql://postgres@localhost:55432/postgres
TLS_CA = os.environ.get("PG_TLS_TEST_CA")  # the CA that signed that server's certificate


@pytest.fixture
def other_ca(tmp_path: Path) -> Path:
    """A CA certificate that signed nothing the server has."""
    other = tmp_path / "other-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=other", "-keyout", str(tmp_path / "k"), "-out", str(other)],
        check=True, capture_output=True,
    )  # fmt: skip
    return other


@pytest.mark.skipif(
    not (TLS_URL and TLS_CA), reason="set PG_TLS_TEST_URL and PG_TLS_TEST_CA to a TLS server"
)
async def test_verify_full_over_tls_for_every_connection(other_ca: Path) -> None:
    """With sslmode=verify-full, every connection the service opens (its engine, the
    scheduling lock, the wake-up listener, the job store) is encrypted; another CA is
    refused by both drivers."""
    assert TLS_URL and TLS_CA
    url = with_option(TLS_URL, f"sslmode=verify-full&sslrootcert={TLS_CA}")
    settings = make_settings(load_settings(database_url=url).database_url)
    async with SchedulerService(settings) as service:
        assert service.is_leader
        async with service.db.read() as session:
            rows = (
                await session.execute(
                    text(
                        "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
                        "WHERE a.datname = current_database() AND a.backend_type = 'client backend'"
                    )
                )
            ).all()
    assert len(rows) >= 3 and all(row.ssl for row in rows), rows
    wrong = load_settings(
        database_url=with_option(TLS_URL, f"sslmode=verify-full&sslrootcert={other_ca}")
    )
    db = Database(wrong.database_url)
    try:
        with pytest.raises(Exception, match="certificate verify failed"):
            async with db.engine.connect():
                pass
        with pytest.raises(Exception, match="certificate verify failed"):
            await asyncio.to_thread(_connect_sync, wrong.database.sync_url)
    finally:
        await db.dispose()
