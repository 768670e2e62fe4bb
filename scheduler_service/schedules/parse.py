"""Parsing schedules: user input → a validated ``Schedule`` → an APScheduler trigger.

Pure domain logic: no I/O, ``now`` is always passed in, so every rule here is testable
with computed instants. The time rules themselves (DST gaps and overlaps, month ends)
live in ``scheduler_service.clock`` and the trigger classes in ``triggers``;
docs/time.md explains them with examples.
"""

from __future__ import annotations

import calendar
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
from scheduler_service.clock.rrule import RRuleSpec, parse_rrule
from scheduler_service.clock.zones import (
    localize,
    scheduled_date,
    wall,
)
from scheduler_service.config import iana_zone_names
from scheduler_service.schedules import phrases, quartz
from scheduler_service.statuses import FREQUENCIES, Frequency
from scheduler_service.triggers import (
    LocalCronTrigger,
    LocalRRuleTrigger,
    SpreadTrigger,
    WallClockTrigger,
)

ELAPSED_UNITS = {"seconds": 1, "minutes": 60, "hours": 3600}
WEEKDAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
CUSTOM_EXAMPLES = (
    '"every 15 minutes", "every day at 07:15", "every 3 days at 09:30", "every weekday at 9am", '
    '"every other tuesday at 9", "twice a day at 8 and 20", "first monday of the month at 10", '
    '"last business day of the month at 16", "on the 1st and 15th at 9", '
    '"every year on March 3 at 9", "every quarter on the 1st at 9", '
    '"every 15 minutes between 9 and 17 on weekdays", "every hour on the half hour", '
    '"every day at 9am except weekends", "every 3 weeks on thursday at 9 starting Feb 4", '
    '"every 10 minutes for the next hour", "every weekday at 9am until June 30", '
    '"every weekday at 9am (Europe/Berlin)", "in 2 hours", "tomorrow at 7", '
    '"next tuesday at 9", "March 3 at 5pm", "cron: 30 8 * * 1-5", '
    '"RRULE:FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=8;BYMINUTE=0"'
)
# Legacy zone names: fixed offsets or US rules of 1967, not a place's time. Refused with
# the IANA zone most people mean (EST is -05:00 all year: an hour late all summer in New York).
LEGACY_ZONES = {
    "EST": "America/New_York (or America/Panama for -05:00 all year)",
    "EST5EDT": "America/New_York",
    "CST6CDT": "America/Chicago",
    "MST": "America/Phoenix (no DST) or America/Denver",
    "MST7MDT": "America/Denver",
    "PST8PDT": "America/Los_Angeles",
    "HST": "Pacific/Honolulu",
    "CET": "Europe/Paris or Europe/Berlin",
    "MET": "Europe/Paris or Europe/Berlin",
    "EET": "Europe/Athens or Europe/Helsinki",
    "WET": "Europe/Lisbon",
}
# Abbreviations that are not zone names at all.
ABBREVIATIONS = {
    "EDT": "America/New_York",
    "CST": "America/Chicago",
    "CDT": "America/Chicago",
    "MDT": "America/Denver",
    "PST": "America/Los_Angeles",
    "PDT": "America/Los_Angeles",
    "AKST": "America/Anchorage",
    "BST": "Europe/London",
    "CEST": "Europe/Paris",
    "IST": "Asia/Kolkata",
    "JST": "Asia/Tokyo",
    "AEST": "Australia/Sydney",
}
_ETC_OFFSET = re.compile(r"^(?:Etc/)?GMT[+-]\d{1,2}$", re.IGNORECASE)
GAP_SAMPLE = 300  # fire times checked against the minimum interval (cron, RRULE)
PREVIEW_HORIZON = timedelta(days=366)

