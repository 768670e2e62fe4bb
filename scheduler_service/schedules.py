"""Schedules: user input → a validated ``Schedule`` → an APScheduler trigger.

Pure domain logic: no I/O, ``now`` is always passed in, so every rule here is testable
with computed instants.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from scheduler_service.triggers import WallClockTrigger, localize

FREQUENCIES = ("once", "minutely", "hourly", "daily", "weekly", "monthly", "custom")
ELAPSED_UNITS = {"minutes": 60, "hours": 3600}
WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
CUSTOM_EXAMPLES = (
    '"every 15 minutes", "every 2 hours", "every 3 days", "every 3 days at 09:30", '
    '"every 2 weeks at 08:00", "every 1 month at 10:00"'
)
_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_CUSTOM_RE = re.compile(
    r"^every\s+(?:(\d+)\s+)?(minute|hour|day|week|month)s?(?:\s+at\s+(\S+))?$", re.IGNORECASE
)


class ScheduleError(ValueError):
    """A schedule field is wrong. ``field`` names it; the message says what is accepted."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ScheduleInput:
    """The schedule fields of create_task / update_task, as the caller gave them."""

    frequency: str
    scheduled_time: str | None = None
    day_of_week: int | str | list[int | str] | None = None
    day_of_month: int | None = None
    custom_schedule: str | None = None
    timezone: str | None = None
    end_time: str | None = None
    max_runs: int | None = None


@dataclass(frozen=True)
class Schedule:
    """A validated schedule. ``start_at`` is the first instant a run may happen (UTC)."""

    frequency: str
    timezone: str
    start_at: datetime
    unit: str | None = None  # minutes | hours | days | weeks | months; None for once
    interval: int = 1
    at: time | None = None
    weekdays: tuple[int, ...] = field(default_factory=tuple)
    day_of_month: int | None = None
    end_time: datetime | None = None
    max_runs: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form stored with the task, from which its trigger is rebuilt."""
        return {
            "frequency": self.frequency,
            "timezone": self.timezone,
            "start_at": self.start_at.isoformat(),
            "unit": self.unit,
            "interval": self.interval,
            "at": self.at.isoformat() if self.at else None,
            "weekdays": list(self.weekdays),
            "day_of_month": self.day_of_month,
            "end_time": self.end_time.isoformat() if self.end_time else None,
            "max_runs": self.max_runs,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        return cls(
            frequency=data["frequency"],
            timezone=data["timezone"],
            start_at=datetime.fromisoformat(data["start_at"]),
            unit=data.get("unit"),
            interval=int(data.get("interval") or 1),
            at=time.fromisoformat(data["at"]) if data.get("at") else None,
            weekdays=tuple(data.get("weekdays") or ()),
            day_of_month=data.get("day_of_month"),
            end_time=datetime.fromisoformat(data["end_time"]) if data.get("end_time") else None,
            max_runs=data.get("max_runs"),
        )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def elapsed(self) -> bool:
        return self.unit in ELAPSED_UNITS


# -- field parsers ---------------------------------------------------------------------
def parse_timezone(value: str | None, default: str) -> str:
    name = (value or default).strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            "timezone",
            f"{name!r} is not an IANA timezone; use a name such as 'UTC', "
            "'America/New_York' or 'Europe/Paris'",
        ) from None
    return name


def parse_time_of_day(value: str, field_name: str = "scheduled_time") -> time:
    match = _TIME_RE.match(value.strip())
    if match:
        hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
        if hour < 24 and minute < 60 and second < 60:
            return time(hour, minute, second)
    raise ScheduleError(
        field_name, f"{value!r} is not a time of day; use HH:MM or HH:MM:SS (24-hour), e.g. 09:00"
    )


def parse_datetime(value: str, zone: ZoneInfo, field_name: str) -> datetime:
    """ISO 8601; a naive value is wall time in ``zone``. Returns an aware UTC instant."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ScheduleError(
            field_name,
            f"{value!r} is not a time; use HH:MM[:SS] or an ISO 8601 datetime such as "
            "2026-12-24T18:00 (naive means the task's timezone) or 2026-12-24T18:00:00+01:00",
        ) from None
    if parsed.tzinfo is None:
        return localize(parsed, zone).astimezone(UTC)
    return parsed.astimezone(UTC)


