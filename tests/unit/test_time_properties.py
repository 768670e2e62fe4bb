"""Property tests: the stored (pickled) trigger against an independent computation.

For random schedules of every kind in 40 zones (both hemispheres, :30 and :45 offsets,
30-minute and 2-hour DST, changes at midnight, zones whose rules changed) the next fire
times of ``build_trigger(schedule)`` after a pickle round trip must equal what this file
computes on its own: dateutil.rrule over local wall time, then the project's rules
(RFC 5545 reading of gaps and overlaps, month-end clamping, "every N" anchored on the
first run), localised with a UTC-offset search that does not use ``fold`` and does not
call the code under test.

Size: ``TIME_PROPERTY_EXAMPLES`` (default 25) schedules per kind, ``TIME_PROPERTY_RUNS``
(default 500) fire times each. Full run, e.g.:
    TIME_PROPERTY_EXAMPLES=250 .venv/bin/pytest tests/unit/test_time_properties.py -q
"""

from __future__ import annotations

import os
import pickle
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from dateutil import rrule as du
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from scheduler_service.schedules import ScheduleInput, build_trigger, parse_schedule

EXAMPLES = int(os.environ.get("TIME_PROPERTY_EXAMPLES", "25"))
RUNS = int(os.environ.get("TIME_PROPERTY_RUNS", "500"))
# pytest-timeout's 120 s is per test; a full-size run needs longer.
SLOW = pytest.mark.timeout(max(120, EXAMPLES * RUNS // 250))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

ZONES = (
    "UTC",
    "America/New_York",
    "America/Los_Angeles",
    "America/St_Johns",  # -03:30 / -02:30
    "America/Havana",  # changes at midnight
    "America/Santiago",  # southern hemisphere, changes at midnight
    "America/Asuncion",  # dropped DST in 2024
    "America/Mexico_City",  # dropped DST in 2022
    "America/Sao_Paulo",  # dropped DST in 2019
    "America/Nuuk",  # gap from 23:00 to 00:00
    "America/Scoresbysund",
    "America/Caracas",
    "Atlantic/Azores",
    "Europe/London",
    "Europe/Dublin",  # "negative" DST in tzdata
    "Europe/Lisbon",
    "Europe/Paris",
    "Europe/Moscow",  # rules changed 2011 and 2014
    "Europe/Istanbul",
    "Africa/Casablanca",  # DST suspended every Ramadan
    "Africa/Cairo",  # DST back since 2023
    "Asia/Beirut",  # changes at midnight
    "Asia/Gaza",
    "Asia/Jerusalem",
    "Asia/Tehran",  # dropped DST in 2022
    "Asia/Kolkata",  # +05:30
    "Asia/Kathmandu",  # +05:45
    "Asia/Tokyo",
    "Australia/Eucla",  # +08:45
    "Australia/Adelaide",  # +09:30 / +10:30
    "Australia/Sydney",
    "Australia/Lord_Howe",  # 30-minute DST
    "Antarctica/Troll",  # 2-hour DST
    "Pacific/Auckland",
    "Pacific/Chatham",  # +12:45 / +13:45
    "Pacific/Apia",  # dropped DST in 2021
    "Pacific/Kiritimati",  # +14
    "Pacific/Marquesas",  # -09:30
    "Pacific/Norfolk",
    "America/Whitehorse",  # permanent -07 since 2020
)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
DU_WEEKDAYS = (du.MO, du.TU, du.WE, du.TH, du.FR, du.SA, du.SU)
MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

# -- independent local time → instant ----------------------------------------------------


def solutions(local: datetime, zone: ZoneInfo) -> tuple[list[datetime], set[timedelta]]:
    """The instants u with ``u + offset(u) == local`` (0, 1 or 2), by trying every offset
    the zone has within a day and a half; and those offsets."""
    guess = local.replace(tzinfo=UTC)
    offsets = {_offset(guess + timedelta(hours=h), zone) for h in range(-36, 37, 3)}
    return sorted(guess - o for o in offsets if _offset(guess - o, zone) == o), offsets


def instant_of(local: datetime, zone: ZoneInfo) -> datetime:
    """The project's reading of a local wall time: the first solution if any (first
    occurrence), else (a gap) ``local`` read with the offset in effect before the change."""
    hits, offsets = solutions(local, zone)
    if hits:
        return hits[0]
    guess = local.replace(tzinfo=UTC)
    before = _offset(guess - max(offsets), zone)  # an instant just before the change
    return guess - before


def _offset(instant: datetime, zone: ZoneInfo) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


def local_of(instant: datetime, zone: ZoneInfo) -> datetime:
    return (instant + _offset(instant, zone)).replace(tzinfo=None)


# -- the trigger under test ------------------------------------------------------------


def trigger_fires(
    data: ScheduleInput, now: datetime, count: int, until: datetime
) -> list[datetime]:
    """Parse, build the trigger, pickle it as the job store does, and list its fires (UTC)."""
    schedule = parse_schedule(data, now=now, default_timezone="UTC")
    trigger = pickle.loads(pickle.dumps(build_trigger(schedule)))
    out: list[datetime] = []
    previous: datetime | None = None
    while len(out) < count:
        fire = trigger.get_next_fire_time(previous, previous or now)
        if fire is None or fire > until:
            break
        out.append(fire.astimezone(UTC))
        previous = fire
    return out


# -- schedules and their expectations --------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A random schedule: its input, and the expected (instant, scheduled wall time) pairs."""

    data: ScheduleInput
    wall_clock: bool  # fires at most once per scheduled local date

    def expected(
        self, now: datetime, zone: ZoneInfo, count: int
    ) -> list[tuple[datetime, datetime | None]]:
        raise NotImplementedError


@dataclass(frozen=True)
class WallCase(Case):
    unit: str
    interval: int
    at: time
    weekdays: tuple[int, ...] = ()
    day: int | None = None

    def rule(self, interval: int, start: datetime) -> Iterator[datetime]:
        common: dict[str, Any] = {
            "dtstart": start,
            "interval": interval,
            "byhour": self.at.hour,
            "byminute": self.at.minute,
            "bysecond": self.at.second,
        }
        if self.unit == "days":
            return iter(du.rrule(du.DAILY, **common))
        if self.unit == "weeks":
            days = [DU_WEEKDAYS[d] for d in self.weekdays]
            return iter(du.rrule(du.WEEKLY, byweekday=days, wkst=du.MO, **common))
        assert self.day is not None
        if self.day > 28:  # the last existing day of 28..day: clamped to the month's end
            return iter(
                du.rrule(du.MONTHLY, bymonthday=range(28, self.day + 1), bysetpos=-1, **common)
            )
        return iter(du.rrule(du.MONTHLY, bymonthday=self.day, **common))

    def expected(
        self, now: datetime, zone: ZoneInfo, count: int
    ) -> list[tuple[datetime, datetime | None]]:
        today = local_of(now, zone).date()
        start = datetime.combine(today - timedelta(days=2), self.at)
        first = next(w for w in self.rule(1, start) if instant_of(w, zone) >= now)
        walls = self.rule(self.interval, first)  # "every N" counts from the first run
        return [(instant_of(w, zone), w) for w, _ in zip(walls, range(count), strict=False)]


@dataclass(frozen=True)
class ElapsedCase(Case):
    seconds: int
    first_at: time | None

    def expected(
        self, now: datetime, zone: ZoneInfo, count: int
    ) -> list[tuple[datetime, datetime | None]]:
        if self.first_at is None:
            first = now + timedelta(seconds=self.seconds)
        else:
            today = local_of(now, zone).date()
            first = min(
                i
                for d in (today, today + timedelta(days=1))
                if (i := instant_of(datetime.combine(d, self.first_at), zone)) > now
            )
        return [(first + k * timedelta(seconds=self.seconds), None) for k in range(count)]


@dataclass(frozen=True)
class CronCase(Case):
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...] | None  # None: "*"
    months: tuple[int, ...] | None
    weekdays: tuple[int, ...] | None  # cron numbering, 0 = Sunday

    def rules(self, start: datetime, until: datetime) -> du.rruleset:
        common: dict[str, Any] = {
            "dtstart": start,
            "until": until,
            "byhour": self.hours,
            "byminute": self.minutes,
            "bysecond": 0,
            "bymonth": self.months,
        }
        days = [DU_WEEKDAYS[(d + 6) % 7] for d in self.weekdays] if self.weekdays else None
        rules = du.rruleset()
        if self.days and days:  # both restricted: cron runs when either matches
            rules.rrule(du.rrule(du.DAILY, bymonthday=self.days, **common))
            rules.rrule(du.rrule(du.DAILY, byweekday=days, **common))
        else:
            rules.rrule(du.rrule(du.DAILY, bymonthday=self.days, byweekday=days, **common))
        return rules

    def expected(
        self, now: datetime, zone: ZoneInfo, count: int
    ) -> list[tuple[datetime, datetime | None]]:
        start = datetime.combine(local_of(now, zone).date() - timedelta(days=2), time())
        found: dict[datetime, datetime | None] = {}
        cadence = len(self.hours) == 24
        for wall in self.rules(start, start + HORIZON):
            # Fixed hours: the wall-clock reading. All 24 hours: every real instant that
            # shows this time (none in a gap, both in an overlap) — the cadence rule.
            for instant in solutions(wall, zone)[0] if cadence else [instant_of(wall, zone)]:
                if instant >= now:
                    found.setdefault(instant, wall)  # two local times in a gap: one run
            if len(found) >= count + 50:  # gap readings reorder runs only by hours
                break
        return sorted(found.items())[:count]


HORIZON = timedelta(days=365 * 60)  # sparse rules (29 February) are compared this far

# -- strategies ------------------------------------------------------------------------


def dst_changes(tz: str) -> list[tuple[datetime, timedelta, timedelta]]:
    """(UTC instant, offset before, offset after) of each change of ``tz`` in 2026–2027,
    by a scan of UTC offsets written here (not the code under test)."""
    zone, changes = ZoneInfo(tz), []
    here = datetime(2026, 1, 1, tzinfo=UTC)
    while here.year < 2028:
        there = here + timedelta(hours=1)
        before, after = _offset(here, zone), _offset(there, zone)
        if before != after:
            change = next(
                here + timedelta(minutes=m)
                for m in range(1, 61)
                if _offset(here + timedelta(minutes=m), zone) == after
            )
            changes.append((change, before, after))
        here = there
    return changes


CHANGES = {tz: dst_changes(tz) for tz in ZONES}
SPANS = {  # local (start, minutes) of each gap and overlap
    tz: [
        ((at + min(b, a)).replace(tzinfo=None), int(abs(a - b) / timedelta(minutes=1)))
        for at, b, a in changes
    ]
    for tz, changes in CHANGES.items()
}


@st.composite
def times_in(draw: st.DrawFn, tz: str) -> time:
    """A time of day, half the time inside one of the zone's gaps or overlaps."""
    if draw(st.booleans()) and SPANS[tz]:
        start, minutes = draw(st.sampled_from(SPANS[tz]))
        return (start + timedelta(minutes=draw(st.integers(0, minutes - 1)))).time()
    second = draw(st.sampled_from([0, 0, 0, 30]))
    return time(draw(st.integers(0, 23)), draw(st.integers(0, 59)), second)


any_now = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC)
)
zones = st.sampled_from(ZONES)


