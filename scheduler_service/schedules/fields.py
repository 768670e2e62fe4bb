"""One schedule field at a time: a timezone, a time of day, an ISO datetime, weekdays,
a day of the month. Each parser refuses a bad value with a ``ScheduleError`` naming the
field and saying what is accepted, so the frequency parsers can simply call them."""

from __future__ import annotations

import calendar
import re
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from scheduler_service.clock.zones import localize, wall
from scheduler_service.config import iana_zone_names
from scheduler_service.schedules.model import ScheduleError
from scheduler_service.schedules.words import WEEKDAYS, PhraseError, parse_clock, weekday_of

WEEKDAY_NAMES = WEEKDAYS  # 0=Monday: the names day_of_week accepts and descriptions use


# Legacy zone names: fixed offsets or US rules of 1967, not a place's time. Refused with
# the IANA zone most people mean (EST is -05:00 all year: an hour late all summer in New York).
LEGACY_ZONES = {
    "EST": "America/New_York (or America/Panama for -05:00 all year)",
    "EST5EDT": "America/New_York",
    "CST6CDT": "America/Chicago",
    "MST": "America/Phoenix (no DST) or America/Denver",
    "MST7MDT": "America/Denver",
    "PST8PDT": "America/Los_Angeles",
    "HST": "Pacific/Honolulu",
    "CET": "Europe/Paris or Europe/Berlin",
    "MET": "Europe/Paris or Europe/Berlin",
    "EET": "Europe/Athens or Europe/Helsinki",
    "WET": "Europe/Lisbon",
}


# Abbreviations that are not zone names at all.
ABBREVIATIONS = {
    "EDT": "America/New_York",
    "CST": "America/Chicago",
    "CDT": "America/Chicago",
    "MDT": "America/Denver",
    "PST": "America/Los_Angeles",
    "PDT": "America/Los_Angeles",
    "AKST": "America/Anchorage",
    "BST": "Europe/London",
    "CEST": "Europe/Paris",
    "IST": "Asia/Kolkata",
    "JST": "Asia/Tokyo",
    "AEST": "Australia/Sydney",
}


_ETC_OFFSET = re.compile(r"^(?:Etc/)?GMT[+-]\d{1,2}$", re.IGNORECASE)


TIME_OF_DAY = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


def parse_timezone(value: str | None, default: str, field_name: str = "timezone") -> str:
    name = (value or default).strip()
    upper = name.upper()
    if upper in LEGACY_ZONES or _ETC_OFFSET.match(name):
        instead = LEGACY_ZONES.get(upper, "the zone of the place, e.g. America/Bogota")
        raise ScheduleError(
            field_name,
            f"{name!r} is a legacy fixed-offset zone name that ignores the place's daylight "
            f"saving time; use the IANA name of the place: {instead}",
        )
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        hint = f" ({name} → {ABBREVIATIONS[upper]})" if upper in ABBREVIATIONS else ""
        raise ScheduleError(
            field_name,
            f"{name!r} is not an IANA timezone{hint}; use a name such as 'UTC', "
            "'America/New_York' or 'Europe/Paris'",
        ) from None
    if name not in iana_zone_names():
        raise ScheduleError(
            field_name,
            f"{name!r} names a zone that depends on the host it runs on; use the "
            "Area/Location name of the place, e.g. 'Europe/Paris' or 'UTC'",
        )
    return name


def parse_time_of_day(value: str, field_name: str = "scheduled_time") -> time:
    match = TIME_OF_DAY.match(value.strip())
    if match:
        hour, minute, second = int(match[1]), int(match[2]), int(match[3] or 0)
        if hour < 24 and minute < 60 and second < 60:
            return time(hour, minute, second)
    raise ScheduleError(
        field_name,
        f"{value!r} is not a time of day; use HH:MM or HH:MM:SS (24-hour, e.g. 09:00), "
        "9am, 9:30 pm, noon or midnight",
    )


def spoken_time(text: str) -> time | None:
    """A 12-hour or named time of day ('9am', '9:30 pm', 'noon'), else None."""
    if TIME_OF_DAY.match(text) or not re.search(r"[a-z]", text.lower()):
        return None
    try:
        return parse_clock(text)
    except PhraseError:
        return None


def no_such_date(value: str) -> str | None:
    """'2027-02-29…' → 'no such date (2027 is not a leap year)'; None if the date exists."""
    match = re.match(r"^(\d{4})-(\d{2})-(\d{2})", value.strip())
    if not match:
        return None
    year, month, day = (int(g) for g in match.groups())
    if not 1 <= month <= 12:
        return f"no such date (month {month}; months are 01–12)"
    last = calendar.monthrange(year, month)[1]
    if 1 <= day <= last:
        return None
    if month == 2 and day == 29:
        return f"no such date ({year} is not a leap year)"
    return f"no such date ({calendar.month_name[month]} has {last} days)"


def parse_local_datetime(value: str, zone: ZoneInfo, field_name: str) -> tuple[datetime, datetime]:
    """ISO 8601 → (the UTC instant, the local wall time as written or as seen in ``zone``).

    A naive value is wall time in ``zone``; its instant follows the wall-clock rule.
    """
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        if (problem := no_such_date(text)) is not None:
            raise ScheduleError(field_name, f"{value!r}: {problem}") from None
        raise ScheduleError(
            field_name,
            f"{value!r} is not a time; use HH:MM[:SS] or an ISO 8601 datetime such as "
            "2026-12-24T18:00 (naive means the task's timezone) or 2026-12-24T18:00:00+01:00",
        ) from None
    try:
        if parsed.tzinfo is None:
            return localize(parsed, zone).astimezone(UTC), parsed
        return parsed.astimezone(UTC), wall(parsed, zone)
    except OverflowError:  # e.g. 9999-12-31T23:59-05:00 is past year 9999 in UTC
        raise ScheduleError(
            field_name, f"{value!r} is out of range; give a date between years 1900 and 9998"
        ) from None


def parse_datetime(value: str, zone: ZoneInfo, field_name: str) -> datetime:
    """ISO 8601; a naive value is wall time in ``zone``. Returns an aware UTC instant."""
    return parse_local_datetime(value, zone, field_name)[0]


def parse_weekdays(
    value: int | str | list[int | str] | None, field_name: str = "day_of_week"
) -> tuple[int, ...]:
    if value is None:
        return ()
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ScheduleError(field_name, "empty list; give 0=Monday … 6=Sunday or a list")
    days: set[int] = set()
    for item in items:
        day = _weekday(item)
        if day is None:
            raise ScheduleError(
                field_name,
                f"{item!r} is not a day of the week; use 0=Monday … 6=Sunday, a name such as "
                "'monday', or a list such as [0, 2, 4]",
            )
        days.add(day)
    return tuple(sorted(days))


def _weekday(item: int | str) -> int | None:
    """0–6, "0"–"6", or a (plural) name or prefix of at least 3 letters → 0=Monday."""
    if isinstance(item, bool):
        return None
    if isinstance(item, int):
        return item if 0 <= item <= 6 else None
    text = item.strip().lower()
    if text.isdigit():
        return int(text) if 0 <= int(text) <= 6 else None
    return weekday_of(text)


def parse_day_of_month(value: int | None, field_name: str = "day_of_month") -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (value == -1 or 1 <= value <= 31)
    ):
        raise ScheduleError(
            field_name,
            f"{value!r} is not a day of the month; use 1–31 (29–31 run on the last day of "
            "shorter months) or -1 for the last day",
        )
    return value
