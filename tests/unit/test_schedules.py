"""Schedules: parsing, next fire times, words and previews, from computed instants.

No sleeps and no patched clocks: every test passes ``now`` in. Expected times are
written out by hand in the task's zone (America/New_York unless said otherwise).
"""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from apscheduler.triggers.base import BaseTrigger

from scheduler_service.schedules import (
    CUSTOM_EXAMPLES,
    Schedule,
    ScheduleError,
    ScheduleInput,
    build_trigger,
    describe,
    first_run_in_past_warning,
    next_runs,
    parse_schedule,
    preview,
    preview_input,
)

NY = "America/New_York"
NOW = datetime(2026, 1, 7, 20, 0, tzinfo=UTC)  # Wednesday 15:00 in New York


def parse(
    frequency: str,
    *,
    now: datetime = NOW,
    tz: str = NY,
    min_interval: int = 60,
    allow_past: bool = False,
    **fields: Any,
) -> Schedule:
    return parse_schedule(
        ScheduleInput(frequency, **fields),
        now=now,
        default_timezone=tz,
        min_interval=min_interval,
        allow_past=allow_past,
    )


def custom(text: str, **kwargs: Any) -> Schedule:
    return parse("custom", custom_schedule=text, **kwargs)


def stored(trigger: BaseTrigger) -> BaseTrigger:
    """The trigger as the job store gives it back."""
    restored: BaseTrigger = pickle.loads(pickle.dumps(trigger))
    return restored


def runs(schedule: Schedule, n: int = 4, now: datetime = NOW) -> list[str]:
    """The next ``n`` fire times after a pickle round trip, ISO in the task's zone."""
    trigger = stored(build_trigger(schedule))
    out: list[str] = []
    previous: datetime | None = None
    while len(out) < n:
        fire = trigger.get_next_fire_time(previous, now)
        if fire is None:
            break
        out.append(fire.astimezone(schedule.zone).isoformat())
        previous = fire
    return out


def error(frequency: str, **kwargs: Any) -> ScheduleError:
    with pytest.raises(ScheduleError) as caught:
        parse(frequency, **kwargs)
    return caught.value


# -- once ------------------------------------------------------------------------------
def test_once_hh_mm_later_today_is_today() -> None:
    assert runs(parse("once", scheduled_time="18:30")) == ["2026-01-07T18:30:00-05:00"]


def test_once_hh_mm_already_past_today_is_tomorrow() -> None:
    assert runs(parse("once", scheduled_time="09:00")) == ["2026-01-08T09:00:00-05:00"]


def test_once_naive_iso_is_task_zone_wall_time() -> None:
    schedule = parse("once", scheduled_time="2026-07-04T09:00", timezone="Europe/Paris")
    assert runs(schedule) == ["2026-07-04T09:00:00+02:00"]


@pytest.mark.parametrize("text", ["2026-02-01T12:00:00+01:00", "2026-02-01T11:00:00Z"])
def test_once_iso_with_offset_is_that_instant(text: str) -> None:
    assert runs(parse("once", scheduled_time=text)) == ["2026-02-01T06:00:00-05:00"]


def test_once_in_the_past_is_refused_with_the_time_and_examples() -> None:
    err = error("once", scheduled_time="2026-01-07T14:00")
    assert err.field == "scheduled_time"
    assert "'2026-01-07T14:00' is in the past" in err.message
    assert "2026-01-07T14:00:00-05:00" in err.message
    assert "18:30" in err.message


def test_once_in_the_past_is_kept_for_previews() -> None:
    schedule = parse("once", scheduled_time="2026-01-07T14:00", allow_past=True)
    assert schedule.start_at == datetime(2026, 1, 7, 19, 0, tzinfo=UTC)


def test_once_needs_scheduled_time() -> None:
    err = error("once")
    assert err.field == "scheduled_time" and "HH:MM" in err.message


def test_once_with_end_time_before_it_is_refused() -> None:
    err = error("once", scheduled_time="2026-02-01T09:00", end_time="2026-01-20T00:00")
    assert err.field == "end_time"
    assert "before the first run (2026-02-01T09:00:00-05:00)" in err.message


# -- elapsed ---------------------------------------------------------------------------
def test_minutely_starts_one_minute_from_now() -> None:
    assert runs(parse("minutely"), 3) == [
        "2026-01-07T15:01:00-05:00",
        "2026-01-07T15:02:00-05:00",
        "2026-01-07T15:03:00-05:00",
    ]


def test_hourly_from_a_scheduled_time() -> None:
    assert runs(parse("hourly", scheduled_time="16:30"), 3) == [
        "2026-01-07T16:30:00-05:00",
        "2026-01-07T17:30:00-05:00",
        "2026-01-07T18:30:00-05:00",
    ]


def test_hourly_from_a_past_iso_time_keeps_its_phase() -> None:
    schedule = parse("hourly", scheduled_time="2026-01-01T08:20")
    assert runs(schedule, 2) == ["2026-01-07T15:20:00-05:00", "2026-01-07T16:20:00-05:00"]