@st.composite
def nows(draw: st.DrawFn, tz: str) -> datetime:
    """Any instant, or (half the time) one within 3 hours of a DST change of the zone."""
    if draw(st.booleans()) and CHANGES[tz]:
        change = draw(st.sampled_from(CHANGES[tz]))[0]
        return change + timedelta(seconds=draw(st.integers(-3 * 3600, 3 * 3600)))
    return draw(any_now)


def hhmm(at: time) -> str:
    return at.strftime("%H:%M:%S" if at.second else "%H:%M")


@st.composite
def wall_cases(draw: st.DrawFn, tz: str) -> WallCase:
    unit = draw(st.sampled_from(["days", "weeks", "months"]))
    interval = draw(st.integers(1, {"days": 10, "weeks": 5, "months": 12}[unit]))
    at = draw(times_in(tz))
    phrase = draw(st.booleans()) or interval > 1
    weekdays: tuple[int, ...] = ()
    day: int | None = None
    if unit == "weeks":
        weekdays = tuple(sorted(draw(st.sets(st.integers(0, 6), min_size=1, max_size=7))))
    if unit == "months":
        day = draw(st.one_of(st.integers(1, 31), st.sampled_from([29, 30, 31, -1])))
    if not phrase:
        frequency = {"days": "daily", "weeks": "weekly", "months": "monthly"}[unit]
        data = ScheduleInput(
            frequency,
            scheduled_time=hhmm(at),
            day_of_week=[WEEKDAYS[d] for d in weekdays] if weekdays else None,
            day_of_month=day,
        )
        return WallCase(data, True, unit, 1, at, weekdays, day)
    text = f"every {interval} {unit}"
    if weekdays:
        text += " on " + ", ".join(WEEKDAYS[d] for d in weekdays)
    if day is not None:
        text += " on the last day" if day == -1 else f" on day {day}"
    text += f" at {hhmm(at)}"
    return WallCase(
        ScheduleInput("custom", custom_schedule=text), True, unit, interval, at, weekdays, day
    )


