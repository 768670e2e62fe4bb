"""The clauses that may stand anywhere in a phrase, taken out before the grammar reads it.

People and models put the zone, the excepted days, the start, the end and the part of
the day first, last or in between: "every day at 6:30 except weekends", "(Berlin) every
weekday at 9", "every 3 weeks on Thursday starting Feb 4", "every 10 minutes for the next
hour", "every saturday evening at 7". Each clause is found by its keyword, read with the
longest run of words that makes sense after it, and removed; what remains goes to the
grammar table in ``phrases``. Pure: the local ``today`` is passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date

from dateutil.relativedelta import relativedelta

from scheduler_service.schedules.dates import FORMS, When, parse_when
from scheduler_service.schedules.words import (
    CLOCK,
    DAY_LIST,
    WINDOW,
    PhraseError,
    number,
    parse_day_list,
    zone_named,
    zone_word,
)

END_FIX = (
    "say when it ends, e.g. 'until June 30', 'until 5pm', 'for 2 weeks', "
    "'for the next hour' or '10 times' — or give end_time (ISO datetime) or max_runs "
    "(a number of runs) instead"
)
_SUN = re.compile(r"\b(?:dusk|dawn|sunrise|sunset|sundown|sunup|twilight|first light)\b")
_WINDOW = re.compile(rf"\b{WINDOW}")  # "from 9 until 17" is a daily window, not an end


@dataclass(frozen=True)
class Clauses:
    """What the free clauses said (None / empty: not said)."""

    zone: str | None = None
    excluded: tuple[int, ...] = ()  # weekdays 0=Monday without runs
    except_dates: tuple[date, ...] = ()  # local dates without runs
    start: When | None = None
    until: When | None = None
    run_for: relativedelta | None = None  # "for 2 weeks": the end, counted from the start
    max_runs: int | None = None
    day_part: str | None = None  # morning | afternoon | evening | night | tonight
    notes: tuple[str, ...] = ()


def take_clauses(s: str, today: date) -> tuple[str, Clauses]:
    """The normalised phrase without its free clauses, and the clauses."""
    if m := _SUN.search(s):
        raise PhraseError(
            f"'{m[0]}' is not supported: the scheduler does not know sun times; give a clock "
            "time instead (e.g. 'every day at 17:30') and change it with the seasons"
        )
    s, found = _zone(s, Clauses())
    s, found = _start(s, today, found)
    s, found = _end(s, today, found)
    s, found = _except(s, today, found)
    s, found = _day_part(s, found)
    return " ".join(s.split()), found


def zone_in(s: str) -> str | None:
    """The zone a normalised phrase names, if any (PhraseError for an unknown one)."""
    return _zone(s, Clauses())[1].zone


# -- zone --------------------------------------------------------------------------------
def _zone(s: str, found: Clauses) -> tuple[str, Clauses]:
    """'(Berlin)', '(Europe/Berlin)', 'Berlin time', 'in Europe/Berlin', 'UTC'."""
    s = re.sub(r"\b(?:in )?local time\b", " ", s)
    if m := re.search(r"\(\s*(?:in )?(?P<z>[^()]*?)(?: time)?\s*\)", s):
        zone = zone_named(m["z"])
        if zone is None:
            raise PhraseError(
                f"'({m['z']})' is not a timezone; give the IANA name or the city, e.g. "
                "'(Europe/Berlin)', '(Berlin)', '(New York)', or set the timezone field"
            )
        return s[: m.start()] + " " + s[m.end() :], _with_zone(found, zone, m["z"])
    m = re.search(r"(?:^|\s)(?:in )?(?P<z>[a-z]+/[a-z_]+(?:/[a-z_]+)?)(?=\s|$)", s)
    if m and (zone := zone_named(m["z"])) is not None:
        return s[: m.start()] + " " + s[m.end() :], _with_zone(found, zone, m["z"])
    for m in re.finditer(r"(?:^|\s)(?:in )?(?P<z>(?:[a-z]+ ){1,3})time\b", s):
        words = m["z"].split()
        for k in range(min(3, len(words)), 0, -1):
            zone = zone_named(" ".join(words[-k:]))
            if zone is not None:
                start = m.start("z") + len(" ".join(words[:-k])) + (1 if len(words) > k else 0)
                cut = s[:start].removesuffix("in ")
                rest = cut + " " + s[m.end() :]
                return rest, _with_zone(found, zone, " ".join(words[-k:]))
    if m := re.search(r"(?:^|\s)(?P<z>utc|gmt)(?=\s|$)", s):
        return s[: m.start()] + " " + s[m.end() :], replace(found, zone="UTC")
    for m in re.finditer(r"(?:^|\s)(?P<z>[a-z]{2,4})(?=\s|$)", s):
        if zone_word(m["z"]) and (zone := zone_named(m["z"])) is not None:
            return s[: m.start()] + " " + s[m.end() :], _with_zone(found, zone, m["z"])
    return s, found


def _with_zone(found: Clauses, zone: str, words: str) -> Clauses:
    note: tuple[str, ...] = ()
    if zone_word(words):
        note = (
            f"'{words.upper()}' is read as {zone} (local time there, daylight saving time "
            "included); name the zone, e.g. '(Europe/London)', if you meant another",
        )
    return replace(found, zone=zone, notes=found.notes + note)


# -- start and end -----------------------------------------------------------------------
def _longest_when(tail: str, today: date) -> tuple[When, str] | None:
    """The longest leading words of ``tail`` that read as a date/time, and the rest."""
    words = tail.split()
    for k in range(min(len(words), 8), 0, -1):
        when = parse_when(" ".join(words[:k]), today)
        rest = " ".join(words[k:])
        if when is not None and not (when.at and re.match(rf"(?:and|,) ?{CLOCK}\b", rest)):
            return when, rest  # (a time followed by more times is the runs' 'at …')
    return None


def _start(s: str, today: date, found: Clauses) -> tuple[str, Clauses]:
    """'starting Feb 4', 'starting at 7am', 'beginning next month', 'from May 1'."""
    keyword = r"(?:starting|beginning|commencing|effective|as of)(?: (?:from|on|in))?"
    m = re.search(rf"(?:^|\s){keyword} ", s)
    if m is None:  # "from <date>" (but "from 9 to 17" is a window)
        m = re.search(r"(?:^|\s)from (?=\S)", s)
        if m is None or _WINDOW.search(s, m.start()):
            return s, found
        read = _longest_when(s[m.end() :], today)
        if read is None or read[0].day is None:
            return s, found
    else:
        read = _longest_when(s[m.end() :], today)
        if read is None:
            raise PhraseError(
                f"'{s[m.start() :].strip()}': 'starting …' needs a date or a time, e.g. "
                f"'starting at 7am', 'starting Feb 4', 'starting next month' ({FORMS})"
            )
    return s[: m.start()] + " " + read[1], replace(found, start=read[0])


_FOR = re.compile(
    r"(?:^|\s)for (?:the )?(?:next |following |coming )?(?:(?P<n>\d+|[a-z]+) )?"
    r"(?P<unit>minute|hour|day|week|month|year)s?(?=\s|$)"
)
_TIMES = re.compile(
    r"(?:^|\s*,\s*|\s)(?:for )?(?P<n>\d+|[a-z]+) (?:times|runs)"
    r"(?: (?:in total|only|total)(?=\s|$)"  # "3 times a week" is not a number of runs
    r"|(?! (?:a|an|per|each)\b| every (?:day|week|month|year)\b)(?=\s|$))"
)


def _end(s: str, today: date, found: Clauses) -> tuple[str, Clauses]:
    """'until June', 'until 5pm', 'through March 31', 'for 2 weeks', '10 times'."""
    windows = [w.span() for w in _WINDOW.finditer(s)]
    for m in re.finditer(r"(?:^|\s)(?:until|till|til|through|thru|ending(?: on)?|up to) ", s):
        if any(a <= m.start() < b for a, b in windows):
            continue
        read = _longest_when(s[m.end() :], today)
        if read is None:
            raise PhraseError(f"'{s[m.start() :].strip()}' is not understood; {END_FIX}")
        s, found = s[: m.start()] + " " + read[1], replace(found, until=read[0])
        break
    if span := _FOR.search(s):
        count = number(span["n"]) if span["n"] else 1
        if count is None or found.until is not None:
            raise PhraseError(f"'{span[0].strip()}': {END_FIX} (one end only)")
        delta = _delta(span["unit"], count)
        s, found = s[: span.start()] + " " + s[span.end() :], replace(found, run_for=delta)
    if (runs := _TIMES.search(s)) and (count := number(runs["n"])) is not None:
        s, found = s[: runs.start()] + " " + s[runs.end() :], replace(found, max_runs=count)
    if left := re.search(r"(?:^|\s)(?:until|till)\s", s):
        raise PhraseError(f"'{s[left.start() :].strip()}' is not understood; {END_FIX}")
    return s, found


def _delta(unit: str, count: int) -> relativedelta:
    """'for 2 weeks' → two weeks; months and years are calendar months and years."""
    if unit in ("minute", "hour", "day", "week"):
        return relativedelta(**{unit + "s": count})  # type: ignore[arg-type]
    return relativedelta(months=count * (12 if unit == "year" else 1))


# -- except ------------------------------------------------------------------------------
_EXCEPT = re.compile(
    r"(?:^|\s|,)(?:except|excluding|but not|apart from|other than|not on|skipping|skip)"
    r"(?: on| for)?(?: the)? (?P<what>.+)"
)
_HOLIDAYS = re.compile(r"(?:public |bank |national |federal |school )?holidays?\b")


def _except(s: str, today: date, found: Clauses) -> tuple[str, Clauses]:
    """'except weekends', 'but not on fridays', 'excluding mon and tue'; 'except Dec 25
    and Jan 1' (those dates, the next of each: a note says so); holidays are refused with
    the field that takes them (except_dates)."""
    m = _EXCEPT.search(s)
    if m is None:
        return s, found
    what = m["what"]
    if _HOLIDAYS.match(what) or re.match(r"(?:the )?(?:holiday|vacation|christmas)", what):
        raise PhraseError(
            f"'{m[0].strip()}': days without runs are not part of the phrase; give the "
            "schedule alone (e.g. 'every weekday at 9am') and the days in except_dates as "
            "local dates YYYY-MM-DD (holidays are not known to the scheduler)"
        )
    days = re.match(rf"(?:{DAY_LIST})(?=\s|$)", what)
    if days is None and (dates := _date_list(what, today)) is not None:
        listed, rest = dates
        shown = ", ".join(d.isoformat() for d in listed)
        said = m[0].strip().removesuffix(rest).strip()
        note = f"'{said}' skips {shown} (each date once, not every year)"
        excepted = tuple(sorted(set(found.except_dates) | set(listed)))
        found = replace(found, except_dates=excepted, notes=(*found.notes, note))
        return s[: m.start()] + " " + rest, found
    if days is None:
        raise PhraseError(
            f"'{m[0].strip()}': only days of the week and dates can be excepted in the "
            "phrase (e.g. 'except weekends', 'except fridays', 'except Dec 25'); give other "
            "days in except_dates as local dates YYYY-MM-DD"
        )
    excluded = tuple(sorted(set(found.excluded) | set(parse_day_list(days[0]))))
    rest = s[: m.start()] + " " + what[days.end() :]
    return rest, replace(found, excluded=excluded)


def _date_list(text: str, today: date) -> tuple[tuple[date, ...], str] | None:
    """The longest leading 'Dec 25', 'Dec 25 and Jan 1', '2026-12-24, 2026-12-31' of
    ``text`` as dates (whole days), and the rest; None if it does not start with one."""
    words = text.split()
    for k in range(min(len(words), 12), 0, -1):
        items = re.split(r",? and |, ", " ".join(words[:k]).rstrip(","))
        whens = [parse_when(item, today) for item in items]
        if all(w is not None and w.day and not w.period and w.at is None for w in whens):
            return tuple(w.day for w in whens if w is not None and w.day), " ".join(words[k:])
    return None


# -- part of the day ---------------------------------------------------------------------
_PARTS = r"(?P<part>morning|afternoon|evening|night)s?"


def _day_part(s: str, found: Clauses) -> tuple[str, Clauses]:
    """'every morning' (every day, in the morning), 'saturday evening at 7' (19:00),
    'tonight' (today, in the evening)."""
    if m := re.search(r"(?:^|\s)tonight(?=\s|$)", s):
        return s[: m.start()] + " today " + s[m.end() :], replace(found, day_part="tonight")
    if m := re.search(rf"(?:^|\s)(?:every|each) {_PARTS}(?=\s|$)", s):
        rest = s[: m.start()] + " every day " + s[m.end() :]
        return rest, replace(found, day_part=m["part"])
    if m := re.search(rf"(?:^|\s)(?:in the |during the |at |this )?{_PARTS}(?=\s|$)", s):
        return s[: m.start()] + " " + s[m.end() :], replace(found, day_part=m["part"])
    return s, found
