"""The application's tables (SQLAlchemy 2 typed models).

These rows are the source of truth for what a task is and what happened to it.
APScheduler's own table (``task_scheduler_jobs``) only holds timing; it is created by the
migrations too (see ``alembic/versions``), never at run time.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    literal_column,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator

from scheduler_service.storage import names


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


class UTCDateTime(TypeDecorator[datetime]):
    """Stores instants as naive UTC, returns them aware (UTC) on every backend.

    SQLite has no time zones; normalising here means no caller ever compares a naive
    datetime with an aware one.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class ScheduledTask(Base):
    __tablename__ = names.TASKS
    # get_tasks pages: a user's tasks by next run, creation, id (see tasks.paging).
    # The quota count and the cap on finished tasks: a user's tasks by status.
    __table_args__ = (
        Index("ix_task_scheduler_tasks_listing", "user_id", "next_run_at", "created_at", "id"),
        Index("ix_task_scheduler_tasks_user_status", "user_id", "status", "updated_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(200), index=True)
    conversation_id: Mapped[str | None] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)

    # Schedule, as validated (see scheduler_service.schedules.Schedule).
    frequency: Mapped[str] = mapped_column(String(20))
    scheduled_time: Mapped[str | None] = mapped_column(String(40))
    day_of_week: Mapped[list[Any] | None] = mapped_column(JSON)
    day_of_month: Mapped[int | None] = mapped_column(Integer)
    custom_schedule: Mapped[str | None] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64))
    schedule: Mapped[dict[str, Any]] = mapped_column(JSON)  # Schedule.to_dict()
    start_at: Mapped[datetime] = mapped_column(UTCDateTime)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    max_runs: Mapped[int | None] = mapped_column(Integer)

    # Execution.
    execution_mode: Mapped[str] = mapped_column(String(20))
    tool_name: Mapped[str | None] = mapped_column(String(100))
    operation: Mapped[str | None] = mapped_column(String(100))
    parameters: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    task_description: Mapped[str | None] = mapped_column(Text)
    task_prompt: Mapped[str | None] = mapped_column(Text)
    available_tools: Mapped[list[Any] | None] = mapped_column(JSON)
    timeout: Mapped[int | None] = mapped_column(Integer)
    max_retries: Mapped[int | None] = mapped_column(Integer)
    misfire_grace_time: Mapped[int | None] = mapped_column(Integer)
    options: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    # State.
    status: Mapped[str] = mapped_column(String(20), index=True)
    run_count: Mapped[int] = mapped_column(Integer, default=0)
    success_count: Mapped[int] = mapped_column(Integer, default=0)
    failure_count: Mapped[int] = mapped_column(Integer, default=0)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status: Mapped[str | None] = mapped_column(String(20))
    last_result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)

    # Notifications (see runs/notify_policy.py). NULL policy: "always".
    notify_policy: Mapped[str | None] = mapped_column(String(20))
    last_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    result_fingerprint: Mapped[str | None] = mapped_column(String(64))  # last success's
    failure_alert_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # streak last told
    pause_note: Mapped[str | None] = mapped_column(Text)  # why it is paused
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


def is_value(column: ColumnElement[str] | Mapped[str], value: str) -> ColumnElement[bool]:
    """``column = 'value'`` with the value written into the SQL, not bound.

    A partial index (the run queue's, ``status = 'queued' AND worker IS NULL``) is usable
    only by a query whose WHERE clause implies the index's predicate, and neither
    PostgreSQL's generic plan of a prepared statement nor SQLite can prove that of a
    parameter: with ``status = $1`` PostgreSQL read every queued run through the status
    index and sorted them, on every take — a burst's takes cost the square of its size.
    Only for the fixed names of statuses and kinds (checked here)."""
    if not value.isidentifier():
        raise ValueError(f"not a status or kind name: {value!r}")
    return column == literal_column(f"'{value}'")