@st.composite
def elapsed_cases(draw: st.DrawFn, tz: str) -> ElapsedCase:
    unit = draw(st.sampled_from(["minutes", "hours"]))
    interval = draw(st.integers(1, 180 if unit == "minutes" else 48))
    first_at = draw(times_in(tz)) if draw(st.booleans()) else None
    scheduled = hhmm(first_at) if first_at else None
    data = ScheduleInput(
        "custom", custom_schedule=f"every {interval} {unit}", scheduled_time=scheduled
    )
    seconds = interval * (60 if unit == "minutes" else 3600)
    return ElapsedCase(data, False, seconds, first_at)


def _cron_set(values: tuple[int, ...] | None) -> str:
    return "*" if values is None else ",".join(map(str, values))


@st.composite
def cron_cases(draw: st.DrawFn, tz: str, every_hour: bool = False) -> CronCase:
    def subset(low: int, high: int, most: int) -> tuple[int, ...]:
        return tuple(sorted(draw(st.sets(st.integers(low, high), min_size=1, max_size=most))))

    def maybe(low: int, high: int, most: int) -> tuple[int, ...] | None:
        return subset(low, high, most) if draw(st.booleans()) else None

    minutes, hours = subset(0, 59, 3), subset(0, 23, 3)
    if every_hour:
        hours = tuple(range(24))
    elif draw(st.booleans()):  # often a time inside a gap or an overlap, and its neighbours
        at = draw(times_in(tz))
        minutes = tuple(sorted({*minutes[:2], at.minute}))
        hours = tuple(sorted({at.hour, (at.hour + draw(st.sampled_from([-1, 1]))) % 24}))
    days, months, weekdays = maybe(1, 31, 3), maybe(1, 12, 4), maybe(0, 6, 3)
    if days and not weekdays:
        assume(any(d <= MAX_DAYS[m - 1] for d in days for m in (months or range(1, 13))))
    fields = (minutes, None if every_hour else hours, days, months, weekdays)
    text = " ".join(_cron_set(f) for f in fields)
    prefix = draw(st.sampled_from(["", "cron: "]))
    data = ScheduleInput("custom", custom_schedule=prefix + text)
    single = len(minutes) == 1 and len(hours) == 1
    return CronCase(data, single, minutes, hours, days, months, weekdays)