TIME_OF_DAY = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_CRON_TOKEN = re.compile(r"^(?:[0-9*/,\-?#lw]+|[a-z]{3}(?:l|#\d|(?:[-,/][a-z0-9]{1,3})*))$")
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
    except_dates: list[str] | None = None


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
    except_dates: tuple[date, ...] = field(default_factory=tuple)  # local dates without runs
    phrase: str | None = None  # the custom_schedule phrase a rule was compiled from
    spread: int = 0  # seconds each fire time is moved later (schedules.spread); 0: none
    # Things to tell the caller about the input (not stored): an ISO offset that is not
    # the zone's, a past start whose phase was kept.
    notes: tuple[str, ...] = field(default_factory=tuple, compare=False)

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
            "except_dates": [d.isoformat() for d in self.except_dates],
            "phrase": self.phrase,
            "spread": self.spread,
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
            except_dates=tuple(date.fromisoformat(d) for d in data.get("except_dates") or ()),
            phrase=data.get("phrase"),
            spread=int(data.get("spread") or 0),
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
    upper = name.upper()
    if upper in LEGACY_ZONES or _ETC_OFFSET.match(name):
        instead = LEGACY_ZONES.get(upper, "the zone of the place, e.g. America/Bogota")
        raise ScheduleError(
            field_name,
            f"{name!r} is a legacy fixed-offset zone name that ignores the place's daylight "
            f"saving time; use the IANA name of the place: {instead}",
        )
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        hint = f" ({name} → {ABBREVIATIONS[upper]})" if upper in ABBREVIATIONS else ""
        raise ScheduleError(
            field_name,
            f"{name!r} is not an IANA timezone{hint}; use a name such as 'UTC', "
            "'America/New_York' or 'Europe/Paris'",
        ) from None
    if name not in iana_zone_names():
        raise ScheduleError(
            field_name,
            f"{name!r} names a zone that depends on the host it runs on; use the "
            "Area/Location name of the place, e.g. 'Europe/Paris' or 'UTC'",
        )
    return name


def parse_time_of_day(value: str, field_name: str = "scheduled_time") -> time:
    match = TIME_OF_DAY.match(value.strip())
    if match:
        hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
        if hour < 24 and minute < 60 and second < 60:
            return time(hour, minute, second)
    raise ScheduleError(
        field_name,
        f"{value!r} is not a time of day; use HH:MM or HH:MM:SS (24-hour, e.g. 09:00), "
        "9am, 9:30 pm, noon or midnight",
    )


def _clock(text: str) -> time | None:
    """A 12-hour or named time of day ('9am', '9:30 pm', 'noon'), else None."""
    if TIME_OF_DAY.match(text) or not re.search(r"[a-z]", text.lower()):
        return None
    try:
        return phrases.parse_clock(text)
    except phrases.PhraseError:
        return None


def _no_such_date(value: str) -> str | None:
    """'2027-02-29…' → 'no such date (2027 is not a leap year)'; None if the date exists."""
    match = re.match(r"^(\d{4})-(\d{2})-(\d{2})", value.strip())
    if not match:
        return None
    year, month, day = (int(g) for g in match.groups())
    if not 1 <= month <= 12:
        return f"no such date (month {month}; months are 01–12)"
    last = calendar.monthrange(year, month)[1]
    if 1 <= day <= last:
        return None
    if month == 2 and day == 29:
        return f"no such date ({year} is not a leap year)"
    return f"no such date ({calendar.month_name[month]} has {last} days)"


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
        if (problem := _no_such_date(text)) is not None:
            raise ScheduleError(field_name, f"{value!r}: {problem}") from None
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


def bounded_cost(data: ScheduleInput) -> bool:
    """Whether evaluating ``data`` takes a bounded few steps, so it can run where it is
    asked instead of in the evaluation pool: a built-in frequency (each next fire is one
    step of a fixed cron or interval) with no custom rule to walk and no exception dates
    to check against it. Its cost is ~0.1 ms; the hop to the pool costs more."""
    frequency = (data.frequency or "").strip().lower()
    return (
        frequency in FREQUENCIES
        and frequency != Frequency.CUSTOM
        and not data.custom_schedule
        and not data.except_dates
    )


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
    _check_fields_fit(data, frequency)
    data = _resolve_scheduled_time(data, zone, now)
    end_time = parse_datetime(data.end_time, zone, "end_time") if data.end_time else None
    if end_time is not None and end_time <= now and not allow_past:
        raise ScheduleError("end_time", f"{data.end_time!r} is in the past; give a future time")
    if data.max_runs is not None and (
        isinstance(data.max_runs, bool) or not isinstance(data.max_runs, int) or data.max_runs < 1
    ):
        raise ScheduleError("max_runs", f"{data.max_runs!r} must be a whole number >= 1")
    ctx = _Context(data, zone, now, min_interval, allow_past, end_time)
    schedule = _with_except_dates(ctx, _parse_kind(ctx, frequency))
    notes = _offset_notes(data, zone)
    return replace(schedule, notes=schedule.notes + notes) if notes else schedule


