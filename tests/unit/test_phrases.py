"""The phrase grammar against an independent computation.

Each phrase is compiled by ``scheduler_service.phrases`` and evaluated by the project's
triggers (``LocalRRuleTrigger`` for rules, ``WallClockTrigger`` for the every-N form).
The expected fire times are computed here without dateutil.rrule or the project's
localisation: walk the local days of the zone, test a predicate on each date, read each
scheduled local time with a UTC-offset search (first occurrence in an overlap, the
offset before the change in a gap); for rules over all 24 hours ("every hour on the half
hour") walk the real minutes and keep those whose local time matches.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from scheduler_service.clock.zones import scheduled_date
from scheduler_service.schedules.phrases import (
    Elapsed,
    OneTime,
    Phrase,
    PhraseError,
    Rule,
    WallClock,
    examples,
    parse_clock,
    parse_phrase,
)
from scheduler_service.triggers import LocalRRuleTrigger, WallClockTrigger
from tests.unit.test_time_properties import instant_of, local_of

ZONES = ("America/New_York", "Europe/Paris", "Australia/Lord_Howe", "Asia/Kolkata")
# Just before spring forward in New York (8 March) and Paris (29 March), Lord Howe's
# spring (4 October, 30 minutes), autumn in Paris (25 October) and New York (1 November).
NOWS = (
    datetime(2026, 3, 6, 22, 13, 27, tzinfo=UTC),
    datetime(2026, 3, 27, 9, 0, tzinfo=UTC),
    datetime(2026, 10, 2, 11, 40, tzinfo=UTC),
    datetime(2026, 10, 23, 5, 5, tzinfo=UTC),
)

DayTest = Callable[[date], bool]


# -- the code under test: phrase → trigger → fire times -----------------------------------
def fires(result: Phrase, zone: ZoneInfo, now: datetime, until: datetime) -> list[datetime]:
    """Fire times (UTC) in [now, until] of a compiled phrase, by the project's triggers."""
    if isinstance(result, Rule):
        found: set[datetime] = set()
        for line in result.rules:
            text = f"DTSTART:{result.dtstart:%Y%m%dT%H%M%S}\nRRULE:{line}"
            trigger = LocalRRuleTrigger(expression=text, timezone=zone.key, not_before=now)
            found.update(_walk(trigger, now, until))
        return sorted(found)
    assert isinstance(result, WallClock) and result.at is not None
    common = {
        "timezone": zone.key,
        "at": result.at,
        "unit": result.unit,
        "interval": result.interval,
        "weekdays": result.weekdays or (),
        "day_of_month": result.day_of_month,
    }
    # As schedules._wall_clock does: probe from the day before, anchor on the first run.
    probe = WallClockTrigger(
        anchor=local_of(now, zone).date() - timedelta(days=1),
        not_before=now,
        **{**common, "interval": 1},
    )
    first = probe.get_next_fire_time(None, now)
    assert first is not None
    trigger = WallClockTrigger(
        anchor=scheduled_date(first, result.at, zone), not_before=first, **common
    )
    return _walk(trigger, now, until)


def _walk(trigger: object, now: datetime, until: datetime) -> list[datetime]:
    out: list[datetime] = []
    previous = None
    while True:
        nxt = trigger.get_next_fire_time(previous, now)  # type: ignore[attr-defined]
        if nxt is None or nxt > until:
            return out
        out.append(nxt)
        previous = nxt


# -- the independent computation ----------------------------------------------------------
def local_dates(zone: ZoneInfo, now: datetime, until: datetime) -> list[date]:
    first = local_of(now, zone).date() - timedelta(days=1)
    last = local_of(until, zone).date() + timedelta(days=1)
    return [first + timedelta(days=k) for k in range((last - first).days + 1)]


