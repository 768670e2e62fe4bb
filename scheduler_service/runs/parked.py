"""A claimed run parked while it waits for a slot: its column values, nothing more.

A burst of 10,000 due runs on 50 slots keeps 9,950 of them waiting. As ORM objects each
costs seven objects the garbage collector tracks (instance, state, dicts, weak
reference), and every full collection walks them all while the event loop waits. A
tuple of plain values (strings, times, numbers) is untracked after its first
collection: parked runs cost the collector nothing. The run becomes an ORM object
again, detached as it was, when it gets its slot.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm import make_transient_to_detached

from scheduler_service.storage.models import TaskRun

ParkedRun = tuple[Any, ...]

_COLUMNS: tuple[str, ...] = tuple(inspect(TaskRun).column_attrs.keys())


def park(run: TaskRun) -> ParkedRun:
    """The run's column values, in ``_COLUMNS`` order. A column the object holds no value
    for is None: runs on this path come from sessions that never expire what they
    wrote, so such a column is one the claim left NULL."""
    values = inspect(run).dict
    return tuple(_plain(values.get(name)) for name in _COLUMNS)


def _plain(value: Any) -> Any:
    """A status or kind enum member as its string (what a row loaded from the database
    holds): enum members are objects the collector tracks, and a tuple holding one is
    tracked too."""
    return value.value if isinstance(value, Enum) else value


def unpark(parked: ParkedRun) -> TaskRun:
    """The run as a detached object, as the claim's session left it: the same values,
    the same identity (never inserted again if added to a session)."""
    run = TaskRun(**dict(zip(_COLUMNS, parked, strict=True)))
    make_transient_to_detached(run)
    return run
