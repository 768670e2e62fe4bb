"""The phrase grammar of ``custom_schedule``: what people say → a schedule to evaluate.

Pure: no I/O, no APScheduler; ``now`` and the zone are passed in. A phrase becomes one of

- ``Elapsed``   — "every 15 minutes": real time, as the existing elapsed schedules;
- ``WallClock`` — "every weekday at 9am": the existing every-N days/weeks/months form;
- ``Rule``      — anything else that repeats: RFC 5545 RRULE lines (one DTSTART, one or
  more RRULEs whose union is the schedule), evaluated over local wall time by
  ``LocalRRuleTrigger``;
- ``OneTime``   — "in 2 hours", "tomorrow at 7": one instant.

``GRAMMAR`` below is the whole language: a table of patterns, each with the builder that
turns a match into a schedule and examples of what it accepts (docs/time.md lists them).
Before the table is consulted, the clauses that may stand anywhere are taken out of the
phrase: the times ("at 8 and 20"), a window ("between 9 and 17") and a minute of the hour
("on the half hour").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from dateutil import rrule as du

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
RRULE_DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
_MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
EXAMPLES = (
    '"every weekday at 9am", "every monday and thursday at 8:00", "every mon-thu at 18:30", '
    '"every other tuesday at 9", "twice a day at 8 and 20", "first monday of the month at 10", '
    '"last friday of the month at 17:00", "on the 1st and 15th at 9", '
    '"last business day of the month at 16", "every year on March 3 at 9", '
    '"every quarter on the 1st at 9", "every 15 minutes between 9 and 17 on weekdays", '
    '"every hour on the half hour", "every 2 hours", "in 2 hours", "tomorrow at 7", '
    '"next tuesday at 9"'
)


class PhraseError(ValueError):
    """The phrase is not accepted; the message says what was wrong and what is."""


# -- results -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Elapsed:
    """Every ``interval`` seconds/minutes/hours of real time (first run one interval on)."""

    unit: Literal["seconds", "minutes", "hours"]
    interval: int


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


@dataclass(frozen=True)
class Rule:
    """RRULE lines sharing one DTSTART (naive local wall time); their union is the schedule."""

    rules: tuple[str, ...]
    dtstart: datetime

    def text(self) -> str:
        lines = [f"DTSTART:{self.dtstart:%Y%m%dT%H%M%S}"]
        return "\n".join(lines + [f"RRULE:{rule}" for rule in self.rules])


@dataclass(frozen=True)
class OneTime:
    """A single run at ``at`` (aware, UTC)."""

    at: datetime


Phrase = Elapsed | WallClock | Rule | OneTime


# -- clocks and days ---------------------------------------------------------------------
CLOCK = r"(?:noon|midnight|\d{1,2}(?::\d{2}){0,2}(?: ?[ap]m)?)"
_CLOCK_PARTS = re.compile(r"^(\d{1,2})(?::(\d{2}))?(?::(\d{2}))?(?: ?([ap]m))?$")
_TIMES = rf"{CLOCK}(?:(?:\s*,\s*(?:and\s+)?|\s+and\s+){CLOCK})*"
_DAY_WORD = (  # names, 3+ letter prefixes, plurals
    "|".join("|".join(name[:k] + "s?" for k in range(len(name), 2, -1)) for name in WEEKDAYS)
    + "|weekdays?|weekends?|business days?"
)
_DAY_LIST = rf"(?:{_DAY_WORD})(?:(?:\s*,\s*(?:and\s+)?|\s+and\s+|\s+or\s+|\s*-\s*|\s+(?:to|through|thru)\s+)(?:{_DAY_WORD}))*"
_N = r"(?P<n>\d+|other|a|an|one|two|three|four|five|six)"
_NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


def parse_clock(token: str) -> time:
    """'9am' '9:30 pm' '12am' (00:00) '12pm' (12:00) 'noon' 'midnight' '18:00' '8' → a time.

    Raises PhraseError for anything else (25:00, 13pm, 9:75).
    """
    text = " ".join(token.lower().replace(".", "").split()).replace("a m", "am")
    text = text.replace("p m", "pm")
    if text in ("noon", "midday"):
        return time(12, 0)
    if text == "midnight":
        return time(0, 0)
    match = _CLOCK_PARTS.match(text)
    if match:
        hour, minute, second = int(match[1]), int(match[2] or 0), int(match[3] or 0)
        if match[4]:  # 12-hour clock; 0am and 13pm are refused below (hour 99)
            hour = hour % 12 + (12 if match[4] == "pm" else 0) if 1 <= hour <= 12 else 99
        if hour < 24 and minute < 60 and second < 60:
            return time(hour, minute, second)
    raise PhraseError(
        f"{token!r} is not a time of day; use 9am, 9:30 pm, 12pm (noon), 12am (midnight), "
        "noon, midnight or 24-hour 18:00"
    )


def _clock_list(text: str) -> tuple[time, ...]:
    tokens = re.split(r"\s*,\s*(?:and\s+)?|\s+and\s+", text.strip())
    return tuple(sorted({parse_clock(t) for t in tokens if t}))


def weekday_of(word: str) -> int | None:
    """'mon' 'tues' 'thursdays' → 0–6 (3+ letter prefixes, plurals), else None."""
    for candidate in (word, word.removesuffix("s")):
        found = [i for i, name in enumerate(WEEKDAYS) if name.startswith(candidate)]
        if len(candidate) >= 3 and len(found) == 1:
            return found[0]
    return None


def parse_day_list(text: str) -> tuple[int, ...]:
    """'monday and thursday' 'mon-thu' 'weekdays' 'sat, sun' 'fri to mon' → sorted weekdays."""
    days: set[int] = set()
    text = re.sub(r"\s*(?:-|–|\bto\b|\bthrough\b|\bthru\b)\s*", "-", text.strip())
    for item in re.split(r"\s*,\s*(?:and\s+)?|\s+and\s+|\s+or\s+|\s+", text):
        if not item:
            continue
        if "-" in item:
            first, _, last = item.partition("-")
            a, b = weekday_of(first), weekday_of(last)
            if a is None or b is None:
                raise PhraseError(f"{item!r} is not a range of weekdays such as mon-thu")
            days.update((a + k) % 7 for k in range((b - a) % 7 + 1))
        elif item in ("weekday", "weekdays", "business", "day", "days"):
            days.update(range(5))
        elif item in ("weekend", "weekends"):
            days.update((5, 6))
        elif (day := weekday_of(item)) is not None:
            days.add(day)
        else:
            raise PhraseError(f"{item!r} is not a day of the week (monday … sunday)")
    return tuple(sorted(days))


# -- normalising and the clauses that may stand anywhere ---------------------------------
def _normalize(text: str) -> str:
    """Lower case, single spaces, a.m./p.m. → am/pm, 'each' → 'every', no o'clock."""
    s = " ".join(text.lower().replace("–", "-").replace("&", " and ").split())
    s = re.sub(r"\b([ap])\.m\.?", r"\1m", s).rstrip(".").strip()
    s = re.sub(r"\b(\d{1,2}(?::\d{2})?) ?o'?clock\b", r"\1", s)
    s = re.sub(r"\beach\b", "every", s)
    s = re.sub(r"\bevery day except (?:on )?weekends\b", "every weekday", s)
    s = re.sub(r"\bhourly\b", "every hour", s)
    s = re.sub(r"\b(?:biweekly|fortnightly|every fortnight)\b", "every 2 weeks", s)
    s = re.sub(r"\bwork ?days?\b", "weekdays", s)
    s = re.sub(r"\bevery single\b", "every", s)
    s = re.sub(r"\b(second|third|next)[- ]to[- ]last\b", r"\1-to-last", s)
    s = re.sub(r"\bpenultimate\b", "second-to-last", s)
    s = re.sub(
        r"\bon the half[- ]hour\b|\bat half past( every hour| the hour)?\b", "at minute 30", s
    )
    s = re.sub(r"\bon the hour\b", "at minute 0", s)
    s = re.sub(r"\bat :(\d{2})\b", r"at minute \1", s)
    s = re.sub(r"\bat (\d{1,2}) (?:minutes )?past(?: the hour)?\b", r"at minute \1", s)
    return s


