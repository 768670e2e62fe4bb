"""What a phrase becomes: ``Elapsed``, ``WallClock``, ``Rule`` or ``OneTime``, each with
the ``Limits`` the phrase said, and ``EXAMPLES``, the accepted forms a refusal quotes.

The vocabulary every part of the phrase grammar speaks (the builders in
``repeating_forms`` and ``one_time_forms``, the table in ``grammar``, the limits in
``phrase_limits``) and what ``phrase_schedules`` turns into a schedule. Pure data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Literal

EXAMPLES = (
    '"every weekday at 9am", "every monday and thursday at 8:00", "every mon-thu at 18:30", '
    '"every other tuesday at 9", "twice a day at 8 and 20", "first monday of the month at 10", '
    '"last friday of the month at 17:00", "on the 1st and 15th at 9", '
    '"last business day of the month at 16", "every year on March 3 at 9", '
    '"every quarter on the 1st at 9", "every 15 minutes between 9 and 17 on weekdays", '
    '"every hour on the half hour", "every 2 hours", "every day at 9am except weekends", '
    '"every 3 weeks on thursday starting Feb 4", "every 10 minutes for the next hour", '
    '"every day at 9am (Europe/Berlin)", "in 2 hours", "tomorrow at 7", '
    '"next tuesday at 9", "March 3 at 5pm"'
)


@dataclass(frozen=True)
class Limits:
    """What a phrase says besides its repetition (None: not said).

    ``start`` and ``end`` are naive local wall times in the task's zone: the schedule
    starts at ``start`` (its phase counts from there) and has no run after ``end``.
    ``notes`` state how an ambiguous word was read, for the caller to confirm.
    """

    start: datetime | None = None
    end: datetime | None = None
    max_runs: int | None = None
    zone: str | None = None
    except_dates: tuple[date, ...] = ()  # local dates without runs ('except Dec 25')
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Elapsed:
    """Every ``interval`` seconds/minutes/hours of real time (first run one interval on)."""

    unit: Literal["seconds", "minutes", "hours"]
    interval: int
    limits: Limits = field(default=Limits(), compare=False)


@dataclass(frozen=True)
class WallClock:
    """Every ``interval`` days/weeks/months at ``at`` (None: the caller's default time).

    ``weekdays`` (0=Monday) for weeks and ``day_of_month`` (1–31, -1 last) for months are
    None when the phrase names no day.
    """

    unit: Literal["days", "weeks", "months"]
    interval: int = 1
    at: time | None = None
    weekdays: tuple[int, ...] | None = None
    day_of_month: int | None = None
    limits: Limits = field(default=Limits(), compare=False)


@dataclass(frozen=True)
class Rule:
    """RRULE lines sharing one DTSTART (naive local wall time); their union is the schedule."""

    rules: tuple[str, ...]
    dtstart: datetime
    limits: Limits = field(default=Limits(), compare=False)

    def text(self) -> str:
        lines = [f"DTSTART:{self.dtstart:%Y%m%dT%H%M%S}"]
        return "\n".join(lines + [f"RRULE:{rule}" for rule in self.rules])


@dataclass(frozen=True)
class OneTime:
    """A single run at ``at`` (aware, UTC)."""

    at: datetime
    limits: Limits = field(default=Limits(), compare=False)


Phrase = Elapsed | WallClock | Rule | OneTime
