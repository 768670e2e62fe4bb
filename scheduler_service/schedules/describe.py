"""Describing schedules: words, a preview of the next runs, and warnings.

What the LLM reads back to the user before a task is created or changed: the schedule in
words with its zone, the next fire times in the task's zone, and plain sentences about
anything surprising (a local time in a DST gap or overlap, a day clamped to a month's
end, an end before the first run, a one-time task in the past). Pure: ``now`` is passed in.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from scheduler_service.clock.cron import CronSpec, parse_cron
from scheduler_service.clock.rrule import parse_rrule
from scheduler_service.clock.zones import (
    Transition,
    localize,
    offset_transitions,
    readings,
    wall,
)
from scheduler_service.schedules.parse import (
    ELAPSED_UNITS,
    GAP_SAMPLE,
    PREVIEW_HORIZON,
    TIME_OF_DAY,
    WEEKDAY_NAMES,
    Schedule,
    ScheduleError,
    ScheduleInput,
    build_trigger,
    first_fire,
    next_runs,
    parse_datetime,
    parse_schedule,
    task_timezone,
    upcoming_fires,
)
from scheduler_service.statuses import Frequency
from scheduler_service.triggers import SpreadTrigger, WallClockTrigger


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


# -- preview ---------------------------------------------------------------------------
def preview(
    schedule: Schedule, *, now: datetime, count: int = 5, trigger: BaseTrigger | None = None
) -> dict[str, Any]:
    """What a schedule will do: its words, next ``count`` runs (ISO, task zone), warnings.

    Warnings cover a local time in a DST gap or overlap within the next year, a day
    clamped to a month's end, an end_time before the first run, and a once time past.
    ``trigger``, the schedule's own (``build_trigger``), saves building it again.
    """
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100:
        raise ScheduleError("count", f"{count!r} is not a number of runs; give 1–100")
    now = now.astimezone(UTC)
    zone = schedule.zone
    trigger = build_trigger(schedule) if trigger is None else trigger
    runs = [] if _is_past_once(schedule, now) else next_runs(schedule, count, now, trigger)
    return {
        "description": describe(schedule),
        "next_runs": [r.astimezone(zone).isoformat() for r in runs],
        "warnings": list(schedule.notes) + schedule_warnings(schedule, now=now, trigger=trigger),
        "now": now_in_zone(now, schedule.timezone),
    }


def now_in_zone(now: datetime, timezone: str) -> str:
    """The current time in the task's zone, ISO with offset, whole seconds."""
    return now.astimezone(ZoneInfo(timezone)).replace(microsecond=0).isoformat()


def schedule_warnings(
    schedule: Schedule, *, now: datetime, trigger: BaseTrigger | None = None
) -> list[str]:
    """Everything ``preview`` warns about, in plain sentences (about the schedule's own
    times: a spread only moves each of them later)."""
    trigger = build_trigger(schedule) if trigger is None else trigger
    if isinstance(trigger, SpreadTrigger):
        trigger = trigger.inner
    horizon = _horizon(schedule, trigger, now)
    warnings = _end_warnings(schedule, now)
    if schedule.frequency == Frequency.ONCE:
        return warnings + ([past_once_warning(schedule)] if _is_past_once(schedule, now) else [])
    if isinstance(trigger, IntervalTrigger):
        return warnings + _elapsed_dst_warnings(schedule, trigger, now, horizon)
    warnings += _dst_warnings(schedule, trigger, now, horizon)
    if isinstance(trigger, WallClockTrigger):
        warnings += _clamp_warnings(schedule, trigger, now, horizon)
    warnings += _phrase_clamp_warnings(schedule, trigger, now, horizon)
    return warnings + _rule_warnings(schedule)


def _is_past_once(schedule: Schedule, now: datetime) -> bool:
    return schedule.frequency == Frequency.ONCE and schedule.start_at <= now


def past_once_warning(schedule: Schedule) -> str:
    local = schedule.start_at.astimezone(schedule.zone).isoformat()
    return (
        f"scheduled_time {local} is in the past: a once task never runs; "
        "create_task refuses it — give a future time"
    )


def _horizon(schedule: Schedule, trigger: BaseTrigger, now: datetime) -> datetime:
    """Look a year ahead, but not past end_time or the last run max_runs allows."""
    horizon = now + PREVIEW_HORIZON
    if schedule.end_time is not None:
        horizon = min(horizon, schedule.end_time)
    if schedule.max_runs is not None and schedule.max_runs <= 1000:
        first = trigger.get_next_fire_time(None, now)
        if first is not None:
            fires = list(upcoming_fires(trigger, first, schedule.max_runs, horizon))
            horizon = min(horizon, fires[-1]) if len(fires) == schedule.max_runs else horizon
    return horizon


