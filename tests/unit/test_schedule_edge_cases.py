"""Schedules as people say them: phrases wired in, exception dates, the RRULE defects,
contradictions refused, ``now`` told, and messages that say the fix.

Every test passes ``now`` in; expected instants are written out in the task's zone
(America/New_York unless said otherwise).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler_service.schedules import (
    Schedule,
    ScheduleError,
    ScheduleInput,
    build_trigger,
    describe,
    next_runs,
    parse_schedule,
    preview_input,
)

NY = "America/New_York"
NOW = datetime(2026, 1, 7, 20, 0, tzinfo=UTC)  # Wednesday 15:00 in New York


def parse(frequency: str, *, now: datetime = NOW, tz: str = NY, **fields: Any) -> Schedule:
    return parse_schedule(
        ScheduleInput(frequency, **fields), now=now, default_timezone=tz, min_interval=60
    )


def runs(schedule: Schedule, now: datetime = NOW, count: int = 10) -> list[str]:
    return [r.astimezone(schedule.zone).isoformat() for r in next_runs(schedule, count, now)]


def preview(
    frequency: str, *, now: datetime = NOW, count: int = 5, **fields: Any
) -> dict[str, Any]:
    return preview_input(
        ScheduleInput(frequency, **fields),
        now=now,
        default_timezone=NY,
        min_interval=60,
        count=count,
    )


# -- phrases wired into custom_schedule and scheduled_time ----------------------------------
def test_phrase_rules_are_stored_as_rrule_and_described_in_words() -> None:
    schedule = parse("custom", custom_schedule="first monday of the month at 10am")
    assert schedule.syntax == "rrule"
    assert runs(schedule, count=3) == [
        "2026-02-02T10:00:00-05:00",
        "2026-03-02T10:00:00-05:00",
        "2026-04-06T10:00:00-04:00",
    ]
    words = describe(schedule)
    assert "first monday of the month at 10am" in words and NY in words
    again = Schedule.from_dict(schedule.to_dict())
    assert runs(again, count=3) == runs(schedule, count=3)


def test_several_times_and_windows() -> None:
    twice = parse("custom", custom_schedule="twice a day at 8 and 20")
    assert runs(twice, count=3) == [
        "2026-01-07T20:00:00-05:00",
        "2026-01-08T08:00:00-05:00",
        "2026-01-08T20:00:00-05:00",
    ]
    window = parse("custom", custom_schedule="every 15 minutes between 9 and 17 on weekdays")
    got = runs(window, count=40)
    assert got[0] == "2026-01-07T15:00:00-05:00" and "2026-01-07T17:00:00-05:00" in got
    assert "2026-01-07T17:15:00-05:00" not in got and "2026-01-08T09:00:00-05:00" in got


def test_relative_one_time_phrases() -> None:
    soon = parse("custom", custom_schedule="in 2 hours")
    assert soon.frequency == "once" and soon.start_at == NOW + timedelta(hours=2)
    tomorrow = parse("once", scheduled_time="tomorrow at 7")
    assert runs(tomorrow) == ["2026-01-08T07:00:00-05:00"]
    tuesday = parse("once", scheduled_time="next tuesday at 9am")
    assert runs(tuesday) == ["2026-01-13T09:00:00-05:00"]


def test_twelve_hour_scheduled_time() -> None:
    assert runs(parse("daily", scheduled_time="9:30 pm"), count=1) == ["2026-01-07T21:30:00-05:00"]
    assert runs(parse("daily", scheduled_time="noon"), count=1) == ["2026-01-08T12:00:00-05:00"]


# -- exception dates -------------------------------------------------------------------------
def test_except_dates_skip_whole_local_days_and_are_shown() -> None:
    schedule = parse("daily", scheduled_time="09:00", except_dates=["2026-01-09", "2026-01-10"])
    assert runs(schedule, count=3) == [
        "2026-01-08T09:00:00-05:00",
        "2026-01-11T09:00:00-05:00",
        "2026-01-12T09:00:00-05:00",
    ]
    assert Schedule.from_dict(schedule.to_dict()).except_dates == schedule.except_dates
    shown = preview("daily", scheduled_time="09:00", except_dates=["2026-01-09"])
    assert "except 2026-01-09" in shown["description"]
    assert "2026-01-09T09:00:00-05:00" not in shown["next_runs"]


def test_except_dates_with_phrases_cron_and_rrule_exdate() -> None:
    weekday = parse("custom", custom_schedule="every weekday at 9am", except_dates=["2026-01-08"])
    assert runs(weekday, count=1) == ["2026-01-09T09:00:00-05:00"]
    cron = parse("custom", custom_schedule="0 9 * * *", except_dates=["2026-01-08"])
    assert runs(cron, count=1) == ["2026-01-09T09:00:00-05:00"]
    rule = parse(
        "custom",
        custom_schedule="RRULE:FREQ=DAILY;BYHOUR=9;BYMINUTE=0\nEXDATE:20260108T090000",
    )
    assert runs(rule, count=1) == ["2026-01-09T09:00:00-05:00"]
    assert "EXDATE" in describe(rule) or "except" in describe(rule)
    by_date = parse(
        "custom", custom_schedule="RRULE:FREQ=DAILY;BYHOUR=9;BYMINUTE=0 EXDATE;VALUE=DATE:20260108"
    )
    assert runs(by_date, count=1) == ["2026-01-09T09:00:00-05:00"]


# -- defects -----------------------------------------------------------------------------------
def test_utc_until_bounds_instants_in_a_fall_back_overlap() -> None:
    """UNTIL 05:59Z is 01:59 EDT: 01:00 EST (06:00Z) is after it and must not run."""
    schedule = parse(
        "custom",
        now=datetime(2026, 10, 31, 12, tzinfo=UTC),
        custom_schedule="DTSTART:20261031T000000\nRRULE:FREQ=HOURLY;BYMINUTE=0;UNTIL=20261101T055900Z",
    )
    got = next_runs(schedule, 100, datetime(2026, 10, 31, 12, tzinfo=UTC))
    assert got[-1] == datetime(2026, 11, 1, 5, 0, tzinfo=UTC)


def test_utc_until_keeps_a_run_before_it_in_an_overlap() -> None:
    """UNTIL 06:10Z is 01:10 EST; the 01:30 EDT run (05:30Z) is before it and must run."""
    schedule = parse(
        "custom",
        now=datetime(2026, 10, 30, 12, tzinfo=UTC),
        custom_schedule="DTSTART:20261030T013000\nRRULE:FREQ=DAILY;BYHOUR=1;BYMINUTE=30;UNTIL=20261101T061000Z",
    )
    got = next_runs(schedule, 10, datetime(2026, 10, 30, 12, tzinfo=UTC))
    assert got[-1] == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)


def test_utc_until_in_a_spring_gap() -> None:
    """UNTIL 07:10Z is 03:10 EDT; the 02:30 run reads as 03:30 EDT (07:30Z): after it."""
    schedule = parse(
        "custom",
        now=datetime(2026, 3, 6, 12, tzinfo=UTC),
        custom_schedule="DTSTART:20260306T023000\nRRULE:FREQ=DAILY;BYHOUR=2;BYMINUTE=30;UNTIL=20260308T071000Z",
    )
    got = next_runs(schedule, 10, datetime(2026, 3, 6, 12, tzinfo=UTC))
    assert got[-1] == datetime(2026, 3, 7, 7, 30, tzinfo=UTC)


@pytest.mark.parametrize("minute", range(0, 60, 7))
def test_interval_with_byminute_at_any_submission_minute(minute: int) -> None:
    now = datetime(2026, 1, 7, 20, minute, 17, tzinfo=UTC)
    schedule = parse(
        "custom", now=now, custom_schedule="RRULE:FREQ=MINUTELY;INTERVAL=15;BYMINUTE=0,15,30,45"
    )
    got = next_runs(schedule, 8, now)
    assert len(got) == 8 and all(r.minute % 15 == 0 and r.second == 0 for r in got)
    assert got[0] - now <= timedelta(minutes=15)


@pytest.mark.parametrize("hour", [13, 14, 20, 21])
def test_hourly_interval_with_byhour_at_any_submission_hour(hour: int) -> None:
    now = datetime(2026, 1, 7, hour, 7, tzinfo=UTC)
    schedule = parse(
        "custom",
        now=now,
        custom_schedule="RRULE:FREQ=HOURLY;INTERVAL=2;BYHOUR=8,10,12,14,16;BYMINUTE=0",
    )
    hours = {r.astimezone(schedule.zone).hour for r in next_runs(schedule, 10, now)}
    assert hours == {8, 10, 12, 14, 16}


def test_interval_that_never_meets_byhour_says_why() -> None:
    with pytest.raises(ScheduleError, match="INTERVAL") as info:
        parse("custom", custom_schedule="RRULE:FREQ=HOURLY;INTERVAL=2;BYHOUR=9,11;BYMINUTE=0")
    assert "even" in info.value.message


@pytest.mark.parametrize(
    ("cron", "rrule"),
    [
        ("0 */2 * * *", "RRULE:FREQ=HOURLY;INTERVAL=2"),
        ("*/15 * * * *", "RRULE:FREQ=MINUTELY;INTERVAL=15"),
        ("0 * * * *", "RRULE:FREQ=HOURLY;BYMINUTE=0"),
        ("30 1 * * *", "RRULE:FREQ=DAILY;BYHOUR=1;BYMINUTE=30"),
        ("30 2 * * 1-5", "RRULE:FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;BYHOUR=2;BYMINUTE=30"),
    ],
)
@pytest.mark.parametrize(
    "now",
    [datetime(2026, 3, 7, 12, 3, tzinfo=UTC), datetime(2026, 10, 31, 12, 41, tzinfo=UTC)],
)
def test_equivalent_cron_and_rrule_fire_alike_across_dst(
    cron: str, rrule: str, now: datetime
) -> None:
    a = parse("custom", now=now, custom_schedule=cron)
    b = parse("custom", now=now, custom_schedule=rrule)
    count = 200
    assert next_runs(a, count, now) == next_runs(b, count, now)


# -- contradictions ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "fixes"),
    [
        (
            {"frequency": "daily", "scheduled_time": "09:00", "day_of_week": 0},
            ["day_of_week", "weekly"],
        ),
        (
            {"frequency": "daily", "scheduled_time": "09:00", "day_of_month": 1},
            ["day_of_month", "monthly"],
        ),
        (
            {"frequency": "weekly", "scheduled_time": "09:00", "day_of_week": 0, "day_of_month": 3},
            ["day_of_month", "monthly"],
        ),
        (
            {
                "frequency": "monthly",
                "scheduled_time": "09:00",
                "day_of_month": 1,
                "day_of_week": 0,
            },
            ["day_of_week", "weekly"],
        ),
        ({"frequency": "hourly", "day_of_week": [0, 1]}, ["day_of_week", "custom"]),
        (
            {
                "frequency": "daily",
                "scheduled_time": "09:00",
                "custom_schedule": "every weekday at 9",
            },
            ["custom_schedule", "frequency custom"],
        ),
        (
            {"frequency": "weekly", "custom_schedule": "every monday at 9"},
            ["custom_schedule", "frequency custom"],
        ),
        (
            {"frequency": "daily", "scheduled_time": "09:00", "timezone": "EST"},
            ["timezone", "America/New_York"],
        ),
        (
            {"frequency": "daily", "scheduled_time": "09:00", "timezone": "PST8PDT"},
            ["America/Los_Angeles"],
        ),
        (
            {"frequency": "daily", "scheduled_time": "09:00", "timezone": "CST6CDT"},
            ["America/Chicago"],
        ),
        ({"frequency": "daily", "scheduled_time": "09:00", "timezone": "MST"}, ["America/Phoenix"]),
        (
            {"frequency": "daily", "scheduled_time": "09:00", "timezone": "HST"},
            ["Pacific/Honolulu"],
        ),
        (
            {"frequency": "daily", "scheduled_time": "09:00", "timezone": "Etc/GMT+5"},
            ["timezone", "IANA"],
        ),
        (
            {"frequency": "daily", "scheduled_time": "09:00", "timezone": "PST"},
            ["America/Los_Angeles"],
        ),
        (
            {"frequency": "once", "scheduled_time": "2027-02-29T09:00"},
            ["no such date", "2027 is not a leap year"],
        ),
        (
            {"frequency": "once", "scheduled_time": "2026-04-31T09:00"},
            ["no such date", "April has 30 days"],
        ),
        (
            {
                "frequency": "custom",
                "custom_schedule": "every weekday at 08:00 and every weekend at 10:00",
            },
            ["two tasks"],
        ),
        (
            {"frequency": "custom", "custom_schedule": "every 30 seconds"},
            ["minimum interval", "every minute"],
        ),
        ({"frequency": "monthly", "scheduled_time": "09:00", "day_of_month": 0}, ["-1"]),
        ({"frequency": "minutely", "except_dates": ["2026-01-09"]}, ["except_dates", "cron"]),
        (
            {"frequency": "daily", "scheduled_time": "09:00", "except_dates": ["2026-02-30"]},
            ["except_dates", "no such date"],
        ),
    ],
)
def test_bad_input_message_contains_the_fix(fields: dict[str, Any], fixes: list[str]) -> None:
    frequency = fields.pop("frequency")
    with pytest.raises(ScheduleError) as info:
        parse(frequency, **fields)
    for fix in fixes:
        assert fix in str(info.value), str(info.value)


def test_iso_offset_that_disagrees_with_the_zone_warns() -> None:
    shown = preview("daily", scheduled_time="2026-01-08T09:00:00+01:00")
    assert any("+01:00" in w and NY in w for w in shown["warnings"]), shown["warnings"]
    fine = preview("daily", scheduled_time="2026-01-08T09:00:00-05:00")
    assert not any("offset" in w for w in fine["warnings"])


def test_past_iso_start_keeps_the_phase_of_every_n_days() -> None:
    """From Thursday 1 January every 3 days: 4, 7 (09:00 is past at 15:00), then 10."""
    schedule = parse("custom", custom_schedule="every 3 days", scheduled_time="2026-01-01T09:00")
    assert runs(schedule, count=2) == ["2026-01-10T09:00:00-05:00", "2026-01-13T09:00:00-05:00"]
    weeks = parse(
        "custom", custom_schedule="every 2 weeks on monday", scheduled_time="2025-12-29T08:00"
    )
    assert runs(weeks, count=1) == ["2026-01-12T08:00:00-05:00"]
    rule = parse(
        "custom",
        custom_schedule="RRULE:FREQ=DAILY;INTERVAL=3;BYHOUR=9;BYMINUTE=0",
        scheduled_time="2026-01-01T09:00",
    )
    assert runs(rule, count=1) == ["2026-01-10T09:00:00-05:00"]
    phrase = parse(
        "custom",
        custom_schedule="every 2 weeks on monday at 8 and 20",
        scheduled_time="2025-12-29T08:00",
    )
    assert runs(phrase, count=1) == ["2026-01-12T08:00:00-05:00"]


def test_cron_description_says_every_field() -> None:
    words = describe(parse("custom", custom_schedule="0 9 1-7 * 1-5"))
    assert "1–7" in words and "Monday–Friday" in words and "either" in words
    words = describe(parse("custom", custom_schedule="*/15 9-17 * 1,7 *"))
    assert "every 15 minutes" in words and "09–17" in words and "January, July" in words


# -- now, told ------------------------------------------------------------------------------------
def test_preview_carries_now_in_the_task_zone() -> None:
    shown = preview("daily", scheduled_time="09:00", timezone="Europe/Paris")
    assert shown["now"] == "2026-01-07T21:00:00+01:00"


def test_schedule_kinds_stay_buildable() -> None:
    for schedule in (
        parse("custom", custom_schedule="every quarter on the 1st at 9"),
        parse("custom", custom_schedule="every year on March 3 at 9"),
    ):
        assert build_trigger(schedule).get_next_fire_time(None, NOW) is not None
