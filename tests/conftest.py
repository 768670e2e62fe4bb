"""Shared fixtures: a real service on a real database per test.

``start_service`` and ``service`` run each test twice: on a fresh SQLite file and on a
fresh PostgreSQL database (cloned from a template migrated once per session). In CI a
missing PostgreSQL server fails the run instead of skipping half of every promise.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from config import LimitsConfig, SchedulerConfig, Settings
from scheduler_service import SchedulerService
from scheduler_service.storage.db import create_sync_engine, sync_url
from scheduler_service.storage.models import Base, TaskRun
from tools import Tool, ToolContext, ToolError

ServiceFactory = Callable[..., Awaitable[SchedulerService]]


def make_settings(
    database: Path | str, *, limits: LimitsConfig | None = None, **scheduler: Any
) -> Settings:
    """Settings for a SQLite file (a path) or any database (an async URL)."""
    url = database if isinstance(database, str) else f"sqlite+aiosqlite:///{database}"
    return Settings(
        database_url=url,
        scheduler=SchedulerConfig(**scheduler),
        limits=limits or LimitsConfig(),
        anthropic_api_key=None,
    )


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see a real key, so nothing can reach the real API."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tasks.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, db_path: Path) -> str:
    """The test's database: a fresh SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{db_path}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
async def start_service(database_url: str) -> AsyncIterator[ServiceFactory]:
    """Start services on the test's database; each is stopped at the end."""
    started: list[SchedulerService] = []

    async def start(
        *,
        tools: Sequence[Tool] = (),
        anthropic_client: Any = None,
        limits: LimitsConfig | None = None,
        **scheduler: Any,
    ) -> SchedulerService:
        service = SchedulerService(
            make_settings(database_url, limits=limits, **scheduler),
            anthropic_client=anthropic_client,
        )
        for tool in tools:
            service.tools.register(tool)
        watch_notifications(service)
        await service.start()
        started.append(service)
        return service

    yield start
    for service in reversed(started):
        if service.started:
            await service.stop()


@pytest.fixture
async def service(start_service: ServiceFactory) -> SchedulerService:
    return await start_service()


PG_ADMIN_URL = os.environ.get("PG_TEST_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_admin() -> Any:
    """An autocommit connection to the PostgreSQL server; skip (fail in CI) without one."""
    psycopg = pytest.importorskip("psycopg")
    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL server at {PG_ADMIN_URL}: {exc}")


def _async_pg_url(name: str) -> str:
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A database migrated to head once per session; each test's database is a copy."""
    from scheduler_service.storage.db import migrate_to_head

    admin = _pg_admin()
    name = f"sched_template_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        migrate_to_head(sync_url(_async_pg_url(name)))
        yield name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """A fresh PostgreSQL database at schema head (async URL), dropped afterwards."""
    admin = _pg_admin()
    name = f"sched_test_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    try:
        yield _async_pg_url(name)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A sync engine on the test's database (SQLite file or PostgreSQL), schema at head."""
    engine = create_sync_engine(sync_url(database_url))
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def database_rows(url: str, sql: str) -> list[dict[str, Any]]:
    """The rows of ``sql`` read on a connection of its own (the service may be stopped)."""
    engine = create_sync_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


def database_execute(url: str, sql: str) -> None:
    """Run ``sql`` in a transaction of its own: what another process (or a crash) does."""
    engine = create_sync_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


@pytest.fixture
def ctx() -> ToolContext:
    return ToolContext(user_id="u1", conversation_id="c1")


class RecordingTool(Tool):
    """A test tool that records each call and can be told to fail or block."""

    name = "recording_tool"
    description = "Records calls (tests only)."
    input_schema = {
        "type": "object",
        "properties": {"operation": {"type": "string", "enum": ["record", "fail", "block"]}},
        "required": ["operation"],
    }

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], ToolContext]] = []
        self.called = asyncio.Event()
        self.release = asyncio.Event()

    async def run(
        self, operation: str, kwargs: dict[str, Any] | str | None, *, context: ToolContext
    ) -> dict[str, Any]:
        args = kwargs if isinstance(kwargs, dict) else {}
        self.calls.append((operation, args, context))
        self.called.set()
        if operation == "fail":
            raise ToolError("execution_failed", args.get("message", "told to fail"))
        if operation == "block":
            await self.release.wait()
        return {"message": f"recorded {operation}", "kwargs": args}


async def client_service(start_service: ServiceFactory) -> SchedulerService:
    """A client with the recording tool: it claims nothing from the run queue itself, so
    a test takes queued runs by hand."""
    return await start_service(tools=[RecordingTool()], enabled=False)


async def stored_run(service: SchedulerService, run_id: str) -> TaskRun:
    """The run row as stored now."""
    async with service.db.read() as session:
        run = await session.get(TaskRun, run_id, populate_existing=True)
    assert run is not None
    return run


def watch_notifications(service: SchedulerService) -> None:
    """Queue every notification the service publishes, for next_notification."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def put(notification: dict[str, Any]) -> None:
        queue.put_nowait(notification)

    service.add_notification_callback(put)
    service.notification_queue = queue  # type: ignore[attr-defined]


async def next_notification(service: SchedulerService, timeout: float = 10.0) -> dict[str, Any]:
    """Await the next notification the service publishes (an event, not a sleep)."""
    queue: asyncio.Queue[dict[str, Any]] = service.notification_queue  # type: ignore[attr-defined]
    return await asyncio.wait_for(queue.get(), timeout)


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll an async predicate until true; fail after ``timeout``.

    Only for state another process writes (a subprocess's database rows), where no
    in-process event exists; in-process waits use events such as next_notification.
    """
    async with asyncio.timeout(timeout):
        while not await predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
