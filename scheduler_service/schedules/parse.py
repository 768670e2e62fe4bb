"""Parsing schedules: user input → a validated ``Schedule`` → an APScheduler trigger.

Pure domain logic: no I/O, ``now`` is always passed in, so every rule here is testable
with computed instants. The time rules themselves (DST gaps and overlaps, month ends)
live in ``scheduler_service.clock`` and the trigger classes in ``triggers``;
docs/time.md explains them with examples.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from dateutil.relativedelta import relativedelta

from scheduler_service.clock.cron import parse_cron
from scheduler_service.clock.rrule import parse_rrule
from scheduler_service.clock.zones import (
    localize,
    scheduled_date,
    wall,
)
from scheduler_service.statuses import FREQUENCIES, Frequency
from scheduler_service.triggers import LocalCronTrigger, LocalRRuleTrigger, WallClockTrigger

ELAPSED_UNITS = {"minutes": 60, "hours": 3600}
WALL_UNITS = ("days", "weeks", "months")
MAX_INTERVAL = {"minutes": 527_040, "hours": 8784, "days": 3660, "weeks": 520, "months": 120}
WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
CUSTOM_EXAMPLES = (
    '"every 15 minutes", "every 2 hours", "every day at 07:15", "every 3 days at 09:30", '
    '"every weekday at 08:00", "every 2 weeks on monday, thursday at 08:00", '
    '"every month on the 15th at 10:00", "cron: 30 8 * * 1-5", "*/15 9-17 * * *", '
    '"RRULE:FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=8;BYMINUTE=0"'
)
GAP_SAMPLE = 300  # fire times checked against the minimum interval (cron, RRULE)
PREVIEW_HORIZON = timedelta(days=366)

TIME_OF_DAY = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_EVERY_UNIT = re.compile(
    r"^every\s+(?:(?P<n>\d+|other)\s+)?(?P<unit>minute|hour|day|week|month)s?\b\s*(?P<rest>.*)$"
)
_EVERY_DAYS = re.compile(r"^every\s+(?P<days>.+?)\s*(?P<rest>\b(?:at|on)\s.*)?$")
_CLAUSE = re.compile(r"(at|on)\s+(.+?)\s*(?=\b(?:at|on)\s|$)")
_DAY_SPLIT = re.compile(r"\s*(?:,|&|/|\band\b|\bor\b)\s*|\s+")
_MONTH_DAY = re.compile(
    r"^(?:the\s+)?(?:day\s+)?(?:(?P<n>\d{1,2})(?:st|nd|rd|th)?|(?P<last>last)(?:\s+day)?)"
    r"(?:\s+of\s+the\s+month)?$"
)
_CRON_TOKEN = re.compile(r"^(?:[0-9*/,\-?#lw]+|[a-z]{3}(?:[-,/][a-z0-9]{1,3})*)$")
_TZID = re.compile(r"TZID=([^:;\s]+)", re.IGNORECASE)


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
    """A validated schedule. ``start_at`` is the first fire time (UTC).

    Kinds: ``once``; elapsed (``unit`` minutes/hours); wall-clock (``unit`` days/weeks/
    months with ``at``); a rule (``expression`` in ``syntax`` "cron" or "rrule").
    """

    frequency: str
    timezone: str
    start_at: datetime
    unit: str | None = None  # minutes | hours | days | weeks | months; None for once / rules
    interval: int = 1
    at: time | None = None
    weekdays: tuple[int, ...] = field(default_factory=tuple)
    day_of_month: int | None = None
    end_time: datetime | None = None
    max_runs: int | None = None
    expression: str | None = None  # cron: "30 8 * * 1-5"; rrule: "DTSTART:…\nRRULE:…"
    syntax: str | None = None  # "cron" | "rrule" when expression is set

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
            "expression": self.expression,
            "syntax": self.syntax,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        """Read a dict from ``to_dict`` — also those written before a key existed."""
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
            expression=data.get("expression"),
            syntax=data.get("syntax"),
        )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def elapsed(self) -> bool:
        return self.unit in ELAPSED_UNITS


# -- field parsers ---------------------------------------------------------------------
def parse_timezone(value: str | None, default: str, field_name: str = "timezone") -> str:
    name = (value or default).strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            field_name,
            f"{name!r} is not an IANA timezone; use a name such as 'UTC', "
            "'America/New_York' or 'Europe/Paris'",
        ) from None
    return name


def parse_time_of_day(value: str, field_name: str = "scheduled_time") -> time:
    match = TIME_OF_DAY.match(value.strip())
    if match:
        hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
        if hour < 24 and minute < 60 and second < 60:
            return time(hour, minute, second)
    raise ScheduleError(
        field_name, f"{value!r} is not a time of day; use HH:MM or HH:MM:SS (24-hour), e.g. 09:00"
    )


def parse_local_datetime(value: str, zone: ZoneInfo, field_name: str) -> tuple[datetime, datetime]:
    """ISO 8601 → (the UTC instant, the local wall time as written or as seen in ``zone``).

    A naive value is wall time in ``zone``; its instant follows the wall-clock rule.
    """
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
    try:
        if parsed.tzinfo is None:
            return localize(parsed, zone).astimezone(UTC), parsed
        return parsed.astimezone(UTC), wall(parsed, zone)
    except OverflowError:  # e.g. 9999-12-31T23:59-05:00 is past year 9999 in UTC
        raise ScheduleError(
            field_name, f"{value!r} is out of range; give a date between years 1900 and 9998"
        ) from None


def parse_datetime(value: str, zone: ZoneInfo, field_name: str) -> datetime:
    """ISO 8601; a naive value is wall time in ``zone``. Returns an aware UTC instant."""
    return parse_local_datetime(value, zone, field_name)[0]


def parse_weekdays(
    value: int | str | list[int | str] | None, field_name: str = "day_of_week"
) -> tuple[int, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ScheduleError(field_name, "empty list; give 0=Monday … 6=Sunday or a list")
    days: set[int] = set()
    for item in items:
        day = _weekday(item)
        if day is None:
            raise ScheduleError(
                field_name,
                f"{item!r} is not a day of the week; use 0=Monday … 6=Sunday, a name such as "
                "'monday', or a list such as [0, 2, 4]",
            )
        days.add(day)
    return tuple(sorted(days))


def _weekday(item: int | str) -> int | None:
    """0–6, "0"–"6", or a (plural) name or prefix of at least 3 letters → 0=Monday."""
    if isinstance(item, bool):
        return None
    if isinstance(item, int):
        return item if 0 <= item <= 6 else None
    text = item.strip().lower()
    if text.isdigit():
        return int(text) if 0 <= int(text) <= 6 else None
    for candidate in (text, text.removesuffix("s")):
        matches = [i for i, name in enumerate(WEEKDAY_NAMES) if name.startswith(candidate)]
        if len(candidate) >= 3 and len(matches) == 1:
            return matches[0]
    return None


def parse_day_of_month(value: int | None, field_name: str = "day_of_month") -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (value == -1 or 1 <= value <= 31)
    ):
        raise ScheduleError(
            field_name,
            f"{value!r} is not a day of the month; use 1–31 (29–31 run on the last day of "
            "shorter months) or -1 for the last day",
        )
    return value


# -- schedule parsing ------------------------------------------------------------------
@dataclass(frozen=True)
class _Context:
    """What every frequency parser needs: the input, the zone, now and the policy."""

    data: ScheduleInput
    zone: ZoneInfo
    now: datetime
    min_interval: int
    allow_past: bool
    end_time: datetime | None

    @property
    def common(self) -> dict[str, Any]:
        return {
            "timezone": self.zone.key,
            "end_time": self.end_time,
            "max_runs": self.data.max_runs,
        }


@dataclass(frozen=True)
class _WallSpec:
    """A wall-clock schedule as a phrase or frequency gave it (None: not given)."""

    unit: str
    interval: int = 1
    at: time | None = None
    weekdays: tuple[int, ...] | None = None
    day_of_month: int | None = None


def parse_schedule(
    data: ScheduleInput,
    *,
    now: datetime,
    default_timezone: str,
    min_interval: int = 60,
    allow_past: bool = False,
) -> Schedule:
    """Validate the schedule fields; raise ScheduleError naming the first bad field.

    ``allow_past`` (for previews) accepts a once time, end_time or ISO start in the past
    and an end_time before the first run; ``preview`` then warns about them instead.
    """
    frequency = (data.frequency or "").strip().lower()
    if frequency not in FREQUENCIES:
        raise ScheduleError(
            "frequency",
            f"{data.frequency!r} is not a frequency; use one of {', '.join(FREQUENCIES)}",
        )
    zone = ZoneInfo(task_timezone(data, frequency, default_timezone))
    now = now.astimezone(UTC)
    end_time = parse_datetime(data.end_time, zone, "end_time") if data.end_time else None
    if end_time is not None and end_time <= now and not allow_past:
        raise ScheduleError("end_time", f"{data.end_time!r} is in the past; give a future time")
    if data.max_runs is not None and (
        isinstance(data.max_runs, bool) or not isinstance(data.max_runs, int) or data.max_runs < 1
    ):
        raise ScheduleError("max_runs", f"{data.max_runs!r} must be a whole number >= 1")
    ctx = _Context(data, zone, now, min_interval, allow_past, end_time)
    if frequency == Frequency.ONCE:
        return _once(ctx)
    if frequency in (Frequency.MINUTELY, Frequency.HOURLY):
        return _elapsed(
            ctx, frequency, "minutes" if frequency == Frequency.MINUTELY else "hours", 1
        )
    if frequency in (Frequency.DAILY, Frequency.WEEKLY, Frequency.MONTHLY):
        unit = {Frequency.DAILY: "days", Frequency.WEEKLY: "weeks", Frequency.MONTHLY: "months"}[
            Frequency(frequency)
        ]
        return _wall_clock(ctx, frequency, _WallSpec(unit))
    return _custom(ctx)


def task_timezone(data: ScheduleInput, frequency: str, default: str) -> str:
    """The timezone field, else an RRULE's DTSTART;TZID=…, else the default."""
    if data.timezone or frequency != Frequency.CUSTOM:
        return parse_timezone(data.timezone, default)
    tzid = _TZID.search(data.custom_schedule or "")
    if tzid:
        return parse_timezone(tzid[1], default, "custom_schedule")
    return parse_timezone(None, default)


