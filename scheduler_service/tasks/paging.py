"""Keyset pagination of a user's tasks: every page costs the same, at any depth.

Tasks are listed by next run (soonest first), tasks without a next run last, then by
creation and id. An offset makes the database walk and drop every row before the page,
so page 2,500 of a user with 50,000 tasks costs 2,500 pages. A cursor instead names the
last task shown — its (next_run_at, created_at, id) — and the next page starts right
after it, read straight from the index on (user_id, next_run_at, created_at, id).

"Tasks without a next run last" is not an order an index gives on every backend (SQLite
sorts NULL first), so the list is read as two ranges of that one index: tasks with a
next run, then tasks without one. A cursor says which range it is in.

The total is counted exactly up to ``COUNT_BOUND`` tasks; beyond it the answer says
"more than COUNT_BOUND" (``Total.lower_bound``). A ``COUNT`` reads every index entry it
counts: ~4–5 ms for a user with 100k tasks on SQLite idle, 8–26 ms while the leader's
background trigger check shares the loop — most of a page's 10 ms budget, for a figure no
one pages through to the end. Counting at most ``COUNT_BOUND + 1`` entries costs ~0.5 ms.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, false, func, literal, select, tuple_
from sqlalchemy.orm import Session

from scheduler_service.storage.models import ScheduledTask
from scheduler_service.tools import ToolError

CURSOR_VERSION = 1
COUNT_BOUND = 10_000  # tasks a page's total counts exactly; beyond it: "more than" this


@dataclass(frozen=True)
class Total:
    """How many tasks the listing matches: ``count`` exactly, or, with ``lower_bound``,
    more than ``count`` (= ``COUNT_BOUND``; counting further would cost more than the page)."""

    count: int
    lower_bound: bool = False


@dataclass(frozen=True)
class Cursor:
    """The last task of a page: where the next page starts; and the total counted for
    the first page, which the following pages report instead of counting again."""

    next_run_at: datetime | None
    created_at: datetime
    task_id: str
    total: Total | None = None

    @classmethod
    def after(cls, task: ScheduledTask, total: Total | None = None) -> Cursor:
        return cls(task.next_run_at, task.created_at, task.id, total)

    def encode(self) -> str:
        data = {
            "v": CURSOR_VERSION,
            "n": self.next_run_at.isoformat() if self.next_run_at else None,
            "c": self.created_at.isoformat(),
            "i": self.task_id,
            "t": self.total.count if self.total else None,
            "b": self.total.lower_bound if self.total else False,
        }
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """A cursor from a previous answer; anything else is a clear ``invalid_input``."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            data: dict[str, Any] = json.loads(raw)
            if data.get("v") != CURSOR_VERSION:
                raise ValueError("unknown version")
            next_run = datetime.fromisoformat(data["n"]) if data["n"] is not None else None
            total = _total(data.get("t"), data.get("b", False))
            return cls(next_run, datetime.fromisoformat(data["c"]), str(data["i"]), total)
        except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise ToolError(
                "invalid_input",
                "cursor: not a cursor this service gave; pass next_cursor from the previous "
                "get_tasks answer unchanged, or omit it for the first page",
            ) from None


def _total(count: Any, lower_bound: Any) -> Total | None:
    """The total a cursor carries (None: an older cursor without one; count again)."""
    if count is None:
        return None
    if not isinstance(count, int) or count < 0 or not isinstance(lower_bound, bool):
        raise ValueError("bad total")
    return Total(count, lower_bound)


def scheduled_range(after: Cursor | None) -> ColumnElement[bool]:
    """Tasks with a next run, after the cursor (all of them without one)."""
    has_next = ScheduledTask.next_run_at.is_not(None)
    if after is None:
        return has_next
    if after.next_run_at is None:  # the cursor is already in the second range
        return false()
    key = tuple_(ScheduledTask.next_run_at, ScheduledTask.created_at, ScheduledTask.id)
    return and_(has_next, key > tuple_(after.next_run_at, after.created_at, after.task_id))


def unscheduled_range(after: Cursor | None) -> ColumnElement[bool]:
    """Tasks without a next run, after the cursor (all of them if it is in the first)."""
    no_next = ScheduledTask.next_run_at.is_(None)
    if after is None or after.next_run_at is not None:
        return no_next
    key = tuple_(ScheduledTask.created_at, ScheduledTask.id)
    return and_(no_next, key > tuple_(after.created_at, after.task_id))


def in_order(query: Select[Any]) -> Select[Any]:
    return query.order_by(ScheduledTask.next_run_at, ScheduledTask.created_at, ScheduledTask.id)


def count(session: Session, where: Sequence[ColumnElement[bool]]) -> int:
    return int(session.scalar(select(func.count()).select_from(ScheduledTask).where(*where)) or 0)


def bounded_total(session: Session, where: Sequence[ColumnElement[bool]], bound: int) -> Total:
    """The tasks matching ``where``, counted exactly up to ``bound``: at most ``bound + 1``
    index entries are read, however many tasks the user has."""
    matching = select(literal(1)).select_from(ScheduledTask).where(*where).limit(bound + 1)
    found = int(session.scalar(select(func.count()).select_from(matching.subquery())) or 0)
    return Total(min(found, bound), lower_bound=found > bound)


def read_page(
    session: Session,
    where: Sequence[ColumnElement[bool]],
    after: Cursor | None,
    *,
    limit: int,
    offset: int,
) -> tuple[list[ScheduledTask], Total]:
    """Up to ``limit + 1`` tasks (one more tells whether a next page exists) after the
    cursor, or past ``offset`` without one; and the total: the cursor's, else counted
    (up to ``COUNT_BOUND``).

    Synchronous, for ``Database.read_sync``: the count and both ranges are one trip off
    the event loop, from one snapshot."""
    carried = after.total if after is not None else None
    total = carried if carried is not None else bounded_total(session, where, COUNT_BOUND)
    rows: list[ScheduledTask] = []
    skip = 0 if after else offset
    for in_range in (scheduled_range(after), unscheduled_range(after)):
        wanted = limit + 1 - len(rows)
        if wanted <= 0:
            break
        in_this = (*where, in_range)
        page = in_order(select(ScheduledTask).where(*in_this)).offset(skip).limit(wanted)
        found = session.scalars(page).all()
        # An offset past this range continues into the next, less this range's tasks.
        skip = max(0, skip - count(session, in_this)) if skip and not found else 0
        rows.extend(found)
    return rows, total