def parse_weekdays(value: int | str | list[int | str] | None) -> tuple[int, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ScheduleError("day_of_week", "empty list; give 0=Monday … 6=Sunday or a list")
    days: set[int] = set()
    for item in items:
        if isinstance(item, bool):
            item = str(item)
        if isinstance(item, int) and 0 <= item <= 6:
            days.add(item)
            continue
        if isinstance(item, str):
            text = item.strip().lower()
            if text.isdigit() and 0 <= int(text) <= 6:
                days.add(int(text))
                continue
            matches = [i for i, name in enumerate(WEEKDAY_NAMES) if name.startswith(text[:3])]
            if len(text) >= 3 and len(matches) == 1 and WEEKDAY_NAMES[matches[0]].startswith(text):
                days.add(matches[0])
                continue
        raise ScheduleError(
            "day_of_week",
            f"{item!r} is not a day of the week; use 0=Monday … 6=Sunday, a name such as "
            "'monday', or a list such as [0, 2, 4]",
        )
    return tuple(sorted(days))


def parse_day_of_month(value: int | None) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (value == -1 or 1 <= value <= 31)
    ):
        raise ScheduleError(
            "day_of_month",
            f"{value!r} is not a day of the month; use 1–31 (29–31 run on the last day of "
            "shorter months) or -1 for the last day",
        )
    return value


# -- schedule parsing ------------------------------------------------------------------
def parse_schedule(
    data: ScheduleInput, *, now: datetime, default_timezone: str, min_interval: int = 60
) -> Schedule:
    """Validate the schedule fields; raise ScheduleError naming the first bad field."""
    frequency = (data.frequency or "").strip().lower()
    if frequency not in FREQUENCIES:
        raise ScheduleError(
            "frequency",
            f"{data.frequency!r} is not a frequency; use one of {', '.join(FREQUENCIES)}",
        )
    tz = parse_timezone(data.timezone, default_timezone)
    zone = ZoneInfo(tz)
    now = now.astimezone(UTC)
    end_time = parse_datetime(data.end_time, zone, "end_time") if data.end_time else None
    if end_time is not None and end_time <= now:
        raise ScheduleError("end_time", f"{data.end_time!r} is in the past; give a future time")
    if data.max_runs is not None and (isinstance(data.max_runs, bool) or data.max_runs < 1):
        raise ScheduleError("max_runs", f"{data.max_runs!r} must be a whole number >= 1")
    common: dict[str, Any] = {"timezone": tz, "end_time": end_time, "max_runs": data.max_runs}

    if frequency == "once":
        if not data.scheduled_time:
            raise ScheduleError(
                "scheduled_time",
                "required for a once task; give HH:MM (next occurrence) or an ISO datetime",
            )
        run_at = _first_instant(data.scheduled_time, zone, now)
        if run_at <= now:
            raise ScheduleError(
                "scheduled_time",
                f"{data.scheduled_time!r} is in the past ({run_at.astimezone(zone).isoformat()}); "
                "give a future time",
            )
        return Schedule(frequency="once", start_at=run_at, **common)
    if frequency in ("minutely", "hourly"):
        unit = "minutes" if frequency == "minutely" else "hours"
        return _elapsed(frequency, unit, 1, data.scheduled_time, zone, now, min_interval, common)
    if frequency == "daily":
        return _wall_clock("daily", "days", 1, data, zone, now, common)
    if frequency == "weekly":
        return _wall_clock("weekly", "weeks", 1, data, zone, now, common)
    if frequency == "monthly":
        return _wall_clock("monthly", "months", 1, data, zone, now, common)
    return _custom(data, zone, now, min_interval, common)


