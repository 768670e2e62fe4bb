"""The phrase grammar of ``custom_schedule``: what people say → a schedule to evaluate.

Pure: no I/O, no APScheduler; ``now`` and the zone are passed in. A phrase becomes one of

- ``Elapsed``   — "every 15 minutes": real time, as the existing elapsed schedules;
- ``WallClock`` — "every weekday at 9am": the existing every-N days/weeks/months form;
- ``Rule``      — anything else that repeats: RFC 5545 RRULE lines (one DTSTART, one or
  more RRULEs whose union is the schedule), evaluated over local wall time by
  ``LocalRRuleTrigger``;
- ``OneTime``   — "in 2 hours", "tomorrow at 7", "March 3 at 5pm": one instant.

Each result carries ``Limits``: a start, an end, a number of runs and a zone said in the
phrase, and notes that state how an ambiguous word was read.

``GRAMMAR`` below is the whole language: a table of patterns, each with the builder that
turns a match into a schedule and examples of what it accepts (docs/time.md lists them).
Before the table is consulted, spellings of the same thing are made one (``spelling``),
and the clauses that may stand anywhere are taken out of the phrase: zone, except, start,
end and part of the day (``clauses``), then the times ("at 8 and 20"), a window ("between
9 and 17") and a minute of the hour ("on the half hour"). So the clauses may come in any
order around the part the table reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from scheduler_service.schedules.clauses import Clauses, take_clauses, zone_in
from scheduler_service.schedules.dates import When, parse_when
from scheduler_service.schedules.days import (
    DaySet,
    first_local,
    month_days,
    rule_lines,
    year_days,
)
from scheduler_service.schedules.spelling import (
    COUNT,
    COUNTS,
    normalize,
    reading_notes,
    times_a_week,
)
from scheduler_service.schedules.words import (
    CLOCK,
    DAY_LIST,
    MONTH_NAME,
    NTH_DAY,
    NUMBER_WORDS,
    RRULE_DAYS,
    WEEKDAYS,
    PhraseError,
    ambiguous_hour,
    clock_note,
    parse_clock,
    parse_day_list,
    weekday_of,
)

__all__ = [
    "EXAMPLES",
    "GRAMMAR",
    "Elapsed",
    "Limits",
    "OneTime",
    "Phrase",
    "PhraseError",
    "Rule",
    "WallClock",
    "examples",
    "parse_clock",
    "parse_phrase",
    "phrase_zone",
]

EXAMPLES = (
    '"every weekday at 9am", "every monday and thursday at 8:00", "every mon-thu at 18:30", '
    '"every other tuesday at 9", "twice a day at 8 and 20", "first monday of the month at 10", '
    '"last friday of the month at 17:00", "on the 1st and 15th at 9", '
    '"last business day of the month at 16", "every year on March 3 at 9", '
    '"every quarter on the 1st at 9", "every 15 minutes between 9 and 17 on weekdays", '
    '"every hour on the half hour", "every 2 hours", "every day at 9am except weekends", '
    '"every 3 weeks on thursday starting Feb 4", "every 10 minutes for the next hour", '
    '"every day at 9am (Europe/Berlin)", "in 2 hours", "tomorrow at 7", '
    '"next tuesday at 9", "March 3 at 5pm"'
)


# -- results -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Limits:
    """What a phrase says besides its repetition (None: not said).

    ``start`` and ``end`` are naive local wall times in the task's zone: the schedule
    starts at ``start`` (its phase counts from there) and has no run after ``end``.
    ``notes`` state how an ambiguous word was read, for the caller to confirm.
    """

    start: datetime | None = None
    end: datetime | None = None
    max_runs: int | None = None
    zone: str | None = None
    except_dates: tuple[date, ...] = ()  # local dates without runs ('except Dec 25')
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Elapsed:
    """Every ``interval`` seconds/minutes/hours of real time (first run one interval on)."""

    unit: Literal["seconds", "minutes", "hours"]
    interval: int
    limits: Limits = field(default=Limits(), compare=False)


@dataclass(frozen=True)
class WallClock:
    """Every ``interval`` days/weeks/months at ``at`` (None: the caller's default time).

    ``weekdays`` (0=Monday) for weeks and ``day_of_month`` (1–31, -1 last) for months are
    None when the phrase names no day.
    """

    unit: Literal["days", "weeks", "months"]
    interval: int = 1
    at: time | None = None
    weekdays: tuple[int, ...] | None = None
    day_of_month: int | None = None
    limits: Limits = field(default=Limits(), compare=False)


@dataclass(frozen=True)
class Rule:
    """RRULE lines sharing one DTSTART (naive local wall time); their union is the schedule."""

    rules: tuple[str, ...]
    dtstart: datetime
    limits: Limits = field(default=Limits(), compare=False)

    def text(self) -> str:
        lines = [f"DTSTART:{self.dtstart:%Y%m%dT%H%M%S}"]
        return "\n".join(lines + [f"RRULE:{rule}" for rule in self.rules])


@dataclass(frozen=True)
class OneTime:
    """A single run at ``at`` (aware, UTC)."""

    at: datetime
    limits: Limits = field(default=Limits(), compare=False)


Phrase = Elapsed | WallClock | Rule | OneTime


# -- the times, the window and the minute of the hour ------------------------------------
_TIMES = rf"{CLOCK}(?:(?:\s*,\s*(?:and\s+)?|\s+and\s+){CLOCK})*"
_N = r"(?P<n>\d+|other|a|an|one|two|three|four|five|six)"


@dataclass(frozen=True)
class _Clauses:
    """The phrase without its time clauses, the time clauses, and what the free clauses
    (``clauses.Clauses``) said."""

    rest: str
    times: tuple[time, ...] = ()
    window: tuple[time, time] | None = None
    minute: int | None = None
    per_day: int | None = None  # "twice a day": how many times were announced
    free: Clauses = field(default_factory=Clauses)
    notes: tuple[str, ...] = ()


_TIMES_CLAUSE = re.compile(rf"(?:^|\s)at (?P<times>{_TIMES})(?=\s|$)")
_WINDOW = re.compile(
    rf"(?:^|\s)(?:between|from) (?P<a>{CLOCK}) (?:and|to|until|till|-) (?P<b>{CLOCK})(?=\s|$)"
)
_MINUTE = re.compile(r"(?:^|\s)at minute (?P<m>\d{1,2})(?=\s|$)")
_PER_DAY = re.compile(rf"^{COUNT} (?:a day|daily|per day)\b")
# The reading of a part of the day without a time, and how its hours are read.
_PART_TIMES = {
    "morning": time(9),
    "afternoon": time(15),
    "evening": time(18),
    "night": time(21),
    "tonight": time(20),
}


def _in_part(token: str, at: time, part: str) -> time:
    """'7' in the evening → 19:00; '11' at night → 23:00, '2' at night → 02:00."""
    if re.search(r"[ap]m|noon|midnight|midday", token) or not 1 <= at.hour <= 12:
        return at
    if part in ("afternoon", "evening", "tonight") and at.hour < 12:
        return at.replace(hour=at.hour + 12)
    if part == "night":
        return (
            at.replace(hour=0) if at.hour == 12 else at.replace(hour=at.hour + 12 * (at.hour >= 6))
        )
    return at.replace(hour=0) if part == "morning" and at.hour == 12 else at


def _time_list(text: str, part: str | None) -> tuple[tuple[time, ...], tuple[str, ...]]:
    """The times of an 'at …' clause, read in the part of the day, and notes for hours
    that could be morning or evening."""
    tokens = [t for t in re.split(r"\s*,\s*(?:and\s+)?|\s+and\s+", text.strip()) if t]
    read = [(t, parse_clock(t)) for t in tokens]
    if part is not None:
        read = [(t, _in_part(t, at, part)) for t, at in read]
        return tuple(sorted({at for _, at in read})), ()
    day_clock = any(at.hour >= 13 for _, at in read)  # "at 8 and 20": a 24-hour list
    notes = tuple(clock_note(t, at) for t, at in read if ambiguous_hour(t) and not day_clock)
    return tuple(sorted({at for _, at in read})), notes


def _clauses(s: str, free: Clauses) -> _Clauses:
    found: dict[str, object] = {"free": free}
    if m := _MINUTE.search(s):
        minute = int(m["m"])
        if minute > 59:
            raise PhraseError(f"minute {minute} of the hour does not exist; use 0–59")
        found["minute"], s = minute, s[: m.start()] + s[m.end() :]
    if m := _WINDOW.search(s):
        found["window"] = (parse_clock(m["a"]), parse_clock(m["b"]))
        s = s[: m.start()] + s[m.end() :]
    if m := _TIMES_CLAUSE.search(s):
        found["times"], found["notes"] = _time_list(m["times"], free.day_part)
        s = s[: m.start()] + s[m.end() :]
    elif free.day_part is not None:
        at = _PART_TIMES[free.day_part]
        found["times"] = (at,)
        word = "tonight" if free.day_part == "tonight" else f"'{free.day_part}'"
        found["notes"] = (f"{word} is read as {at:%H:%M}; give a time to choose another",)
    if m := _PER_DAY.match(s.strip()):
        found["per_day"], s = COUNTS[m["k"]], "every day" + s.strip()[m.end() :]
    return _Clauses(" ".join(s.split()), **found)  # type: ignore[arg-type]


# -- the context a builder gets ----------------------------------------------------------
@dataclass(frozen=True)
class _Ctx:
    text: str  # as given (for messages)
    match: re.Match[str]
    clauses: _Clauses
    zone: ZoneInfo
    now: datetime  # aware
    default_time: time | None
    origin: datetime | None = None  # naive local start, when the phrase says one

    @property
    def local_now(self) -> datetime:
        return self.now.astimezone(self.zone).replace(tzinfo=None)

    @property
    def first_day(self) -> datetime:
        """Where the schedule starts: the phrase's start, else now (local, naive)."""
        return self.origin if self.origin is not None else self.local_now

    def group(self, name: str) -> str | None:
        value = self.match.groupdict().get(name)
        return value.strip() if value else None

    def interval(self) -> int:
        n = self.group("n")
        if n is None:
            return 1
        value = 2 if n == "other" else NUMBER_WORDS.get(n) or int(n)
        if not 1 <= value <= 1000:
            raise PhraseError(f"{self.text!r}: the interval must be 1–1000, not {value}")
        return value

    def times(self) -> tuple[time, ...]:
        """The times of day: 'at …', else the caller's default, else now's minute."""
        times = self.clauses.times
        if not times:
            fallback = self.default_time or self.local_now.time().replace(second=0, microsecond=0)
            times = (fallback,)
        per_day = self.clauses.per_day
        if per_day is not None and per_day != len(times):
            raise PhraseError(
                f"{self.text!r} announces {per_day} run(s) a day but gives {len(times)} time(s); "
                "give them all, e.g. 'twice a day at 8 and 20'"
            )
        return times

    def single_time(self) -> time | None:
        """The one time of a WallClock form (None: caller's default), or None if several."""
        return self.clauses.times[0] if len(self.clauses.times) == 1 else None

    def keep(self, days: tuple[int, ...]) -> tuple[int, ...]:
        """``days`` without the excepted weekdays ('except fridays')."""
        excluded = self.clauses.free.excluded
        kept = tuple(d for d in days if d not in excluded)
        if not kept:
            raise PhraseError(f"{self.text!r}: the excepted days leave no day to run on")
        return kept

    def refuse(self, *names: str) -> None:
        """Refuse clauses this form cannot use."""
        words = {"times": "'at …'", "window": "'between … and …'", "minute": "a minute of the hour"}
        for name in names:
            if getattr(self.clauses, name):
                raise PhraseError(
                    f"{self.text!r}: {words[name]} does not fit this phrase; accepted: {EXAMPLES}"
                )


def _rule(ctx: _Ctx, days: list[DaySet], interval: int, times: tuple[time, ...]) -> Rule:
    """RRULE lines anchored at DTSTART: local midnight of the first run's date, so an
    INTERVAL counts periods from the period of the first run (its day, its week from
    Monday, its month, its year)."""
    lines = rule_lines(days, interval, times)
    first = first_local(lines, ctx.first_day)
    return Rule(tuple(lines), datetime.combine(first.date(), time()))


def _byday(days: tuple[int, ...]) -> str:
    return "BYDAY=" + ",".join(RRULE_DAYS[d] for d in days)


# -- builders (one per row of GRAMMAR) -----------------------------------------------------
def _every_unit(ctx: _Ctx) -> Phrase:
    """every 15 minutes / every 2 hours / every minute / every 30 seconds (refused by the
    minimum interval) — with a window, days, excepted days or a minute of the hour: a
    clock-aligned rule."""
    unit = ctx.group("unit") or ""
    interval = ctx.interval()
    days_text = ctx.group("days")
    c = ctx.clauses
    if c.times:
        raise PhraseError(
            f"{ctx.text!r}: 'at …' does not fit every N minutes or hours; say where the runs "
            "start ('every 2 hours starting at 9am'), give the first run in scheduled_time, "
            "or a window such as 'every 15 minutes between 9 and 17'"
        )
    plain = c.window is None and days_text is None and c.minute is None
    if unit == "second" or (plain and not c.free.excluded):
        if c.minute is not None:
            raise PhraseError(f"{ctx.text!r}: a minute of the hour needs hours")
        plural: Literal["seconds", "minutes", "hours"] = (
            "seconds" if unit == "second" else "minutes" if unit == "minute" else "hours"
        )
        return Elapsed(plural, interval)
    step = interval * (60 if unit == "hour" else 1)
    if unit == "minute" and c.minute is not None:
        raise PhraseError(f"{ctx.text!r}: a minute of the hour fits 'every hour', not minutes")
    start, end = c.window or (time(0, c.minute or 0), time(23, 59))
    if c.window is not None and c.minute is not None:
        start = start.replace(minute=c.minute)
    times = _window_times(start, end, step, wraps=c.window is not None)
    weekdays = ctx.keep(parse_day_list(days_text) if days_text else tuple(range(7)))
    day = DaySet("DAILY", "" if len(weekdays) == 7 else _byday(weekdays))
    return _rule(ctx, [day], 1, times)


def _window_times(start: time, end: time, step: int, *, wraps: bool) -> tuple[time, ...]:
    """start, start+step … up to end inclusive (past midnight when end is earlier)."""
    if step >= 1440:
        raise PhraseError("a window holds steps shorter than a day")
    a = start.hour * 60 + start.minute
    b = end.hour * 60 + end.minute
    if b <= a:
        if not wraps or b == a:
            raise PhraseError("the window must not be empty")
        b += 1440
    return tuple(
        sorted({time(((a + k) // 60) % 24, (a + k) % 60) for k in range(0, b - a + 1, step)})
    )


def _every_days(ctx: _Ctx) -> Phrase:
    """every day at 7:15 / daily at 9am / every 3 days at 8 / every other day / twice a
    day at 8 and 20 / every day except weekends (the days of the week that are left)."""
    ctx.refuse("window", "minute")
    interval = ctx.interval()
    if ctx.clauses.free.excluded:
        if interval > 1:
            raise PhraseError(
                f"{ctx.text!r}: 'except …' fits days of the week, not every {interval} days; "
                "name the days, e.g. 'every monday, wednesday and friday at 9'"
            )
        return _weekly(ctx, 1, ctx.keep(tuple(range(7))))
    times = ctx.times()
    if len(times) == 1 and ctx.clauses.per_day in (None, 1):
        return WallClock("days", interval, ctx.single_time())
    return _rule(ctx, [DaySet("DAILY")], interval, times)


def _every_weeks(ctx: _Ctx) -> Phrase:
    """every week / every 2 weeks on monday and thursday at 8:00 / weekly on fri at 5pm."""
    ctx.refuse("window", "minute")
    days = ctx.group("days")
    weekdays = ctx.keep(parse_day_list(days)) if days else None
    return _weekly(ctx, ctx.interval(), weekdays)


def _every_weekdays(ctx: _Ctx) -> Phrase:
    """every weekday at 9am / every monday and thursday / every mon-thu at 18:30 /
    every other tuesday at 9 / every 3 fridays / on weekends at 10 / every business day."""
    ctx.refuse("window", "minute")
    return _weekly(ctx, ctx.interval(), ctx.keep(parse_day_list(ctx.group("days") or "")))


def _weekly(ctx: _Ctx, interval: int, weekdays: tuple[int, ...] | None) -> Phrase:
    times = ctx.times()
    if len(times) == 1:
        return WallClock("weeks", interval, ctx.single_time(), weekdays)
    days = weekdays or (ctx.first_day.weekday(),)
    freq = "WEEKLY" if interval > 1 else "DAILY"
    return _rule(ctx, [DaySet(freq, _byday(days))], interval, times)


def _every_months(ctx: _Ctx) -> Phrase:
    """every month on the 15th at 10 / every 2 months on the last day / monthly on the
    first monday / every month on the 1st and 15th / every 3 months."""
    ctx.refuse("window", "minute")
    spec = ctx.group("spec")
    return _monthly(ctx, ctx.interval(), spec)


def _of_the_month(ctx: _Ctx) -> Phrase:
    """first monday of the month at 10 / last friday of every month / the last day of the
    month / on the 1st and 15th at 9 / second-to-last day of the month / first business
    day / the 10th and the last day of the month."""
    ctx.refuse("window", "minute")
    return _monthly(ctx, 1, ctx.group("spec"))


def _monthly(ctx: _Ctx, interval: int, spec: str | None) -> Phrase:
    times = ctx.times()
    if spec is None or re.fullmatch(
        r"(?:on )?(?:the )?(?:day )?(?:\d{1,2}(?:st|nd|rd|th)?|last day)", spec
    ):
        if len(times) == 1:
            day = None
            if spec is not None:
                digits = re.sub(r"\D", "", spec)
                day = int(digits) if digits else -1
                if not (day == -1 or 1 <= day <= 31):
                    raise PhraseError(
                        f"day {day} is not a day of the month; use 1–31 or 'last day'"
                    )
            return WallClock("months", interval, ctx.single_time(), day_of_month=day)
        spec = spec or str(ctx.first_day.day)
    return _rule(ctx, month_days(spec), interval, times)


def _quarterly(ctx: _Ctx) -> Phrase:
    """every quarter on the 1st at 9 / quarterly on the last day / every quarter on the
    first monday / the last business day of the quarter. Quarters are Jan–Mar, Apr–Jun …"""
    ctx.refuse("window", "minute")
    days = month_days(ctx.group("spec") or "1st", quarter=True)
    return _rule(ctx, days, 1, ctx.times())


def _yearly(ctx: _Ctx) -> Phrase:
    """every year on March 3 at 9 / every March 3 at 9am / every 2 years on 1 July /
    annually on dec 24 at 18:00 / on March 1, June 1 and September 1 / every year on the
    second Monday of October. February 29 runs in leap years only (RFC 5545)."""
    ctx.refuse("window", "minute")
    return _rule(ctx, year_days(ctx.group("date") or ""), ctx.interval(), ctx.times())


def _in(ctx: _Ctx) -> Phrase:
    """in 2 hours / in 30 minutes / in half an hour / in 2.5 hours / in two and a half
    hours / in 3 days (same clock time) / in 2 days at 9am. Minutes and hours are real
    time; days and weeks are calendar days."""
    ctx.refuse("window", "minute")
    n = ctx.group("n") or "1"
    unit = ctx.group("unit") or ""
    if ctx.group("half"):
        return OneTime(ctx.now.astimezone(UTC) + timedelta(minutes=30))
    count = float(NUMBER_WORDS.get(n) or n)
    if unit in ("minute", "hour"):
        ctx.refuse("times")
        delta = timedelta(minutes=count) if unit == "minute" else timedelta(hours=count)
        return OneTime(ctx.now.astimezone(UTC) + delta)
    if count != int(count):
        raise PhraseError(f"{ctx.text!r}: say whole days, or hours ('in 36 hours')")
    days = int(count) * (7 if unit == "week" else 1)
    return _on_date(ctx, ctx.local_now.date() + timedelta(days=days), ctx.local_now.time())


def _day_word(ctx: _Ctx) -> Phrase:
    """today at 18:00 / tonight at 8 (20:00) / tomorrow at 7 / the day after tomorrow at 9am."""
    ctx.refuse("window", "minute")
    word = ctx.group("day") or ""
    offset = {"today": 0, "tonight": 0, "tomorrow": 1}.get(word.removeprefix("the "), 2)
    times = ctx.clauses.times
    if word == "tonight" and len(times) == 1 and 1 <= times[0].hour < 12:
        times = (times[0].replace(hour=times[0].hour + 12),)
    return _on_date(ctx, ctx.local_now.date() + timedelta(days=offset), None, times)


def _next_weekday(ctx: _Ctx) -> Phrase:
    """next tuesday at 9 (the first Tuesday after today) / on friday at 17:00 / this
    friday at 5pm / saturday at 10 (the next one whose time is still ahead)."""
    ctx.refuse("window", "minute")
    day = weekday_of(ctx.group("wd") or "")
    assert day is not None
    today = ctx.local_now.date()
    ahead = (day - today.weekday()) % 7
    if ctx.group("next"):
        return _on_date(ctx, today + timedelta(days=ahead or 7), None)
    result = _on_date(ctx, today + timedelta(days=ahead), None)
    if isinstance(result, OneTime) and result.at <= ctx.now:
        return _on_date(ctx, today + timedelta(days=7), None)
    return result


def _calendar_date(ctx: _Ctx) -> Phrase:
    """March 3 at 5pm / on 3 March at 17:00 / the 5th of next month at noon / 2026-03-03
    at 9 — the next such date (this year's if still ahead)."""
    ctx.refuse("window", "minute")
    when = parse_when(ctx.clauses.rest, ctx.local_now.date())
    assert when is not None and when.day is not None
    if when.period:
        raise PhraseError(
            f"{ctx.text!r} names a whole period; give the day, e.g. 'June 1 at 9am', or "
            "repeat with 'every month on the 1st at 9am'"
        )
    return _on_date(ctx, when.day, None)


def _at_only(ctx: _Ctx) -> Phrase:
    """at 9pm / at 7:30 — the next occurrence (today if still ahead, else tomorrow)."""
    ctx.refuse("window", "minute")
    today = ctx.local_now.date()
    result = _on_date(ctx, today, None)
    if isinstance(result, OneTime) and result.at <= ctx.now:
        return _on_date(ctx, today + timedelta(days=1), None)
    return result


def _on_date(
    ctx: _Ctx, day: date, fallback: time | None, times: tuple[time, ...] | None = None
) -> OneTime:
    times = ctx.clauses.times if times is None else times
    if len(times) > 1:
        raise PhraseError(f"{ctx.text!r} gives {len(times)} times for one run; give one")
    at = times[0] if times else (ctx.default_time or fallback)
    if at is None:
        raise PhraseError(f"{ctx.text!r} needs a time of day, e.g. '{ctx.text} at 9am'")
    local = datetime.combine(day, at).replace(tzinfo=ctx.zone, fold=0)
    return OneTime(local.astimezone(UTC))


# -- the grammar -------------------------------------------------------------------------
_DAYS = rf"(?P<days>{DAY_LIST})"
_ONE_DATE = rf"(?:the )?(?:{MONTH_NAME} \d{{1,2}}(?:st|nd|rd|th)?|\d{{1,2}}(?:st|nd|rd|th)? (?:of )?{MONTH_NAME})"
_YEAR_DAY = rf"(?:{_ONE_DATE}|{NTH_DAY})"
_DATE = rf"(?P<date>{_YEAR_DAY})"
_DATES = rf"(?P<date>{_YEAR_DAY}(?:(?:, | and |, and ){_YEAR_DAY})+)"

GRAMMAR: tuple[tuple[re.Pattern[str], Callable[[_Ctx], Phrase], str], ...] = tuple(
    (re.compile(pattern), builder, examples)
    for pattern, builder, examples in (
        (
            rf"every (?:{_N} )?(?P<unit>second|minute|hour)s?(?: on {_DAYS})?",
            _every_unit,
            "every 15 minutes; every 2 hours; every hour on the half hour; "
            "every 15 minutes between 9 and 17 on weekdays; every 1.5 hours; every half hour",
        ),
        (
            rf"(?:every (?:{_N} )?days?|daily)",
            _every_days,
            "every day at 7:15; daily at 9am; every other day at 16:00; twice a day at 8 and 20; "
            "every day at 6:30 except weekends; every morning at 7",
        ),
        (
            rf"(?:every (?:{_N} )?weeks?|weekly)(?: on {_DAYS})?",
            _every_weeks,
            "every 2 weeks on monday and thursday at 8:00; weekly on friday at 5pm",
        ),
        (
            rf"every (?:{_N} )?{_DAYS}",
            _every_weekdays,
            "every weekday at 9am; every mon-thu at 18:30; every other tuesday at 9; "
            "at 8am every workday; every saturday evening at 7",
        ),
        (
            rf"(?:on )?{_DAYS}",
            _every_weekdays,
            "on weekends at 10; mondays and thursdays at 8 (plural: repeating)",
        ),
        (
            rf"(?:every (?:{_N} )?months?|monthly)(?: on (?P<spec>.+))?",
            _every_months,
            "every month on the 15th at 10; every 2 months on the last day; "
            "monthly on the first monday at 9",
        ),
        (
            r"(?:every quarter|quarterly)(?: on (?P<spec>.+))?"
            r"|(?:on )?(?:the )?(?P<spec2>.+) of (?:the|every|each) quarter",
            _quarterly,
            "every quarter on the 1st at 9; the last business day of the quarter",
        ),
        (
            rf"(?:every (?:{_N} )?years? on |(?:every|annually on|yearly on) ){_DATE}",
            _yearly,
            "every year on March 3 at 9; every March 3 at 9am; annually on 24 december; "
            "every year on the second monday of october at 9",
        ),
        (
            rf"(?:on )?(?P<date>{NTH_DAY})",
            _yearly,
            "the second monday of october at 9 (a weekday of a named month: every year)",
        ),
        (
            rf"(?:every (?:{_N} )?years? on |(?:every|annually on|yearly on|on) )?{_DATES}",
            _yearly,
            "on March 1, June 1 and September 1 at 9am (several dates: repeating)",
        ),
        (
            r"(?:on |every )?(?P<spec>(?:the )?.+?)(?: of (?:the|every|each) month| every month| monthly)?",
            _of_the_month,
            "first monday of the month at 10; last friday of the month; on the 1st and 15th at 9; "
            "last business day of the month at 16; the 10th and the last day of the month at 9",
        ),
        (
            r"in (?:(?P<half>half an hour)|(?P<n>\d+(?:\.\d+)?|a|an|one|two|three|four|five|six"
            r"|seven|eight|nine|ten|eleven|twelve) (?P<unit>minute|hour|day|week)s?)",
            _in,
            "in 2 hours; in 30 minutes; in half an hour; in 3 days at 9; in two and a half hours",
        ),
        (
            r"(?P<day>today|tonight|tomorrow|(?:the )?day after tomorrow)",
            _day_word,
            "today at 18:00; tomorrow at 7; tonight at 8; tomorrow morning at 8",
        ),
        (
            rf"(?:(?P<next>next) |this |on )?(?P<wd>{'|'.join(WEEKDAYS)}|mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun)",
            _next_weekday,
            "next tuesday at 9; on friday at 17:00",
        ),
        (
            r"(?:on )?(?P<date>.+)",
            _calendar_date,
            "March 3 at 5pm; on 3 March at 17:00; the 5th of next month at noon",
        ),
        (r"", _at_only, "at 9pm"),
    )
)


def phrase_zone(text: str) -> str | None:
    """The IANA zone a phrase names ('(Berlin)', 'Europe/Paris', 'New York time'), if any.

    Raises PhraseError for a zone in parentheses that is not one.
    """
    return zone_in(normalize(text))


def parse_phrase(
    text: str, *, zone: ZoneInfo, now: datetime, default_time: time | None = None
) -> Phrase:
    """A phrase in ``zone`` said at ``now`` → Elapsed, WallClock, Rule or OneTime.

    ``default_time`` is the time of day when the phrase gives none (e.g. the task's
    scheduled_time); without it repeating phrases take now's minute. A zone named in the
    phrase must be ``zone`` (the caller reads it first with ``phrase_zone``). Raises
    PhraseError.
    """
    s = times_a_week(normalize(text))
    if len(re.findall(r"\bevery\b", s)) > 1:
        raise PhraseError(
            f"{text!r} says two schedules, and a task has one: say it as two tasks (e.g. "
            "one with 'every weekday at 08:00', one with 'every weekend at 10:00'), or as "
            "one RRULE with a line per schedule"
        )
    now = now.astimezone(UTC)
    local_now = now.astimezone(zone).replace(tzinfo=None)
    rest, free = take_clauses(s, local_now.date())
    if free.zone is not None and free.zone != zone.key:
        raise PhraseError(
            f"{text!r} names the zone {free.zone} but the task's timezone is {zone.key}; "
            f"set timezone to {free.zone!r} or leave the zone out of the phrase"
        )
    clauses = _clauses(rest, free)
    elapsed = re.match(r"every (?:\S+ )?(?:second|minute|hour)s?\b", clauses.rest) is not None
    start = free.start
    if start is not None and start.at is not None and not elapsed:
        if clauses.times and start.day is None:
            raise PhraseError(f"{text!r} gives two times of day; give one 'at …'")
        if not clauses.times:  # "every day starting at 7am": the time of the runs
            clauses = replace(clauses, times=(start.at,))
        if start.day is None:
            start = None
    until = free.until
    if until is not None and until.day and until.at and not clauses.times and not elapsed:
        # "every day until March 31 at 9am": 9am is the runs' time; the end is that day.
        clauses = replace(clauses, times=(until.at,))
        free = replace(free, until=replace(until, at=None))
    try:
        origin = _start_at(start, local_now, elapsed)
        result = _build(text, clauses, zone, now, default_time, origin)
        return _with_limits(text, result, free, clauses, origin, local_now, default_time)
    except OverflowError:  # "in 99999999999 days": the request, not the scheduler, is wrong
        raise PhraseError(
            f"{text!r} reaches beyond the year 9999; give a time within it, e.g. 'in 3 days' "
            "or an ISO 8601 date such as 2027-03-01T09:00"
        ) from None


def _build(
    text: str,
    clauses: _Clauses,
    zone: ZoneInfo,
    now: datetime,
    default_time: time | None,
    origin: datetime | None,
) -> Phrase:
    """The first row of GRAMMAR that reads the rest of the phrase builds the schedule."""
    rest = clauses.rest
    month_error: PhraseError | None = None
    for pattern, builder, _ in GRAMMAR:
        match = pattern.fullmatch(rest)
        if match is None:
            continue
        if builder is _at_only and not clauses.times:
            continue
        if builder is _quarterly and match["spec2"]:
            rest2 = re.fullmatch(r"(?P<spec>.+)", match["spec2"])
            assert rest2 is not None
            match = rest2
        if builder is _of_the_month and (problem := _month_problem(match["spec"])):
            month_error = month_error or problem
            continue
        if builder is _every_weekdays and not rest.startswith("every") and not _plural(rest):
            continue  # "on friday" is one day (one-time); "on fridays", "weekdays" repeat
        if builder is _calendar_date and not _is_date(rest, now.astimezone(zone).date()):
            continue
        excepted = clauses.free.excluded
        if excepted and builder not in (_every_unit, _every_days, _every_weeks, _every_weekdays):
            raise PhraseError(
                f"{text!r}: 'except' with days of the week fits schedules that run on days "
                "of the week (e.g. 'every day at 9am except weekends'); for other dates use "
                "except_dates (local dates YYYY-MM-DD)"
            )
        return builder(_Ctx(text, match, clauses, zone, now, default_time, origin))
    if month_error is not None and re.search(r"month|business|\d(?:st|nd|rd|th)\b|\blast\b", rest):
        raise month_error
    raise PhraseError(f"{text!r} is not understood; accepted forms: {EXAMPLES}")


def _is_date(rest: str, today: date) -> bool:
    try:
        when = parse_when(rest, today)
    except PhraseError:
        return True  # a date that does not exist: let the builder say so
    return when is not None and when.day is not None and when.at is None


def _start_at(start: When | None, local_now: datetime, elapsed: bool) -> datetime | None:
    """The local start of a 'starting …' clause: its date at its time, or at 00:00 (the
    time of the runs is the schedule's). A time alone is its next occurrence."""
    if start is None:
        return None
    if start.day is None:
        assert start.at is not None and elapsed
        today = datetime.combine(local_now.date(), start.at)
        return today if today > local_now else today + timedelta(days=1)
    assert start.day is not None
    return datetime.combine(start.day, start.at or time())


def _with_limits(
    text: str,
    result: Phrase,
    free: Clauses,
    clauses: _Clauses,
    origin: datetime | None,
    local_now: datetime,
    default_time: time | None,
) -> Phrase:
    """Attach the start, end, run count, zone and notes the phrase said to its result."""
    notes = reading_notes(text.lower()) + free.notes + clauses.notes
    said_limits = origin is not None or free.until is not None or free.run_for is not None
    said_limits = said_limits or bool(free.except_dates)
    if isinstance(result, OneTime):
        if said_limits or free.max_runs is not None:
            raise PhraseError(
                f"{text!r} runs once; a start, an end, a number of runs or excepted dates "
                "fit repeating schedules (e.g. 'every day at 9am until June 30')"
            )
        return replace(result, limits=Limits(zone=free.zone, notes=notes))
    if origin is not None and isinstance(result, WallClock) and result.at is None:
        # No time in the phrase: the runs keep the caller's time (or now's minute).
        at = default_time or local_now.time().replace(second=0, microsecond=0)
        origin = datetime.combine(origin.date(), at)
    # An end counted from a start date counts from that day's beginning, whichever time
    # the start clause carried ("starting Feb 4 at 9am for 3 weeks" = Feb 4 … Feb 24).
    base = local_now if origin is None else origin
    if free.start is not None and free.start.day is not None:
        base = datetime.combine(base.date(), time())
    end = _end_at(free, base)
    if end is not None and free.until is not None and free.until.period:
        notes += (
            f"the end is read as before {end.date() + timedelta(days=1)} (no run on or after "
            "that day); to include that month or week say 'until the end of …'",
        )
    limits = Limits(origin, end, free.max_runs, free.zone, free.except_dates, notes)
    return replace(result, limits=limits)


def _end_at(free: Clauses, base: datetime) -> datetime | None:
    """The last local time a run may have: 'until June 30' (through that day), 'until
    June' (before it), 'until 5pm' (the next 17:00), 'for 2 weeks' (from the start)."""
    if free.run_for is not None:
        return base + free.run_for
    until = free.until
    if until is None:
        return None
    if until.day is None:
        assert until.at is not None
        today = datetime.combine(base.date(), until.at)
        return today if today > base else today + timedelta(days=1)
    if until.at is not None:
        return datetime.combine(until.day, until.at)
    day = until.day - timedelta(days=1) if until.period else until.day
    return datetime.combine(day, time(23, 59, 59))


def _month_problem(spec: str | None) -> PhraseError | None:
    """None if the text names days of a month ('the 1st and 15th', 'last friday', …)."""
    try:
        month_days(spec or "")
    except PhraseError as exc:
        return exc
    return None


def _plural(days: str) -> bool:
    """Days said as repeating: plurals, weekday(s)/weekend(s), or several days."""
    words = re.findall(r"[a-z]+", days)
    names = [w for w in words if w not in ("on", "and", "or", "to", "through", "thru")]
    several = len(names) > 1 or "-" in days
    return several or all(w.endswith("s") or w in ("weekday", "weekend") for w in names)


def examples() -> list[tuple[str, str]]:
    """(builder name, examples) for every row of GRAMMAR, for docs and tests."""
    return [(builder.__name__, text) for _, builder, text in GRAMMAR]