@dataclass(frozen=True)
class _Clauses:
    """The phrase without its free clauses, and the clauses themselves."""

    rest: str
    times: tuple[time, ...] = ()
    window: tuple[time, time] | None = None
    minute: int | None = None
    per_day: int | None = None  # "twice a day": how many times were announced


_TIMES_CLAUSE = re.compile(rf"(?:^|\s)at (?P<times>{_TIMES})(?=\s|$)")
_WINDOW = re.compile(
    rf"(?:^|\s)(?:between|from) (?P<a>{CLOCK}) (?:and|to|until|till|-) (?P<b>{CLOCK})(?=\s|$)"
)
_MINUTE = re.compile(r"(?:^|\s)at minute (?P<m>\d{1,2})(?=\s|$)")
_PER_DAY = re.compile(r"^(?P<k>once|twice|three times|four times) (?:a day|daily|per day)\b")


def _clauses(s: str) -> _Clauses:
    found: dict[str, object] = {}
    if m := _MINUTE.search(s):
        minute = int(m["m"])
        if minute > 59:
            raise PhraseError(f"minute {minute} of the hour does not exist; use 0–59")
        found["minute"], s = minute, s[: m.start()] + s[m.end() :]
    if m := _WINDOW.search(s):
        found["window"] = (parse_clock(m["a"]), parse_clock(m["b"]))
        s = s[: m.start()] + s[m.end() :]
    if m := _TIMES_CLAUSE.search(s):
        found["times"], s = _clock_list(m["times"]), s[: m.start()] + s[m.end() :]
    if m := _PER_DAY.match(s.strip()):
        k = {"once": 1, "twice": 2, "three times": 3, "four times": 4}[m["k"]]
        found["per_day"], s = k, "every day" + s.strip()[m.end() :]
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

    @property
    def local_now(self) -> datetime:
        return self.now.astimezone(self.zone).replace(tzinfo=None)

    def group(self, name: str) -> str | None:
        value = self.match.groupdict().get(name)
        return value.strip() if value else None

    def interval(self) -> int:
        n = self.group("n")
        if n is None:
            return 1
        value = 2 if n == "other" else _NUMBER_WORDS.get(n) or int(n)
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

    def refuse(self, *names: str) -> None:
        """Refuse clauses this form cannot use."""
        words = {"times": "'at …'", "window": "'between … and …'", "minute": "a minute of the hour"}
        for name in names:
            if getattr(self.clauses, name):
                raise PhraseError(
                    f"{self.text!r}: {words[name]} does not fit this phrase; accepted: {EXAMPLES}"
                )


