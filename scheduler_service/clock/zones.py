"""Local wall time in a zone: the wall-clock rule, offset changes, month arithmetic.

Wall-clock rule (RFC 5545): a schedule fires once per scheduled local date and time. A
local time that does not exist (spring forward) is read with the offset before the gap,
so 02:30 on the day clocks jump from 02:00 to 03:00 fires at 03:30 new time; a local time
that occurs twice (fall back) fires at its first occurrence only. Python's ``fold=0``
gives exactly these readings, so localising with ``fold=0`` is the whole rule.

Fire times are returned in UTC: Python compares and subtracts two datetimes that share
a tzinfo object by wall time, which is wrong across a DST change (01:00 EDT and 01:00 EST
would be "equal"). ZoneInfo objects are cached, so any two in one zone share it.
"""

from __future__ import annotations

import calendar
import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

ONE_DAY = timedelta(days=1)
ONE_SECOND = timedelta(seconds=1)
MAX_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # in any year


def localize(local: datetime, zone: ZoneInfo) -> datetime:
    """A naive local wall time → the aware instant the wall-clock rule assigns to it."""
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC).astimezone(zone)


def wall(instant: datetime, zone: tzinfo) -> datetime:
    """The naive local wall time an aware instant shows in ``zone``."""
    return instant.astimezone(zone).replace(tzinfo=None)


def readings(local: datetime, zone: tzinfo) -> list[datetime]:
    """Every real instant (UTC) whose local time is ``local``: none in a gap, two in an overlap."""
    found: list[datetime] = []
    for fold in (0, 1):
        instant = local.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if wall(instant, zone) == local and instant not in found:
            found.append(instant)
    return sorted(found)


def offset_swing(zone: tzinfo, instant: datetime) -> timedelta:
    """How far the zone's UTC offset moves within a day of ``instant`` (0 almost always)."""
    offsets = [
        (instant + k * ONE_DAY).astimezone(zone).utcoffset() or timedelta() for k in (-1, 0, 1)
    ]
    return max(offsets) - min(offsets)


@dataclass(frozen=True)
class Transition:
    """A change of UTC offset: at ``at`` (UTC) the offset goes from ``before`` to ``after``."""

    at: datetime
    before: timedelta
    after: timedelta

    @property
    def is_gap(self) -> bool:
        return self.after > self.before

    def local_span(self) -> tuple[datetime, datetime]:
        """The naive local times that do not exist (gap) or occur twice (overlap)."""
        start = (self.at + min(self.before, self.after)).replace(tzinfo=None)
        return start, start + abs(self.after - self.before)


def offset_transitions(zone: tzinfo, start: datetime, end: datetime) -> list[Transition]:
    """The UTC offset changes of ``zone`` after ``start`` and up to ``end``.

    The scan is computed for whole hours around the span and cached: every preview of a
    schedule asks this for the year ahead, and tasks created in the same zone within the
    same hour share one scan (a year of 6-hour steps costs about a millisecond)."""
    hour = timedelta(hours=1)
    low = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    high = end.astimezone(UTC).replace(minute=0, second=0, microsecond=0) + hour
    return [t for t in _scan_transitions(zone, low, high) if start < t.at <= end]


@functools.lru_cache(maxsize=256)
def _scan_transitions(zone: tzinfo, start: datetime, end: datetime) -> tuple[Transition, ...]:
    """The offset changes between two instants, found by scan and bisection."""
    step = timedelta(hours=6)
    found: list[Transition] = []
    here = start
    before = here.astimezone(zone).utcoffset()
    while here < end:
        there = min(here + step, end)
        after = there.astimezone(zone).utcoffset()
        if after != before and before is not None and after is not None:
            low, high = here, there
            while high - low > ONE_SECOND:
                middle = low + (high - low) / 2
                low, high = (
                    (middle, high)
                    if middle.astimezone(zone).utcoffset() == before
                    else (low, middle)
                )
            found.append(Transition(high.replace(microsecond=0), before, after))
        here, before = there, after
    return tuple(found)


def clamp_day(year: int, month: int, day: int) -> int:
    """Day 29–31 → last day of a shorter month; -1 → last day."""
    last = calendar.monthrange(year, month)[1]
    return last if day == -1 else min(day, last)


def month_index(d: date) -> int:
    return d.year * 12 + d.month - 1


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def scheduled_date(fire: datetime, at: time, zone: ZoneInfo) -> date:
    """The local date a wall-clock fire belongs to.

    Usually the fire's own local date; the day before when a gap reading pushed the run past
    midnight (America/Nuuk: 23:30 on the spring-forward evening runs at 00:30 next day).
    """
    day = wall(fire, zone).date()
    if localize(datetime.combine(day, at), zone).astimezone(UTC) == fire.astimezone(UTC):
        return day
    return day - ONE_DAY