# -- the properties --------------------------------------------------------------------


def check(case: Case, tz: str, now: datetime) -> None:
    zone = ZoneInfo(tz)
    data = replace(case.data, timezone=tz)
    expected = case.expected(now, zone, RUNS)
    until = expected[-1][0] if expected else now + HORIZON
    actual = trigger_fires(data, now, RUNS, until)
    assert actual == [instant for instant, _ in expected], (data, now)
    assert all(a < b for a, b in pairwise(actual)), "not strictly increasing"
    if case.wall_clock:
        check_once_per_date(expected, zone)


def check_once_per_date(expected: list[tuple[datetime, datetime | None]], zone: ZoneInfo) -> None:
    """Never two runs for one scheduled local date, nor on one local date — except that a
    gap reading can move a run past midnight (America/Nuuk's 23:00→00:00 jump)."""
    scheduled = [wall.date() for _, wall in expected if wall is not None]
    assert len(set(scheduled)) == len(scheduled)
    dates = Counter(local_of(instant, zone).date() for instant, _ in expected)
    moved: set[date] = set()
    for instant, wall in expected:
        assert wall is not None
        shown = local_of(instant, zone)
        if shown.date() != wall.date():
            assert shown.date() == wall.date() + timedelta(days=1)
            assert instant_of(shown, zone) == instant and shown != wall  # wall was in a gap
            moved.add(shown.date())
    assert all(n == 1 or d in moved for d, n in dates.items())


Zoned = tuple[str, Any, datetime]


def zoned(cases: Any) -> st.SearchStrategy[Zoned]:
    """(zone, a case for it, now): times and nows are drawn near the zone's DST changes."""
    return zones.flatmap(lambda tz: st.tuples(st.just(tz), cases(tz), nows(tz)))


@SLOW
@SETTINGS
@given(example=zoned(wall_cases))
def test_wall_clock_schedules_match_rrule(example: Zoned) -> None:
    tz, case, now = example
    check(case, tz, now)


@SLOW
@SETTINGS
@given(example=zoned(elapsed_cases))
def test_elapsed_schedules_count_real_time(example: Zoned) -> None:
    tz, case, now = example
    check(case, tz, now)


@SLOW
@SETTINGS
@given(example=zoned(cron_cases))
def test_cron_with_fixed_hours_matches_rrule(example: Zoned) -> None:
    tz, case, now = example
    check(case, tz, now)


def cadence_cron_cases(tz: str) -> st.SearchStrategy[CronCase]:
    return cron_cases(tz, every_hour=True)