def _first_instant(value: str, zone: ZoneInfo, now: datetime) -> datetime:
    """HH:MM → its next occurrence (today if still ahead); ISO → that instant."""
    if TIME_OF_DAY.match(value.strip()):
        at = parse_time_of_day(value)
        today = now.astimezone(zone).date()
        candidate = localize(datetime.combine(today, at), zone)
        if candidate <= now:
            candidate = localize(datetime.combine(today + timedelta(days=1), at), zone)
        return candidate.astimezone(UTC)
    return parse_datetime(value, zone, "scheduled_time")


def _once(ctx: _Context) -> Schedule:
    text = ctx.data.scheduled_time
    if not text:
        raise ScheduleError(
            "scheduled_time",
            "required for a once task; give HH:MM (next occurrence) or an ISO datetime",
        )
    run_at = _first_instant(text, ctx.zone, ctx.now)
    if run_at <= ctx.now and not ctx.allow_past:
        raise ScheduleError("scheduled_time", _past_once_message(text, run_at, ctx.zone))
    schedule = Schedule(frequency=Frequency.ONCE, start_at=run_at, **ctx.common)
    _check_end(ctx, schedule, run_at)
    return schedule


def _past_once_message(text: str, run_at: datetime, zone: ZoneInfo) -> str:
    return (
        f"{text!r} is in the past ({run_at.astimezone(zone).isoformat()}); "
        "give a future time such as 18:30 (next occurrence) or 2026-12-24T18:00"
    )


