"""DST days of 2026 and 2027, month ends and 29 February, with hand-written expectations.

Zones: America/New_York, Europe/London, Australia/Sydney and Australia/Lord_Howe (whose
clocks move by 30 minutes). Every trigger is pickled and restored first, as the job
store does. Offsets in the expected strings are the ones before/after each change.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from scheduler_service.schedules import Schedule, ScheduleInput, build_trigger, parse_schedule


def parse(frequency: str, now: datetime, tz: str, **fields: Any) -> Schedule:
    return parse_schedule(
        ScheduleInput(frequency, timezone=tz, **fields), now=now, default_timezone="UTC"
    )


def fires(schedule: Schedule, now: datetime, n: int) -> list[datetime]:
    """The next ``n`` fire times (UTC) from the trigger after a pickle round trip."""
    trigger = pickle.loads(pickle.dumps(build_trigger(schedule)))
    out: list[datetime] = []
    previous: datetime | None = None
    while len(out) < n and (fire := trigger.get_next_fire_time(previous, now)) is not None:
        out.append(fire.astimezone(UTC))
        previous = fire
    return out


def local(instants: list[datetime], tz: str) -> list[str]:
    return [i.astimezone(ZoneInfo(tz)).isoformat() for i in instants]


def noon_before(day: date, tz: str, days: int = 2) -> datetime:
    """``days`` days before ``day`` at local noon, as a UTC instant."""
    return datetime.combine(day - timedelta(days=days), time(12), ZoneInfo(tz)).astimezone(UTC)


@dataclass(frozen=True)
class Change:
    """One DST change: the local time chosen inside its gap/overlap and what must happen."""

    tz: str
    day: date
    at: str  # a local time inside the gap or overlap
    before: str  # UTC offset before the change
    after: str  # UTC offset after the change
    fires_at: str  # the one run on ``day``


SPRING = {
    "new_york_2026": Change("America/New_York", date(2026, 3, 8), "02:30", "-05:00", "-04:00", "2026-03-08T03:30:00-04:00"),
    "new_york_2027": Change("America/New_York", date(2027, 3, 14), "02:30", "-05:00", "-04:00", "2027-03-14T03:30:00-04:00"),
    "london_2026": Change("Europe/London", date(2026, 3, 29), "01:30", "+00:00", "+01:00", "2026-03-29T02:30:00+01:00"),
    "london_2027": Change("Europe/London", date(2027, 3, 28), "01:30", "+00:00", "+01:00", "2027-03-28T02:30:00+01:00"),
    "sydney_2026": Change("Australia/Sydney", date(2026, 10, 4), "02:30", "+10:00", "+11:00", "2026-10-04T03:30:00+11:00"),
    "sydney_2027": Change("Australia/Sydney", date(2027, 10, 3), "02:30", "+10:00", "+11:00", "2027-10-03T03:30:00+11:00"),
    "lord_howe_2026": Change("Australia/Lord_Howe", date(2026, 10, 4), "02:15", "+10:30", "+11:00", "2026-10-04T02:45:00+11:00"),
    "lord_howe_2027": Change("Australia/Lord_Howe", date(2027, 10, 3), "02:15", "+10:30", "+11:00", "2027-10-03T02:45:00+11:00"),
}  # fmt: skip

FALL = {
    "new_york_2026": Change("America/New_York", date(2026, 11, 1), "01:30", "-04:00", "-05:00", "2026-11-01T01:30:00-04:00"),
    "new_york_2027": Change("America/New_York", date(2027, 11, 7), "01:30", "-04:00", "-05:00", "2027-11-07T01:30:00-04:00"),
    "london_2026": Change("Europe/London", date(2026, 10, 25), "01:30", "+01:00", "+00:00", "2026-10-25T01:30:00+01:00"),
    "london_2027": Change("Europe/London", date(2027, 10, 31), "01:30", "+01:00", "+00:00", "2027-10-31T01:30:00+01:00"),
    "sydney_2026": Change("Australia/Sydney", date(2026, 4, 5), "02:30", "+11:00", "+10:00", "2026-04-05T02:30:00+11:00"),
    "sydney_2027": Change("Australia/Sydney", date(2027, 4, 4), "02:30", "+11:00", "+10:00", "2027-04-04T02:30:00+11:00"),
    "lord_howe_2026": Change("Australia/Lord_Howe", date(2026, 4, 5), "01:45", "+11:00", "+10:30", "2026-04-05T01:45:00+11:00"),
    "lord_howe_2027": Change("Australia/Lord_Howe", date(2027, 4, 4), "01:45", "+11:00", "+10:30", "2027-04-04T01:45:00+11:00"),
}  # fmt: skip


def around(change: Change) -> list[str]:
    """The daily runs the day before, on and after the change day."""
    before = change.day - timedelta(days=1)
    after = change.day + timedelta(days=1)
    return [
        f"{before}T{change.at}:00{change.before}",
        change.fires_at,
        f"{after}T{change.at}:00{change.after}",
    ]


@pytest.mark.parametrize("change", SPRING.values(), ids=SPRING.keys())
def test_daily_time_in_the_gap_fires_once_at_the_shifted_instant(change: Change) -> None:
    schedule = parse(
        "daily", noon_before(change.day, change.tz), change.tz, scheduled_time=change.at
    )
    assert local(fires(schedule, noon_before(change.day, change.tz), 3), change.tz) == around(
        change
    )


@pytest.mark.parametrize("change", FALL.values(), ids=FALL.keys())
def test_daily_time_in_the_overlap_fires_once_at_the_first_occurrence(change: Change) -> None:
    schedule = parse(
        "daily", noon_before(change.day, change.tz), change.tz, scheduled_time=change.at
    )
    assert local(fires(schedule, noon_before(change.day, change.tz), 3), change.tz) == around(
        change
    )


@pytest.mark.parametrize("change", FALL.values(), ids=FALL.keys())
def test_cron_fixed_hour_in_the_overlap_fires_once(change: Change) -> None:
    hour, minute = change.at.split(":")
    now = noon_before(change.day, change.tz)
    schedule = parse("custom", now, change.tz, custom_schedule=f"{int(minute)} {int(hour)} * * *")
    assert local(fires(schedule, now, 3), change.tz) == around(change)


@pytest.mark.parametrize("change", SPRING.values(), ids=SPRING.keys())
def test_rrule_fixed_hour_in_the_gap_fires_once_shifted(change: Change) -> None:
    hour, minute = change.at.split(":")
    now = noon_before(change.day, change.tz)
    rule = f"RRULE:FREQ=DAILY;BYHOUR={int(hour)};BYMINUTE={int(minute)};BYSECOND=0"
    schedule = parse("custom", now, change.tz, custom_schedule=rule)
    assert local(fires(schedule, now, 3), change.tz) == around(change)


@pytest.mark.parametrize(
    "change",
    [*SPRING.values(), *FALL.values()],
    ids=[f"spring_{k}" for k in SPRING] + [f"fall_{k}" for k in FALL],
)
def test_hourly_across_the_change_is_3600_s_apart_in_utc(change: Change) -> None:  # fmt: skip
    now = datetime.combine(change.day, time(0), ZoneInfo(change.tz)).astimezone(UTC)
    schedule = parse("hourly", now - timedelta(minutes=1), change.tz, scheduled_time="00:00")
    times = fires(schedule, now, 8)
    assert [(b - a).total_seconds() for a, b in pairwise(times)] == [3600] * 7
    offsets = {t.astimezone(ZoneInfo(change.tz)).utcoffset() for t in times}
    assert len(offsets) == 2  # the window really crosses the change


def test_hourly_local_clock_in_new_york_2026() -> None:
    tz = "America/New_York"
    now = datetime(2026, 3, 8, 4, 59, tzinfo=UTC)
    spring = fires(parse("hourly", now, tz, scheduled_time="00:00"), now, 4)
    assert local(spring, tz) == [
        "2026-03-08T00:00:00-05:00",
        "2026-03-08T01:00:00-05:00",
        "2026-03-08T03:00:00-04:00",
        "2026-03-08T04:00:00-04:00",
    ]
    now = datetime(2026, 11, 1, 3, 59, tzinfo=UTC)
    fall = fires(parse("hourly", now, tz, scheduled_time="00:00"), now, 4)
    assert local(fall, tz) == [
        "2026-11-01T00:00:00-04:00",
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T02:00:00-05:00",
    ]


def test_hourly_local_clock_in_lord_howe_2026_half_hour_shift() -> None:
    tz = "Australia/Lord_Howe"
    now = datetime(2026, 10, 3, 13, 29, tzinfo=UTC)  # 00:00 +10:30 on 4 October
    times = fires(parse("hourly", now, tz, scheduled_time="00:00"), now, 4)
    assert local(times, tz) == [
        "2026-10-04T00:00:00+10:30",
        "2026-10-04T01:00:00+10:30",
        "2026-10-04T02:30:00+11:00",
        "2026-10-04T03:30:00+11:00",
    ]


# -- the cadence choice: cron/RRULE whose hours are not fixed --------------------------
def test_cron_every_hour_runs_25_times_on_new_york_fall_back_day_and_23_in_spring() -> None:
    tz = "America/New_York"
    for day, count in ((date(2026, 11, 1), 25), (date(2026, 3, 8), 23)):
        start = datetime.combine(day, time(0), ZoneInfo(tz)).astimezone(UTC)
        end = datetime.combine(day + timedelta(days=1), time(0), ZoneInfo(tz)).astimezone(UTC)
        schedule = parse("custom", start, tz, custom_schedule="0 * * * *")
        on_day = [t for t in fires(schedule, start, 30) if t < end]
        assert len(on_day) == count
        assert {(b - a).total_seconds() for a, b in pairwise(on_day)} == {3600}


def test_cron_every_30_minutes_in_lord_howe_fall_back_keeps_real_time() -> None:
    tz = "Australia/Lord_Howe"
    start = datetime(2026, 4, 5, 1, 0, tzinfo=ZoneInfo(tz)).astimezone(UTC)
    schedule = parse("custom", start, tz, custom_schedule="*/30 * * * *")
    assert local(fires(schedule, start, 5), tz) == [
        "2026-04-05T01:00:00+11:00",
        "2026-04-05T01:30:00+11:00",
        "2026-04-05T01:30:00+10:30",
        "2026-04-05T02:00:00+10:30",
        "2026-04-05T02:30:00+10:30",
    ]


def test_rrule_hourly_follows_the_cadence_rule_too() -> None:
    tz = "Europe/London"
    start = datetime(2026, 10, 25, 0, 0, tzinfo=ZoneInfo(tz)).astimezone(UTC)
    schedule = parse(
        "custom", start, tz, custom_schedule="DTSTART:20261024T000000 RRULE:FREQ=HOURLY"
    )
    assert local(fires(schedule, start, 4), tz) == [
        "2026-10-25T00:00:00+01:00",
        "2026-10-25T01:00:00+01:00",
        "2026-10-25T01:00:00+00:00",
        "2026-10-25T02:00:00+00:00",
    ]


def test_cron_fixed_hours_collapse_onto_one_run_in_the_gap() -> None:
    tz = "America/New_York"
    start = datetime(2026, 3, 8, 0, 0, tzinfo=ZoneInfo(tz)).astimezone(UTC)
    schedule = parse("custom", start, tz, custom_schedule="0,30 1-3 * * *")
    assert local(fires(schedule, start, 5), tz) == [
        "2026-03-08T01:00:00-05:00",
        "2026-03-08T01:30:00-05:00",
        "2026-03-08T03:00:00-04:00",  # 02:00 read before the gap is 03:00, the same instant
        "2026-03-08T03:30:00-04:00",  # 02:30 likewise
        "2026-03-09T01:00:00-04:00",
    ]


# -- anchors and a gap past midnight -----------------------------------------------------
def test_every_2_days_keeps_its_grid_through_the_gap() -> None:
    tz = "America/New_York"
    now = datetime(2026, 3, 5, 12, tzinfo=UTC)
    schedule = parse("custom", now, tz, custom_schedule="every 2 days at 02:30")
    assert local(fires(schedule, now, 4), tz) == [
        "2026-03-06T02:30:00-05:00",
        "2026-03-08T03:30:00-04:00",
        "2026-03-10T02:30:00-04:00",
        "2026-03-12T02:30:00-04:00",
    ]


def test_nuuk_gap_before_midnight_moves_the_run_into_the_next_day_once() -> None:
    """America/Nuuk jumps from 23:00 (-02) to 00:00 (-01): 23:30 on 28 March 2026 is read
    with -02, i.e. 00:30 on the 29th. One run per scheduled date, so the 29th's local date
    shows two runs (the 28th's, moved, and its own)."""
    tz = "America/Nuuk"
    now = datetime(2026, 3, 27, 12, tzinfo=UTC)
    daily = parse("daily", now, tz, scheduled_time="23:30")
    assert local(fires(daily, now, 3), tz) == [
        "2026-03-27T23:30:00-02:00",
        "2026-03-29T00:30:00-01:00",
        "2026-03-29T23:30:00-01:00",
    ]


def test_nuuk_every_2_days_starting_with_a_moved_run_keeps_its_grid() -> None:
    """Regression: the anchor was the moved run's local date (29th), losing the first run."""
    tz = "America/Nuuk"
    now = datetime(2026, 3, 28, 12, tzinfo=UTC)
    schedule = parse("custom", now, tz, custom_schedule="every 2 days at 23:30")
    assert local(fires(schedule, now, 3), tz) == [
        "2026-03-29T00:30:00-01:00",
        "2026-03-30T23:30:00-01:00",
        "2026-04-01T23:30:00-01:00",
    ]


def test_santiago_fall_back_at_midnight_fires_at_the_first_2330() -> None:
    tz = "America/Santiago"  # 24:00 (-03) → 23:00 (-04) on 4 April 2026
    now = datetime(2026, 4, 3, 12, tzinfo=UTC)
    daily = parse("daily", now, tz, scheduled_time="23:30")
    assert local(fires(daily, now, 3), tz) == [
        "2026-04-03T23:30:00-03:00",
        "2026-04-04T23:30:00-03:00",
        "2026-04-05T23:30:00-04:00",
    ]


# -- 29 February and day 31 ------------------------------------------------------------
def test_monthly_day_29_in_february_2027_and_2028() -> None:
    tz = "Europe/London"
    now = datetime(2027, 1, 30, tzinfo=UTC)
    schedule = parse("monthly", now, tz, scheduled_time="09:00", day_of_month=29)
    dates = [t.astimezone(ZoneInfo(tz)).date().isoformat() for t in fires(schedule, now, 14)]
    assert dates[:2] == ["2027-02-28", "2027-03-29"]
    assert "2028-02-29" in dates and "2028-02-28" not in dates


def test_yearly_29_february_by_rrule_and_cron_skips_common_years() -> None:
    tz = "America/New_York"
    now = datetime(2026, 6, 1, tzinfo=UTC)
    rrule = parse(
        "custom",
        now,
        tz,
        custom_schedule="RRULE:FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29;BYHOUR=9;BYMINUTE=0",
    )
    cron = parse("custom", now, tz, custom_schedule="0 9 29 2 *")
    expected = ["2028-02-29T09:00:00-05:00", "2032-02-29T09:00:00-05:00"]
    assert local(fires(rrule, now, 2), tz) == expected
    assert local(fires(cron, now, 2), tz) == expected


def test_monthly_day_31_over_a_year() -> None:
    tz = "Australia/Sydney"
    now = datetime(2026, 1, 1, tzinfo=UTC)
    schedule = parse("monthly", now, tz, scheduled_time="09:00", day_of_month=31)
    dates = [t.astimezone(ZoneInfo(tz)).date().isoformat() for t in fires(schedule, now, 12)]
    assert dates == [
        "2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30", "2026-05-31", "2026-06-30",
        "2026-07-31", "2026-08-31", "2026-09-30", "2026-10-31", "2026-11-30", "2026-12-31",
    ]  # fmt: skip


def test_every_3_months_on_day_31_clamps_each_month_on_its_own() -> None:
    tz = "UTC"
    now = datetime(2026, 1, 1, tzinfo=UTC)
    schedule = parse("custom", now, tz, custom_schedule="every 3 months on the 31st at 12:00")
    dates = [t.date().isoformat() for t in fires(schedule, now, 5)]
    assert dates == ["2026-01-31", "2026-04-30", "2026-07-31", "2026-10-31", "2027-01-31"]


def test_last_day_of_month_in_leap_february() -> None:
    now = datetime(2028, 2, 1, tzinfo=UTC)
    schedule = parse("monthly", now, "UTC", scheduled_time="18:00", day_of_month=-1)
    assert [t.date().isoformat() for t in fires(schedule, now, 2)] == ["2028-02-29", "2028-03-31"]


def test_cron_day_31_skips_short_months() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    schedule = parse("custom", now, "UTC", custom_schedule="0 9 31 * *")
    assert [t.date().isoformat() for t in fires(schedule, now, 3)] == [
        "2026-01-31",
        "2026-03-31",
        "2026-05-31",
    ]