def wall_expected(
    zone: ZoneInfo, now: datetime, until: datetime, day_ok: DayTest, times: list[time]
) -> list[datetime]:
    """Once per scheduled local date and time, read by the wall-clock rule."""
    found = {
        instant_of(datetime.combine(d, t), zone)
        for d in local_dates(zone, now, until)
        if day_ok(d)
        for t in times
    }
    return sorted(i for i in found if now <= i <= until)


def beat_expected(
    zone: ZoneInfo, now: datetime, until: datetime, day_ok: DayTest, times: list[time]
) -> list[datetime]:
    """Every real minute whose local time matches (both occurrences, none in a gap)."""
    out = []
    minute = now.replace(second=0, microsecond=0)
    if minute < now:
        minute += timedelta(minutes=1)
    wanted = set(times)
    while minute <= until:
        local = local_of(minute, zone)
        if local.time() in wanted and day_ok(local.date()):
            out.append(minute)
        minute += timedelta(minutes=1)
    return out


def anchored(
    base: DayTest, index: Callable[[date], int], n: int, zone: ZoneInfo, now: datetime, at: time
) -> DayTest:
    """'every N …': base days whose period (week, month, year) is a multiple of N periods
    after the period of the first run (the first base day whose time is still ahead)."""
    d = local_of(now, zone).date()
    while not (base(d) and instant_of(datetime.combine(d, at), zone) >= now):
        d += timedelta(days=1)
    first = index(d)
    return lambda day: base(day) and (index(day) - first) % n == 0


def last_day(d: date) -> int:
    return calendar.monthrange(d.year, d.month)[1]


def nth_weekday(n: int, weekday: int) -> DayTest:
    if n > 0:
        return lambda d: d.weekday() == weekday and (d.day - 1) // 7 + 1 == n
    return lambda d: d.weekday() == weekday and (last_day(d) - d.day) // 7 + 1 == -n


def business(first: bool) -> DayTest:
    def test(d: date) -> bool:
        if d.weekday() >= 5:
            return False
        days = range(1, d.day) if first else range(d.day + 1, last_day(d) + 1)
        return not any(d.replace(day=k).weekday() < 5 for k in days)

    return test


def week(d: date) -> int:
    return (d.toordinal() - d.weekday()) // 7


def month(d: date) -> int:
    return d.year * 12 + d.month


def hm(text: str) -> time:
    return time.fromisoformat(text)