def test_minutely_under_the_minimum_interval_is_refused() -> None:
    err = error("minutely", min_interval=120)
    assert err.field == "frequency"
    assert "60 s" in err.message and "120 s" in err.message


# -- daily -----------------------------------------------------------------------------
def test_daily_at_a_time() -> None:
    assert runs(parse("daily", scheduled_time="09:00"), 2) == [
        "2026-01-08T09:00:00-05:00",
        "2026-01-09T09:00:00-05:00",
    ]


def test_daily_later_today_starts_today() -> None:
    assert runs(parse("daily", scheduled_time="15:30:15"), 1) == ["2026-01-07T15:30:15-05:00"]


def test_daily_from_a_past_iso_time_keeps_its_time_of_day() -> None:
    """Regression: a past ISO scheduled_time used to take the current time of day."""
    schedule = parse("daily", scheduled_time="2025-06-01T09:00")
    assert schedule.at == time(9, 0)
    assert runs(schedule, 1) == ["2026-01-08T09:00:00-05:00"]


def test_daily_from_a_future_iso_time_starts_then() -> None:
    schedule = parse("daily", scheduled_time="2026-02-10T07:45")
    assert runs(schedule, 2) == ["2026-02-10T07:45:00-05:00", "2026-02-11T07:45:00-05:00"]


def test_daily_naive_iso_inside_the_gap_keeps_the_written_time() -> None:
    """Regression: the time of day was taken after the gap shift (03:30 every day)."""
    schedule = parse("daily", scheduled_time="2026-03-08T02:30")
    assert schedule.at == time(2, 30)
    assert runs(schedule, 2) == ["2026-03-08T03:30:00-04:00", "2026-03-09T02:30:00-04:00"]


def test_daily_needs_a_time() -> None:
    err = error("daily")
    assert err.field == "scheduled_time" and "09:00" in err.message


@pytest.mark.parametrize("bad", ["25:00", "9h", "12:60", "13pm"])
def test_bad_time_of_day(bad: str) -> None:
    err = error("daily", scheduled_time=bad)
    assert err.field == "scheduled_time"
    assert repr(bad) in err.message and "HH:MM" in err.message


# -- weekly ----------------------------------------------------------------------------
@pytest.mark.parametrize("day", [4, "4", "friday", "Fri", "FRIDAYS"])
def test_weekly_single_day_in_any_spelling(day: int | str) -> None:
    schedule = parse("weekly", scheduled_time="08:00", day_of_week=day)
    assert runs(schedule, 2) == ["2026-01-09T08:00:00-05:00", "2026-01-16T08:00:00-05:00"]


def test_weekly_list_of_days() -> None:
    schedule = parse("weekly", scheduled_time="08:00", day_of_week=["mon", 2, "friday"])
    assert schedule.weekdays == (0, 2, 4)
    assert runs(schedule, 4) == [
        "2026-01-09T08:00:00-05:00",
        "2026-01-12T08:00:00-05:00",
        "2026-01-14T08:00:00-05:00",
        "2026-01-16T08:00:00-05:00",
    ]


def test_weekly_today_still_ahead_is_today() -> None:
    schedule = parse("weekly", scheduled_time="17:00", day_of_week="wednesday")
    assert runs(schedule, 1) == ["2026-01-07T17:00:00-05:00"]


def test_weekly_needs_days() -> None:
    err = error("weekly", scheduled_time="08:00")
    assert err.field == "day_of_week" and "0=Monday" in err.message


@pytest.mark.parametrize("bad", [7, "funday", "t", [], True, ["mon", 9]])
def test_weekly_bad_day(bad: Any) -> None:
    err = error("weekly", scheduled_time="08:00", day_of_week=bad)
    assert err.field == "day_of_week"
    assert "0=Monday" in err.message


# -- monthly ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (1, ["2026-02-01", "2026-03-01", "2026-04-01"]),
        (15, ["2026-01-15", "2026-02-15", "2026-03-15"]),
        (29, ["2026-01-29", "2026-02-28", "2026-03-29"]),
        (30, ["2026-01-30", "2026-02-28", "2026-03-30"]),
        (31, ["2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30"]),
        (-1, ["2026-01-31", "2026-02-28", "2026-03-31", "2026-04-30"]),
    ],
)
def test_monthly_days(day: int, expected: list[str]) -> None:
    schedule = parse("monthly", scheduled_time="09:00", day_of_month=day)
    assert [r[:10] for r in runs(schedule, len(expected))] == expected


@pytest.mark.parametrize(
    ("year", "day", "february"),
    [(2027, 29, "2027-02-28"), (2028, 29, "2028-02-29"), (2028, 31, "2028-02-29")],
)
def test_monthly_february_in_leap_and_common_years(year: int, day: int, february: str) -> None:
    now = datetime(year, 2, 1, 12, tzinfo=UTC)
    schedule = parse("monthly", now=now, scheduled_time="09:00", day_of_month=day)
    assert runs(schedule, 1, now)[0][:10] == february