@SLOW
@SETTINGS
@given(example=zoned(cadence_cron_cases))
def test_cron_over_all_hours_follows_real_time(example: Zoned) -> None:
    """The chosen rule for hour "*": every instant showing a matching time, both
    occurrences in an overlap, none in a gap."""
    tz, case, now = example
    check(case, tz, now)


def test_the_zone_list_is_wide() -> None:
    offsets = {_offset(datetime(2026, 1, 15, tzinfo=UTC), ZoneInfo(z)) for z in ZONES}
    assert len(ZONES) >= 30
    assert {timedelta(hours=5, minutes=45), timedelta(hours=8, minutes=45)} <= offsets
    assert any(o < timedelta(0) for o in offsets) and any(o > timedelta(0) for o in offsets)


# -- phrases (the custom_schedule grammar) ---------------------------------------------
PHRASE_DAYS = ("mon", "tuesday", "wed", "thursdays", "fri", "saturday", "sun")


def clock_words(at: time, twelve: bool) -> str:
    if not twelve:
        return f"{at:%H:%M}"
    hour = at.hour % 12 or 12
    return f"{hour}:{at.minute:02d} {'am' if at.hour < 12 else 'pm'}"


@dataclass(frozen=True)
class PhraseCase:
    """A random phrase, the local dates it names and its times (all wall-clock rules)."""

    phrase: str
    kind: str  # "weekdays" | "ordinal" | "monthdays"
    values: tuple[int, ...]
    weekday: int
    times: tuple[time, ...]

    def day_ok(self, d: date) -> bool:
        if self.kind == "weekdays":
            return d.weekday() in self.values
        last = MAX_DAYS[d.month - 1] if d.month != 2 else (29 if _leap(d.year) else 28)
        if self.kind == "monthdays":
            return any(d.day == min(v, last) for v in self.values)
        n = self.values[0]
        position = (d.day - 1) // 7 + 1 if n > 0 else -((last - d.day) // 7 + 1)
        return d.weekday() == self.weekday and position == n


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


@st.composite
def phrase_cases(draw: st.DrawFn, tz: str) -> PhraseCase:
    minutes = st.sampled_from([0, 15, 30, 45])
    times = tuple(
        sorted(
            {
                draw(times_in(tz)).replace(second=0, minute=draw(minutes))
                for _ in range(draw(st.integers(1, 3)))
            }
        )
    )
    twelve = draw(st.booleans())
    at = " and ".join(clock_words(t, twelve) for t in times)
    kind = draw(st.sampled_from(["weekdays", "ordinal", "monthdays"]))
    if kind == "weekdays":
        days = tuple(sorted(draw(st.sets(st.integers(0, 6), min_size=1, max_size=4))))
        words = " and ".join(PHRASE_DAYS[d] for d in days)
        return PhraseCase(f"every {words} at {at}", kind, days, 0, times)
    if kind == "ordinal":
        n = draw(st.sampled_from([1, 2, 3, 4, -1]))
        weekday = draw(st.integers(0, 6))
        word = {1: "first", 2: "second", 3: "third", 4: "fourth", -1: "last"}[n]
        phrase = f"{word} {WEEKDAYS_FULL[weekday]} of the month at {at}"
        return PhraseCase(phrase, kind, (n,), weekday, times)
    days = tuple(sorted(draw(st.sets(st.integers(1, 31), min_size=1, max_size=3))))
    words = " and ".join(
        f"{d}{'th' if 10 < d % 100 < 14 else {1: 'st', 2: 'nd', 3: 'rd'}.get(d % 10, 'th')}"
        for d in days
    )
    return PhraseCase(f"on the {words} at {at}", kind, days, 0, times)


WEEKDAYS_FULL = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@SLOW
@SETTINGS
@given(example=zoned(phrase_cases))
def test_phrases_match_a_walk_over_local_days(example: Zoned) -> None:
    """Phrases (several times, day lists, ordinals, month days with 29–31 clamped) fire
    once per named local date and time, read by the wall-clock rule."""
    tz, case, now = example
    zone = ZoneInfo(tz)
    horizon = timedelta(days=60 if case.kind == "weekdays" else 200)
    data = ScheduleInput("custom", custom_schedule=case.phrase, timezone=tz)
    got = trigger_fires(data, now, 10_000, now + horizon)
    first = local_of(now, zone).date() - timedelta(days=1)
    expected = sorted(
        {
            instant_of(datetime.combine(first + timedelta(days=k), t), zone)
            for k in range(horizon.days + 3)
            if case.day_ok(first + timedelta(days=k))
            for t in case.times
        }
    )
    expected = [e for e in expected if now <= e <= now + horizon]
    assert got == expected, case.phrase