# -- compiling day selections and times into RRULE lines ---------------------------------
@dataclass(frozen=True)
class _Days:
    """The day part of one RRULE line: FREQ, BY-day parts, which candidate day to keep.

    ``pick`` 1 keeps the first candidate day of each period, -1 the last (BYSETPOS), 0 all.
    """

    freq: str
    parts: str = ""
    pick: int = 0


def _time_groups(
    times: tuple[time, ...],
) -> list[tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """Times → (hours, minutes, seconds) products: hours that share the same minutes go
    together, so 8:00 and 20:30 need two lines and 9:00…16:45 every 15 minutes one. A time
    with seconds (08:00:30) gets a line of its own."""
    Group = tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    exact: list[Group] = [((t.hour,), (t.minute,), (t.second,)) for t in times if t.second]
    times = tuple(t for t in times if not t.second)
    by_hour: dict[int, set[int]] = {}
    for t in times:
        by_hour.setdefault(t.hour, set()).add(t.minute)
    groups: dict[tuple[int, ...], list[int]] = {}
    for hour, minutes in sorted(by_hour.items()):
        groups.setdefault(tuple(sorted(minutes)), []).append(hour)
    products: list[Group] = [(tuple(h), minutes, (0,)) for minutes, h in groups.items()]
    return products + exact


def _join(values: tuple[int, ...]) -> str:
    return ",".join(str(v) for v in values)


def _rule(ctx: _Ctx, days: list[_Days], interval: int, times: tuple[time, ...]) -> Rule:
    """RRULE lines for every day part × every group of times, anchored at DTSTART.

    DTSTART is local midnight of the first run's date, so an INTERVAL counts periods from
    the period of the first run (its day, its week from Monday, its month, its year).
    """
    lines: list[str] = []
    for day in days:
        for hours, minutes, seconds in _time_groups(times):
            parts = [f"FREQ={day.freq}"]
            if interval > 1:
                parts.append(f"INTERVAL={interval}")
            if day.freq == "WEEKLY":
                parts.append("WKST=MO")
            if day.parts:
                parts.append(day.parts)
            parts += [f"BYHOUR={_join(hours)}", f"BYMINUTE={_join(minutes)}"]
            parts.append(f"BYSECOND={_join(seconds)}")
            size = len(hours) * len(minutes)
            if day.pick:
                positions = range(1, size + 1) if day.pick > 0 else range(-size, 0)
                parts.append(f"BYSETPOS={_join(tuple(positions))}")
            lines.append(";".join(parts))
    first = _first_local(lines, ctx.local_now)
    return Rule(tuple(lines), datetime.combine(first.date(), time()))


def _first_local(lines: list[str], after: datetime) -> datetime:
    """The first local wall time of the lines (INTERVAL 1) at or after ``after``."""
    start = datetime.combine(after.date(), time())
    found = []
    for line in lines:
        single = re.sub(r";INTERVAL=\d+", "", line)
        nxt = du.rrulestr(f"RRULE:{single}", dtstart=start).after(after, inc=True)
        if nxt is not None:
            found.append(nxt)
    if not found:
        raise PhraseError("the phrase has no run after now")
    return min(found)


def _month_days(spec: str, *, quarter: bool = False) -> list[_Days]:
    """The day part of a monthly (or quarterly) phrase → one _Days per RRULE line.

    '15th' '1st and 15th' 'last day' 'second-to-last day' 'first monday' 'last friday'
    'first and third monday' 'first business day' 'last business day'. Days 29–31 run on
    the last day of shorter months (as monthly schedules do). In a quarter, days counted
    from the start fall in its first month, days counted from the end in its last month.
    """
    spec = re.sub(r"^(?:on )?(?:the )?", "", spec.strip())
    spec = re.sub(r" of (?:the|every|each) (?:month|quarter)$", "", spec)
    head = "BYMONTH=1,4,7,10;" if quarter else ""
    tail = "BYMONTH=3,6,9,12;" if quarter else ""
    ordinals = (
        r"(?:first|second|third|fourth|fifth|last|(?:second|third)-to-last|\d(?:st|nd|rd|th))"
    )
    if m := re.fullmatch(rf"(?P<o>{ordinals}) business day", spec):
        first = _ordinal(m["o"]) == 1
        if _ordinal(m["o"]) not in (1, -1):
            raise PhraseError(f"'{spec}': say 'first business day' or 'last business day'")
        return [
            _Days("MONTHLY", (head if first else tail) + "BYDAY=MO,TU,WE,TH,FR", 1 if first else -1)
        ]
    if m := re.fullmatch(
        rf"(?P<os>{ordinals}(?:(?:, | and |, and ){ordinals})*) (?P<d>{_DAY_WORD})", spec
    ):
        day = weekday_of(m["d"])
        if day is None:
            raise PhraseError(f"{m['d']!r} is not a day of the week")
        numbers = [_ordinal(o) for o in re.split(r", and |, | and ", m["os"])]
        if any(not (1 <= abs(n) <= 5) for n in numbers):
            raise PhraseError(f"'{spec}': a weekday of the month is first … fifth or last")
        return [
            _Days("MONTHLY", (head if n > 0 else tail) + f"BYDAY={n:+d}{RRULE_DAYS[day]}")
            for n in numbers
        ]
    out: list[_Days] = []
    plain: list[int] = []
    for item in re.split(r", and |, | and ", spec):
        item = item.strip()
        word_day = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5}.get(
            item.removesuffix(" day")
        )
        if word_day is not None:
            item = str(word_day)
        if m := re.fullmatch(r"(?:day )?(?P<n>\d{1,2})(?:st|nd|rd|th)?", item):
            n = int(m["n"])
            if not 1 <= n <= 31:
                raise PhraseError(f"day {n} is not a day of the month; use 1–31 or 'last day'")
            if n <= 28:
                plain.append(n)
            else:  # the day itself, or the month's last day when the month is shorter
                out.append(
                    _Days("MONTHLY", head + f"BYMONTHDAY={_join(tuple(range(28, n + 1)))}", -1)
                )
        elif m := re.fullmatch(r"(?P<o>last|second-to-last|third-to-last)(?: day)?", item):
            out.append(_Days("MONTHLY", tail + f"BYMONTHDAY={_ordinal(m['o'])}"))
        else:
            raise PhraseError(
                f"{item!r} is not a day of the month; use e.g. 'the 15th', 'the 1st and 15th', "
                "'the last day', 'the first monday', 'the last business day'"
            )
    if plain:
        out.insert(0, _Days("MONTHLY", head + f"BYMONTHDAY={_join(tuple(sorted(set(plain))))}"))
    return out


