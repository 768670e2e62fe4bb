"""Liveness of the service as an operator sees it: the leader's heartbeat and the health check.

The leader writes one row (``task_scheduler_heartbeat``) when it takes the lead and then
every half ``check_interval`` from its leadership loop, which runs every couple of seconds
anyway. ``task-scheduler health`` (a separate process, maybe on another host) can then
tell "a leader is firing jobs" from "every worker is down or stuck", which the database
alone cannot show. One UPDATE per half interval keeps it cheap.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Integer, String, select, text, update
from sqlalchemy.orm import Mapped, mapped_column

from scheduler_service.cluster.workers import live_workers_sync
from scheduler_service.logs.escape import escape
from scheduler_service.storage import names
from scheduler_service.storage.db import (
    Database,
    create_sync_engine,
    current_revisions,
    missing_sqlite_file,
    schema_advice,
    shipped_revisions,
    sync_url,
)
from scheduler_service.storage.models import Base, utcnow
from scheduler_service.storage.urls import DatabaseUrl, redact

HEALTH_CONNECT_TIMEOUT_S = 5
# Grace on top of check_interval: the leadership loop ticks every couple of seconds.
HEARTBEAT_SLACK_S = 5.0


class LeaderHeartbeat(Base):
    """The single heartbeat row (id 1): which worker leads and when it last woke."""

    __tablename__ = names.HEARTBEAT

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker: Mapped[str | None] = mapped_column(String(300))
    beat_at: Mapped[datetime | None]


class Heartbeat:
    """Written by the leader; ``due`` keeps the writes to one per half interval."""

    def __init__(self, db: Database, every: float) -> None:
        self.db = db
        self.every = every
        self._last = float("-inf")

    def due(self) -> bool:
        return asyncio.get_running_loop().time() - self._last >= self.every

    async def beat(self, worker: str) -> None:
        self._last = asyncio.get_running_loop().time()
        async with self.db.write() as session:
            await session.execute(
                update(LeaderHeartbeat)
                .where(LeaderHeartbeat.id == 1)
                .values(worker=worker, beat_at=utcnow())
            )

    async def clear(self, worker: str) -> None:
        """A leader stopping cleanly: the row says at once that nobody leads (unless a
        successor has already written its own beat)."""
        async with self.db.write() as session:
            await session.execute(
                update(LeaderHeartbeat)
                .where(LeaderHeartbeat.id == 1, LeaderHeartbeat.worker == worker)
                .values(worker=None, beat_at=None)
            )


@dataclass
class HealthReport:
    """What ``task-scheduler health`` prints; ``ok`` only when every check passed."""

    database: str
    reachable: bool = False
    revision: list[str] = field(default_factory=list)
    head: str | None = None
    at_head: bool = False
    leader: str | None = None
    last_beat: str | None = None
    beat_age_s: float | None = None
    leader_alive: bool = False
    workers: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def check_health(async_url: str, check_interval: float, worker: str | None = None) -> HealthReport:
    """Database reachable, schema at head, a leader beat within ``check_interval`` (a
    leader that stops cleanly clears its beat: unhealthy at once), and with ``worker``,
    that worker alive (its row in the workers table beaten recently).

    Synchronous (one short connection): meant for the CLI and probes, not the event loop.
    """
    report = HealthReport(database=redact(async_url))
    url = sync_url(async_url)
    missing = missing_sqlite_file(url)
    if missing is not None:  # connecting would create it
        report.problems.append(f"no database at {missing}: check DATABASE_URL")
        return report
    options: dict[str, Any] = (
        {}
        if url.startswith("sqlite")
        else {"connect_args": {"connect_timeout": HEALTH_CONNECT_TIMEOUT_S}}
    )
    engine = create_sync_engine(url, **options)
    report.head, known = shipped_revisions(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            report.reachable = True
            report.revision = sorted(current_revisions(conn))
            report.at_head = report.revision == [report.head]
            if report.at_head:
                row = conn.execute(
                    select(LeaderHeartbeat.worker, LeaderHeartbeat.beat_at).where(
                        LeaderHeartbeat.id == 1
                    )
                ).first()
                if row is not None and row.beat_at is not None:
                    beat = row.beat_at.replace(tzinfo=UTC)
                    report.leader, report.last_beat = row.worker, beat.isoformat()
                    report.beat_age_s = round((datetime.now(UTC) - beat).total_seconds(), 3)
                    report.leader_alive = report.beat_age_s <= check_interval + HEARTBEAT_SLACK_S
                report.workers = [w.to_dict() for w in live_workers_sync(conn)]
    except Exception as exc:
        if not report.reachable:
            report.problems.append(
                f"database unreachable: {type(exc).__name__}: {first_line(exc, async_url)}"
            )
        else:
            report.problems.append(f"health query failed: {first_line(exc, async_url)}")
    finally:
        engine.dispose()
    if report.reachable and not report.at_head:
        report.problems.append(
            f"schema at revision {', '.join(report.revision) or 'none'}, expected {report.head}: "
            + schema_advice(report.revision, report.head, known)
        )
    if report.at_head and not report.leader_alive:
        age = "never" if report.beat_age_s is None else f"{report.beat_age_s:.0f} s ago"
        report.problems.append(
            f"no leader has woken within {check_interval:g} s (last heartbeat: {age}); "
            "is a `task-scheduler run` (or a host app) running with SCHEDULER__ENABLED=true?"
        )
    live = {w["id"] for w in report.workers}
    if report.at_head and worker is not None and worker not in live:
        report.problems.append(f"worker {worker!r} is not running (no recent beat)")
    return report


def schema_revision(url: str) -> tuple[list[str], str | None]:
    """(the database's current revisions, the head this code ships) for a sync URL."""
    head, _known = shipped_revisions(url)
    engine = create_sync_engine(url)
    try:
        with engine.connect() as conn:
            return sorted(current_revisions(conn)), head
    finally:
        engine.dispose()


def first_line(exc: BaseException, url: str | None = None) -> str:
    """An exception's first line, without the database password (plain or URL-encoded)
    and without control characters (a server's message is not ours to trust)."""
    text_ = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0]
    if url:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            text_ = DatabaseUrl(make_url(url)).scrub(text_)
        except (ArgumentError, ValueError):
            text_ = text_.replace(url, redact(url))
    return escape(text_)