class TaskRun(Base):
    """One attempt at one fire time. The unique key is what fences duplicate runs."""

    __tablename__ = names.RUNS
    __table_args__ = (
        UniqueConstraint("task_id", "fire_time", "attempt", name="uq_task_scheduler_runs_fire"),
        Index("ix_task_scheduler_runs_status", "status"),
        # The run queue (PostgreSQL): unassigned queued runs in the order workers take
        # them (a take reads just the rows it takes, however long the queue).
        Index(
            "ix_task_scheduler_runs_queue",
            "fire_time",
            "queued_at",
            postgresql_where=text("status = 'queued' AND worker IS NULL"),
            sqlite_where=text("status = 'queued' AND worker IS NULL"),
        ),
        # The per-user manual-run rate: a user's manual runs by time.
        Index(
            "ix_task_scheduler_runs_manual",
            "user_id",
            "queued_at",
            postgresql_where=text("kind = 'manual'"),
            sqlite_where=text("kind = 'manual'"),
        ),
        # A user's tokens spent since a time (the daily token budget): runs with usage.
        Index(
            "ix_task_scheduler_runs_usage",
            "user_id",
            "finished_at",
            postgresql_where=text("usage IS NOT NULL"),
            sqlite_where=text("usage IS NOT NULL"),
        ),
        # Runs asked to stop (overlap cancel_previous), by the worker executing them.
        Index(
            "ix_task_scheduler_runs_cancel",
            "worker",
            postgresql_where=text("cancel_requested_at IS NOT NULL"),
            sqlite_where=text("cancel_requested_at IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(40), index=True)
    user_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))  # scheduled | manual | retry | missed
    fire_time: Mapped[datetime] = mapped_column(UTCDateTime)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(20))
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    error_kind: Mapped[str | None] = mapped_column(String(40))
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # host:pid:instance of the service that claimed the run; recovery interrupts a
    # queued/running run only if this worker is dead (NULL: from before 0002, dead).
    worker: Mapped[str | None] = mapped_column(String(300))
    # Set when a newer fire of the task asked this run to stop (overlap cancel_previous).
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class TaskNotification(Base):
    """What the host shows in the user's conversation after a run (or a missed one)."""

    __tablename__ = names.NOTIFICATIONS
    __table_args__ = (
        Index("ix_task_scheduler_notifications_pending", "conversation_id", "displayed_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    task_id: Mapped[str] = mapped_column(String(40), index=True)
    run_id: Mapped[str | None] = mapped_column(String(40))
    user_id: Mapped[str] = mapped_column(String(200))
    conversation_id: Mapped[str | None] = mapped_column(String(200))
    task_name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    priority: Mapped[int] = mapped_column(Integer)
    title: Mapped[str] = mapped_column(String(300))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    displayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Reminder(Base):
    __tablename__ = names.REMINDERS

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(200), index=True)
    conversation_id: Mapped[str | None] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(String(300))
    description: Mapped[str | None] = mapped_column(Text)
    due_date: Mapped[str] = mapped_column(String(10))  # local ISO date, YYYY-MM-DD
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    timezone: Mapped[str] = mapped_column(String(64))
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    source_task_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ModelGateRow(Base):
    """The model gate's shared state on PostgreSQL: one row (id 1), locked by every
    booking of a model call. Instants are seconds since the epoch on the database's
    clock, so hosts whose clocks differ still agree (see ``runs.pacing``)."""

    __tablename__ = names.MODEL_GATE

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    closed_until: Mapped[float] = mapped_column(Float, default=0.0)
    next_start: Mapped[float] = mapped_column(Float, default=0.0)
    rate: Mapped[float | None] = mapped_column(Float)
    rate_since: Mapped[float] = mapped_column(Float, default=0.0)
    recent: Mapped[list[Any]] = mapped_column(JSON, default=list)


class ModelLease(Base):
    """One model call in flight somewhere (PostgreSQL). The gate admits a call while
    fewer unexpired leases exist than its concurrency; a holder renews its leases while
    it lives, so a killed process frees its slots when they expire."""

    __tablename__ = names.MODEL_LEASES

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    holder: Mapped[str] = mapped_column(String(300))
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class BudgetNotice(Base):
    """A user told that their daily token budget is spent, and until when that notice
    stands (the end of their day): one row per user, claimed by an upsert in the
    transaction that records a budget skip, so replicas recording at once tell it once
    (see ``runs.token_budget``)."""

    __tablename__ = names.BUDGET_NOTICES

    user_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    quiet_until: Mapped[datetime] = mapped_column(UTCDateTime)
    run_id: Mapped[str | None] = mapped_column(String(40))  # the run whose record told it