def every(step: int, start: str = "00:00", end: str = "23:59") -> list[time]:
    a, b = hm(start), hm(end)
    lo, hi = a.hour * 60 + a.minute, b.hour * 60 + b.minute
    return [time(m // 60, m % 60) for m in range(lo, hi + 1, step)]


# -- the table: phrase, the expected days and times, which rule, how far to look ----------
@dataclass(frozen=True)
class Case:
    phrase: str
    days: Callable[[ZoneInfo, datetime], DayTest]
    times: list[time]
    beat: bool = False  # hours cover the whole day: real minutes, not wall readings
    horizon: timedelta = timedelta(days=16)


def always(zone: ZoneInfo, now: datetime) -> DayTest:
    return lambda d: True


def weekdays(*days: int) -> Callable[[ZoneInfo, datetime], DayTest]:
    return lambda zone, now: lambda d: d.weekday() in days


def plain(test: DayTest) -> Callable[[ZoneInfo, datetime], DayTest]:
    return lambda zone, now: test


YEAR = timedelta(days=400)
CASES = [
    Case("every weekday at 9am", weekdays(0, 1, 2, 3, 4), [hm("09:00")]),
    Case("every weekend at 10:30 am", weekdays(5, 6), [hm("10:30")]),
    Case("every monday and thursday at 2:30", weekdays(0, 3), [hm("02:30")]),
    Case("every mon-thu at 6:30 pm", weekdays(0, 1, 2, 3), [hm("18:30")]),
    Case("every fri-mon at noon", weekdays(4, 5, 6, 0), [hm("12:00")]),
    Case("on sundays at midnight", weekdays(6), [hm("00:00")]),
    Case("every day at 12am", always, [hm("00:00")]),
    Case("every day at 2:30 and 14:00", always, [hm("02:30"), hm("14:00")]),
    Case("twice a day at 8 and 20", always, [hm("08:00"), hm("20:00")]),
    Case("every day at 2:30:30 and 20:00", always, [hm("02:30:30"), hm("20:00")]),
    Case("every day at 1:15, 2:45 am and 9pm", always, [hm("01:15"), hm("02:45"), hm("21:00")]),
    Case(
        "every weekday at 8:00 and 20:30",
        weekdays(0, 1, 2, 3, 4),
        [hm("08:00"), hm("20:30")],
    ),
    Case(
        "every other tuesday at 9",
        lambda z, n: anchored(lambda d: d.weekday() == 1, week, 2, z, n, hm("09:00")),
        [hm("09:00")],
        horizon=timedelta(days=60),
    ),
    Case(
        "every 3 fridays at 2:00",
        lambda z, n: anchored(lambda d: d.weekday() == 4, week, 3, z, n, hm("02:00")),
        [hm("02:00")],
        horizon=timedelta(days=90),
    ),
    Case(
        "every 2 weeks on monday and saturday at 1:30 and 2:30",
        lambda z, n: anchored(lambda d: d.weekday() in (0, 5), week, 2, z, n, hm("01:30")),
        [hm("01:30"), hm("02:30")],
        horizon=timedelta(days=60),
    ),
    Case("first monday of the month at 10", plain(nth_weekday(1, 0)), [hm("10:00")], horizon=YEAR),
    Case(
        "last friday of the month at 17:00", plain(nth_weekday(-1, 4)), [hm("17:00")], horizon=YEAR
    ),
    Case(
        "second and fourth tuesday of every month at 2:30",
        plain(lambda d: nth_weekday(2, 1)(d) or nth_weekday(4, 1)(d)),
        [hm("02:30")],
        horizon=YEAR,
    ),
    Case(
        "the last day of the month at 9",
        plain(lambda d: d.day == last_day(d)),
        [hm("09:00")],
        horizon=YEAR,
    ),
    Case(
        "second-to-last day of the month at 23:30",
        plain(lambda d: d.day == last_day(d) - 1),
        [hm("23:30")],
        horizon=YEAR,
    ),
    Case(
        "first business day of the month at 9am", plain(business(True)), [hm("09:00")], horizon=YEAR
    ),
    Case(
        "last business day of the month at 4pm", plain(business(False)), [hm("16:00")], horizon=YEAR
    ),
    Case(
        "on the 1st and 15th at 9", plain(lambda d: d.day in (1, 15)), [hm("09:00")], horizon=YEAR
    ),
    Case(
        "every month on the 15th and 31st at 8 and 20",
        plain(lambda d: d.day == 15 or d.day == min(31, last_day(d))),
        [hm("08:00"), hm("20:00")],
        horizon=YEAR,
    ),
    Case(
        "every 2 months on the first monday at 9",
        lambda z, n: anchored(nth_weekday(1, 0), month, 2, z, n, hm("09:00")),
        [hm("09:00")],
        horizon=YEAR,
    ),
    Case(
        "every year on March 29 at 2:30",
        plain(lambda d: (d.month, d.day) == (3, 29)),
        [hm("02:30")],
        horizon=5 * YEAR,
    ),
    Case(
        "every October 4 at 2:15am",
        plain(lambda d: (d.month, d.day) == (10, 4)),
        [hm("02:15")],
        horizon=5 * YEAR,
    ),
    Case(
        "every year on february 29 at 9",
        plain(lambda d: (d.month, d.day) == (2, 29)),
        [hm("09:00")],
        horizon=8 * YEAR,
    ),
    Case(
        "every 2 years on 1 november at 1:30",
        lambda z, n: anchored(
            lambda d: (d.month, d.day) == (11, 1), lambda d: d.year, 2, z, n, hm("01:30")
        ),
        [hm("01:30")],
        horizon=7 * YEAR,
    ),
    Case(
        "every quarter on the 1st at 9",
        plain(lambda d: d.day == 1 and d.month in (1, 4, 7, 10)),
        [hm("09:00")],
        horizon=2 * YEAR,
    ),
    Case(
        "every quarter on the last day at 12",
        plain(lambda d: d.day == last_day(d) and d.month in (3, 6, 9, 12)),
        [hm("12:00")],
        horizon=2 * YEAR,
    ),
    Case(
        "every 15 minutes between 9 and 17 on weekdays",
        weekdays(0, 1, 2, 3, 4),
        every(15, "09:00", "17:00"),
    ),
    Case("every 30 minutes from 1:00 to 3:00", always, every(30, "01:00", "03:00")),
    Case(
        "every 20 minutes between 10pm and 2am",
        always,
        every(20, "22:00", "23:59") + every(20, "00:00", "02:00"),
    ),
    Case("every 2 hours between 8am and 8pm", always, every(120, "08:00", "20:00")),
    Case("every hour on the half hour", always, every(60, "00:30"), beat=True),
    Case("every hour at :15", always, every(60, "00:15"), beat=True),
    Case("every 15 minutes on weekends", weekdays(5, 6), every(15), beat=True),
    Case("every 2 hours on weekdays", weekdays(0, 1, 2, 3, 4), every(120)),
    Case("hourly on weekdays", weekdays(0, 1, 2, 3, 4), every(60), beat=True),
    Case("every workday at 8", weekdays(0, 1, 2, 3, 4), [hm("08:00")]),
    Case("every day except weekends at 2:30", weekdays(0, 1, 2, 3, 4), [hm("02:30")]),
    Case("monday and thursday at 10", weekdays(0, 3), [hm("10:00")]),
    Case(
        "biweekly on friday at 9",
        lambda z, n: anchored(lambda d: d.weekday() == 4, week, 2, z, n, hm("09:00")),
        [hm("09:00")],
        horizon=timedelta(days=60),
    ),
    Case(
        "on the first of every month at 9",
        plain(lambda d: d.day == 1),
        [hm("09:00")],
        horizon=YEAR,
    ),
]


@pytest.mark.parametrize("zone_name", ZONES)
@pytest.mark.parametrize("case", CASES, ids=[c.phrase for c in CASES])
def test_phrase_fire_times_match_independent_computation(case: Case, zone_name: str) -> None:
    zone = ZoneInfo(zone_name)
    for now in NOWS:
        until = now + case.horizon
        result = parse_phrase(case.phrase, zone=zone, now=now)
        expected_of = beat_expected if case.beat else wall_expected
        expected = expected_of(zone, now, until, case.days(zone, now), case.times)
        assert expected, case.phrase
        got = fires(result, zone, now, until)
        assert [g.isoformat() for g in got] == [e.isoformat() for e in expected], (
            case.phrase,
            zone_name,
            now,
            result,
        )


def test_dst_days_read_as_the_rules_say() -> None:
    """Spot checks with the instants written out (New York spring and autumn 2026)."""
    ny = ZoneInfo("America/New_York")
    now = datetime(2026, 3, 7, 12, tzinfo=UTC)
    twice = parse_phrase("every day at 2:30 and 14:00", zone=ny, now=now)
    runs = [r.astimezone(ny).isoformat() for r in fires(twice, ny, now, now + timedelta(days=2))]
    assert "2026-03-08T03:30:00-04:00" in runs  # 02:30 does not exist: read before the gap
    autumn = datetime(2026, 10, 31, 12, tzinfo=UTC)
    beat = parse_phrase("every hour on the half hour", zone=ny, now=autumn)
    runs = [
        r.astimezone(ny).isoformat() for r in fires(beat, ny, autumn, autumn + timedelta(days=1))
    ]
    assert "2026-11-01T01:30:00-04:00" in runs and "2026-11-01T01:30:00-05:00" in runs
    window = parse_phrase("every 30 minutes from 1:00 to 3:00", zone=ny, now=autumn)
    runs = [
        r.astimezone(ny).isoformat() for r in fires(window, ny, autumn, autumn + timedelta(days=1))
    ]
    assert "2026-11-01T01:30:00-04:00" in runs and "2026-11-01T01:30:00-05:00" not in runs


# -- the forms that are not rules -----------------------------------------------------------
@pytest.mark.parametrize(
    ("phrase", "expected"),
    [
        ("every 15 minutes", Elapsed("minutes", 15)),
        ("every 2 hours", Elapsed("hours", 2)),
        ("every minute", Elapsed("minutes", 1)),
        ("every 30 seconds", Elapsed("seconds", 30)),
        ("every day at 7:15", WallClock("days", 1, time(7, 15))),
        ("every other day at 4pm", WallClock("days", 2, time(16))),
        ("every 3 months", WallClock("months", 3)),
        ("every month on the 31st at 9", WallClock("months", 1, time(9), None, 31)),
        ("every 1 months on day 1 at 00:00:30", WallClock("months", 1, time(0, 0, 30), None, 1)),
        ("every weekday at 9am", WallClock("weeks", 1, time(9), (0, 1, 2, 3, 4))),
        ("every other tuesday at 9", WallClock("weeks", 2, time(9), (1,))),
        ("every 2 weeks on mon and thu at 08:00", WallClock("weeks", 2, time(8), (0, 3))),
    ],
)
def test_existing_forms_keep_their_kind(phrase: str, expected: Phrase) -> None:
    now = datetime(2026, 3, 4, 15, 17, tzinfo=UTC)
    assert parse_phrase(phrase, zone=ZoneInfo("Europe/Paris"), now=now) == expected


# Wednesday 4 March 2026, 10:17 in New York (15:17 UTC); 8 March is the spring change.
NY = ZoneInfo("America/New_York")
WEDNESDAY = datetime(2026, 3, 4, 15, 17, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("phrase", "local"),
    [
        ("in 2 hours", None),
        ("in 30 minutes", None),
        ("in half an hour", None),
        ("tomorrow at 7", "2026-03-05T07:00"),
        ("today at 18:00", "2026-03-04T18:00"),
        ("tonight at 8", "2026-03-04T20:00"),
        ("next tuesday at 9", "2026-03-10T09:00"),
        ("next wednesday at 9", "2026-03-11T09:00"),
        ("on friday at 5pm", "2026-03-06T17:00"),
        ("wednesday at 9", "2026-03-11T09:00"),  # today's 09:00 is past
        ("at 9pm", "2026-03-04T21:00"),
        ("at 9am", "2026-03-05T09:00"),
        ("in 4 days", "2026-03-08T10:17"),  # same clock time across the change
        ("in 4 days at 2:30", "2026-03-08T02:30"),  # in the gap: 03:30 EDT
        ("the day after tomorrow at noon", "2026-03-06T12:00"),
    ],
)
def test_relative_one_time_in_the_zone(phrase: str, local: str | None) -> None:
    result = parse_phrase(phrase, zone=NY, now=WEDNESDAY)
    assert isinstance(result, OneTime)
    if local is None:
        minutes = {"in 2 hours": 120, "in 30 minutes": 30, "in half an hour": 30}[phrase]
        assert result.at == WEDNESDAY + timedelta(minutes=minutes)
    else:
        naive = datetime.fromisoformat(local)
        if phrase == "in 4 days":
            naive = naive.replace(second=30)
        assert result.at == instant_of(naive, NY)


def test_relative_dates_follow_the_zone() -> None:
    """'tomorrow' is the zone's tomorrow: at 23:30 in Kolkata it is already the next day."""
    now = datetime(2026, 3, 4, 18, 30, tzinfo=UTC)  # 00:00 on 5 March in Kolkata
    kolkata = ZoneInfo("Asia/Kolkata")
    result = parse_phrase("tomorrow at 7", zone=kolkata, now=now)
    assert isinstance(result, OneTime)
    assert result.at.astimezone(kolkata).isoformat() == "2026-03-06T07:00:00+05:30"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9am", time(9)),
        ("9 AM", time(9)),
        ("9:30 pm", time(21, 30)),
        ("9:30 p.m.", time(21, 30)),
        ("12am", time(0)),
        ("12pm", time(12)),
        ("12:15 am", time(0, 15)),
        ("noon", time(12)),
        ("midnight", time(0)),
        ("18:00", time(18)),
        ("8", time(8)),
    ],
)
def test_clock_times(text: str, expected: time) -> None:
    assert parse_clock(text) == expected