def _end_warnings(schedule: Schedule, now: datetime) -> list[str]:
    end = schedule.end_time
    if end is None:
        return []
    local_end = end.astimezone(schedule.zone).isoformat()
    if end <= now:
        return [f"end_time {local_end} is in the past: the task would never run"]
    first = first_fire(schedule, now)
    if first is not None and first > end:
        first_local = first.astimezone(schedule.zone).isoformat()
        return [
            f"end_time {local_end} is before the first run ({first_local}): "
            "the task would never run"
        ]
    return []


def _walls_in(trigger: Any, low: datetime, high: datetime) -> list[datetime]:
    """The schedule's local wall times in [low, high) (at most a few)."""
    found: list[datetime] = []
    candidate = trigger.next_wall_time(low)
    while candidate is not None and candidate < high and len(found) < 8:
        found.append(candidate)
        candidate = trigger.next_wall_time(candidate + timedelta(seconds=1))
    return found


def _dst_warnings(schedule: Schedule, trigger: Any, now: datetime, horizon: datetime) -> list[str]:
    """Scheduled local times that fall in a gap or an overlap before ``horizon``."""
    zone = trigger.zone
    out: list[str] = []
    for change in offset_transitions(zone, max(now, schedule.start_at), horizon):
        low, high = change.local_span()
        walls = [
            w
            for w in _walls_in(trigger, low, high)
            if any(max(now, schedule.start_at) <= r <= horizon for r in _instants(w, zone))
        ]
        if walls:
            out.append(_dst_sentence(change, walls, zone, trigger.fixed_hours))
    return out


def _instants(local: datetime, zone: Any) -> list[datetime]:
    """The real instants a local time could fire at (its fold=0 reading and its readings)."""
    return [localize(local, zone).astimezone(UTC), *readings(local, zone)]


def _dst_sentence(change: Transition, walls: list[datetime], zone: Any, fixed: bool) -> str:
    low, high = change.local_span()
    day, name = f"{low:%Y-%m-%d}", getattr(zone, "key", str(zone))
    times = ", ".join(f"{w:%H:%M}" for w in walls)
    one = len(walls) == 1
    if change.is_gap:
        what = f"On {day} {times} {'does' if one else 'do'} not exist in {name} "
        what += f"(clocks jump from {low:%H:%M} to {high:%H:%M})"
        if not fixed:
            return f"{what}: {'that run is' if one else 'those runs are'} skipped."
        moved = ", ".join(localize(w, zone).isoformat() for w in walls)
        return f"{what}: {'the run happens' if one else 'the runs happen'} at {moved} instead."
    what = f"On {day} {times} {'occurs' if one else 'occur'} twice in {name} "
    what += f"(clocks go back from {high:%H:%M} to {low:%H:%M})"
    if not fixed:
        return f"{what}: runs happen at both occurrences."
    first = ", ".join(localize(w, zone).isoformat() for w in walls)
    return f"{what}: runs happen at the first occurrence only ({first})."


def _elapsed_dst_warnings(
    schedule: Schedule, trigger: IntervalTrigger, now: datetime, horizon: datetime
) -> list[str]:
    """Elapsed schedules keep real time, so their clock times move at a DST change."""
    assert schedule.unit is not None
    step = schedule.interval * ELAPSED_UNITS[schedule.unit]
    out: list[str] = []
    for change in offset_transitions(schedule.zone, max(now, schedule.start_at), horizon):
        shift = change.after - change.before
        fire = trigger.get_next_fire_time(None, change.at)
        if int(abs(shift).total_seconds()) % step == 0 or fire is None or fire > horizon:
            continue
        before = (fire + change.before).replace(tzinfo=None)
        after = wall(fire, schedule.zone)
        out.append(
            f"Runs count real time: after the clock change on {change.at.astimezone(schedule.zone):%Y-%m-%d} "
            f"in {schedule.timezone} the local run times shift by {_signed(shift)} "
            f"(e.g. {before:%H:%M} becomes {after:%H:%M})."
        )
    return out