def _ordinal(word: str) -> int:
    named = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "last": -1}
    named |= {"second-to-last": -2, "third-to-last": -3, "next-to-last": -2}
    if word in named:
        return named[word]
    return int(re.sub(r"\D", "", word))


def _month_date(spec: str) -> tuple[int, int]:
    """'march 3' '3 march' 'the 3rd of march' 'mar 3rd' → (month, day); the date must exist."""
    spec = re.sub(r"^(?:on )?(?:the )?", "", spec.strip())
    m = re.fullmatch(r"(?P<mon>[a-z]{3,})\.? (?P<d>\d{1,2})(?:st|nd|rd|th)?", spec) or re.fullmatch(
        r"(?P<d>\d{1,2})(?:st|nd|rd|th)? (?:of )?(?P<mon>[a-z]{3,})", spec
    )
    months = [i for i, name in enumerate(MONTHS) if m and name.startswith(m["mon"])]
    if m is None or len(months) != 1:
        raise PhraseError(f"{spec!r} is not a date of the year; use e.g. 'March 3' or '3 March'")
    month, day = months[0] + 1, int(m["d"])
    if not 1 <= day <= _MAX_DAYS[month - 1]:
        raise PhraseError(
            f"{MONTHS[month - 1].capitalize()} {day} does not exist; "
            f"{MONTHS[month - 1].capitalize()} has {_MAX_DAYS[month - 1]} days at most"
        )
    return month, day