def _offset_notes(data: ScheduleInput, zone: ZoneInfo) -> tuple[str, ...]:
    """An ISO scheduled_time whose UTC offset is not the zone's at that instant."""
    text = (data.scheduled_time or "").strip()
    if not text or TIME_OF_DAY.match(text):
        return ()
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in "Zz" else text)
    except ValueError:
        return ()
    if parsed.tzinfo is None:
        return ()
    given, actual = parsed.utcoffset(), parsed.astimezone(zone).utcoffset()
    if given == actual:
        return ()
    local = parsed.astimezone(zone)
    return (
        f"scheduled_time {text} has offset {parsed:%z} but {zone.key} is at {local:%z} then: "
        f"the time is read as {local:%Y-%m-%d %H:%M} {zone.key} (runs at {local:%H:%M} "
        f"local time); to mean {parsed:%H:%M} in {zone.key}, drop the offset "
        f"({parsed:%Y-%m-%dT%H:%M}) or set timezone to the zone you mean",
    )


def _parse_kind(ctx: _Context, frequency: str) -> Schedule:
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


# Which frequency uses each field, for refusing a field the given frequency ignores.
_FIELD_USERS = {
    "day_of_week": ("weekly", "custom"),
    "day_of_month": ("monthly", "custom"),
    "custom_schedule": ("custom",),
}


def fields_ignored_by(frequency: str) -> tuple[str, ...]:
    """The schedule fields a frequency does not use (given, they are refused)."""
    return tuple(name for name, users in _FIELD_USERS.items() if frequency not in users)


def _check_fields_fit(data: ScheduleInput, frequency: str) -> None:
    """Refuse fields the frequency ignores, naming the frequency that would use them."""
    for name in fields_ignored_by(frequency):
        if getattr(data, name) is None:
            continue
        if name == "custom_schedule":
            raise ScheduleError(
                name,
                f"is used only with frequency custom, but frequency is {frequency}; use "
                f"frequency custom with custom_schedule {data.custom_schedule!r} (and leave "
                "day_of_week/day_of_month out), or drop custom_schedule",
            )
        instead = "weekly" if name == "day_of_week" else "monthly"
        example = (
            "the phrase 'every 15 minutes between 9 and 17 on weekdays'"
            if name == "day_of_week"
            else "the cron expression '0 * 1 * *' (every hour on the 1st)"
        )
        if frequency in (Frequency.MINUTELY, Frequency.HOURLY):
            fix = f"use frequency custom with custom_schedule such as {example}"
        else:
            fix = f"use frequency {instead}"
            if frequency == Frequency.MONTHLY:
                fix += " (or custom 'first monday of the month at 10')"
        raise ScheduleError(name, f"{frequency} schedules do not use {name}; {fix}")


def _resolve_scheduled_time(data: ScheduleInput, zone: ZoneInfo, now: datetime) -> ScheduleInput:
    """scheduled_time '9am' → '09:00'; 'tomorrow at 7', 'in 2 hours' → an ISO instant."""
    text = (data.scheduled_time or "").strip()
    if not text or TIME_OF_DAY.match(text):
        return data
    if (clock := _clock(text)) is not None:
        return replace(data, scheduled_time=clock.isoformat())
    if not re.search(r"[a-z]{2}", text.lower()):  # ISO, checked where it is used
        return data
    if re.fullmatch(r"[\d:.\s]+[ap]\.?m\.?", text.lower()):  # a 12-hour time that is wrong
        parse_time_of_day(text)
    try:
        result = phrases.parse_phrase(text, zone=zone, now=now)
    except phrases.PhraseError as exc:
        raise ScheduleError(
            "scheduled_time",
            f"{text!r} is not a time ({str(exc).split('; accepted forms')[0]}); use HH:MM "
            "(24-hour) or 9am / 9:30 pm / noon (next occurrence), an ISO 8601 datetime such "
            "as 2026-12-24T18:00, or 'in 2 hours', 'tomorrow at 7', 'next tuesday at 9'",
        ) from None
    if not isinstance(result, phrases.OneTime):
        raise ScheduleError(
            "scheduled_time",
            f"{text!r} repeats; scheduled_time is one time (HH:MM, 9am, an ISO datetime, "
            "'tomorrow at 7', 'in 2 hours'); put repeating phrases in custom_schedule with "
            "frequency custom",
        )
    return replace(data, scheduled_time=result.at.astimezone(zone).isoformat())


