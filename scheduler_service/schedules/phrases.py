"""The phrase grammar of ``custom_schedule``: what people say → a schedule to evaluate.

Pure: no I/O, no APScheduler; ``now`` and the zone are passed in. A phrase becomes one of

- ``Elapsed``   — "every 15 minutes": real time, as the existing elapsed schedules;
- ``WallClock`` — "every weekday at 9am": the existing every-N days/weeks/months form;
- ``Rule``      — anything else that repeats: RFC 5545 RRULE lines (one DTSTART, one or
  more RRULEs whose union is the schedule), evaluated over local wall time by
  ``LocalRRuleTrigger``;
- ``OneTime``   — "in 2 hours", "tomorrow at 7", "March 3 at 5pm": one instant.

Each result carries ``Limits``: a start, an end, a number of runs and a zone said in the
phrase, and notes that state how an ambiguous word was read (``phrase_model``).

This module is the entry point and the order of the steps. Spellings of the same thing
are made one (``spelling``); the clauses that may stand anywhere are taken out of the
phrase: zone, except, start, end and part of the day (``clauses``), then the times ("at 8
and 20"), a window ("between 9 and 17") and a minute of the hour ("on the half hour")
(``time_clauses``). So the clauses may come in any order around the part the table
``GRAMMAR`` reads (``grammar``; its builders are in ``repeating_forms`` and
``one_time_forms``). Last, the limits the clauses said are attached (``phrase_limits``).
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from scheduler_service.schedules.clauses import take_clauses, zone_in
from scheduler_service.schedules.grammar import GRAMMAR, build_phrase, examples
from scheduler_service.schedules.phrase_limits import start_at, with_limits
from scheduler_service.schedules.phrase_model import (
    EXAMPLES,
    Elapsed,
    Limits,
    OneTime,
    Phrase,
    Rule,
    WallClock,
)
from scheduler_service.schedules.spelling import normalize, times_a_week
from scheduler_service.schedules.time_clauses import take_time_clauses
from scheduler_service.schedules.words import PhraseError, parse_clock

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
    clauses = take_time_clauses(rest, free)
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
        origin = start_at(start, local_now, elapsed)
        result = build_phrase(text, clauses, zone, now, default_time, origin)
        return with_limits(text, result, free, clauses, origin, local_now, default_time)
    except OverflowError:  # "in 99999999999 days": the request, not the scheduler, is wrong
        raise PhraseError(
            f"{text!r} reaches beyond the year 9999; give a time within it, e.g. 'in 3 days' "
            "or an ISO 8601 date such as 2027-03-01T09:00"
        ) from None
