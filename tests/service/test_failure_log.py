"""FailureLog: a component failing every attempt logs one line when it starts failing and
one when it recovers (with how long), a traceback only for the unexpected.

The outage test drives a real retry loop against a real database made unavailable: on
PostgreSQL the server is cut off by a TCP proxy; on SQLite another connection holds the
file's exclusive lock ("database is locked")."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from scheduler_service.logs.failures import FailureLog, is_outage
from scheduler_service.storage.db import Database
from tests.tcp_proxy import outage_proxy

LOGGER = "scheduler_service.test_failures"
ATTEMPTS_DOWN = 25


class Clock:
    """A clock the test moves: durations in the log lines are exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        yield caplog


def warnings(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.levelno >= logging.WARNING]


def refused_connection() -> OperationalError:
    """A real driver error: psycopg connecting to a port nobody listens on."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    engine = create_engine(f"postgresql+psycopg://u@127.0.0.1:{port}/db")
    try:
        with pytest.raises(OperationalError) as info, engine.connect():
            pass
    finally:
        engine.dispose()
    return info.value


def test_one_line_down_one_line_up(logs: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    failures = FailureLog(logging.getLogger(LOGGER), "scheduler wake-up", clock=clock)
    error = refused_connection()
    assert is_outage(error)
    failures.succeeded()  # nothing to say while healthy
    for _ in range(40):
        failures.failed(error, retry_in=0.25)
        clock.now += 0.25
    failures.succeeded()
    failures.succeeded()
    shown = warnings(logs.records)
    assert [r.getMessage().split(":")[0] for r in shown] == [
        "scheduler wake-up failing",
        "scheduler wake-up recovered after 10.0 s (40 failed attempts)",
    ]
    assert "OperationalError" in shown[0].getMessage() and "retrying in 0.2 s" in (
        shown[0].getMessage()
    )
    assert all(r.exc_info is None for r in logs.records)  # expected: no traceback
    assert len([r for r in logs.records if r.levelno == logging.DEBUG]) == 39
    assert not failures.failing and failures.failures == 0


def test_a_traceback_once_per_kind_of_unexpected_error(
    logs: pytest.LogCaptureFixture,
) -> None:
    failures = FailureLog(logging.getLogger(LOGGER), "leadership check", clock=Clock())
    errors: list[BaseException] = []
    for make in (lambda: 1 / 0, lambda: 1 / 0, lambda: {}["x"], lambda: 1 / 0):
        try:
            make()
        except Exception as exc:
            errors.append(exc)
    for exc in errors:
        failures.failed(exc)
    traced = [r for r in warnings(logs.records) if r.exc_info]
    assert [r.exc_info[0] for r in traced if r.exc_info] == [ZeroDivisionError, KeyError]
    failures.succeeded()
    failures.failed(errors[0])  # a new outage: its unexpected errors are traced again
    assert warnings(logs.records)[-1].exc_info is not None


def test_a_reminder_while_it_keeps_failing(logs: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    failures = FailureLog(
        logging.getLogger(LOGGER), "wake-up listener", remind_every=60, clock=clock
    )
    error = refused_connection()
    for _ in range(150):  # 150 s, one attempt a second
        failures.failed(error)
        clock.now += 1
    messages = [r.getMessage() for r in warnings(logs.records)]
    assert len(messages) == 3 and "still failing after 60 s (61 attempts)" in messages[1]
    assert "still failing after 120 s" in messages[2]


def test_control_characters_of_an_error_are_escaped(logs: pytest.LogCaptureFixture) -> None:
    failures = FailureLog(logging.getLogger(LOGGER), "x", expected=lambda _e: True)
    failures.failed(OSError("server says \x1b[2J\nforged line"))
    message = warnings(logs.records)[0].getMessage()
    assert "\x1b" not in message and "\n" not in message and "\\x1b[2J" in message


async def test_a_real_outage_and_recovery(
    database_url: str, logs: pytest.LogCaptureFixture
) -> None:
    """A loop querying every attempt through the service's own engine: the database goes
    away (or is locked by another process) for 25 attempts, then comes back."""
    failures = FailureLog(logging.getLogger(LOGGER), "test loop")

    async def attempt(db: Database) -> bool:
        try:
            async with asyncio.timeout(5), db.engine.connect() as conn:
                if db.sqlite:  # WAL readers never wait: take the write lock, as writers do
                    await conn.execute(text("BEGIN IMMEDIATE"))
                    await conn.rollback()
                else:
                    await conn.execute(text("SELECT 1"))
        except Exception as exc:
            failures.failed(exc)
            return False
        failures.succeeded()
        return True

    if make_url(database_url).get_backend_name() == "sqlite":
        db = Database(database_url, busy_timeout_ms=0)
        try:
            assert await attempt(db)
            holder = sqlite3.connect(make_url(database_url).database or "", isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")  # another process holds the file
            for _ in range(ATTEMPTS_DOWN):
                assert not await attempt(db)
            holder.execute("COMMIT")
            holder.close()
            assert await attempt(db)
        finally:
            await db.dispose()
    else:
        async with outage_proxy() as proxy:
            url = make_url(database_url).set(host="127.0.0.1", port=proxy.port)
            db = Database(url.render_as_string(hide_password=False))
            try:
                assert await attempt(db)
                proxy.cut()
                for _ in range(ATTEMPTS_DOWN):
                    assert not await attempt(db)
                proxy.restore()
                assert await attempt(db)
            finally:
                await db.dispose()
    mine = [r for r in logs.records if r.name == LOGGER]  # not asyncio's own messages
    shown = [r.getMessage() for r in warnings(mine)]
    assert len(shown) == 2, shown
    assert shown[0].startswith("test loop failing: ")
    assert shown[1].startswith("test loop recovered after ")
    assert shown[1].endswith(f"({ATTEMPTS_DOWN} failed attempts)")
    assert all(r.exc_info is None for r in mine)