def _with_except_dates(ctx: _Context, schedule: Schedule) -> Schedule:
    """Check except_dates (YYYY-MM-DD, local dates) and attach them to the schedule."""
    values = ctx.data.except_dates
    if values is None and not schedule.except_dates:  # (a phrase's 'except Dec 25' is kept)
        return schedule
    if isinstance(values, str):
        values = [values]
    if schedule.frequency == Frequency.ONCE or schedule.elapsed:
        raise ScheduleError(
            "except_dates",
            "applies to schedules that run at times of day (daily, weekly, monthly, custom "
            "phrases such as 'every weekday at 9am', cron or RRULE); for a run every N "
            "minutes or hours except some days use cron, e.g. custom_schedule '0 * * * *'",
        )
    days: set[date] = set(schedule.except_dates)
    for value in values or []:
        try:
            days.add(date.fromisoformat(str(value).strip()[:10]))
        except ValueError:
            problem = _no_such_date(str(value)) or "is not a date"
            raise ScheduleError(
                "except_dates", f"{value!r}: {problem}; give local dates as YYYY-MM-DD"
            ) from None
    if len(days) > 1000:
        raise ScheduleError("except_dates", "give at most 1000 dates")
    schedule = replace(schedule, except_dates=tuple(sorted(days)))
    first = build_trigger(schedule).get_next_fire_time(None, ctx.now)
    if first is None:
        raise ScheduleError("except_dates", "leave no run: every remaining run is excepted")
    return replace(schedule, start_at=max(schedule.start_at, first.astimezone(UTC)))


def task_timezone(data: ScheduleInput, frequency: str, default: str) -> str:
    """The timezone field, else an RRULE's DTSTART;TZID=…, else a zone named in a phrase
    ('every day at 9 (Berlin)'), else the default."""
    if data.timezone or frequency != Frequency.CUSTOM:
        return parse_timezone(data.timezone, default)
    tzid = _TZID.search(data.custom_schedule or "")
    if tzid:
        return parse_timezone(tzid[1], default, "custom_schedule")
    text = " ".join((data.custom_schedule or "").split())
    if text and _is_phrase(text):
        try:
            named = phrases.phrase_zone(text)
        except phrases.PhraseError as exc:
            raise ScheduleError("custom_schedule", f"{text!r}: {exc}") from None
        if named is not None:
            return named
    return parse_timezone(None, default)


def _is_phrase(text: str) -> bool:
    """custom_schedule text that is neither cron nor RRULE (see ``_custom``)."""
    lowered = text.lower()
    return not (
        lowered.startswith(("cron:", "rrule:", "dtstart", "freq=", "@"))
        or "rrule:" in lowered
        or _looks_like_cron(lowered)
    )


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
        minutes = _ceil_minutes(ctx.min_interval)
        nearest = "every minute" if minutes == 1 else f"every {minutes} minutes"
        raise ScheduleError(
            "custom_schedule" if frequency == Frequency.CUSTOM else "frequency",
            f"{given!r} runs every {seconds} s, more often than the minimum interval of "
            f"{ctx.min_interval} s; the nearest accepted form is {nearest!r}",
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
    at, start, origin = _time_and_start(ctx, frequency, spec.at)
    # A past ISO start of an "every N" schedule keeps its phase: the grid counts from it.
    keep_phase = origin is not None and origin < ctx.now and spec.interval > 1
    local = wall(origin if keep_phase and origin is not None else start, ctx.zone)
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
        interval=spec.interval if keep_phase else 1,
        weekdays=weekdays,
        day_of_month=day,
        # A day early: yesterday's run may still be ahead if a gap pushed it past midnight.
        anchor=local.date() - timedelta(days=0 if keep_phase else 1),
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
) -> tuple[time | None, datetime, datetime | None]:
    """The local time of day, the instant the schedule may start (now or an ISO time),
    and the ISO time itself (None without one).

    An ISO scheduled_time gives both its local time (as written, even inside a DST gap)
    and the start; a time in the phrase wins over scheduled_time's time of day.
    """
    text = (ctx.data.scheduled_time or "").strip()
    at, start, origin = phrase_at, ctx.now, None
    if text and TIME_OF_DAY.match(text):
        at = at or parse_time_of_day(text)
    elif text:
        origin, local = parse_local_datetime(text, ctx.zone, "scheduled_time")
        start = max(ctx.now, origin)
        at = at or local.time().replace(microsecond=0)
    if at is None and frequency != Frequency.CUSTOM:
        raise ScheduleError(
            "scheduled_time",
            f"required for {frequency} schedules; give HH:MM such as 09:00 (or 9am)",
        )
    return at, start, origin


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
    if lowered.startswith("@") or _looks_like_cron(lowered):
        return _cron(ctx, text)
    return _phrase(ctx, text)