def _signed(delta: timedelta) -> str:
    """+1 h, -30 min, +1 h 30 min."""
    minutes = int(delta.total_seconds() // 60)
    hours, rest = divmod(abs(minutes), 60)
    parts = [f"{hours} h"] * bool(hours) + [f"{rest} min"] * bool(rest)
    return ("+" if minutes >= 0 else "-") + " ".join(parts)


def _clamp_warnings(
    schedule: Schedule, trigger: WallClockTrigger, now: datetime, horizon: datetime
) -> list[str]:
    """Runs moved to the last day of a month that lacks the scheduled day (29–31)."""
    day = schedule.day_of_month
    if schedule.unit != "months" or day is None or day <= 28:
        return []
    clamped: list[date] = []
    d = trigger.next_date(wall(max(now, schedule.start_at), trigger.zone).date())
    while trigger.fire_on(d) <= horizon:
        if d.day < day:
            clamped.append(d)
        d = trigger.next_date(d + timedelta(days=1))
    if not clamped:
        return []
    months = ", ".join(f"{d:%B %Y}" for d in clamped)
    dates = ", ".join(d.isoformat() for d in clamped)
    return [f"Day {day} does not exist in {months}: those runs happen on the last day ({dates})."]


def _phrase_clamp_warnings(
    schedule: Schedule, trigger: BaseTrigger, now: datetime, horizon: datetime
) -> list[str]:
    """A phrase's month days 29–31 ('every 10th and 31st') run on the last day of shorter
    months (the rule keeps the last of 28…31 that exists): say which, as monthly does."""
    if schedule.phrase is None or schedule.syntax != "rrule" or schedule.expression is None:
        return []
    days = sorted({int(m[1]) for m in _CLAMPED.finditer(schedule.expression)})
    first = trigger.get_next_fire_time(None, now)
    if not days or first is None:
        return []
    clamped: list[date] = []
    for fire in upcoming_fires(trigger, first, GAP_SAMPLE, horizon):
        local = wall(fire, schedule.zone).date()
        last = calendar.monthrange(local.year, local.month)[1]
        if local.day == last and last < days[-1] and local not in clamped:
            clamped.append(local)
    if not clamped:
        return []
    named = "Day " + str(days[0]) if len(days) == 1 else "Days " + ", ".join(map(str, days))
    months = ", ".join(f"{d:%B %Y}" for d in clamped)
    dates = ", ".join(d.isoformat() for d in clamped)
    return [
        f"{named} does not exist in every month ({months}): those runs happen on the last "
        f"day ({dates})."
    ]


_CLAMPED = re.compile(r"BYMONTHDAY=28,(?:\d+,)*(\d+);")


def _rule_warnings(schedule: Schedule) -> list[str]:
    """Traps of cron and RRULE that are valid but rarely meant."""
    if schedule.expression is None:
        return []
    if schedule.syntax == "cron":
        spec = parse_cron(schedule.expression)
        long_days = [d for d in spec.days if d > 28]
        if spec.weekdays_star and len(spec.days) < 28 and long_days:
            return [
                f"cron day {', '.join(map(str, long_days))} runs only in months that have it "
                "(standard cron); for the last day of every month use frequency monthly with "
                "day_of_month -1"
            ]
        return []
    rule = parse_rrule(schedule.expression)
    if (
        "BYHOUR=" in rule.rule
        and "BYMINUTE=" not in rule.rule
        and rule.dtstart is not None
        and rule.dtstart.minute != 0
    ):
        return [
            f"the RRULE has BYHOUR but no BYMINUTE, so runs take DTSTART's minute "
            f"(:{rule.dtstart:%M}, RFC 5545); add BYMINUTE=0 for runs on the hour"
        ]
    return []


# -- input-level helpers for previews ------------------------------------------------
def first_run_in_past_warning(
    data: ScheduleInput, *, now: datetime, default_timezone: str
) -> str | None:
    """A warning when scheduled_time is an ISO datetime already past, else None.

    parse_schedule refuses this for once tasks and silently starts recurring ones from now;
    a preview should say so. Input errors are left to parse_schedule.
    """
    text = (data.scheduled_time or "").strip()
    if not text or TIME_OF_DAY.match(text):
        return None
    try:
        frequency = (data.frequency or "").strip().lower()
        zone = ZoneInfo(task_timezone(data, frequency, default_timezone))
        instant = parse_datetime(text, zone, "scheduled_time")
    except ScheduleError:
        return None
    if instant > now:
        return None
    if frequency == Frequency.ONCE:
        return past_once_warning(Schedule(Frequency.ONCE, zone.key, instant))
    return (
        f"scheduled_time {instant.astimezone(zone).isoformat()} is in the past: "
        "the first run is the next one after now"
    )


def preview_input(
    data: ScheduleInput,
    *,
    now: datetime,
    default_timezone: str,
    min_interval: int = 60,
    count: int = 5,
) -> dict[str, Any]:
    """preview_schedule for raw input: parse (past times allowed), preview, add input warnings.

    Raises ScheduleError for input that is wrong in itself (as create_task would).
    """
    schedule = parse_schedule(
        data,
        now=now,
        default_timezone=default_timezone,
        min_interval=min_interval,
        allow_past=True,
    )
    result = preview(schedule, now=now, count=count)
    extra = first_run_in_past_warning(data, now=now, default_timezone=default_timezone)
    if extra is not None and extra not in result["warnings"]:
        result["warnings"].insert(0, extra)
    return result
