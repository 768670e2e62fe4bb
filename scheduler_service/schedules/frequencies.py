"""The built-in kinds of schedule: once, every N minutes/hours (elapsed time) and
daily/weekly/monthly at a local time (wall clock). Phrases that mean one of these
("every 15 minutes", "every 2 weeks at 9") compile to the same functions, so both ways
of asking give the same schedule. ``Context`` carries what every kind needs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from dateutil.relativedelta import relativedelta

from scheduler_service.clock.zones import localize, wall
from scheduler_service.schedules.fields import (
    TIME_OF_DAY,
    parse_datetime,
    parse_day_of_month,
    parse_local_datetime,
    parse_time_of_day,
    parse_weekdays,
)
from scheduler_service.schedules.fires import first_fire
from scheduler_service.schedules.model import ELAPSED_UNITS, Schedule, ScheduleError, ScheduleInput
from scheduler_service.statuses import Frequency
from scheduler_service.triggers import WallClockTrigger


@dataclass(frozen=True)
class Context:
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
class WallSpec:
    """A wall-clock schedule as a phrase or frequency gave it (None: not given)."""

    unit: str
    interval: int = 1
    at: time | None = None
    weekdays: tuple[int, ...] | None = None
    day_of_month: int | None = None


def check_end(ctx: Context, schedule: Schedule, first: datetime | None) -> None:
    end = schedule.end_time
    if end is None or first is None or end >= first or ctx.allow_past:
        return
    raise ScheduleError(
        "end_time",
        f"{ctx.data.end_time!r} is before the first run "
        f"({first.astimezone(ctx.zone).isoformat()}); give a later end_time or leave it out",
    )


def once_schedule(ctx: Context) -> Schedule:
    text = ctx.data.scheduled_time
    if not text:
        raise ScheduleError(
            "scheduled_time",
            "required for a once task; give HH:MM (next occurrence) or an ISO datetime",
        )
    run_at = _first_instant(text, ctx.zone, ctx.now)
    if run_at <= ctx.now and not ctx.allow_past:
        raise ScheduleError("scheduled_time", past_once_message(text, run_at, ctx.zone))
    schedule = Schedule(frequency=Frequency.ONCE, start_at=run_at, **ctx.common)
    check_end(ctx, schedule, run_at)
    return schedule


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


def past_once_message(text: str, run_at: datetime, zone: ZoneInfo) -> str:
    return (
        f"{text!r} is in the past ({run_at.astimezone(zone).isoformat()}); "
        "give a future time such as 18:30 (next occurrence) or 2026-12-24T18:00"
    )


def elapsed_schedule(ctx: Context, frequency: str, unit: str, interval: int) -> Schedule:
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
    check_end(ctx, schedule, first_fire(schedule, ctx.now))
    return schedule


def _ceil_minutes(seconds: int) -> int:
    return -(-seconds // 60)


def wall_clock_schedule(ctx: Context, frequency: str, spec: WallSpec) -> Schedule:
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
    check_end(ctx, schedule, first)
    return schedule


def _names_a_day(data: ScheduleInput, spec: WallSpec) -> bool:
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
    ctx: Context, frequency: str, phrase_at: time | None
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
    ctx: Context, frequency: str, spec: WallSpec, start: date
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