# -- builders (one per row of GRAMMAR) -----------------------------------------------------
def _every_unit(ctx: _Ctx) -> Phrase:
    """every 15 minutes / every 2 hours / every minute / every 30 seconds (refused by the
    minimum interval) — with a window, days or a minute of the hour: a clock-aligned rule."""
    unit = ctx.group("unit") or ""
    interval = ctx.interval()
    days_text = ctx.group("days")
    c = ctx.clauses
    if c.times:
        raise PhraseError(
            f"{ctx.text!r}: 'at …' does not fit every N minutes or hours; give the first run "
            "in scheduled_time, or a window such as 'every 15 minutes between 9 and 17'"
        )
    if unit == "second" or (c.window is None and days_text is None and c.minute is None):
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
    weekdays = parse_day_list(days_text) if days_text else tuple(range(7))
    day = _Days(
        "DAILY", "" if len(weekdays) == 7 else "BYDAY=" + ",".join(RRULE_DAYS[d] for d in weekdays)
    )
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
    """every day at 7:15 / daily at 9am / every 3 days at 8 / every other day / twice a day at 8 and 20."""
    ctx.refuse("window", "minute")
    interval = ctx.interval()
    times = ctx.times()
    if len(times) == 1 and ctx.clauses.per_day in (None, 1):
        return WallClock("days", interval, ctx.single_time())
    return _rule(ctx, [_Days("DAILY")], interval, times)


