"""Calendar expressions: 'Feb 4', 'the 5th of next month', 'next friday at 2pm', 'June'.

They say when a schedule starts ("starting Feb 4"), ends ("until June") or runs once
("March 3 at 5pm"). A hand-written reader of the few forms people use, rather than a
general date library: every accepted form is listed here and tested, and it needs no
locale data. Dates without a year are the next such date (today included). Pure: the
local ``today`` is passed in.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date, time, timedelta

from dateutil.relativedelta import relativedelta

from scheduler_service.schedules.words import (
    CLOCK,
    MONTH_NAME,
    WEEKDAYS,
    PhraseError,
    month_of,
    number,
    parse_clock,
    weekday_of,
)

FORMS = (
    "'Feb 4', '4 February', 'the 5th of March', '2026-02-04', 'tomorrow', 'next friday', "
    "'monday', 'next week', 'next month', 'June', 'the 5th of next month', 'in 3 days', "
    "each optionally with 'at 9am'"
)


@dataclass(frozen=True)
class When:
    """A local date and/or time of day.

    ``period`` is set when the words name a whole period by its first day ("June", "next
    month", "next week"): a start begins on that day, an end comes before it.
    """

    day: date | None = None
    at: time | None = None
    period: bool = False


_ORDINAL_DAY = r"(?P<d>\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?:,? (?P<y>\d{4}))?"
_DATE_FORMS = (
    re.compile(rf"(?P<mon>{MONTH_NAME}) (?:the )?{_ORDINAL_DAY}{_YEAR}"),
    re.compile(rf"(?:the )?{_ORDINAL_DAY} (?:of )?(?P<mon>{MONTH_NAME}){_YEAR}"),
)


def parse_when(text: str, today: date) -> When | None:
    """``text`` as a date, a date 'at' a time, or a time alone; None if it is not one."""
    s = " ".join(text.strip().split())
    s = re.sub(r"^(?:on|in) ", "", s)
    if m := re.fullmatch(rf"(?:at )?(?P<t>{CLOCK})", s):
        return When(at=parse_clock(m["t"]))
    at: time | None = None
    if m := re.fullmatch(rf"(?P<rest>.+?),? at (?P<t>{CLOCK})", s):
        s, at = m["rest"], parse_clock(m["t"])
    found = _date(s, today)
    if found is None:
        return None
    day, period = found
    return When(day, at, period and at is None)


def _date(s: str, today: date) -> tuple[date, bool] | None:
    """(the date, whether it names a period by its first day), or None."""
    s = s.removeprefix("the ") if s.startswith("the day after") else s
    relative = {"today": 0, "tonight": 0, "tomorrow": 1, "day after tomorrow": 2}
    if s in relative:
        return today + timedelta(days=relative[s]), False
    if m := re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", s):
        return _exists(int(m[1]), int(m[2]), int(m[3])), False
    m = re.fullmatch(r"(?:(?P<next>next) |this )?(?P<wd>[a-z]+)", s)
    if m and (wd := weekday_of(m["wd"])) is not None and m["wd"].rstrip("s") in _day_words():
        ahead = (wd - today.weekday()) % 7
        return today + timedelta(days=ahead or (7 if m["next"] else 0)), False
    if s in ("next week", "the next week", "the following week"):
        return today + timedelta(days=7 - today.weekday()), True
    if s in ("next month", "the next month", "the following month"):
        return today.replace(day=1) + relativedelta(months=1), True
    if s in ("next year", "the next year"):
        return date(today.year + 1, 1, 1), True
    if m := re.fullmatch(r"(?:the )?end of (?:the )?(?P<what>.+)", s):
        start = _date(m["what"], today) if m["what"] != "month" else (today, True)
        if start is None:
            return None
        first = start[0].replace(day=1)
        return first.replace(day=calendar.monthrange(first.year, first.month)[1]), False
    if m := re.fullmatch(rf"(?P<mon>{MONTH_NAME})(?: (?P<y>\d{{4}}))?", s):
        month = month_of(m["mon"])
        if month is not None:
            year = int(m["y"]) if m["y"] else today.year + (month < today.month)
            return date(year, month, 1), True
    if m := re.fullmatch(rf"(?:the )?{_ORDINAL_DAY} of (?:the )?next month", s):
        first = today.replace(day=1) + relativedelta(months=1)
        return _exists(first.year, first.month, int(m["d"])), False
    if m := re.fullmatch(r"(?P<n>\d+|[a-z]+) (?P<unit>day|week|month)s?(?: from now)?", s):
        count = number(m["n"])
        if count is not None:
            step = {"day": relativedelta(days=1), "week": relativedelta(weeks=1)}
            return today + step.get(m["unit"], relativedelta(months=1)) * count, False
    for form in _DATE_FORMS:
        if (m := form.fullmatch(s)) and (month := month_of(m["mon"])) is not None:
            return _next_date(month, int(m["d"]), int(m["y"]) if m["y"] else None, today), False
    if m := re.fullmatch(rf"(?:the )?{_ORDINAL_DAY}", s):
        return _next_month_day(int(m["d"]), today), False
    return None


def _day_words() -> set[str]:
    return {name[:k] for name in WEEKDAYS for k in range(3, len(name) + 1)}


def _exists(year: int, month: int, day: int) -> date:
    try:
        return date(year, month, day)
    except ValueError:
        raise PhraseError(
            f"{year:04d}-{month:02d}-{day:02d} does not exist "
            f"({calendar.month_name[month] if 1 <= month <= 12 else 'no such month'})"
        ) from None


def _next_date(month: int, day: int, year: int | None, today: date) -> date:
    """The date ``month``/``day`` of ``year``, or the next one from today (29 February:
    the next leap year)."""
    if year is not None:
        return _exists(year, month, day)
    for y in range(today.year, today.year + 9):
        if day <= calendar.monthrange(y, month)[1] and date(y, month, day) >= today:
            return date(y, month, day)
    raise PhraseError(f"{calendar.month_name[month]} {day} does not exist")


def _next_month_day(day: int, today: date) -> date:
    """The next date (today included) whose day of the month is ``day``."""
    if not 1 <= day <= 31:
        raise PhraseError(f"day {day} is not a day of the month; use 1–31")
    first = today.replace(day=1)
    for k in range(0, 13):
        month = first + relativedelta(months=k)
        if day <= calendar.monthrange(month.year, month.month)[1]:
            candidate = month.replace(day=day)
            if candidate >= today:
                return candidate
    raise PhraseError(f"day {day} does not come")  # unreachable: every year has a 31st