def test_monthly_needs_a_day() -> None:
    err = error("monthly", scheduled_time="09:00")
    assert err.field == "day_of_month" and "-1" in err.message


@pytest.mark.parametrize("bad", [0, 32, -2, True])
def test_monthly_bad_day(bad: Any) -> None:
    err = error("monthly", scheduled_time="09:00", day_of_month=bad)
    assert err.field == "day_of_month"
    assert "1–31" in err.message and "-1 for the last day" in err.message


# -- custom phrases --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("every day at 07:15", ["2026-01-08T07:15", "2026-01-09T07:15"]),
        ("Every Day At 07:15", ["2026-01-08T07:15", "2026-01-09T07:15"]),
        ("every 1 days at 16:00", ["2026-01-07T16:00", "2026-01-08T16:00"]),
        ("every 3 days at 09:30", ["2026-01-08T09:30", "2026-01-11T09:30", "2026-01-14T09:30"]),
        ("every other day at 16:00", ["2026-01-07T16:00", "2026-01-09T16:00"]),
        ("every weekday at 07:15", ["2026-01-08T07:15", "2026-01-09T07:15", "2026-01-12T07:15"]),
        ("every weekend at 10:00", ["2026-01-10T10:00", "2026-01-11T10:00", "2026-01-17T10:00"]),
        ("every monday at 09:00", ["2026-01-12T09:00", "2026-01-19T09:00"]),
        ("every Tuesdays and Fridays at 18:00", ["2026-01-09T18:00", "2026-01-13T18:00"]),
        (
            "every 2 weeks on monday, thursday at 08:00",
            ["2026-01-08T08:00", "2026-01-19T08:00", "2026-01-22T08:00", "2026-02-02T08:00"],
        ),
        (
            "every 2 week at 08:00 on Mon and Thu",
            ["2026-01-08T08:00", "2026-01-19T08:00", "2026-01-22T08:00", "2026-02-02T08:00"],
        ),
        ("every other week on friday at 17:00", ["2026-01-09T17:00", "2026-01-23T17:00"]),
        ("every 3 weeks on weekdays at 12:00", ["2026-01-08T12:00", "2026-01-09T12:00"]),
        ("every month at 10:00", ["2026-02-07T10:00", "2026-03-07T10:00"]),
        ("every month on the 15th at 10:00", ["2026-01-15T10:00", "2026-02-15T10:00"]),
        ("every month on the last day at 23:00", ["2026-01-31T23:00", "2026-02-28T23:00"]),
        (
            "every 2 months on day 31 at 10:00",
            ["2026-01-31T10:00", "2026-03-31T10:00", "2026-05-31T10:00", "2026-07-31T10:00"],
        ),
        ("every 3 days", ["2026-01-10T15:00", "2026-01-13T15:00"]),
        ("every 2 weeks", ["2026-01-21T15:00", "2026-02-04T15:00"]),
        ("every month", ["2026-02-07T15:00", "2026-03-07T15:00"]),
        ("every 2 hours", ["2026-01-07T17:00", "2026-01-07T19:00"]),
        ("every 90 minutes", ["2026-01-07T16:30", "2026-01-07T18:00"]),
        ("every hour", ["2026-01-07T16:00", "2026-01-07T17:00"]),
    ],
)
def test_custom_phrases(text: str, expected: list[str]) -> None:
    schedule = custom(text)
    assert schedule.frequency == "custom"
    assert [r[:16] for r in runs(schedule, len(expected))] == expected


def test_every_n_months_with_a_day_clamps_and_keeps_the_grid() -> None:
    now = datetime(2026, 1, 31, 16, tzinfo=UTC)  # 11:00, after today's 10:00
    schedule = custom("every 2 months on day 31 at 10:00", now=now)
    assert [r[:10] for r in runs(schedule, 4, now)] == [
        "2026-02-28",
        "2026-04-30",
        "2026-06-30",
        "2026-08-31",
    ]


def test_every_month_without_a_time_on_the_31st_runs_at_month_ends() -> None:
    now = datetime(2026, 1, 31, 20, tzinfo=UTC)
    assert [r[:16] for r in runs(custom("every month", now=now), 3, now)] == [
        "2026-02-28T15:00",
        "2026-03-31T15:00",
        "2026-04-30T15:00",
    ]


def test_phrase_time_wins_over_scheduled_time_and_iso_start_is_kept() -> None:
    schedule = custom("every 2 days at 08:00", scheduled_time="2026-02-01T18:00")
    assert runs(schedule, 2) == ["2026-02-02T08:00:00-05:00", "2026-02-04T08:00:00-05:00"]


def test_phrase_without_time_but_with_a_day_field_runs_on_the_next_such_day() -> None:
    schedule = custom("every 2 weeks", day_of_week="friday")
    assert runs(schedule, 2) == ["2026-01-09T15:00:00-05:00", "2026-01-23T15:00:00-05:00"]