def _every_weeks(ctx: _Ctx) -> Phrase:
    """every week / every 2 weeks on monday and thursday at 8:00 / weekly on fri at 5pm."""
    ctx.refuse("window", "minute")
    days = ctx.group("days")
    weekdays = parse_day_list(days) if days else None
    return _weekly(ctx, ctx.interval(), weekdays)


def _every_weekdays(ctx: _Ctx) -> Phrase:
    """every weekday at 9am / every monday and thursday / every mon-thu at 18:30 /
    every other tuesday at 9 / every 3 fridays / on weekends at 10 / every business day."""
    ctx.refuse("window", "minute")
    return _weekly(ctx, ctx.interval(), parse_day_list(ctx.group("days") or ""))


def _weekly(ctx: _Ctx, interval: int, weekdays: tuple[int, ...] | None) -> Phrase:
    times = ctx.times()
    if len(times) == 1:
        return WallClock("weeks", interval, ctx.single_time(), weekdays)
    days = weekdays or (ctx.local_now.weekday(),)
    freq = "WEEKLY" if interval > 1 else "DAILY"
    return _rule(
        ctx, [_Days(freq, "BYDAY=" + ",".join(RRULE_DAYS[d] for d in days))], interval, times
    )


def _every_months(ctx: _Ctx) -> Phrase:
    """every month on the 15th at 10 / every 2 months on the last day / monthly on the
    first monday / every month on the 1st and 15th / every 3 months."""
    ctx.refuse("window", "minute")
    spec = ctx.group("spec")
    return _monthly(ctx, ctx.interval(), spec)


def _of_the_month(ctx: _Ctx) -> Phrase:
    """first monday of the month at 10 / last friday of every month / the last day of the
    month / on the 1st and 15th at 9 / second-to-last day of the month / first business day."""
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
        spec = spec or str(ctx.local_now.day)
    return _rule(ctx, _month_days(spec), interval, times)


def _quarterly(ctx: _Ctx) -> Phrase:
    """every quarter on the 1st at 9 / quarterly on the last day / every quarter on the
    first monday / the last business day of the quarter. Quarters are Jan–Mar, Apr–Jun …"""
    ctx.refuse("window", "minute")
    days = _month_days(ctx.group("spec") or "1st", quarter=True)
    return _rule(ctx, days, 1, ctx.times())


def _yearly(ctx: _Ctx) -> Phrase:
    """every year on March 3 at 9 / every March 3 at 9am / every 2 years on 1 July /
    annually on dec 24 at 18:00. February 29 runs in leap years only (RFC 5545)."""
    ctx.refuse("window", "minute")
    month, day = _month_date(ctx.group("date") or "")
    return _rule(
        ctx, [_Days("YEARLY", f"BYMONTH={month};BYMONTHDAY={day}")], ctx.interval(), ctx.times()
    )


def _in(ctx: _Ctx) -> Phrase:
    """in 2 hours / in 30 minutes / in half an hour / in 3 days (same clock time) /
    in 2 days at 9am. Minutes and hours are real time; days and weeks are calendar days."""
    ctx.refuse("window", "minute")
    n = ctx.group("n") or "1"
    unit = ctx.group("unit") or ""
    if ctx.group("half"):
        return OneTime(ctx.now.astimezone(UTC) + timedelta(minutes=30))
    count = _NUMBER_WORDS.get(n) or int(n)
    if unit in ("minute", "hour"):
        ctx.refuse("times")
        delta = timedelta(minutes=count) if unit == "minute" else timedelta(hours=count)
        return OneTime(ctx.now.astimezone(UTC) + delta)
    days = count * (7 if unit == "week" else 1)
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
_DAYS = rf"(?P<days>{_DAY_LIST})"
_MONTH_NAME = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
_DATE = rf"(?P<date>(?:the )?(?:{_MONTH_NAME} \d{{1,2}}(?:st|nd|rd|th)?|\d{{1,2}}(?:st|nd|rd|th)? (?:of )?{_MONTH_NAME}))"