@pytest.mark.parametrize("text", ["13pm", "0am", "25:00", "9:75", "nine"])
def test_bad_clock_times(text: str) -> None:
    with pytest.raises(PhraseError, match="9am, 9:30 pm"):
        parse_clock(text)


@pytest.mark.parametrize(
    ("phrase", "fix"),
    [
        ("every weekday at 08:00 and every weekend at 10:00", "say it as two tasks"),
        ("every weekday at 08:00 and every weekend at 10:00", "one RRULE"),
        ("every year on february 30", "February has 29 days"),
        ("twice a day at 8", "give them all"),
        ("every day at 25:00", "is not a time of day"),
        ("tomorrow", "needs a time of day"),
        ("every month on the 32nd", "1–31"),
        ("every blue moon", "accepted forms"),
        ("second business day of the month", "first business day"),
        ("every 2 hours at 9", "give the first run in scheduled_time"),
        ("every weekday at 9am except holidays", "except_dates"),
    ],
)
def test_bad_phrases_say_the_fix(phrase: str, fix: str) -> None:
    with pytest.raises(PhraseError, match=fix):
        parse_phrase(phrase, zone=NY, now=WEDNESDAY)


def test_every_example_in_the_grammar_table_parses() -> None:
    """The examples next to each pattern are the documentation: they must stay true."""
    for builder, text in examples():
        for example in text.split("; "):
            example = example.split(" (")[0]
            assert parse_phrase(example, zone=NY, now=WEDNESDAY) is not None, (builder, example)


