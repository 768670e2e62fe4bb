"""Notifications: what a finished (or missed) run tells the user's conversation."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from scheduler_service.statuses import RunStatus, TaskStatus
from scheduler_service.storage.db import Database
from scheduler_service.storage.models import (
    ScheduledTask,
    TaskNotification,
    TaskRun,
    new_id,
    utcnow,
)

log = logging.getLogger(__name__)

NotificationCallback = Callable[[dict[str, Any]], Awaitable[None]]

# Most urgent first: failures before misses before successes.
PRIORITY: dict[str, int] = {
    RunStatus.FAILED: 3,
    RunStatus.TIMED_OUT: 3,
    RunStatus.INTERRUPTED: 3,
    TaskStatus.PAUSED: 3,  # a task paused after too many failures
    RunStatus.MISSED: 2,
    RunStatus.SKIPPED: 1,
    RunStatus.SUCCEEDED: 0,
}
_ICONS: dict[str, str] = {
    RunStatus.SUCCEEDED: "✅",
    RunStatus.MISSED: "⏭️",
    RunStatus.SKIPPED: "⏭️",
}
_SUMMARY_CHARS = 600


def summarize(value: Any, limit: int = _SUMMARY_CHARS) -> str:
    """A short human-readable rendering of a result for the conversation."""
    if value is None:
        return ""
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        text = str(value["message"])
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def to_dict(n: TaskNotification) -> dict[str, Any]:
    return {
        "id": n.id,
        "task_id": n.task_id,
        "run_id": n.run_id,
        "conversation_id": n.conversation_id,
        "user_id": n.user_id,
        "task_name": n.task_name,
        "status": n.status,
        "priority": n.priority,
        "title": n.title,
        "message": n.message,
        "created_at": n.created_at.isoformat(),
        "displayed_at": n.displayed_at.isoformat() if n.displayed_at else None,
    }


def build(
    task: ScheduledTask,
    run: TaskRun | None,
    status: str,
    message: str,
    now: datetime,
) -> TaskNotification:
    """The notification row, and the task's ``last_notified_at`` set to its time: every
    notification is built here, so get_task always says when the user last heard.
    ``now``: the clock its transaction decided by (the run row's ``finished_at``), so
    the notification's time agrees with it and with the failure-alert interval."""
    icon = _ICONS.get(status, "❌")
    words = status.replace("_", " ")
    task.last_notified_at = now
    return TaskNotification(
        id=new_id("ntf"),
        task_id=task.id,
        run_id=run.id if run else None,
        user_id=task.user_id,
        conversation_id=task.conversation_id,
        task_name=task.name,
        status=status,
        priority=PRIORITY.get(status, 3),
        title=f"{icon} Scheduled task '{task.name}' {words}",
        message=message,
        created_at=now,
    )


class Notifier:
    """Stores notifications and calls the host's callbacks after they are committed."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.callbacks: list[NotificationCallback] = []

    async def publish(self, notifications: Sequence[TaskNotification]) -> None:
        for n in notifications:
            payload = to_dict(n)
            log.info("notification for %s: %s — %s", n.conversation_id, n.title, n.message)
            for callback in list(self.callbacks):
                try:
                    await callback(payload)
                except Exception:
                    log.exception("notification callback %r failed", callback)

    async def pending(
        self, conversation_id: str, user_id: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        query = select(TaskNotification).where(
            TaskNotification.conversation_id == conversation_id,
            TaskNotification.displayed_at.is_(None),
        )
        if user_id is not None:
            query = query.where(TaskNotification.user_id == user_id)
        query = query.order_by(
            TaskNotification.priority.desc(), TaskNotification.created_at, TaskNotification.id
        ).limit(limit)
        async with self.db.read() as session:
            return [to_dict(n) for n in (await session.scalars(query)).all()]

    async def mark_displayed(self, ids: Sequence[str], user_id: str | None = None) -> int:
        if not ids:
            return 0
        stmt = (
            update(TaskNotification)
            .where(TaskNotification.id.in_(list(ids)), TaskNotification.displayed_at.is_(None))
            .values(displayed_at=utcnow())
        )
        if user_id is not None:
            stmt = stmt.where(TaskNotification.user_id == user_id)
        async with self.db.write() as session:
            result = await session.execute(stmt)
            return int(getattr(result, "rowcount", 0) or 0)