def _first_instant(value: str, zone: ZoneInfo, now: datetime) -> datetime:
    """HH:MM → its next occurrence (today if still ahead); ISO → that instant."""
    if _TIME_RE.match(value.strip()):
        at = parse_time_of_day(value)
        today = now.astimezone(zone).date()
        candidate = localize(datetime.combine(today, at), zone)
        if candidate <= now:
            candidate = localize(datetime.combine(today + timedelta(days=1), at), zone)
        return candidate.astimezone(UTC)
    return parse_datetime(value, zone, "scheduled_time")


def _elapsed(
    frequency: str,
    unit: str,
    interval: int,
    scheduled_time: str | None,
    zone: ZoneInfo,
    now: datetime,
    min_interval: int,
    common: dict[str, Any],
) -> Schedule:
    seconds = interval * ELAPSED_UNITS[unit]
    if seconds < min_interval:
        raise ScheduleError(
            "custom_schedule" if frequency == "custom" else "frequency",
            f"runs every {seconds} s, more often than the minimum interval of {min_interval} s; "
            "choose a longer interval",
        )
    start = (
        _first_instant(scheduled_time, zone, now)
        if scheduled_time
        else now + timedelta(seconds=seconds)
    )
    return Schedule(frequency=frequency, start_at=start, unit=unit, interval=interval, **common)


def _wall_clock(
    frequency: str,
    unit: str,
    interval: int,
    data: ScheduleInput,
    zone: ZoneInfo,
    now: datetime,
    common: dict[str, Any],
    at: time | None = None,
) -> Schedule:
    start = now
    if at is None:
        if not data.scheduled_time:
            raise ScheduleError(
                "scheduled_time", f"required for {frequency} schedules; give HH:MM such as 09:00"
            )
        if _TIME_RE.match(data.scheduled_time.strip()):
            at = parse_time_of_day(data.scheduled_time)
        else:  # an ISO datetime: its local time of day, and not before it
            start = max(now, parse_datetime(data.scheduled_time, zone, "scheduled_time"))
            at = start.astimezone(zone).time().replace(microsecond=0)
    weekdays: tuple[int, ...] = ()
    day_of_month: int | None = None
    local_start = start.astimezone(zone)
    if unit == "weeks":
        weekdays = parse_weekdays(data.day_of_week) or (local_start.weekday(),)
        if data.day_of_week is None and frequency == "weekly":
            raise ScheduleError(
                "day_of_week", "required for weekly schedules; give 0=Monday … 6=Sunday or a list"
            )
    if unit == "months":
        if data.day_of_month is None and frequency == "monthly":
            raise ScheduleError(
                "day_of_month", "required for monthly schedules; give 1–31, or -1 for the last day"
            )
        day_of_month = parse_day_of_month(
            data.day_of_month if data.day_of_month is not None else local_start.day
        )
    schedule = Schedule(
        frequency=frequency,
        start_at=start,
        unit=unit,
        interval=interval,
        at=at,
        weekdays=weekdays,
        day_of_month=day_of_month,
        **common,
    )
    # Count "every N" from the first run still ahead, not from a time already past today.
    first = build_trigger(replace(schedule, interval=1)).get_next_fire_time(None, now)
    if first is None:
        raise ScheduleError("end_time", "ends before the first run; give a later end_time")
    return replace(schedule, start_at=first.astimezone(UTC))


def _custom(
    data: ScheduleInput, zone: ZoneInfo, now: datetime, min_interval: int, common: dict[str, Any]
) -> Schedule:
    text = (data.custom_schedule or "").strip()
    match = _CUSTOM_RE.match(" ".join(text.split()))
    if not match:
        got = f"{text!r} is not understood" if text else "required when frequency is custom"
        raise ScheduleError("custom_schedule", f"{got}; accepted forms: {CUSTOM_EXAMPLES}")
    interval = int(match[1] or 1)
    if interval < 1:
        raise ScheduleError("custom_schedule", f"{text!r}: the interval must be at least 1")
    unit = match[2].lower() + "s"
    at_text = match[3]
    if unit in ELAPSED_UNITS:
        if at_text:
            raise ScheduleError(
                "custom_schedule",
                f"{text!r}: 'at HH:MM' only goes with days, weeks or months; for minutes and "
                "hours give the first run in scheduled_time",
            )
        return _elapsed(
            "custom", unit, interval, data.scheduled_time, zone, now, min_interval, common
        )
    at = parse_time_of_day(at_text, "custom_schedule") if at_text else None
    if at is None and data.scheduled_time and _TIME_RE.match(data.scheduled_time.strip()):
        at = parse_time_of_day(data.scheduled_time)
    if at is None and not data.scheduled_time:
        at = now.astimezone(zone).time().replace(second=0, microsecond=0)
    return _wall_clock("custom", unit, interval, data, zone, now, common, at=at)