def _quartz(ctx: _Context, text: str) -> Schedule:
    """Quartz cron (L, W, #, ?) as the RRULE lines that say the same, with the reading."""
    try:
        translated = quartz.translate(text)
    except ValueError as exc:
        raise _custom_error(
            text, f"is not a cron expression that can be scheduled: {exc}"
        ) from None
    schedule = _rrule(ctx, translated.rrule)
    note = f"cron {text!r} is read as Quartz cron: {translated.reading}"
    return replace(schedule, phrase=f"cron '{text}'", notes=(*schedule.notes, note))


def _phrase(ctx: _Context, text: str) -> Schedule:
    """A phrase of the grammar in ``phrases``, as the kind of schedule it compiles to."""
    scheduled = (ctx.data.scheduled_time or "").strip()
    default_time: time | None = None
    origin: datetime | None = None
    if scheduled and TIME_OF_DAY.match(scheduled):
        default_time = parse_time_of_day(scheduled)
    elif scheduled:
        origin, local = parse_local_datetime(scheduled, ctx.zone, "scheduled_time")
        default_time = local.time().replace(microsecond=0)
    try:
        result = phrases.parse_phrase(text, zone=ctx.zone, now=ctx.now, default_time=default_time)
        if isinstance(result, phrases.Rule) and origin is not None:
            if result.limits.start is not None:
                raise phrases.PhraseError(_TWO_STARTS)
            # The rule's INTERVAL grid counts from the ISO start (past or future).
            result = phrases.parse_phrase(
                text, zone=ctx.zone, now=origin, default_time=default_time
            )
    except phrases.PhraseError as exc:
        message = str(exc).split("; accepted forms")[0]
        if repr(text) not in message:
            message = f"{text!r}: {message}"
        raise ScheduleError(
            "custom_schedule", f"{message}; accepted forms: {CUSTOM_EXAMPLES}"
        ) from None
    ctx = _with_phrase_limits(ctx, text, result.limits, origin)
    schedule = _phrase_schedule(ctx, text, result)
    notes = result.limits.notes + _unnamed_day_notes(ctx.data, result, schedule)
    if result.limits.except_dates:  # checked with the except_dates field (_with_except_dates)
        schedule = replace(schedule, except_dates=result.limits.except_dates)
    return replace(schedule, notes=schedule.notes + notes) if notes else schedule


def _unnamed_day_notes(
    data: ScheduleInput, result: phrases.Phrase, schedule: Schedule
) -> tuple[str, ...]:
    """'every 2 weeks at 9' names no weekday: say which day the runs took (the first
    run's), so a wrong guess is seen before the task is created."""
    if not isinstance(result, phrases.WallClock) or result.limits.start is not None:
        return ()  # (a start date names the first day)
    if result.unit == "weeks" and result.weekdays is None and data.day_of_week is None:
        day = WEEKDAY_NAMES[schedule.weekdays[0]].capitalize() if schedule.weekdays else "?"
        return (
            f"no day of the week is named: the runs are on {day}s (the first run's day); "
            "name the day to choose another, e.g. 'every 2 weeks on monday at 9'",
        )
    if result.unit == "months" and result.day_of_month is None and data.day_of_month is None:
        return (
            f"no day of the month is named: the runs are on day {schedule.day_of_month} (the "
            "first run's day); name the day to choose another, e.g. 'every month on the 1st'",
        )
    return ()


_TWO_STARTS = (
    "the phrase says when it starts ('starting …') and scheduled_time gives a start too; "
    "give the start once"
)


