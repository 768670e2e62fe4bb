"""The words schedules are made of: times of day, weekdays, months, numbers, zone names.

Shared by the phrase grammar (``phrases``), the clauses that may stand anywhere in a
phrase (``clauses``) and the date expressions of start, end and one-time phrases
(``dates``). Pure: no I/O beyond looking a zone name up in the tz database.
"""

from __future__ import annotations

import re
from datetime import time
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
MAX_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
NUMBER_WORDS = {
    "a": 1,
    "an": 1,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
}


class PhraseError(ValueError):
    """The phrase is not accepted; the message says what was wrong and what is."""


# The separators of a list: "8, 13 and 20", "8, 13, and 20", "mon and thu".
AND = r"\s*,\s*(?:and\s+)?|\s+and\s+"

# -- times of day ------------------------------------------------------------------------
CLOCK = r"(?:noon|midnight|midday|[0-2]\d[0-5]\d|\d{1,2}(?::\d{2}){0,2}(?: ?[ap]m)?)"
# A daily window of runs, "between 9 and 17", "from 9:30 to 17:00" (groups a and b): the
# phrase grammar reads it, and the end clauses leave its "until" alone.
WINDOW = rf"(?:between|from) (?P<a>{CLOCK}) (?:and|to|until|till|-) (?P<b>{CLOCK})(?=\s|$)"
_CLOCK_PARTS = re.compile(r"^(\d{1,2})(?::(\d{2}))?(?::(\d{2}))?(?: ?([ap]m))?$")


def parse_clock(token: str) -> time:
    """'9am' '9:30 pm' '12am' (00:00) '12pm' (12:00) 'noon' 'midnight' '18:00' '8' '0715'
    '7.30' → a time.

    Raises PhraseError for anything else (25:00, 13pm, 9:75).
    """
    text = " ".join(token.lower().split())
    text = re.sub(r"^(\d{1,2})\.(\d{2})\b", r"\1:\2", text).replace(".", "")
    text = text.replace("a m", "am").replace("p m", "pm")
    if text in ("noon", "midday"):
        return time(12, 0)
    if text == "midnight":
        return time(0, 0)
    if re.fullmatch(r"[0-2]\d[0-5]\d", text):  # 24-hour without a colon: 0715, 1930
        text = f"{text[:2]}:{text[2:]}"
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


def ambiguous_hour(token: str) -> bool:
    """'7' '6:30' '11' — an hour 1–11 with neither am/pm nor a leading zero: 24-hour
    reading (07:00) or the evening (19:00)? ('07:00', '7am', '19' are not ambiguous.)"""
    return re.fullmatch(r"(?:[1-9]|1[01])(?::[0-5]\d)?", token.strip()) is not None


def clock_note(token: str, at: time) -> str:
    """The reading taken for an ambiguous hour, and how to say the other one."""
    later = at.replace(hour=at.hour + 12)
    return (
        f"'{token}' is read as {at:%H:%M} (24-hour clock); for the evening say "
        f"'{token}pm' or '{later:%H:%M}'"
    )


# -- weekdays ----------------------------------------------------------------------------
DAY_WORD = (  # names, 3+ letter prefixes, plurals
    "|".join("|".join(name[:k] + "s?" for k in range(len(name), 2, -1)) for name in WEEKDAYS)
    + "|weekdays?|weekends?|business days?"
)
DAY_LIST = (
    rf"(?:{DAY_WORD})(?:(?:{AND}|\s+or\s+|\s*-\s*|"
    rf"\s+(?:to|through|thru)\s+)(?:{DAY_WORD}))*"
)


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
    for item in re.split(rf"{AND}|\s+or\s+|\s+", text):
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


# -- months and numbers ------------------------------------------------------------------
MONTH_NAME = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
NTH_DAY = (  # "the second monday of october", "the last friday in november"
    r"(?:the )?(?:first|second|third|fourth|fifth|last|\d(?:st|nd|rd|th)) [a-z]+ (?:of|in) "
    + MONTH_NAME
)


def month_of(word: str) -> int | None:
    """'mar' 'march' 'sept.' → 1–12, else None (3+ letters, one month only)."""
    word = word.rstrip(".")
    found = [i + 1 for i, name in enumerate(MONTHS) if len(word) >= 3 and name.startswith(word)]
    if word == "sept":
        found = [9]
    return found[0] if len(found) == 1 else None


def number(word: str) -> int | None:
    """'3' 'three' 'a' → 3, 3, 1; else None."""
    return int(word) if word.isdigit() else NUMBER_WORDS.get(word)


# -- zones -------------------------------------------------------------------------------
_AREAS = ("Europe", "America", "Asia", "Africa", "Australia", "Pacific", "Atlantic", "Indian")
_ZONE_WORDS = {  # region names and abbreviations people put after a time, read as places
    "eastern": "America/New_York",
    "et": "America/New_York",
    "est": "America/New_York",
    "edt": "America/New_York",
    "central": "America/Chicago",
    "ct": "America/Chicago",
    "cst": "America/Chicago",
    "cdt": "America/Chicago",
    "mountain": "America/Denver",
    "mt": "America/Denver",
    "mst": "America/Denver",
    "mdt": "America/Denver",
    "pacific": "America/Los_Angeles",
    "pt": "America/Los_Angeles",
    "pst": "America/Los_Angeles",
    "pdt": "America/Los_Angeles",
    "bst": "Europe/London",
    "cet": "Europe/Berlin",
    "cest": "Europe/Berlin",
    "ist": "Asia/Kolkata",
    "jst": "Asia/Tokyo",
    "aest": "Australia/Sydney",
    "aedt": "Australia/Sydney",
}


@lru_cache(maxsize=256)
def zone_named(words: str) -> str | None:
    """'Europe/Berlin' 'berlin' 'new york' 'utc' 'eastern' 'EST' → the IANA zone, else None.

    A city is looked up as ``Area/City`` in the tz database (the zone named after its
    largest city); region names and abbreviations are read as the place most people mean
    (``zone_word``), with that place's daylight saving time.
    """
    words = " ".join(words.strip().split())
    if not words or len(words) > 40:
        return None
    if words.lower() in _ZONE_WORDS:
        return _ZONE_WORDS[words.lower()]
    candidates = [words] if "/" in words else []
    if words.lower() in ("utc", "gmt", "z"):
        candidates = ["UTC"]
    city = "_".join(w.capitalize() for w in re.split(r"[\s_]+", words))
    candidates += [f"{area}/{city}" for area in _AREAS] if "/" not in words else []
    for name in candidates:
        title = "/".join("_".join(w.capitalize() for w in p.split("_")) for p in name.split("/"))
        for spelling in (name, title):
            try:
                return ZoneInfo(spelling).key
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return None


def zone_word(words: str) -> bool:
    """Whether ``words`` is a region name or an abbreviation rather than a place."""
    return words.strip().lower() in _ZONE_WORDS
