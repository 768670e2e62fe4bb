"""Day selections and times of day as RRULE lines: the target the grammar compiles to.

A schedule that is not a plain every-N form becomes one or more RRULE lines sharing a
DTSTART; their union is the schedule (RFC 5545 has no "8:00 and 20:30" in one line when
the minutes differ). This module knows how days of the month, of the quarter and of the
year, and several times a day, are written as such lines. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from scheduler_service.clock.rrule import checked_rrule
from scheduler_service.clock.zones import localize
from scheduler_service.schedules.words import (
    DAY_WORD,
    MAX_DAYS,
    MONTHS,
    RRULE_DAYS,
    PhraseError,
    month_of,
    weekday_of,
)


@dataclass(frozen=True)
class DaySet:
    """The day part of one RRULE line: FREQ, BY-day parts, which candidate day to keep.

    ``pick`` 1 keeps the first candidate day of each period, -1 the last (BYSETPOS), 0 all.
    """

    freq: str
    parts: str = ""
    pick: int = 0


def time_groups(
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


def join(values: tuple[int, ...]) -> str:
    return ",".join(str(v) for v in values)


def byday(days: tuple[int, ...]) -> str:
    """Weekdays (0=Monday) as an RRULE BYDAY part: (0, 3) → 'BYDAY=MO,TH'."""
    return "BYDAY=" + ",".join(RRULE_DAYS[d] for d in days)


def rule_lines(days: list[DaySet], interval: int, times: tuple[time, ...]) -> list[str]:
    """RRULE lines for every day part × every group of times (DTSTART is the caller's)."""
    lines: list[str] = []
    for day in days:
        for hours, minutes, seconds in time_groups(times):
            parts = [f"FREQ={day.freq}"]
            if interval > 1:
                parts.append(f"INTERVAL={interval}")
            if day.freq == "WEEKLY":
                parts.append("WKST=MO")
            if day.parts:
                parts.append(day.parts)
            parts += [f"BYHOUR={join(hours)}", f"BYMINUTE={join(minutes)}"]
            parts.append(f"BYSECOND={join(seconds)}")
            size = len(hours) * len(minutes)
            if day.pick:
                positions = range(1, size + 1) if day.pick > 0 else range(-size, 0)
                parts.append(f"BYSETPOS={join(tuple(positions))}")
            lines.append(";".join(parts))
    return lines


def first_local(lines: list[str], after: datetime, zone: ZoneInfo) -> datetime:
    """The first local wall time of the lines (INTERVAL 1) whose instant is at or after
    ``after``'s (both read by the wall-clock rule, ``clock.zones.localize``).

    Compared as instants, not as wall times: a time in a daylight-saving gap is read
    with the offset before the change, so just after a change at midnight (Santiago:
    00:00 → 01:00), "00:15" of that day is 01:15 — still ahead of a now of 01:00 — though
    its wall time is behind it."""
    start = datetime.combine(after.date(), time()) - GAP_SLACK
    target = localize(after, zone)
    found = []
    for line in lines:
        single = re.sub(r";INTERVAL=\d+", "", line)
        rule = checked_rrule(f"RRULE:{single}", start)
        for candidate in rule.xafter(after - GAP_SLACK, count=GAP_CANDIDATES, inc=True):
            if localize(candidate, zone) >= target:
                found.append(candidate)
                break
    if not found:
        raise PhraseError("the phrase has no run after now")
    return min(found)


# A wall time up to this far behind ``after`` may still be ahead of it in real time (the
# longest daylight-saving gap in use is one hour; two hours were used in the past).
GAP_SLACK = timedelta(hours=2)
GAP_CANDIDATES = 200  # wall times looked at within the slack before one is ahead


def month_days(spec: str, *, quarter: bool = False) -> list[DaySet]:
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
        first = ordinal(m["o"]) == 1
        if ordinal(m["o"]) not in (1, -1):
            raise PhraseError(f"'{spec}': say 'first business day' or 'last business day'")
        return [
            DaySet(
                "MONTHLY", (head if first else tail) + "BYDAY=MO,TU,WE,TH,FR", 1 if first else -1
            )
        ]
    if m := re.fullmatch(
        rf"(?P<os>{ordinals}(?:(?:, | and |, and ){ordinals})*) (?P<d>{DAY_WORD})", spec
    ):
        day = weekday_of(m["d"])
        if day is None:
            raise PhraseError(f"{m['d']!r} is not a day of the week")
        numbers = [ordinal(o) for o in re.split(r", and |, | and ", m["os"])]
        if any(not (1 <= abs(n) <= 5) for n in numbers):
            raise PhraseError(f"'{spec}': a weekday of the month is first … fifth or last")
        return [
            DaySet("MONTHLY", (head if n > 0 else tail) + f"BYDAY={n:+d}{RRULE_DAYS[day]}")
            for n in numbers
        ]
    out: list[DaySet] = []
    plain: list[int] = []
    for item in re.split(r", and |, | and ", spec):
        item = re.sub(r"^(?:the )", "", item.strip())
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
                    DaySet("MONTHLY", head + f"BYMONTHDAY={join(tuple(range(28, n + 1)))}", -1)
                )
        elif m := re.fullmatch(r"(?P<o>last|second-to-last|third-to-last)(?: day)?", item):
            out.append(DaySet("MONTHLY", tail + f"BYMONTHDAY={ordinal(m['o'])}"))
        else:
            raise PhraseError(
                f"{item!r} is not a day of the month; use e.g. 'the 15th', 'the 1st and 15th', "
                "'the last day', 'the first monday', 'the last business day'"
            )
    if plain:
        out.insert(0, DaySet("MONTHLY", head + f"BYMONTHDAY={join(tuple(sorted(set(plain))))}"))
    return out


