"""Previews of schedules: the words, the next fire times in the task's zone, and plain
sentences about anything surprising (a local time in a DST gap or overlap, a day clamped
to a month's end, an end before the first run, a one-time task in the past): what the
LLM reads back to the user before a task is created or changed. Pure: ``now`` is passed in.
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from scheduler_service.clock.cron import parse_cron
from scheduler_service.clock.rrule import parse_rrule
from scheduler_service.clock.zones import (
    Transition,
    localize,
    offset_transitions,
    readings,
    wall,
)
from scheduler_service.schedules.describe import describe
from scheduler_service.schedules.fields import TIME_OF_DAY, parse_datetime
from scheduler_service.schedules.fires import (
    GAP_SAMPLE,
    PREVIEW_HORIZON,
    build_trigger,
    first_fire,
    next_runs,
    upcoming_fires,
)
from scheduler_service.schedules.model import ELAPSED_UNITS, Schedule, ScheduleError, ScheduleInput
from scheduler_service.schedules.parse import parse_schedule, task_timezone
from scheduler_service.statuses import Frequency
from scheduler_service.triggers import SpreadTrigger, WallClockTrigger


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