def test_phrase_takes_day_fields_when_it_names_none() -> None:
    schedule = custom("every 2 weeks at 08:00", day_of_week=["tue"])
    assert runs(schedule, 2) == ["2026-01-13T08:00:00-05:00", "2026-01-27T08:00:00-05:00"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("every blue moon", "is not understood"),
        ("twice a day", "give them all"),
        ("every 0 days at 09:00", "interval must be 1–1000"),
        ("every 15 minutes at 10:00", "give the first run in scheduled_time, or a window"),
        ("every day at 25:00", "'25:00' is not a time of day"),
        ("every 2 weeks on someday at 08:00", "is not understood"),
        ("every day on monday at 08:00", "is not understood"),
        ("every month on the 32nd", "day 32 is not a day of the month"),
        ("every monday on friday", "is not understood"),
        ("every day at 08:00 at 09:00", "is not understood"),
        ("", "required when frequency is custom"),
    ],
)
def test_bad_custom_schedule_quotes_input_and_lists_forms(text: str, problem: str) -> None:
    err = error("custom", custom_schedule=text)
    assert err.field == "custom_schedule"
    assert problem in err.message
    assert CUSTOM_EXAMPLES in err.message
    assert text == "" or repr(text) in err.message


def test_custom_under_the_minimum_interval_is_refused() -> None:
    err = error("custom", custom_schedule="every 5 minutes", min_interval=600)
    assert err.field == "custom_schedule" and "600 s" in err.message


# -- cron ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cron: 30 8 * * 1-5", ["2026-01-08T08:30", "2026-01-09T08:30", "2026-01-12T08:30"]),
        ("30 8 * * mon-fri", ["2026-01-08T08:30", "2026-01-09T08:30", "2026-01-12T08:30"]),
        # now is 15:00:00 sharp: a rule fires at/after now, so 15:00 itself is the first run.
        ("*/15 9-17 * * *", ["2026-01-07T15:00", "2026-01-07T15:15", "2026-01-07T15:30"]),
        ("0 9-17/4 * * *", ["2026-01-07T17:00", "2026-01-08T09:00", "2026-01-08T13:00"]),
        ("CRON: 0 9 1,15 * *", ["2026-01-15T09:00", "2026-02-01T09:00", "2026-02-15T09:00"]),
        ("0 12 * jan,mar sun", ["2026-01-11T12:00", "2026-01-18T12:00", "2026-01-25T12:00"]),
        ("0 0 * * 7", ["2026-01-11T00:00", "2026-01-18T00:00"]),
        ("0 0 * * 0", ["2026-01-11T00:00", "2026-01-18T00:00"]),
        ("@daily", ["2026-01-08T00:00", "2026-01-09T00:00"]),
        ("@hourly", ["2026-01-07T15:00", "2026-01-07T16:00"]),
        ("@monthly", ["2026-02-01T00:00", "2026-03-01T00:00"]),
        # Both day fields restricted: standard cron runs when either matches.
        ("0 9 13 * 5", ["2026-01-09T09:00", "2026-01-13T09:00", "2026-01-16T09:00"]),
        # A day field starting with "*" makes it "and" (Vixie cron): odd days that are Mondays.
        ("0 9 */2 * mon", ["2026-01-19T09:00", "2026-02-09T09:00", "2026-02-23T09:00"]),
        ("0 9 31 * *", ["2026-01-31T09:00", "2026-03-31T09:00", "2026-05-31T09:00"]),
    ],
)
def test_cron(text: str, expected: list[str]) -> None:
    schedule = custom(text)
    assert schedule.syntax == "cron" and schedule.expression is not None
    assert [r[:16] for r in runs(schedule, len(expected))] == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0 9 * * mon-fri 2026", "has 5 fields"),
        ("cron: 0 9 * *", "has 5 fields"),
        ("cron: 60 9 * * *", "minute field: '60' is not allowed; use 0–59"),
        ("0 24 * * *", "hour field: '24' is not allowed; use 0–23"),
        ("0 9 0 * *", "day of month field: '0' is not allowed"),
        ("0 9 * 13 *", "month field: '13' is not allowed; use 1–12 or jan…dec"),
        ("0 9 * * 8", "day of week field: '8' is not allowed; use 0–7 or sun…sat"),
        ("0 17-9 * * *", "runs backwards"),
        ("0 9 15W * *", "cannot be scheduled exactly; use LW, 1W"),
        ("0 9 1 * 5L", "both day fields are restricted"),
        ("0 0 9 * * MON-FRI", "needs '?' in one day field"),
        ("0 0 30 2 *", "never meet"),
        ("0 9 * * */0", "step must be at least 1"),
    ],
)
def test_bad_cron(text: str, problem: str) -> None:
    err = error("custom", custom_schedule=text)
    assert err.field == "custom_schedule"
    assert problem in err.message and CUSTOM_EXAMPLES in err.message