def ordinal(word: str) -> int:
    named = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "last": -1}
    named |= {"second-to-last": -2, "third-to-last": -3, "next-to-last": -2}
    if word in named:
        return named[word]
    return int(re.sub(r"\D", "", word))


def month_date(spec: str) -> tuple[int, int]:
    """'march 3' '3 march' 'the 3rd of march' 'mar 3rd' → (month, day); the date must exist."""
    spec = re.sub(r"^(?:on )?(?:the )?", "", spec.strip())
    m = re.fullmatch(r"(?P<mon>[a-z]{3,})\.? (?P<d>\d{1,2})(?:st|nd|rd|th)?", spec) or re.fullmatch(
        r"(?P<d>\d{1,2})(?:st|nd|rd|th)? (?:of )?(?P<mon>[a-z]{3,})", spec
    )
    month = month_of(m["mon"]) if m else None
    if m is None or month is None:
        raise PhraseError(f"{spec!r} is not a date of the year; use e.g. 'March 3' or '3 March'")
    day = int(m["d"])
    if not 1 <= day <= MAX_DAYS[month - 1]:
        raise PhraseError(
            f"{MONTHS[month - 1].capitalize()} {day} does not exist; "
            f"{MONTHS[month - 1].capitalize()} has {MAX_DAYS[month - 1]} days at most"
        )
    return month, day


_NTH_OF_MONTH = re.compile(
    r"(?:the )?(?P<o>first|second|third|fourth|fifth|last|\d(?:st|nd|rd|th)) "
    rf"(?P<d>{DAY_WORD}) (?:of|in) (?P<mon>[a-z]{{3,}}\.?)"
)


def year_days(spec: str) -> list[DaySet]:
    """Days of the year → YEARLY lines: 'March 3', '1 june', 'March 1, June 1 and
    September 1', 'the second Monday of October', 'the last friday in november'."""
    items = re.split(r", and |, | and ", re.sub(r"^(?:on )?", "", spec.strip()))
    out: list[DaySet] = []
    for item in items:
        if m := _NTH_OF_MONTH.fullmatch(item.strip()):
            month, day = month_of(m["mon"]), weekday_of(m["d"])
            n = ordinal(m["o"])
            if month is None or day is None or not 1 <= abs(n) <= 5:
                raise PhraseError(
                    f"{item!r} is not a day of the year; e.g. 'second Monday of October'"
                )
            out.append(DaySet("YEARLY", f"BYMONTH={month};BYDAY={n:+d}{RRULE_DAYS[day]}"))
        else:
            month, mday = month_date(item)
            out.append(DaySet("YEARLY", f"BYMONTH={month};BYMONTHDAY={mday}"))
    return out
