"""From a ``Schedule`` to its APScheduler trigger and its fire times. The one place that
knows which trigger class serves which kind of schedule; listing fire times is a step of
the evaluation budget (``clock.budget``), so a preview cannot search forever."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from scheduler_service.clock.budget import check
from scheduler_service.clock.zones import scheduled_date
from scheduler_service.schedules.model import ELAPSED_UNITS, Schedule
from scheduler_service.statuses import Frequency
from scheduler_service.triggers import (
    LocalCronTrigger,
    LocalRRuleTrigger,
    SpreadTrigger,
    WallClockTrigger,
)

GAP_SAMPLE = 300  # fire times checked against the minimum interval (cron, RRULE)


PREVIEW_HORIZON = timedelta(days=366)


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


def first_fire(schedule: Schedule, now: datetime) -> datetime | None:
    """The first fire time ignoring end_time (to compare end_time with)."""
    fire: datetime | None = build_trigger(replace(schedule, end_time=None)).get_next_fire_time(
        None, now
    )
    return fire


def upcoming_fires(
    trigger: BaseTrigger, first: datetime, count: int, until: datetime
) -> Iterator[datetime]:
    """``first`` and the fire times after it, at most ``count``, none after ``until``."""
    fire: datetime | None = first
    produced = 0
    while fire is not None and fire <= until and produced < count:
        check()
        yield fire
        produced += 1
        fire = trigger.get_next_fire_time(fire, fire)


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
        check()
        nxt: datetime | None = trigger.get_next_fire_time(previous, now)
        if nxt is None or nxt < now or (schedule.end_time and nxt > schedule.end_time):
            break
        out.append(nxt)
        previous = nxt
    return out
