"""Parsing schedules: user input → a validated ``Schedule`` → an APScheduler trigger.

The entry point: ``parse_schedule`` checks the fields that concern every kind of
schedule (which fields the frequency uses, the timezone, scheduled_time, end_time,
max_runs, except_dates) and hands the rest to the module of the kind asked for:
``frequencies`` (once, elapsed, daily/weekly/monthly), ``rules`` (cron, RRULE) or
``phrase_schedules`` ("every weekday at 9am"). The names those modules define are
importable from here too.

Pure domain logic: no I/O, ``now`` is always passed in, so every rule here is testable
with computed instants. The time rules themselves (DST gaps and overlaps, month ends)
live in ``scheduler_service.clock`` and the trigger classes in ``triggers``;
docs/time.md explains them with examples.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from scheduler_service.schedules import phrases
from scheduler_service.schedules.fields import (
    ABBREVIATIONS,
    LEGACY_ZONES,
    TIME_OF_DAY,
    WEEKDAY_NAMES,
    no_such_date,
    parse_datetime,
    parse_day_of_month,
    parse_local_datetime,
    parse_time_of_day,
    parse_timezone,
    parse_weekdays,
    spoken_time,
)
from scheduler_service.schedules.fires import (
    GAP_SAMPLE,
    PREVIEW_HORIZON,
    build_trigger,
    first_fire,
    next_runs,
    upcoming_fires,
)
from scheduler_service.schedules.frequencies import (
    Context,
    WallSpec,
    elapsed_schedule,
    once_schedule,
    wall_clock_schedule,
)
from scheduler_service.schedules.model import ELAPSED_UNITS, Schedule, ScheduleError, ScheduleInput
from scheduler_service.schedules.phrase_schedules import phrase_schedule
from scheduler_service.schedules.rules import (
    CUSTOM_EXAMPLES,
    cron_schedule,
    looks_like_cron,
    rrule_schedule,
)
from scheduler_service.statuses import FREQUENCIES, Frequency

__all__ = [
    "ABBREVIATIONS",
    "CUSTOM_EXAMPLES",
    "ELAPSED_UNITS",
    "GAP_SAMPLE",
    "LEGACY_ZONES",
    "PREVIEW_HORIZON",
    "TIME_OF_DAY",
    "WEEKDAY_NAMES",
    "Schedule",
    "ScheduleError",
    "ScheduleInput",
    "bounded_cost",
    "build_trigger",
    "fields_ignored_by",
    "first_fire",
    "next_runs",
    "parse_datetime",
    "parse_day_of_month",
    "parse_local_datetime",
    "parse_schedule",
    "parse_time_of_day",
    "parse_timezone",
    "parse_weekdays",
    "task_timezone",
    "upcoming_fires",
]


_TZID = re.compile(r"TZID=([^:;\s]+)", re.IGNORECASE)


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
    ctx = Context(data, zone, now, min_interval, allow_past, end_time)
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


def _parse_kind(ctx: Context, frequency: str) -> Schedule:
    if frequency == Frequency.ONCE:
        return once_schedule(ctx)
    if frequency in (Frequency.MINUTELY, Frequency.HOURLY):
        return elapsed_schedule(
            ctx, frequency, "minutes" if frequency == Frequency.MINUTELY else "hours", 1
        )
    if frequency in (Frequency.DAILY, Frequency.WEEKLY, Frequency.MONTHLY):
        unit = {Frequency.DAILY: "days", Frequency.WEEKLY: "weeks", Frequency.MONTHLY: "months"}[
            Frequency(frequency)
        ]
        return wall_clock_schedule(ctx, frequency, WallSpec(unit))
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
    if (clock := spoken_time(text)) is not None:
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


def _with_except_dates(ctx: Context, schedule: Schedule) -> Schedule:
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
            problem = no_such_date(str(value)) or "is not a date"
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
        or looks_like_cron(lowered)
    )


def _custom(ctx: Context) -> Schedule:
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
        return cron_schedule(ctx, text[5:].strip())
    if lowered.startswith(("rrule:", "dtstart", "freq=")) or "rrule:" in lowered:
        return rrule_schedule(ctx, raw)
    if lowered.startswith("@") or looks_like_cron(lowered):
        return cron_schedule(ctx, text)
    return phrase_schedule(ctx, text)