def _with_phrase_limits(
    ctx: _Context, text: str, limits: phrases.Limits, origin: datetime | None
) -> _Context:
    """The start, end and run count a phrase says, as if given in their fields (a field
    given as well must not say otherwise)."""
    data, end_time = ctx.data, ctx.end_time
    if limits.start is not None:
        if origin is not None:
            raise ScheduleError("custom_schedule", f"{text!r}: {_TWO_STARTS}")
        data = replace(data, scheduled_time=limits.start.isoformat())
    if limits.end is not None:
        end_time = localize(limits.end, ctx.zone).astimezone(UTC)
        if ctx.end_time is not None and ctx.end_time != end_time:
            raise ScheduleError(
                "end_time",
                f"the phrase {text!r} ends at {limits.end.isoformat()} but end_time is "
                f"{data.end_time}; give the end once (in the phrase or in end_time)",
            )
        if end_time <= ctx.now and not ctx.allow_past:
            raise ScheduleError(
                "custom_schedule",
                f"{text!r} ends at {limits.end.isoformat()}, which is in the past; give a "
                "later end (or end_time / max_runs)",
            )
        data = replace(data, end_time=limits.end.isoformat())
    if limits.max_runs is not None:
        if data.max_runs is not None and data.max_runs != limits.max_runs:
            raise ScheduleError(
                "max_runs",
                f"the phrase {text!r} says {limits.max_runs} runs but max_runs is "
                f"{data.max_runs}; give the number once",
            )
        data = replace(data, max_runs=limits.max_runs)
    return replace(ctx, data=data, end_time=end_time)


def _phrase_schedule(ctx: _Context, text: str, result: phrases.Phrase) -> Schedule:
    if isinstance(result, phrases.Elapsed):
        return _elapsed(ctx, Frequency.CUSTOM, result.unit, result.interval)
    if isinstance(result, phrases.WallClock):
        spec = _WallSpec(
            result.unit, result.interval, result.at, result.weekdays, result.day_of_month
        )
        return _wall_clock(ctx, Frequency.CUSTOM, spec)
    if isinstance(result, phrases.OneTime):
        if result.at <= ctx.now and not ctx.allow_past:
            raise ScheduleError("custom_schedule", _past_once_message(text, result.at, ctx.zone))
        schedule = Schedule(frequency=Frequency.ONCE, start_at=result.at, phrase=text, **ctx.common)
        _check_end(ctx, schedule, result.at)
        return schedule
    trigger = LocalRRuleTrigger(
        expression=result.text(), timezone=ctx.zone.key, not_before=_rule_start(ctx)
    )
    return replace(_rule_schedule(ctx, text, trigger, "rrule"), phrase=text)


def _custom_error(text: str, problem: str) -> ScheduleError:
    return ScheduleError(
        "custom_schedule", f"{text!r} {problem}; accepted forms: {CUSTOM_EXAMPLES}"
    )


def _looks_like_cron(lowered: str) -> bool:
    tokens = lowered.split()
    return 5 <= len(tokens) <= 7 and all(_CRON_TOKEN.match(t) for t in tokens)


def _rule_start(ctx: _Context) -> datetime:
    """Rules start now, or at an ISO scheduled_time still ahead (HH:MM does not apply)."""
    text = (ctx.data.scheduled_time or "").strip()
    if text and not TIME_OF_DAY.match(text):
        return max(ctx.now, parse_datetime(text, ctx.zone, "scheduled_time"))
    return ctx.now


def _cron(ctx: _Context, text: str) -> Schedule:
    if quartz.is_quartz(text.lower()):
        return _quartz(ctx, text)
    try:
        spec = parse_cron(text)
    except ValueError as exc:
        hint = ""
        if len(text.split()) in (6, 7):
            hint = (
                " (a Quartz expression, seconds first, needs '?' in one day field, e.g. "
                "'0 0 9 ? * MON-FRI')"
            )
        raise _custom_error(text, f"is not a valid cron expression: {exc}{hint}") from None
    start = _rule_start(ctx)
    trigger = LocalCronTrigger(expression=spec.expression, timezone=ctx.zone.key, not_before=start)
    return _rule_schedule(ctx, text, trigger, "cron")


