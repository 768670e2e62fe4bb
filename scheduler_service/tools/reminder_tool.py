"""reminder_tool: the user's reminders, stored in the service's database.

It makes the standard example real (a daily inventory reminder): a direct task calls
``add_reminder`` with ``{"title": ..., "date": "today", ...}``. Dates are read in the
caller's timezone (the task's, for scheduled runs).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Table, delete, insert, select

from scheduler_service.storage.db import Database
from scheduler_service.storage.models import Reminder, new_id, utcnow
from scheduler_service.tools.base import Tool, ToolContext, ToolError, parse_kwargs
from scheduler_service.tools.validation import validate

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DATE_HELP = (
    '"today", "tomorrow", a weekday name such as "friday" or "next friday" (the next one '
    'after today), an ISO date "2026-12-24" or an ISO datetime "2026-12-24T18:00"'
)


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class AddReminder(_Args):
    title: str = Field(..., min_length=1, max_length=300)
    date: str = Field("today", description=DATE_HELP)
    description: str | None = Field(None, max_length=5000)


class GetReminders(_Args):
    status: Literal["pending", "completed", "all"] = "pending"
    date: str | None = Field(None, description="only reminders due that day; " + DATE_HELP)
    limit: int = Field(50, ge=1, le=200)


class ReminderRef(_Args):
    reminder_id: str = Field(..., min_length=1)


def resolve_date(text: str, zone: ZoneInfo, now: datetime) -> tuple[date, datetime | None]:
    """A user's date words → (local date, exact instant if a time was given)."""
    value = text.strip().lower()
    today = now.astimezone(zone).date()
    if value in ("today", "now", ""):
        return today, None
    if value == "tomorrow":
        return today + timedelta(days=1), None
    name = value.removeprefix("next ").strip()
    if name in WEEKDAYS:
        ahead = (WEEKDAYS.index(name) - today.weekday() - 1) % 7 + 1
        return today + timedelta(days=ahead), None
    try:
        return date.fromisoformat(text.strip()), None
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ToolError("invalid_input", f"date: {text!r} is not a date; use {DATE_HELP}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(zone).date(), moment.astimezone(UTC)


def reminder_to_dict(r: Reminder) -> dict[str, Any]:
    zone = ZoneInfo(r.timezone)
    return {
        "reminder_id": r.id,
        "title": r.title,
        "description": r.description,
        "date": r.due_date,
        "due_at": r.due_at.astimezone(zone).isoformat() if r.due_at else None,
        "completed": r.completed_at is not None,
        "completed_at": r.completed_at.isoformat() if r.completed_at else None,
        "source_task_id": r.source_task_id,
        "created_at": r.created_at.isoformat(),
    }


# Built once: a Core INSERT taking the row as parameters (an ORM ``insert(Reminder)
# .values(...)`` is rebuilt and coerced column by column on every call).
ADD_REMINDER = insert(cast(Table, Reminder.__table__))


class ReminderTool(Tool):
    """Add, list, complete and delete reminders."""

    name = "reminder_tool"
    description = (
        "Keep the user's reminders. Operations: add_reminder (title, date, description), "
        "get_reminders (status pending|completed|all, optional date, limit), "
        "complete_reminder (reminder_id), delete_reminder (reminder_id). Call it as "
        '{"operation": "add_reminder", "kwargs": {"title": "...", "date": "tomorrow"}}. '
        f"Dates: {DATE_HELP}."
    )
    input_schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "operation": {
                "type": "string",
                "enum": ["add_reminder", "get_reminders", "complete_reminder", "delete_reminder"],
            },
            "kwargs": {
                "type": "object",
                "properties": {
                    "title": {"type": "string"},
                    "date": {"type": "string", "description": DATE_HELP},
                    "description": {"type": "string"},
                    "status": {"type": "string", "enum": ["pending", "completed", "all"]},
                    "limit": {"type": "integer"},
                    "reminder_id": {"type": "string"},
                },
            },
        },
        "required": ["operation"],
    }

    def __init__(self, db: Database, default_timezone: str = "UTC") -> None:
        self.db = db
        self.default_timezone = default_timezone

    def _zone(self, context: ToolContext) -> ZoneInfo:
        try:
            return ZoneInfo(context.timezone or self.default_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            return ZoneInfo(self.default_timezone)

    async def run(
        self, operation: str, kwargs: dict[str, Any] | str | None, *, context: ToolContext
    ) -> dict[str, Any]:
        args = parse_kwargs(kwargs)
        if operation == "add_reminder":
            return await self._add(validate(AddReminder, args), context)
        if operation == "get_reminders":
            return await self._list(validate(GetReminders, args), context)
        if operation in ("complete_reminder", "delete_reminder"):
            return await self._change(operation, validate(ReminderRef, args), context)
        raise ToolError(
            "invalid_input",
            f"operation: {operation!r} is not an operation of reminder_tool; use one of "
            "add_reminder, get_reminders, complete_reminder, delete_reminder",
        )

    async def _add(self, args: AddReminder, context: ToolContext) -> dict[str, Any]:
        zone = self._zone(context)
        day, moment = resolve_date(args.date, zone, utcnow())
        values: dict[str, Any] = {
            "id": new_id("rem"),
            "user_id": context.user_id,
            "conversation_id": context.conversation_id,
            "title": args.title,
            "description": args.description,
            "due_date": day.isoformat(),
            "due_at": moment,
            "timezone": zone.key,
            "source_task_id": context.task_id,
            "created_at": utcnow(),
        }
        # One INSERT, its own transaction: a scheduled burst adds thousands of these.
        await self.db.execute_one(ADD_REMINDER, values)
        reminder = Reminder(**values)
        return {
            "reminder": reminder_to_dict(reminder),
            "message": f"Reminder '{args.title}' added for {day.isoformat()}.",
        }

    async def _list(self, args: GetReminders, context: ToolContext) -> dict[str, Any]:
        query = select(Reminder).where(Reminder.user_id == context.user_id)
        if args.status == "pending":
            query = query.where(Reminder.completed_at.is_(None))
        elif args.status == "completed":
            query = query.where(Reminder.completed_at.is_not(None))
        if args.date:
            day, _ = resolve_date(args.date, self._zone(context), utcnow())
            query = query.where(Reminder.due_date == day.isoformat())
        query = query.order_by(Reminder.due_date, Reminder.created_at).limit(args.limit)
        async with self.db.read() as session:
            rows = (await session.scalars(query)).all()
        return {
            "reminders": [reminder_to_dict(r) for r in rows],
            "count": len(rows),
            "message": f"{len(rows)} {args.status} reminder{'s' if len(rows) != 1 else ''}.",
        }

    async def _change(
        self, operation: str, args: ReminderRef, context: ToolContext
    ) -> dict[str, Any]:
        async with self.db.write() as session:
            reminder = await session.get(Reminder, args.reminder_id)
            if reminder is None or reminder.user_id != context.user_id:
                raise ToolError(
                    "not_found",
                    f"reminder_id: no reminder {args.reminder_id!r}; get_reminders lists them",
                )
            if operation == "delete_reminder":
                await session.execute(delete(Reminder).where(Reminder.id == reminder.id))
                return {
                    "reminder_id": reminder.id,
                    "message": f"Deleted reminder '{reminder.title}'.",
                }
            if reminder.completed_at is None:
                reminder.completed_at = utcnow()
            return {
                "reminder": reminder_to_dict(reminder),
                "message": f"Marked reminder '{reminder.title}' as completed.",
            }