# -- triggers and words ----------------------------------------------------------------
def build_trigger(schedule: Schedule) -> BaseTrigger:
    """The APScheduler trigger that fires this schedule."""
    if schedule.frequency == "once":
        return DateTrigger(run_date=schedule.start_at, timezone=UTC)
    if schedule.elapsed:
        assert schedule.unit is not None
        return IntervalTrigger(
            seconds=schedule.interval * ELAPSED_UNITS[schedule.unit],
            start_date=schedule.start_at,
            end_date=schedule.end_time,
            timezone=UTC,
        )
    assert schedule.unit is not None and schedule.at is not None
    return WallClockTrigger(
        timezone=schedule.timezone,
        at=schedule.at,
        unit=schedule.unit,
        interval=schedule.interval,
        weekdays=schedule.weekdays,
        day_of_month=schedule.day_of_month,
        anchor=schedule.start_at.astimezone(schedule.zone).date(),
        not_before=schedule.start_at,
        end_time=schedule.end_time,
    )


def next_runs(schedule: Schedule, count: int, now: datetime) -> list[datetime]:
    """The next ``count`` fire times after ``now`` (ignoring max_runs already used)."""
    trigger = build_trigger(schedule)
    out: list[datetime] = []
    previous: datetime | None = None
    while len(out) < count:
        nxt = trigger.get_next_fire_time(previous, now)
        if nxt is None:
            break
        out.append(nxt)
        previous = nxt
    return out


def _plural(n: int, unit: str) -> str:
    return f"{unit[:-1]}" if n == 1 else f"{n} {unit}"


def describe(schedule: Schedule) -> str:
    """The schedule in words, with its zone, e.g. 'every Monday at 08:00 (Europe/Paris)'."""
    zone = schedule.timezone
    if schedule.frequency == "once":
        return f"once at {schedule.start_at.astimezone(schedule.zone):%Y-%m-%d %H:%M:%S} ({zone})"
    assert schedule.unit is not None
    every = f"every {_plural(schedule.interval, schedule.unit)}"
    if schedule.elapsed:
        start = schedule.start_at.astimezone(schedule.zone)
        text = f"{every}, starting {start:%Y-%m-%d %H:%M:%S} ({zone})"
    else:
        assert schedule.at is not None
        at = schedule.at.strftime("%H:%M" if schedule.at.second == 0 else "%H:%M:%S")
        if schedule.unit == "weeks":
            days = ", ".join(WEEKDAY_NAMES[d].capitalize() for d in schedule.weekdays)
            every = f"every {days}" if schedule.interval == 1 else f"{every} on {days}"
        elif schedule.unit == "months":
            day = "last day" if schedule.day_of_month == -1 else f"day {schedule.day_of_month}"
            every = f"{every} on the {day}"
            if schedule.day_of_month and schedule.day_of_month > 28:
                every += " (last day of shorter months)"
        text = f"{every} at {at} ({zone})"
    if schedule.end_time:
        text += f", until {schedule.end_time.astimezone(schedule.zone):%Y-%m-%d %H:%M}"
    if schedule.max_runs:
        text += f", at most {schedule.max_runs} run{'s' if schedule.max_runs != 1 else ''}"
    return text


def local_date(instant: datetime, zone: str) -> date:
    return instant.astimezone(ZoneInfo(zone)).date()