def test_cron_under_the_minimum_interval_is_refused_with_the_two_times() -> None:
    err = error("custom", custom_schedule="*/2 * * * *", min_interval=300)
    assert err.field == "custom_schedule"
    assert "runs 120 s apart" in err.message and "300 s" in err.message
    assert "2026-01-07T15:02:00-05:00" in err.message


def test_cron_every_minute_meets_the_default_minimum() -> None:
    assert len(runs(custom("* * * * *"), 3)) == 3


def test_cron_iso_scheduled_time_delays_the_start() -> None:
    schedule = custom("cron: 0 9 * * *", scheduled_time="2026-03-01T12:00")
    assert runs(schedule, 1)[0] == "2026-03-02T09:00:00-05:00"


# -- RRULE -----------------------------------------------------------------------------
def test_rrule_without_dtstart_starts_at_now_rounded_to_the_minute() -> None:
    now = NOW + timedelta(seconds=17)
    schedule = custom("RRULE:FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=8;BYMINUTE=0", now=now)
    assert schedule.syntax == "rrule"
    assert schedule.expression == (
        "DTSTART:20260107T150100\nRRULE:FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=8;BYMINUTE=0"
    )
    assert [r[:16] for r in runs(schedule, 3, now)] == [
        "2026-01-08T08:00",
        "2026-01-12T08:00",
        "2026-01-15T08:00",
    ]


def test_rrule_without_time_parts_repeats_now() -> None:
    schedule = custom("rrule:freq=daily;interval=2")
    assert [r[:16] for r in runs(schedule, 2)] == ["2026-01-07T15:00", "2026-01-09T15:00"]


def test_rrule_with_past_dtstart_continues_its_grid() -> None:
    schedule = custom("DTSTART:20260101T090000\nRRULE:FREQ=DAILY;INTERVAL=4")
    # 1, 5, 9, … January: the first after now is the 9th.
    assert [r[:16] for r in runs(schedule, 2)] == ["2026-01-09T09:00", "2026-01-13T09:00"]


def test_rrule_far_past_dtstart_is_fast_and_on_grid() -> None:
    schedule = custom("DTSTART:20000101T000000 RRULE:FREQ=MINUTELY;INTERVAL=7")
    first = datetime.fromisoformat(runs(schedule, 1)[0])
    minutes = (first.replace(tzinfo=None) - datetime(2000, 1, 1)) / timedelta(minutes=1)
    assert minutes % 7 == 0 and first >= NOW


def test_rrule_tzid_becomes_the_task_timezone() -> None:
    schedule = custom("DTSTART;TZID=Europe/Paris:20260105T090000 RRULE:FREQ=WEEKLY;BYDAY=MO")
    assert schedule.timezone == "Europe/Paris"
    assert runs(schedule, 1) == ["2026-01-12T09:00:00+01:00"]


def test_rrule_tzid_other_than_the_timezone_field_is_refused() -> None:
    err = error(
        "custom",
        custom_schedule="DTSTART;TZID=Europe/Paris:20260105T090000 RRULE:FREQ=DAILY",
        timezone="Asia/Tokyo",
    )
    assert err.field == "custom_schedule" and "set timezone to 'Europe/Paris'" in err.message


def test_rrule_utc_dtstart_is_evaluated_in_utc() -> None:
    schedule = custom("DTSTART:20260101T120000Z\nRRULE:FREQ=DAILY")
    assert runs(schedule, 2) == ["2026-01-08T07:00:00-05:00", "2026-01-09T07:00:00-05:00"]


def test_rrule_until_in_utc_and_count() -> None:
    until = custom("DTSTART:20260108T090000 RRULE:FREQ=DAILY;UNTIL=20260110T140000Z")
    assert [r[:10] for r in runs(until, 5)] == ["2026-01-08", "2026-01-09", "2026-01-10"]
    count = custom("DTSTART:20260108T090000 RRULE:FREQ=DAILY;COUNT=2")
    assert [r[:10] for r in runs(count, 5)] == ["2026-01-08", "2026-01-09"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("RRULE:BYDAY=MO", "needs FREQ="),
        ("RRULE:FREQ=DAILY;FOO=1", "unknown parameter"),
        ("RRULE:FREQ=DAILY;BYHOUR=25", "hour must be in 0..23"),
        ("RRULE:FREQ=DAILY\nRDATE:20260110T090000", "give DTSTART (optional), RRULE and EXDATE"),
        ("RRULE:FREQ=DAILY EXDATE:2026-01-10", "is not an EXDATE"),
        ("RRULE:FREQ=DAILY EXDATE;VALUE=DATE:20260230", "is not a date"),
        ("DTSTART:2026-01-01 RRULE:FREQ=DAILY", "is not a DTSTART"),
        ("DTSTART:20200101T090000 RRULE:FREQ=DAILY;COUNT=3", "has no run after now"),
        ("RRULE:FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "never meet"),
        ("RRULE:FREQ=MONTHLY;BYDAY=MO;BYSETPOS=6", "has no run in the next 10 years"),
        ("DTSTART:20260131T090000 RRULE:FREQ=YEARLY;BYMONTH=4", "never meet"),
        ("RRULE:FREQ=MINUTELY;BYSECOND=0,30", "runs 30 s apart"),
    ],
)
def test_bad_rrule(text: str, problem: str) -> None:
    err = error("custom", custom_schedule=text)
    assert err.field == "custom_schedule"
    assert problem in err.message


