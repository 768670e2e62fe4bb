"""The workers table: which processes execute runs, with which tools, and how busy.

A process is a *worker* (it may lead — fire jobs and claim fire times — and it executes
runs with its own tools) or a *client* (it manages tasks, reads runs and notifications,
and queues manual runs; it never leads, claims, executes or interrupts a run). Only
workers have a row here: written at start, beaten while they run (with whether they
lead and how many runs they have in flight), deleted at a clean stop. A kill -9 leaves a
row whose beat goes stale; the leader deletes it once the worker's presence lock is free.

What the rows answer:
* which tools some live worker has — a queued run whose tool none has waits, and is
  settled with an error naming the tool once its grace time is over;
* whether any worker is alive at all — a client awaiting a manual run says so at once
  instead of waiting for nothing;
* what ``task-scheduler workers`` and ``health`` show an operator.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, Connection, Integer, String, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from scheduler_service.storage import names
from scheduler_service.storage.db import Database
from scheduler_service.storage.models import Base, utcnow

BEAT_EVERY_S = 2.0  # a worker's row is written at most this often
STALE_AFTER_S = 15.0  # a row not beaten for this long is a worker that died


class Role(StrEnum):
    WORKER = "worker"
    CLIENT = "client"


class WorkerRow(Base):
    __tablename__ = names.WORKERS

    id: Mapped[str] = mapped_column(String(300), primary_key=True)
    role: Mapped[str] = mapped_column(String(10))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    tools: Mapped[list[Any]] = mapped_column(JSON)
    leader: Mapped[bool] = mapped_column(Boolean)
    runs_in_flight: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    beat_at: Mapped[datetime]


@dataclass(frozen=True)
class WorkerInfo:
    """One live worker as an operator sees it."""

    id: str
    role: str
    host: str
    pid: int
    tools: list[str]
    leader: bool
    runs_in_flight: int
    started_at: str
    beat_at: str
    beat_age_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class WorkerRegistry:
    """This worker's row: registered at start, beaten, removed at a clean stop."""

    def __init__(self, db: Database, worker: str, tools: Callable[[], Iterable[str]]) -> None:
        self.db = db
        self.worker = worker
        self._tools = tools
        self._last = float("-inf")
        self.registered = False

    def due(self) -> bool:
        return asyncio.get_running_loop().time() - self._last >= BEAT_EVERY_S

    async def register(self) -> None:
        now = utcnow()
        row = WorkerRow(
            id=self.worker,
            role=Role.WORKER,
            host=socket.gethostname()[:255],
            pid=os.getpid(),
            tools=sorted(self._tools()),
            leader=False,
            runs_in_flight=0,
            started_at=now,
            beat_at=now,
        )
        async with self.db.write() as session:
            await session.merge(row)
        self.registered = True
        self._last = asyncio.get_running_loop().time()

    async def beat(self, *, leading: bool, in_flight: int) -> None:
        self._last = asyncio.get_running_loop().time()
        values = {
            "beat_at": utcnow(),
            "leader": leading,
            "runs_in_flight": in_flight,
            "tools": sorted(self._tools()),
        }
        async with self.db.write() as session:
            await session.execute(
                update(WorkerRow).where(WorkerRow.id == self.worker).values(**values)
            )

    async def unregister(self) -> None:
        if not self.registered:
            return
        self.registered = False
        async with self.db.write() as session:
            await session.execute(delete(WorkerRow).where(WorkerRow.id == self.worker))


async def live_workers(db: Database) -> list[WorkerInfo]:
    """Workers whose row was beaten within ``STALE_AFTER_S``, leader first."""
    async with db.read() as session:
        rows = (await session.scalars(select(WorkerRow))).all()
    return _live(rows)


def live_workers_sync(connection: Connection) -> list[WorkerInfo]:
    """``live_workers`` on a plain connection (the CLI's health check)."""
    return _live(connection.execute(select(WorkerRow)).all())


def _live(rows: Iterable[Any]) -> list[WorkerInfo]:
    now = datetime.now(UTC)
    found = []
    for row in rows:
        beat = row.beat_at.replace(tzinfo=UTC) if row.beat_at.tzinfo is None else row.beat_at
        age = (now - beat).total_seconds()
        if age > STALE_AFTER_S:
            continue
        started = row.started_at
        found.append(
            WorkerInfo(
                id=row.id,
                role=row.role,
                host=row.host,
                pid=row.pid,
                tools=list(row.tools or []),
                leader=bool(row.leader),
                runs_in_flight=row.runs_in_flight,
                started_at=started.replace(tzinfo=started.tzinfo or UTC).isoformat(),
                beat_at=beat.isoformat(),
                beat_age_s=round(age, 3),
            )
        )
    return sorted(found, key=lambda w: (not w.leader, w.started_at))


async def forget_dead(db: Database, is_alive: Callable[[str], Any]) -> int:
    """The leader removes rows of workers that died without a clean stop (kill -9):
    stale rows whose presence lock is free."""
    cutoff = utcnow() - timedelta(seconds=STALE_AFTER_S)
    async with db.read() as session:
        stale = (
            await session.scalars(select(WorkerRow.id).where(WorkerRow.beat_at < cutoff))
        ).all()
    dead = [worker for worker in stale if not await is_alive(worker)]
    if dead:
        async with db.write() as session:
            await session.execute(delete(WorkerRow).where(WorkerRow.id.in_(dead)))
    return len(dead)
