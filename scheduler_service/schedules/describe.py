"""Describing schedules in words: what the LLM reads back to the user before a task is
created or changed ("every weekday at 09:00 (Europe/Paris)"), and what a task's answer
shows. Pure; the next runs and warnings that go with the words are in ``previews``.
"""

from __future__ import annotations

from datetime import date, time

from scheduler_service.clock.cron import CronSpec, parse_cron
from scheduler_service.clock.rrule import parse_rrule
from scheduler_service.schedules.fields import WEEKDAY_NAMES
from scheduler_service.schedules.model import Schedule
from scheduler_service.statuses import Frequency


# -- words -----------------------------------------------------------------------------
def _plural(n: int, unit: str) -> str:
    return f"{unit[:-1]}" if n == 1 else f"{n} {unit}"


def _weekday_words(days: tuple[int, ...]) -> str:
    if days == (0, 1, 2, 3, 4):
        return "weekday (Monday–Friday)"
    return ", ".join(WEEKDAY_NAMES[d].capitalize() for d in days)


def _hhmm(at: time) -> str:
    return at.strftime("%H:%M" if at.second == 0 else "%H:%M:%S")


def describe(schedule: Schedule) -> str:
    """The schedule in words, with its zone, e.g. 'every Monday at 08:00 (Europe/Paris)'."""
    zone = schedule.timezone
    if schedule.frequency == Frequency.ONCE:
        return f"once at {schedule.start_at.astimezone(schedule.zone):%Y-%m-%d %H:%M:%S} ({zone})"
    if schedule.expression is not None:
        text = _describe_rule(schedule)
    elif schedule.elapsed:
        assert schedule.unit is not None
        start = schedule.start_at.astimezone(schedule.zone)
        every = f"every {_plural(schedule.interval, schedule.unit)}"
        text = f"{every}, starting {start:%Y-%m-%d %H:%M:%S} ({zone})"
    else:
        text = f"{_describe_wall(schedule)} ({zone})"
    if schedule.end_time:
        text += f", until {schedule.end_time.astimezone(schedule.zone):%Y-%m-%d %H:%M}"
    if schedule.max_runs:
        text += f", at most {schedule.max_runs} run{'s' if schedule.max_runs != 1 else ''}"
    if schedule.except_dates:
        text += f", except {_dates(schedule.except_dates)}"
    if schedule.spread:
        text += f"; spread: each run starts {_offset_words(schedule.spread)} after its time"
    return text


def _offset_words(seconds: int) -> str:
    minutes, rest = divmod(seconds, 60)
    if not minutes:
        return f"{rest} s"
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def _dates(days: tuple[date, ...]) -> str:
    shown = ", ".join(d.isoformat() for d in days[:10])
    return shown + (f" and {len(days) - 10} more dates" if len(days) > 10 else "")


def _describe_wall(schedule: Schedule) -> str:
    assert schedule.unit is not None and schedule.at is not None
    every = f"every {_plural(schedule.interval, schedule.unit)}"
    if schedule.unit == "weeks":
        days = _weekday_words(schedule.weekdays)
        every = f"every {days}" if schedule.interval == 1 else f"{every} on {days}"
    elif schedule.unit == "months":
        day = schedule.day_of_month
        every += " on the last day" if day == -1 else f" on day {day}"
        if day is not None and day > 28:
            every += " (the last day of shorter months)"
    return f"{every} at {_hhmm(schedule.at)}"


def _describe_rule(schedule: Schedule) -> str:
    assert schedule.expression is not None
    if schedule.syntax == "cron":
        spec = parse_cron(schedule.expression)
        detail = _describe_cron(spec)
        return f"cron '{spec.expression}'{f' ({detail})' if detail else ''} ({schedule.timezone})"
    rule = parse_rrule(schedule.expression)
    if schedule.phrase is not None:
        return f"{schedule.phrase} (RRULE {rule.rule}) ({schedule.timezone})"
    start = f"{rule.dtstart:%Y-%m-%d %H:%M:%S}" + (" UTC" if rule.utc else "")
    text = f"RRULE {rule.rule} from {start}"
    if rule.exdates:
        text += f", except (EXDATE) {', '.join(rule.exdates)}"
    return f"{text} ({schedule.timezone})"


_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def _ranges(values: tuple[int, ...], width: int = 1) -> str:
    """(1, 2, 3, 7) → '1–3, 7' (zero-padded to ``width``)."""
    out: list[str] = []
    start = prev = values[0]
    for v in [*values[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        a, b = f"{start:0{width}d}", f"{prev:0{width}d}"
        out.append(a if start == prev else f"{a}–{b}")
        if v is not None:
            start = prev = v
    return ", ".join(out)


def _step(values: tuple[int, ...], low: int, high: int) -> int | None:
    """The step of an evenly spaced full field (0, 15, 30, 45 → 15), else None."""
    if len(values) < 2 or values[0] != low:
        return None
    step = values[1] - values[0]
    return step if values == tuple(range(low, high + 1, step)) else None


def _describe_cron(spec: CronSpec) -> str:
    """Every restricted field in words; both day fields restricted → cron's 'either'."""
    parts: list[str] = []
    minutes, hours = spec.minutes, spec.hours
    if len(minutes) == 1 and len(hours) == 1:
        parts.append(f"at {hours[0]:02d}:{minutes[0]:02d}")
    else:
        step = _step(minutes, 0, 59)
        if len(minutes) == 60:
            parts.append("every minute")
        elif step is not None:
            parts.append(f"every {step} minutes")
        else:
            parts.append(f"at minute {_ranges(minutes)}")
        if len(hours) < 24:
            parts.append(f"in hours {_ranges(hours, 2)}")
    days = None if spec.days_star and len(spec.days) == 31 else spec.days
    weekdays = None if spec.weekdays_star and len(spec.weekdays) == 7 else spec.weekdays
    day_words = f"on days {_ranges(days)} of the month" if days else None
    week_words = f"on {_weekday_words(weekdays)}" if weekdays else None
    if day_words and week_words and not (spec.days_star or spec.weekdays_star):
        parts.append(
            f"{day_words} or {week_words} (cron runs when either day field matches, "
            "not only when both do)"
        )
    else:
        parts += [w for w in (day_words, week_words) if w]
    if len(spec.months) < 12:
        parts.append("in " + ", ".join(_MONTHS[m - 1] for m in spec.months))
    return ", ".join(parts)