def _elapsed(ctx: _Context, frequency: str, unit: str, interval: int) -> Schedule:
    seconds = interval * ELAPSED_UNITS[unit]
    if seconds < ctx.min_interval:
        given = ctx.data.custom_schedule if frequency == Frequency.CUSTOM else frequency
        raise ScheduleError(
            "custom_schedule" if frequency == Frequency.CUSTOM else "frequency",
            f"{given!r} runs every {seconds} s, more often than the minimum interval of "
            f"{ctx.min_interval} s; choose a longer interval, e.g. 'every "
            f"{_ceil_minutes(ctx.min_interval)} minutes'",
        )
    text = ctx.data.scheduled_time
    start = (
        _first_instant(text, ctx.zone, ctx.now) if text else ctx.now + timedelta(seconds=seconds)
    )
    schedule = Schedule(
        frequency=frequency, start_at=start, unit=unit, interval=interval, **ctx.common
    )
    _check_end(ctx, schedule, first_fire(schedule, ctx.now))
    return schedule


def _ceil_minutes(seconds: int) -> int:
    return -(-seconds // 60)


def _wall_clock(ctx: _Context, frequency: str, spec: _WallSpec) -> Schedule:
    """Daily/weekly/monthly and "every N days/weeks/months": anchored on the first run."""
    at, start = _time_and_start(ctx, frequency, spec.at)
    local = wall(start, ctx.zone)
    weekdays, day = _days_of(ctx, frequency, spec, local.date())
    if at is None:
        # No time given: the current minute, and (with no day either) one period from now,
        # as "every 15 minutes" starts 15 minutes from now.
        at = local.time().replace(second=0, microsecond=0)
        if not _names_a_day(ctx.data, spec):
            later = local.date() + _period(spec.unit, spec.interval)
            start = localize(datetime.combine(later, time()), ctx.zone).astimezone(UTC)
    if ctx.min_interval > 86_400:
        raise ScheduleError(
            "frequency",
            f"wall-clock schedules can run daily, more often than the minimum interval of "
            f"{ctx.min_interval} s",
        )
    probe = WallClockTrigger(
        timezone=ctx.zone.key,
        at=at,
        unit=spec.unit,
        weekdays=weekdays,
        day_of_month=day,
        # A day early: yesterday's run may still be ahead if a gap pushed it past midnight.
        anchor=wall(start, ctx.zone).date() - timedelta(days=1),
        not_before=start,
    )
    first = probe.get_next_fire_time(None, start)
    if first is None:
        raise ScheduleError("scheduled_time", "the schedule has no run before year 9999")
    schedule = Schedule(
        frequency=frequency,
        start_at=first.astimezone(UTC),
        unit=spec.unit,
        interval=spec.interval,
        at=at,
        weekdays=weekdays,
        day_of_month=day,
        **ctx.common,
    )
    _check_end(ctx, schedule, first)
    return schedule


def _names_a_day(data: ScheduleInput, spec: _WallSpec) -> bool:
    if spec.unit == "weeks":
        return spec.weekdays is not None or data.day_of_week is not None
    return spec.unit == "months" and (
        spec.day_of_month is not None or data.day_of_month is not None
    )


def _period(unit: str, interval: int) -> relativedelta:
    """One period of a wall-clock unit (months clamp to the month's end, as dateutil does)."""
    if unit == "days":
        return relativedelta(days=interval)
    return relativedelta(weeks=interval) if unit == "weeks" else relativedelta(months=interval)


def _time_and_start(
    ctx: _Context, frequency: str, phrase_at: time | None
) -> tuple[time | None, datetime]:
    """The local time of day, and the instant the schedule may start (now or an ISO time).

    An ISO scheduled_time gives both its local time (as written, even inside a DST gap)
    and the start; a time in the phrase wins over scheduled_time's time of day.
    """
    text = (ctx.data.scheduled_time or "").strip()
    at, start = phrase_at, ctx.now
    if text and TIME_OF_DAY.match(text):
        at = at or parse_time_of_day(text)
    elif text:
        instant, local = parse_local_datetime(text, ctx.zone, "scheduled_time")
        start = max(ctx.now, instant)
        at = at or local.time().replace(microsecond=0)
    if at is None and frequency != Frequency.CUSTOM:
        raise ScheduleError(
            "scheduled_time", f"required for {frequency} schedules; give HH:MM such as 09:00"
        )
    return at, start


def _days_of(
    ctx: _Context, frequency: str, spec: _WallSpec, start: date
) -> tuple[tuple[int, ...], int | None]:
    """Weekdays (weeks) or the day of the month (months): phrase, then fields, then start."""
    data = ctx.data
    if spec.unit == "weeks":
        if spec.weekdays is not None:
            return spec.weekdays, None
        if data.day_of_week is None and frequency == Frequency.WEEKLY:
            raise ScheduleError(
                "day_of_week", "required for weekly schedules; give 0=Monday … 6=Sunday or a list"
            )
        return parse_weekdays(data.day_of_week) or (start.weekday(),), None
    if spec.unit == "months":
        if spec.day_of_month is not None:
            return (), spec.day_of_month
        if data.day_of_month is None and frequency == Frequency.MONTHLY:
            raise ScheduleError(
                "day_of_month", "required for monthly schedules; give 1–31, or -1 for the last day"
            )
        return (), parse_day_of_month(
            data.day_of_month if data.day_of_month is not None else start.day
        )
    return (), None


def first_fire(schedule: Schedule, now: datetime) -> datetime | None:
    """The first fire time ignoring end_time (to compare end_time with)."""
    fire: datetime | None = build_trigger(replace(schedule, end_time=None)).get_next_fire_time(
        None, now
    )
    return fire


def _check_end(ctx: _Context, schedule: Schedule, first: datetime | None) -> None:
    end = schedule.end_time
    if end is None or first is None or end >= first or ctx.allow_past:
        return
    raise ScheduleError(
        "end_time",
        f"{ctx.data.end_time!r} is before the first run "
        f"({first.astimezone(ctx.zone).isoformat()}); give a later end_time or leave it out",
    )


# -- custom schedules ------------------------------------------------------------------
def _custom(ctx: _Context) -> Schedule:
    """Phrases ("every …"), cron (bare or "cron:") and RFC 5545 RRULE text."""
    raw = (ctx.data.custom_schedule or "").strip()
    text = " ".join(raw.split())
    lowered = text.lower()
    if not text:
        raise ScheduleError(
            "custom_schedule",
            f"required when frequency is custom; accepted forms: {CUSTOM_EXAMPLES}",
        )
    if lowered.startswith("cron:"):
        return _cron(ctx, text[5:].strip())
    if lowered.startswith(("rrule:", "dtstart", "freq=")) or "rrule:" in lowered:
        return _rrule(ctx, raw)
    if lowered.startswith("every ") or lowered == "every":
        return _phrase(ctx, text, lowered)
    if lowered.startswith("@") or _looks_like_cron(lowered):
        return _cron(ctx, text)
    raise _custom_error(text, "is not understood")


def _custom_error(text: str, problem: str) -> ScheduleError:
    return ScheduleError(
        "custom_schedule", f"{text!r} {problem}; accepted forms: {CUSTOM_EXAMPLES}"
    )


def _looks_like_cron(lowered: str) -> bool:
    tokens = lowered.split()
    return 5 <= len(tokens) <= 7 and all(_CRON_TOKEN.match(t) for t in tokens)


def _phrase(ctx: _Context, text: str, lowered: str) -> Schedule:
    match = _EVERY_UNIT.match(lowered)
    if match:
        interval = _phrase_interval(text, match["n"], match["unit"] + "s")
        unit = match["unit"] + "s"
        clauses = _clauses(text, match["rest"])
        if unit in ELAPSED_UNITS:
            if clauses:
                raise _custom_error(
                    text,
                    "cannot say 'at' or 'on' with minutes or hours (give the first run in "
                    "scheduled_time, or use cron such as '*/15 9-17 * * 1-5')",
                )
            return _elapsed(ctx, Frequency.CUSTOM, unit, interval)
        return _wall_clock(ctx, Frequency.CUSTOM, _wall_spec(text, unit, interval, clauses))
    match = _EVERY_DAYS.match(lowered)
    weekdays = _day_list(match["days"]) if match else None
    if match is None or weekdays is None:
        raise _custom_error(text, "is not understood")
    clauses = _clauses(text, match["rest"] or "")
    if "on" in clauses:
        raise _custom_error(text, "names its days twice")
    spec = _wall_spec(text, "weeks", 1, clauses)
    return _wall_clock(ctx, Frequency.CUSTOM, replace(spec, weekdays=weekdays))


def _phrase_interval(text: str, n: str | None, unit: str) -> int:
    interval = 2 if n == "other" else int(n or 1)
    if not 1 <= interval <= MAX_INTERVAL[unit]:
        raise _custom_error(text, f"needs an interval of 1–{MAX_INTERVAL[unit]} {unit}")
    return interval


def _clauses(text: str, rest: str) -> dict[str, str]:
    """'at 08:00 on monday' → {"at": "08:00", "on": "monday"} (either order, each once)."""
    found: dict[str, str] = {}
    position, rest = 0, rest.strip()
    while position < len(rest):
        match = _CLAUSE.match(rest, position)
        if match is None or match[1] in found:
            raise _custom_error(text, f"has {rest[position:]!r} where 'at HH:MM' or 'on …' fits")
        found[match[1]] = match[2].strip()
        position = match.end()
    return found


def _wall_spec(text: str, unit: str, interval: int, clauses: dict[str, str]) -> _WallSpec:
    at: time | None = None
    if "at" in clauses:
        try:
            at = parse_time_of_day(clauses["at"], "custom_schedule")
        except ScheduleError:
            raise _custom_error(
                text, f"has {clauses['at']!r}, which is not a time of day (HH:MM, 24-hour)"
            ) from None
    spec = _WallSpec(unit, interval, at)
    on = clauses.get("on")
    if on is None:
        return spec
    if unit == "weeks":
        weekdays = _day_list(on)
        if weekdays is None:
            raise _custom_error(
                text, f"has {on!r} where weekday names such as 'monday, thursday' fit"
            )
        return replace(spec, weekdays=weekdays)
    match = _MONTH_DAY.match(on) if unit == "months" else None
    if match is None:
        fits = "a day such as 'the 15th' or 'the last day'" if unit == "months" else "nothing"
        raise _custom_error(text, f"has 'on {on}' where {fits} fits")
    day = -1 if match["last"] else int(match["n"])
    if not (day == -1 or 1 <= day <= 31):
        raise _custom_error(text, f"has day {day}, which is not a day of the month (1–31)")
    return replace(spec, day_of_month=day)


def _day_list(text: str) -> tuple[int, ...] | None:
    """'monday, thursday' / 'mon and fri' / 'weekdays' / 'weekend' → weekdays, else None."""
    days: set[int] = set()
    for word in filter(None, _DAY_SPLIT.split(text.strip())):
        if word in ("weekday", "weekdays"):
            days.update(range(5))
        elif word in ("weekend", "weekends"):
            days.update((5, 6))
        elif (day := _weekday(word)) is not None and not word.isdigit():
            days.add(day)
        else:
            return None
    return tuple(sorted(days)) or None


def _rule_start(ctx: _Context) -> datetime:
    """Rules start now, or at an ISO scheduled_time still ahead (HH:MM does not apply)."""
    text = (ctx.data.scheduled_time or "").strip()
    if text and not TIME_OF_DAY.match(text):
        return max(ctx.now, parse_datetime(text, ctx.zone, "scheduled_time"))
    return ctx.now


def _cron(ctx: _Context, text: str) -> Schedule:
    try:
        spec = parse_cron(text)
    except ValueError as exc:
        raise _custom_error(text, f"is not a valid cron expression: {exc}") from None
    start = _rule_start(ctx)
    trigger = LocalCronTrigger(expression=spec.expression, timezone=ctx.zone.key, not_before=start)
    return _rule_schedule(ctx, text, trigger, "cron")


def _rrule(ctx: _Context, text: str) -> Schedule:
    try:
        spec = parse_rrule(text)
    except (ValueError, ZeroDivisionError, OverflowError) as exc:
        raise _custom_error(" ".join(text.split()), f"is not a valid RRULE: {exc}") from None
    if spec.tzid is not None and spec.tzid != ctx.zone.key:
        raise _custom_error(
            text,
            f"has DTSTART;TZID={spec.tzid} but the task's timezone is {ctx.zone.key}; set "
            f"timezone to {spec.tzid!r} or drop TZID",
        )
    start = _rule_start(ctx)
    if spec.dtstart is None:
        # Default DTSTART: the start (now) in the rule's zone, rounded up to a whole minute,
        # so the rule's implicit BYSECOND is 0 and the first run is at/after now.
        local = wall(start, UTC if spec.utc else ctx.zone)
        ceiling = local.replace(second=0, microsecond=0)
        if ceiling < local:
            ceiling += timedelta(minutes=1)
        spec = replace(spec, dtstart=ceiling)
    trigger = LocalRRuleTrigger(expression=spec.text(), timezone=ctx.zone.key, not_before=start)
    if not trigger.runs_within(start, timedelta(days=3660)):
        raise _custom_error(" ".join(text.split()), "has no run in the next 10 years")
    return _rule_schedule(ctx, text, trigger, "rrule")


def _rule_schedule(
    ctx: _Context, text: str, trigger: LocalCronTrigger | LocalRRuleTrigger, syntax: str
) -> Schedule:
    first = trigger.get_next_fire_time(None, trigger.not_before)
    if first is None:
        raise _custom_error(" ".join(text.split()), "has no run after now")
    _check_min_gap(ctx, text, trigger, first)
    schedule = Schedule(
        frequency=Frequency.CUSTOM,
        start_at=first.astimezone(UTC),
        expression=trigger.expression,
        syntax=syntax,
        **ctx.common,
    )
    _check_end(ctx, schedule, first)
    return schedule


def _check_min_gap(ctx: _Context, text: str, trigger: BaseTrigger, first: datetime) -> None:
    """Refuse a rule whose fire times come closer than min_interval (next few hundred)."""
    fires = list(upcoming_fires(trigger, first, GAP_SAMPLE, first + PREVIEW_HORIZON))
    pairs = list(pairwise(fires))
    if not pairs:
        return
    a, b = min(pairs, key=lambda p: p[1] - p[0])
    seconds = (b - a).total_seconds()
    if seconds < ctx.min_interval:
        raise ScheduleError(
            "custom_schedule",
            f"{' '.join(text.split())!r} runs {seconds:g} s apart (at "
            f"{a.astimezone(ctx.zone).isoformat()} and {b.astimezone(ctx.zone).isoformat()}), "
            f"more often than the minimum interval of {ctx.min_interval} s; choose a sparser "
            "schedule, e.g. '*/5 * * * *' or 'RRULE:FREQ=MINUTELY;INTERVAL=5'",
        )


def upcoming_fires(
    trigger: BaseTrigger, first: datetime, count: int, until: datetime
) -> Iterator[datetime]:
    """``first`` and the fire times after it, at most ``count``, none after ``until``."""
    fire: datetime | None = first
    produced = 0
    while fire is not None and fire <= until and produced < count:
        yield fire
        produced += 1
        fire = trigger.get_next_fire_time(fire, fire)


# -- triggers --------------------------------------------------------------------------
def build_trigger(schedule: Schedule) -> BaseTrigger:
    """The APScheduler trigger that fires this schedule."""
    if schedule.frequency == Frequency.ONCE:
        return DateTrigger(run_date=schedule.start_at, timezone=UTC)
    common: dict[str, Any] = {
        "timezone": schedule.timezone,
        "not_before": schedule.start_at,
        "end_time": schedule.end_time,
    }
    if schedule.expression is not None:
        cls = LocalCronTrigger if schedule.syntax == "cron" else LocalRRuleTrigger
        return cls(expression=schedule.expression, **common)
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
        at=schedule.at,
        unit=schedule.unit,
        interval=schedule.interval,
        weekdays=schedule.weekdays,
        day_of_month=schedule.day_of_month,
        anchor=scheduled_date(schedule.start_at, schedule.at, schedule.zone),
        **common,
    )


def next_runs(schedule: Schedule, count: int, now: datetime) -> list[datetime]:
    """The next ``count`` fire times at/after ``now``, within end_time and max_runs."""
    trigger = build_trigger(schedule)
    limit = min(count, schedule.max_runs or count)
    out: list[datetime] = []
    previous: datetime | None = None
    while len(out) < limit:
        nxt: datetime | None = trigger.get_next_fire_time(previous, now)
        if nxt is None or nxt < now or (schedule.end_time and nxt > schedule.end_time):
            break
        out.append(nxt)
        previous = nxt
    return out