def test_a_phrase_made_just_after_a_midnight_gap_keeps_that_days_runs() -> None:
    """Santiago springs forward at 00:00 (to 01:00). A phrase made at that instant for
    00:00 and 00:15 on that Sunday runs at the change and at 01:15 (the gap's times read
    with the offset before it): its wall times are behind now's, its instants are not."""
    from scheduler_service.schedules import ScheduleInput, build_trigger, parse_schedule

    zone = "America/Santiago"
    now = datetime(2026, 9, 6, 4, 0, tzinfo=UTC)  # the change: 01:00 local, Sunday
    data = ScheduleInput(
        "custom", custom_schedule="every sunday and monday at 00:00 and 00:15", timezone=zone
    )
    trigger = build_trigger(parse_schedule(data, now=now, default_timezone="UTC"))
    fires: list[datetime] = []
    previous = None
    for _ in range(3):
        fire = trigger.get_next_fire_time(previous, previous or now)
        assert fire is not None
        fires.append(fire.astimezone(UTC))
        previous = fire
    assert fires == [
        datetime(2026, 9, 6, 4, 0, tzinfo=UTC),
        datetime(2026, 9, 6, 4, 15, tzinfo=UTC),
        datetime(2026, 9, 7, 3, 0, tzinfo=UTC),  # Monday 00:00, at -03:00
    ]