# -- end_time, max_runs, other fields --------------------------------------------------
def test_end_time_is_inclusive_and_stops_the_runs() -> None:
    schedule = parse("daily", scheduled_time="09:00", end_time="2026-01-10T09:00")
    assert [r[:10] for r in runs(schedule, 10)] == ["2026-01-08", "2026-01-09", "2026-01-10"]


@pytest.mark.parametrize(
    ("frequency", "fields"),
    [
        ("daily", {"scheduled_time": "18:00"}),
        ("hourly", {}),
        ("custom", {"custom_schedule": "cron: 0 18 * * *"}),
        ("custom", {"custom_schedule": "RRULE:FREQ=DAILY;BYHOUR=18;BYMINUTE=0"}),
    ],
)
def test_end_time_before_the_first_run_is_refused(frequency: str, fields: dict[str, Any]) -> None:
    err = error(frequency, end_time="2026-01-07T15:30", **fields)
    assert err.field == "end_time" and "before the first run" in err.message


def test_end_time_in_the_past_is_refused() -> None:
    err = error("daily", scheduled_time="09:00", end_time="2026-01-01T00:00")
    assert err.field == "end_time" and "in the past" in err.message


def test_end_time_bad_format() -> None:
    err = error("daily", scheduled_time="09:00", end_time="next tuesday")
    assert err.field == "end_time" and "ISO 8601" in err.message


def test_max_runs_is_stored_and_caps_next_runs() -> None:
    schedule = parse("daily", scheduled_time="09:00", max_runs=2)
    assert schedule.max_runs == 2 and schedule.to_dict()["max_runs"] == 2
    assert len(next_runs(schedule, 5, NOW)) == 2


@pytest.mark.parametrize("bad", [0, -3, True])
def test_bad_max_runs(bad: Any) -> None:
    err = error("daily", scheduled_time="09:00", max_runs=bad)
    assert err.field == "max_runs" and ">= 1" in err.message


def test_bad_frequency_lists_the_frequencies() -> None:
    err = error("fortnightly")
    assert err.field == "frequency" and "once, minutely, hourly" in err.message


def test_bad_timezone() -> None:
    err = error("daily", scheduled_time="09:00", timezone="Mars/Olympus")
    assert err.field == "timezone" and "America/New_York" in err.message


# -- storage ---------------------------------------------------------------------------
ALL_KINDS: list[tuple[str, dict[str, Any]]] = [
    ("once", {"scheduled_time": "18:00"}),
    ("minutely", {}),
    ("hourly", {"end_time": "2026-02-01T00:00"}),
    ("daily", {"scheduled_time": "09:00"}),
    ("weekly", {"scheduled_time": "09:00", "day_of_week": [0, 3]}),
    ("monthly", {"scheduled_time": "09:00", "day_of_month": -1, "max_runs": 3}),
    ("custom", {"custom_schedule": "every 2 weeks on monday, thursday at 08:00"}),
    ("custom", {"custom_schedule": "cron: 30 8 * * 1-5"}),
    ("custom", {"custom_schedule": "RRULE:FREQ=WEEKLY;BYDAY=MO;BYHOUR=8;BYMINUTE=0"}),
]


@pytest.mark.parametrize(("frequency", "fields"), ALL_KINDS)
def test_dict_round_trip_and_same_fire_times(frequency: str, fields: dict[str, Any]) -> None:
    schedule = parse(frequency, **fields)
    again = Schedule.from_dict(schedule.to_dict())
    assert again == schedule
    assert runs(again, 5) == runs(schedule, 5)


@pytest.mark.parametrize(("frequency", "fields"), ALL_KINDS)
def test_trigger_survives_pickle(frequency: str, fields: dict[str, Any]) -> None:
    trigger = build_trigger(parse(frequency, **fields))
    restored = stored(trigger)
    assert type(restored) is type(trigger)
    assert restored.get_next_fire_time(None, NOW) == trigger.get_next_fire_time(None, NOW)


def test_dict_written_before_rules_existed_is_still_read() -> None:
    old = {
        "frequency": "weekly",
        "timezone": NY,
        "start_at": "2026-01-08T13:00:00+00:00",
        "unit": "weeks",
        "interval": 1,
        "at": "08:00:00",
        "weekdays": [3],
        "day_of_month": None,
        "end_time": None,
        "max_runs": None,
    }
    schedule = Schedule.from_dict(old)
    assert schedule.expression is None and schedule.syntax is None
    assert runs(schedule, 2) == ["2026-01-08T08:00:00-05:00", "2026-01-15T08:00:00-05:00"]


