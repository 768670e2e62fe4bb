"""Quartz-style cron (``L``, ``W``, ``#``, ``?``, a seconds field) read as RRULE lines.

Models often write the cron of Java's Quartz scheduler: ``0 0 9 ? * MON-FRI``, ``0 9 L * *``
(the last day of the month), ``0 9 * * 5L`` (the last Friday), ``0 9 * * 1#2`` (the second
Monday), ``0 9 LW * *`` (the last weekday). Standard cron has none of these, so instead of
refusing them they are translated into RRULE lines, which express each of them exactly,
and the reading is stated. What RRULE cannot say exactly is refused with the form to use:
``15W`` (the weekday nearest the 15th) and both day fields restricted at once.

Day-of-week numbers: in a 6- or 7-field expression (Quartz) 1 = Sunday … 7 = Saturday; in
a 5-field expression the standard cron numbering, 0 or 7 = Sunday, 1 = Monday. Names
(``MON``, ``FRI``) mean the same in both. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import time

from scheduler_service.clock.cron import parse_cron
from scheduler_service.schedules.days import DaySet, rule_lines
from scheduler_service.schedules.words import RRULE_DAYS, WEEKDAYS

_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MARKS = re.compile(r"[lw#?]")


@dataclass(frozen=True)
class Translation:
    """RRULE text (lines without DTSTART) and the reading in words."""

    rrule: str
    reading: str


def is_quartz(lowered: str) -> bool:
    """A cron expression with Quartz marks (L, W, #, ?) in its day fields."""
    fields = lowered.split()
    return len(fields) in (5, 6, 7) and any(_MARKS.search(f) for f in fields[-5:])


def translate(text: str) -> Translation:
    """Quartz cron → RRULE lines. Raises ValueError saying what to write instead."""
    fields = text.lower().split()
    quartz = len(fields) in (6, 7)
    second = 0
    if quartz:
        if not fields[0].isdigit() or int(fields[0]) > 59:
            raise ValueError(
                f"seconds field {fields[0]!r}: give one second (0–59); runs closer than a "
                "minute are not scheduled"
            )
        second = int(fields[0])
        if len(fields) == 7 and fields[6] not in ("*", "?"):
            raise ValueError(
                f"year field {fields[6]!r}: a year cannot be given; set end_time to stop"
            )
        fields = fields[1:6]
    if len(fields) != 5:
        raise ValueError("a cron expression has 5 fields (6 or 7 in Quartz: seconds first)")
    minute, hour, dom, month, dow = fields
    plain = parse_cron(f"{minute} {hour} * {month} *")  # minutes, hours, months checked
    day_set, reading = _days(dom, dow, quartz)
    head = f"BYMONTH={','.join(map(str, plain.months))};" if len(plain.months) < 12 else ""
    days = DaySet(day_set.freq, head + day_set.parts, day_set.pick)
    times = tuple(time(h, m, second) for h in plain.hours for m in plain.minutes)
    lines = rule_lines([days], 1, times)
    return Translation("\n".join(f"RRULE:{line}" for line in lines), reading)


def _days(dom: str, dow: str, quartz: bool) -> tuple[DaySet, str]:
    """The day fields → one day set and its words."""
    dom_free, dow_free = dom in ("?", "*"), dow in ("?", "*")
    if not dom_free and not dow_free:
        raise ValueError(
            "both day fields are restricted; Quartz needs '?' in one of them (standard cron "
            "would run when either matches)"
        )
    if not dom_free:
        return _month_day(dom)
    if not dow_free:
        return _weekday(dow, quartz)
    return DaySet("DAILY"), "every day"


def _month_day(dom: str) -> tuple[DaySet, str]:
    if dom == "l":
        return DaySet("MONTHLY", "BYMONTHDAY=-1"), "L: the last day of the month"
    if m := re.fullmatch(r"l-(\d{1,2})", dom):
        back = int(m[1])
        if not 1 <= back <= 30:
            raise ValueError(f"{dom!r}: L-n counts 1–30 days back from the last day")
        return DaySet(
            "MONTHLY", f"BYMONTHDAY={-back - 1}"
        ), f"L-{back}: {back} day(s) before the last day"
    weekdays = "BYDAY=MO,TU,WE,TH,FR"
    if dom == "lw":
        return DaySet("MONTHLY", weekdays, -1), "LW: the last weekday (Mon–Fri) of the month"
    if dom == "1w":
        return (
            DaySet("MONTHLY", f"BYMONTHDAY=1,2,3;{weekdays}", 1),
            "1W: the first weekday (Mon–Fri) of the month",
        )
    if "w" in dom:
        raise ValueError(
            f"{dom!r} (the weekday nearest a day) cannot be scheduled exactly; use LW, 1W, "
            "or a phrase such as 'last business day of the month at 9'"
        )
    days = parse_cron(f"0 0 {dom} * *").days  # checks the field
    return DaySet("MONTHLY", f"BYMONTHDAY={','.join(map(str, days))}"), f"days {dom}"


def _weekday(dow: str, quartz: bool) -> tuple[DaySet, str]:
    """'5l' 'fril' (last Friday), '1#2' 'mon#2' (second Monday), or a plain list."""
    if m := re.fullmatch(r"(\w{1,3})(l|#([1-5]))", dow):
        day = _day(m[1], quartz)
        n = -1 if m[2] == "l" else int(m[3])
        which = "last" if n == -1 else ("first", "second", "third", "fourth", "fifth")[n - 1]
        name = WEEKDAYS[day].capitalize()
        reading = f"{dow.upper()}: the {which} {name} of the month"
        if m[1].isdigit():
            numbering = "1 = Sunday … 7 = Saturday" if quartz else "0 or 7 = Sunday, 1 = Monday"
            reading += (
                f" (day numbers as in {'Quartz' if quartz else 'standard cron'}: {numbering})"
            )
        return DaySet("MONTHLY", f"BYDAY={n:+d}{RRULE_DAYS[day]}"), reading
    if _MARKS.search(dow):
        raise ValueError(f"day-of-week field {dow!r}: use e.g. 5L, FRIL, 1#2 or MON#2")
    if quartz and re.search(r"\d", dow):  # Quartz 1=Sunday … 7=Saturday → cron 0–6
        dow = re.sub(
            r"(?<![/\d])\d(?!\d)", lambda d: str(int(d[0]) - 1) if d[0] != "0" else "x", dow
        )
        if "x" in dow:
            raise ValueError("Quartz day-of-week numbers are 1 (Sunday) … 7 (Saturday)")
    days = parse_cron(f"0 0 * * {dow}").weekdays
    parts = "BYDAY=" + ",".join(RRULE_DAYS[d] for d in days)
    return DaySet("WEEKLY", parts), "on " + ", ".join(WEEKDAYS[d].capitalize() for d in days)


def _day(token: str, quartz: bool) -> int:
    """A day-of-week token → 0=Monday … 6=Sunday, in the expression's numbering."""
    if token in _NAMES:
        return (_NAMES.index(token) + 6) % 7
    if token.isdigit():
        value = int(token)
        if quartz and 1 <= value <= 7:
            return (value + 5) % 7  # 1=Sunday → 6
        if not quartz and 0 <= value <= 7:
            return (value + 6) % 7  # 0/7=Sunday → 6, 1=Monday → 0
    raise ValueError(f"{token!r} is not a day of the week here")