def _rrule(ctx: _Context, text: str) -> Schedule:
    try:
        spec = parse_rrule(text)
    except (ValueError, ZeroDivisionError, OverflowError) as exc:
        rules = re.findall(r"(?:RRULE:)?(FREQ=\S+)", text.upper())
        raise _custom_error(
            " ".join(text.split()), f"is not a valid RRULE: {exc}{_grid_hint(rules, None)}"
        ) from None
    if spec.tzid is not None and spec.tzid != ctx.zone.key:
        raise _custom_error(
            text,
            f"has DTSTART;TZID={spec.tzid} but the task's timezone is {ctx.zone.key}; set "
            f"timezone to {spec.tzid!r} or drop TZID",
        )
    start = _rule_start(ctx)
    if spec.dtstart is None:
        # An ISO scheduled_time (past or future) is the rule's DTSTART, so an INTERVAL keeps
        # its phase; the first run is still at or after now.
        scheduled = (ctx.data.scheduled_time or "").strip()
        origin = (
            parse_datetime(scheduled, ctx.zone, "scheduled_time")
            if scheduled and not TIME_OF_DAY.match(scheduled)
            else start
        )
        spec = replace(
            spec, dtstart=_default_dtstart(spec, wall(origin, UTC if spec.utc else ctx.zone))
        )
    try:
        trigger = LocalRRuleTrigger(expression=spec.text(), timezone=ctx.zone.key, not_before=start)
    except ValueError as exc:
        raise _custom_error(
            " ".join(text.split()), f"{exc}{_grid_hint(spec.rules, spec.dtstart)}"
        ) from None
    if not trigger.runs_within(start, timedelta(days=3660)):
        raise _custom_error(
            " ".join(text.split()),
            f"has no run in the next 10 years{_grid_hint(spec.rules, spec.dtstart)}",
        )
    return _rule_schedule(ctx, text, trigger, "rrule")


_SUB_DAILY = ("FREQ=HOURLY", "FREQ=MINUTELY", "FREQ=SECONDLY")


def _stepped(rule: str) -> bool:
    """A sub-daily FREQ with INTERVAL > 1: its grid depends on DTSTART's time of day."""
    interval = re.search(r"INTERVAL=(\d+)", rule)
    return rule.startswith(_SUB_DAILY) and interval is not None and int(interval[1]) > 1


def _default_dtstart(spec: RRuleSpec, local: datetime) -> datetime:
    """DTSTART when the rule gives none.

    A sub-daily rule with INTERVAL > 1 counts its grid from local midnight of the start
    day, so FREQ=MINUTELY;INTERVAL=15 runs at :00/:15/:30/:45 and FREQ=HOURLY;INTERVAL=2
    in the even hours (like cron */15 and 0 */2) whenever it is created. Other rules start
    at the start rounded up to a whole minute (implicit BYSECOND=0, first run at/after it).
    """
    if any(_stepped(rule) for rule in spec.rules):
        return datetime.combine(local.date(), time())
    ceiling = local.replace(second=0, microsecond=0)
    return ceiling + timedelta(minutes=1) if ceiling < local else ceiling


def _grid_hint(rules: tuple[str, ...] | list[str], dtstart: datetime | None) -> str:
    """Why an INTERVAL grid and BYHOUR/BYMINUTE may never meet, and the fix."""
    rule = next((r for r in rules if _stepped(r)), None)
    if rule is None or not re.search(r"BY(?:HOUR|MINUTE)=", rule):
        return ""
    n = int(re.search(r"INTERVAL=(\d+)", rule)[1])  # type: ignore[index]
    unit = "hours" if rule.startswith("FREQ=HOURLY") else "minutes"
    start = dtstart.strftime("%H:%M") if dtstart else "00:00"
    even = " (the even hours)" if n == 2 and unit == "hours" else ""
    return (
        f"; INTERVAL={n} counts every {n} {unit} from DTSTART {start}{even}, and BYHOUR/"
        "BYMINUTE keep only the grid times they list: drop INTERVAL (BYHOUR/BYMINUTE already "
        "choose the times) or list times on the grid"
    )


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
    """The APScheduler trigger that fires this schedule (moved by its spread, if any)."""
    trigger = _unspread_trigger(schedule)
    return SpreadTrigger(trigger, schedule.spread) if schedule.spread else trigger


def _unspread_trigger(schedule: Schedule) -> BaseTrigger:
    if schedule.frequency == Frequency.ONCE:
        return DateTrigger(run_date=schedule.start_at, timezone=UTC)
    common: dict[str, Any] = {
        "timezone": schedule.timezone,
        "not_before": schedule.start_at,
        "end_time": schedule.end_time,
        "except_dates": schedule.except_dates,
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


def next_runs(
    schedule: Schedule, count: int, now: datetime, trigger: BaseTrigger | None = None
) -> list[datetime]:
    """The next ``count`` fire times at/after ``now``, within end_time and max_runs
    (``trigger``: the schedule's own, if already built)."""
    trigger = build_trigger(schedule) if trigger is None else trigger
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
