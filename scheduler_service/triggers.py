"""APScheduler triggers that follow the project's time rules.

Pickled into the job store by module path: never rename this module or its classes
(a job whose trigger class cannot be imported is deleted by APScheduler on load).

Wall-clock rule (RFC 5545): a schedule fires once per scheduled local date. A local time
that does not exist (spring forward) is read with the offset before the gap, so 02:30 on
the day clocks jump from 02:00 to 03:00 fires at 03:30 new time; a local time that occurs
twice (fall back) fires at its first occurrence only. Python's ``fold=0`` gives exactly
these readings, so localising with ``fold=0`` is the whole rule.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger

WALL_CLOCK_UNITS = ("days", "weeks", "months")
_SEARCH_LIMIT_DAYS = 366 * 30  # no schedule we accept has a gap this long between runs


def localize(local: datetime, zone: ZoneInfo) -> datetime:
    """A naive local wall time → the aware instant the wall-clock rule assigns to it."""
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC).astimezone(zone)


def clamp_day(year: int, month: int, day: int) -> int:
    """Day 29–31 → last day of a shorter month; -1 → last day."""
    last = calendar.monthrange(year, month)[1]
    return last if day == -1 else min(day, last)


def _month_index(d: date) -> int:
    return d.year * 12 + d.month - 1


class WallClockTrigger(BaseTrigger):  # type: ignore[misc]
    """Every N days / weeks (on given weekdays) / months (on a day) at a local time."""

    def __init__(
        self,
        *,
        timezone: str,
        at: time,
        unit: str,
        interval: int = 1,
        weekdays: tuple[int, ...] = (),
        day_of_month: int | None = None,
        anchor: date,
        not_before: datetime,
        end_time: datetime | None = None,
    ) -> None:
        if unit not in WALL_CLOCK_UNITS:
            raise ValueError(f"unit must be one of {WALL_CLOCK_UNITS}")
        if interval < 1:
            raise ValueError("interval must be >= 1")
        if unit == "months" and day_of_month is None:
            raise ValueError("monthly schedules need day_of_month")
        self.timezone = timezone
        self.at = at.replace(tzinfo=None)
        self.unit = unit
        self.interval = interval
        self.weekdays = tuple(sorted(set(weekdays))) if unit == "weeks" else ()
        if unit == "weeks" and not self.weekdays:
            self.weekdays = (anchor.weekday(),)
        self.day_of_month = day_of_month
        self.anchor = anchor
        self.not_before = not_before.astimezone(UTC)
        self.end_time = end_time.astimezone(UTC) if end_time else None
        self._zone = ZoneInfo(timezone)

    # -- the schedule as local dates -------------------------------------------------
    def _matches(self, d: date) -> bool:
        if d < self.anchor:
            return False
        if self.unit == "days":
            return (d - self.anchor).days % self.interval == 0
        if self.unit == "weeks":
            if d.weekday() not in self.weekdays:
                return False
            weeks = (
                (d - timedelta(d.weekday())) - (self.anchor - timedelta(self.anchor.weekday()))
            ).days // 7
            return weeks % self.interval == 0
        assert self.day_of_month is not None
        if (_month_index(d) - _month_index(self.anchor)) % self.interval:
            return False
        return d.day == clamp_day(d.year, d.month, self.day_of_month)

    def _fire_on(self, d: date) -> datetime:
        return localize(datetime.combine(d, self.at), self._zone)

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        if previous_fire_time is not None:
            threshold = previous_fire_time + timedelta(microseconds=1)
        else:
            threshold = now
        threshold = max(threshold.astimezone(UTC), self.not_before)
        # A fire instant can sit on the local date before the threshold's only if the
        # threshold is within a DST shift of midnight; start one day early to be safe.
        day = max(threshold.astimezone(self._zone).date() - timedelta(days=1), self.anchor)
        for _ in range(_SEARCH_LIMIT_DAYS):
            if self._matches(day):
                fire = self._fire_on(day)
                if fire >= threshold:
                    if self.end_time is not None and fire > self.end_time:
                        return None
                    return fire
            day += timedelta(days=1)
        return None

    # -- persistence -----------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "version": 1,
            "timezone": self.timezone,
            "at": self.at,
            "unit": self.unit,
            "interval": self.interval,
            "weekdays": self.weekdays,
            "day_of_month": self.day_of_month,
            "anchor": self.anchor,
            "not_before": self.not_before,
            "end_time": self.end_time,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("version", 1) > 1:
            raise ValueError(f"WallClockTrigger state version {state['version']} is not supported")
        for key in (
            "timezone",
            "at",
            "unit",
            "interval",
            "weekdays",
            "day_of_month",
            "anchor",
            "not_before",
            "end_time",
        ):
            setattr(self, key, state[key])
        self._zone = ZoneInfo(self.timezone)

    def __str__(self) -> str:
        return f"wallclock[{self.unit}/{self.interval} at {self.at} {self.timezone}]"

    def __repr__(self) -> str:
        return f"<WallClockTrigger {self.__getstate__()!r}>"