# -- words -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("frequency", "fields", "words"),
    [
        ("once", {"scheduled_time": "18:00"}, "once at 2026-01-07 18:00:00 (America/New_York)"),
        ("minutely", {}, "every minute, starting 2026-01-07 15:01:00 (America/New_York)"),
        ("daily", {"scheduled_time": "09:00"}, "every day at 09:00 (America/New_York)"),
        (
            "weekly",
            {"scheduled_time": "09:00:30", "day_of_week": ["mon", "thu"]},
            "every Monday, Thursday at 09:00:30 (America/New_York)",
        ),
        (
            "monthly",
            {"scheduled_time": "09:00", "day_of_month": 31},
            "every month on day 31 (the last day of shorter months) at 09:00 (America/New_York)",
        ),
        (
            "monthly",
            {"scheduled_time": "09:00", "day_of_month": -1, "max_runs": 3},
            "every month on the last day at 09:00 (America/New_York), at most 3 runs",
        ),
        (
            "custom",
            {"custom_schedule": "every 2 weeks on mon, thu at 08:00"},
            "every 2 weeks on Monday, Thursday at 08:00 (America/New_York)",
        ),
        (
            "custom",
            {"custom_schedule": "every weekday at 07:15", "end_time": "2026-02-01T00:00"},
            "every weekday (Monday–Friday) at 07:15 (America/New_York), until 2026-02-01 00:00",
        ),
        (
            "custom",
            {"custom_schedule": "every 3 hours"},
            "every 3 hours, starting 2026-01-07 18:00:00 (America/New_York)",
        ),
        (
            "custom",
            {"custom_schedule": "cron: 30 8 * * 1-5"},
            "cron '30 8 * * 1-5' (at 08:30, on weekday (Monday–Friday)) (America/New_York)",
        ),
        (
            "custom",
            {"custom_schedule": "*/15 9-17 * * *"},
            "cron '*/15 9-17 * * *' (every 15 minutes, in hours 09–17) (America/New_York)",
        ),
        (
            "custom",
            {"custom_schedule": "DTSTART:20260105T080000 RRULE:FREQ=WEEKLY;BYDAY=MO"},
            "RRULE FREQ=WEEKLY;BYDAY=MO from 2026-01-05 08:00:00 (America/New_York)",
        ),
    ],
)
def test_describe(frequency: str, fields: dict[str, Any], words: str) -> None:
    assert describe(parse(frequency, **fields)) == words


# -- preview ---------------------------------------------------------------------------
def test_preview_lists_runs_with_offsets_in_the_task_zone() -> None:
    schedule = parse("weekly", scheduled_time="08:00", day_of_week="mon", timezone="Asia/Kolkata")
    out = preview(schedule, now=NOW, count=3)
    assert out == {
        "description": "every Monday at 08:00 (Asia/Kolkata)",
        "next_runs": [
            "2026-01-12T08:00:00+05:30",
            "2026-01-19T08:00:00+05:30",
            "2026-01-26T08:00:00+05:30",
        ],
        "warnings": [],
        "now": "2026-01-08T01:30:00+05:30",
    }


@pytest.mark.parametrize("count", [0, 101, True])
def test_preview_count_is_1_to_100(count: Any) -> None:
    with pytest.raises(ScheduleError) as caught:
        preview(parse("daily", scheduled_time="09:00"), now=NOW, count=count)
    assert caught.value.field == "count" and "1–100" in caught.value.message


def test_preview_warns_about_a_time_in_the_gap() -> None:
    out = preview(parse("daily", scheduled_time="02:30"), now=NOW)
    assert out["warnings"] == [
        "On 2026-03-08 02:30 does not exist in America/New_York (clocks jump from 02:00 to "
        "03:00): the run happens at 2026-03-08T03:30:00-04:00 instead."
    ]


def test_preview_warns_about_a_time_in_the_overlap() -> None:
    out = preview(parse("weekly", scheduled_time="01:30", day_of_week="sun"), now=NOW)
    assert out["warnings"] == [
        "On 2026-11-01 01:30 occurs twice in America/New_York (clocks go back from 02:00 to "
        "01:00): runs happen at the first occurrence only (2026-11-01T01:30:00-04:00)."
    ]


def test_preview_has_no_dst_warning_when_the_date_is_not_scheduled() -> None:
    out = preview(parse("weekly", scheduled_time="02:30", day_of_week="mon"), now=NOW)
    assert out["warnings"] == []


def test_preview_cadence_cron_says_skipped_and_both() -> None:
    out = preview(custom("30 * * * *"), now=NOW)
    assert out["warnings"] == [
        "On 2026-03-08 02:30 does not exist in America/New_York (clocks jump from 02:00 to "
        "03:00): that run is skipped.",
        "On 2026-11-01 01:30 occurs twice in America/New_York (clocks go back from 02:00 to "
        "01:00): runs happen at both occurrences.",
    ]


def test_preview_warns_about_month_end_clamping_with_the_months() -> None:
    out = preview(parse("monthly", scheduled_time="09:00", day_of_month=30), now=NOW)
    assert out["warnings"] == [
        "Day 30 does not exist in February 2026: those runs happen on the last day (2026-02-28)."
    ]