GRAMMAR: tuple[tuple[re.Pattern[str], Callable[[_Ctx], Phrase], str], ...] = tuple(
    (re.compile(pattern), builder, examples)
    for pattern, builder, examples in (
        (
            rf"every (?:{_N} )?(?P<unit>second|minute|hour)s?(?: on {_DAYS})?",
            _every_unit,
            "every 15 minutes; every 2 hours; every hour on the half hour; "
            "every 15 minutes between 9 and 17 on weekdays",
        ),
        (
            rf"(?:every (?:{_N} )?days?|daily)",
            _every_days,
            "every day at 7:15; daily at 9am; every other day at 16:00; twice a day at 8 and 20",
        ),
        (
            rf"(?:every (?:{_N} )?weeks?|weekly)(?: on {_DAYS})?",
            _every_weeks,
            "every 2 weeks on monday and thursday at 8:00; weekly on friday at 5pm",
        ),
        (
            rf"every (?:{_N} )?{_DAYS}",
            _every_weekdays,
            "every weekday at 9am; every mon-thu at 18:30; every other tuesday at 9",
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
            "every year on March 3 at 9; every March 3 at 9am; annually on 24 december",
        ),
        (
            r"(?:on |every )?(?P<spec>(?:the )?.+?)(?: of (?:the|every|each) month| every month| monthly)?",
            _of_the_month,
            "first monday of the month at 10; last friday of the month; on the 1st and 15th at 9; "
            "last business day of the month at 16",
        ),
        (
            rf"in (?:(?P<half>half an hour)|{_N} (?P<unit>minute|hour|day|week)s?)",
            _in,
            "in 2 hours; in 30 minutes; in half an hour; in 3 days at 9",
        ),
        (
            r"(?P<day>today|tonight|tomorrow|(?:the )?day after tomorrow)",
            _day_word,
            "today at 18:00; tomorrow at 7; tonight at 8",
        ),
        (
            rf"(?:(?P<next>next) |this |on )?(?P<wd>{'|'.join(WEEKDAYS)}|mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun)",
            _next_weekday,
            "next tuesday at 9; on friday at 17:00",
        ),
        (r"", _at_only, "at 9pm"),
    )
)


def parse_phrase(
    text: str, *, zone: ZoneInfo, now: datetime, default_time: time | None = None
) -> Phrase:
    """A phrase in ``zone`` said at ``now`` → Elapsed, WallClock, Rule or OneTime.

    ``default_time`` is the time of day when the phrase gives none (e.g. the task's
    scheduled_time); without it repeating phrases take now's minute. Raises PhraseError.
    """
    s = _normalize(text)
    if re.search(r"\b(?:except|excluding|but not)\b", s):
        raise PhraseError(
            f"{text!r}: days without runs are not part of the phrase; give the schedule "
            "alone (e.g. 'every weekday at 9am') and the days in except_dates as local "
            "dates YYYY-MM-DD (holidays are not known to the scheduler)"
        )
    if len(re.findall(r"\bevery\b", s)) > 1:
        raise PhraseError(
            f"{text!r} says two schedules, and a task has one: say it as two tasks (e.g. "
            "one with 'every weekday at 08:00', one with 'every weekend at 10:00'), or as "
            "one RRULE with a line per schedule"
        )
    if m := re.fullmatch(r"every (?:(\d+) )?seconds?", s):
        return Elapsed("seconds", int(m[1] or 1))
    clauses = _clauses(s)
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
        return builder(_Ctx(text, match, clauses, zone, now.astimezone(UTC), default_time))
    if month_error is not None and re.search(r"month|business|\d(?:st|nd|rd|th)\b|\blast\b", rest):
        raise month_error
    raise PhraseError(f"{text!r} is not understood; accepted forms: {EXAMPLES}")


def _month_problem(spec: str | None) -> PhraseError | None:
    """None if the text names days of a month ('the 1st and 15th', 'last friday', …)."""
    try:
        _month_days(spec or "")
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
