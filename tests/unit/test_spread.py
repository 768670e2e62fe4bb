"""Spread: the offset of a task (pure) and the trigger that moves a schedule by it."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, time, timedelta

import pytest
from apscheduler.triggers.interval import IntervalTrigger

from scheduler_service.runs.recovery import same_trigger
from scheduler_service.schedules.spread import spread_bound, spread_offset
from scheduler_service.triggers import SpreadTrigger, WallClockTrigger

NOW = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)


def test_the_bound_is_a_tenth_of_the_period_and_at_most_fifteen_minutes() -> None:
    assert spread_bound(60) == 6
    assert spread_bound(3600) == 360
    assert spread_bound(86_400) == 900
    assert spread_bound(7 * 86_400) == 900


def test_the_offset_is_stable_per_task_and_spreads_tasks_over_the_bound() -> None:
    assert spread_offset("task_a", 3600) == spread_offset("task_a", 3600)
    offsets = [spread_offset(f"task_{i}", 3600) for i in range(2000)]
    assert min(offsets) >= 0 and max(offsets) <= 360
    assert len(set(offsets)) > 300, "two thousand hourly tasks use most of the six minutes"
    seconds = [offset % 60 for offset in offsets]
    assert max(seconds.count(s) for s in range(60)) < 2000 / 60 * 2, "no second is crowded"


def test_the_trigger_moves_every_time_of_the_schedule_by_the_offset() -> None:
    inner = IntervalTrigger(hours=1, start_date=NOW, timezone=UTC)
    spread = SpreadTrigger(inner, 125)
    first = spread.get_next_fire_time(None, NOW)
    assert first == NOW + timedelta(seconds=125)
    # APScheduler hands back the fire time it got: the next is an hour later, not 125 s.
    assert spread.get_next_fire_time(first, first) == first + timedelta(hours=1)
    # Within the offset after a time of the schedule, that time's run is still ahead.
    assert spread.get_next_fire_time(None, NOW + timedelta(seconds=60)) == first


def daily_at_nine_in_paris() -> WallClockTrigger:
    return WallClockTrigger(
        at=time(9, 0),
        unit="days",
        interval=1,
        timezone="Europe/Paris",
        anchor=NOW.date(),
        not_before=NOW,
    )


def test_a_wall_clock_schedule_stays_on_its_wall_time_plus_the_offset() -> None:
    inner = daily_at_nine_in_paris()
    spread = SpreadTrigger(inner, 600)
    fire = spread.get_next_fire_time(None, NOW)
    assert fire is not None and fire == inner.get_next_fire_time(None, NOW) + timedelta(minutes=10)


def test_the_trigger_pickles_by_value_and_compares_equal_to_a_copy() -> None:
    inner = daily_at_nine_in_paris()
    spread = SpreadTrigger(inner, 600)
    loaded = pickle.loads(pickle.dumps(spread))
    assert isinstance(loaded.inner, WallClockTrigger) and loaded.offset == 600
    assert loaded.get_next_fire_time(None, NOW) == spread.get_next_fire_time(None, NOW)
    assert same_trigger(loaded, SpreadTrigger(inner, 600)), "reconciliation sees no drift"
    assert not same_trigger(loaded, SpreadTrigger(inner, 601))


def test_a_trigger_pickled_before_spread_existed_still_loads() -> None:
    """Job rows written by earlier versions hold the unwrapped classes, unchanged."""
    state = {
        "version": 1,
        "timezone": "Europe/Paris",
        "at": time(9, 0),
        "unit": "days",
        "interval": 1,
        "weekdays": (),
        "day_of_month": None,
        "anchor": NOW.date(),
        "not_before": NOW,
        "end_time": None,
    }
    trigger = WallClockTrigger.__new__(WallClockTrigger)
    trigger.__setstate__(state)
    loaded = pickle.loads(pickle.dumps(trigger))
    assert loaded.get_next_fire_time(None, NOW) == datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


def test_a_newer_state_is_refused() -> None:
    spread = SpreadTrigger.__new__(SpreadTrigger)
    with pytest.raises(ValueError, match="version 2"):
        spread.__setstate__({"version": 2})
