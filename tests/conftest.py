"""Shared fixtures: a real service on a real SQLite file per test."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from config import SchedulerConfig, Settings
from scheduler_service import SchedulerService
from tools import Tool, ToolContext, ToolError

ServiceFactory = Callable[..., Awaitable[SchedulerService]]


def make_settings(db_path: Path, **scheduler: Any) -> Settings:
    return Settings(
        database_url=f"sqlite+aiosqlite:///{db_path}",
        scheduler=SchedulerConfig(**scheduler),
        anthropic_api_key=None,
    )


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see a real key, so nothing can reach the real API."""
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tasks.db"


@pytest.fixture
async def start_service(db_path: Path) -> AsyncIterator[ServiceFactory]:
    """Start services on the test's SQLite file; each is stopped at the end."""
    started: list[SchedulerService] = []

    async def start(
        *,
        tools: Sequence[Tool] = (),
        anthropic_client: Any = None,
        **scheduler: Any,
    ) -> SchedulerService:
        service = SchedulerService(
            make_settings(db_path, **scheduler), anthropic_client=anthropic_client
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


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database (async URL), dropped afterwards.

    Skipped when no server answers — except in CI, where .ci/run starts one, so a
    missing server fails instead of silently skipping the scale-out tests.
    """
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no PostgreSQL server at {PG_ADMIN_URL}: {exc}")
    name = f"sched_test_{uuid.uuid4().hex[:10]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


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