def test_preview_warns_about_end_time_before_the_first_run() -> None:
    schedule = parse("daily", scheduled_time="18:00", end_time="2026-01-07T16:00", allow_past=True)
    out = preview(schedule, now=NOW)
    assert out["next_runs"] == []
    assert out["warnings"] == [
        "end_time 2026-01-07T16:00:00-05:00 is before the first run "
        "(2026-01-07T18:00:00-05:00): the task would never run"
    ]


def test_preview_warns_about_a_past_end_time() -> None:
    schedule = parse("hourly", end_time="2026-01-01T00:00", allow_past=True)
    assert preview(schedule, now=NOW)["warnings"] == [
        "end_time 2026-01-01T00:00:00-05:00 is in the past: the task would never run"
    ]


def test_preview_warns_about_a_once_time_in_the_past() -> None:
    schedule = parse("once", scheduled_time="2026-01-07T14:00", allow_past=True)
    out = preview(schedule, now=NOW)
    assert out["next_runs"] == []
    assert out["warnings"] == [
        "scheduled_time 2026-01-07T14:00:00-05:00 is in the past: a once task never runs; "
        "create_task refuses it — give a future time"
    ]


def test_preview_warns_that_elapsed_times_move_on_the_clock() -> None:
    out = preview(custom("every 2 hours", scheduled_time="09:00"), now=NOW, count=1)
    assert out["warnings"] == [
        "Runs count real time: after the clock change on 2026-03-08 in America/New_York the "
        "local run times shift by +1 h (e.g. 03:00 becomes 04:00).",
        "Runs count real time: after the clock change on 2026-11-01 in America/New_York the "
        "local run times shift by -1 h (e.g. 02:00 becomes 01:00).",
    ]


def test_preview_hourly_has_no_warning_but_lord_howe_half_hour_does() -> None:
    assert preview(parse("hourly"), now=NOW)["warnings"] == []
    lord_howe = preview(parse("hourly", timezone="Australia/Lord_Howe"), now=NOW)["warnings"]
    assert len(lord_howe) == 2 and "shift by -30 min" in lord_howe[0]


def test_preview_warnings_stop_at_end_time_and_max_runs() -> None:
    ended = parse("daily", scheduled_time="02:30", end_time="2026-03-01T00:00")
    assert preview(ended, now=NOW)["warnings"] == []
    capped = parse("daily", scheduled_time="02:30", max_runs=10)
    assert preview(capped, now=NOW)["warnings"] == []


def test_preview_rule_traps() -> None:
    cron = preview(custom("0 9 31 * *"), now=NOW)["warnings"]
    assert cron == [
        "cron day 31 runs only in months that have it (standard cron); for the last day of "
        "every month use frequency monthly with day_of_month -1"
    ]
    rrule = preview(
        custom("RRULE:FREQ=DAILY;BYHOUR=9", now=NOW + timedelta(minutes=7, seconds=5)), now=NOW
    )
    assert rrule["next_runs"][0] == "2026-01-08T09:08:00-05:00"
    assert "BYHOUR but no BYMINUTE" in rrule["warnings"][0]


def test_preview_input_allows_past_times_and_warns_once() -> None:
    out = preview_input(
        ScheduleInput("once", scheduled_time="2026-01-01T09:00"), now=NOW, default_timezone=NY
    )
    assert out["next_runs"] == [] and len(out["warnings"]) == 1
    daily = preview_input(
        ScheduleInput("daily", scheduled_time="2025-12-01T09:00"), now=NOW, default_timezone=NY
    )
    assert daily["next_runs"][0] == "2026-01-08T09:00:00-05:00"
    assert daily["warnings"][0] == (
        "scheduled_time 2025-12-01T09:00:00-05:00 is in the past: "
        "the first run is the next one after now"
    )


def test_preview_input_still_refuses_wrong_input() -> None:
    with pytest.raises(ScheduleError) as caught:
        preview_input(ScheduleInput("weekly", scheduled_time="09:00"), now=NOW, default_timezone=NY)
    assert caught.value.field == "day_of_week"


@pytest.mark.parametrize(
    "data",
    [
        ScheduleInput("once", scheduled_time="09:00"),
        ScheduleInput("daily", scheduled_time="2026-05-01T09:00"),
        ScheduleInput("daily", scheduled_time="not a time"),
        ScheduleInput("daily"),
    ],
)
def test_first_run_in_past_warning_is_none_otherwise(data: ScheduleInput) -> None:
    assert first_run_in_past_warning(data, now=NOW, default_timezone=NY) is None


def test_zone_of_results_is_the_task_zone() -> None:
    schedule = parse("daily", scheduled_time="09:00", timezone="Asia/Kathmandu")
    assert runs(schedule, 1) == ["2026-01-08T09:00:00+05:45"]
    assert schedule.zone == ZoneInfo("Asia/Kathmandu")
