"""The limits a phrase says besides its repetition, attached to what the grammar built:
where it starts ("starting Feb 4"), where it ends ("until June 30", "for 2 weeks"), how
many runs ("10 times"), the zone, excepted dates, and the notes on how ambiguous words
were read (``phrase_model.Limits``).

The free clauses (``clauses``) only find these words; this module decides what they
mean for the schedule built: the start gives the runs their phase, an end counts from
the start's day, a one-time phrase refuses them all. Pure.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, time, timedelta

from scheduler_service.schedules.clauses import Clauses
from scheduler_service.schedules.dates import When
from scheduler_service.schedules.phrase_model import Limits, OneTime, Phrase, WallClock
from scheduler_service.schedules.spelling import reading_notes
from scheduler_service.schedules.time_clauses import TimeClauses
from scheduler_service.schedules.words import PhraseError


def start_at(start: When | None, local_now: datetime, elapsed: bool) -> datetime | None:
    """The local start of a 'starting …' clause: its date at its time, or at 00:00 (the
    time of the runs is the schedule's). A time alone is its next occurrence."""
    if start is None:
        return None
    if start.day is None:
        assert start.at is not None and elapsed
        return _next_occurrence(start.at, local_now)
    return datetime.combine(start.day, start.at or time())


def with_limits(
    text: str,
    result: Phrase,
    free: Clauses,
    clauses: TimeClauses,
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
        return _next_occurrence(until.at, base)
    if until.at is not None:
        return datetime.combine(until.day, until.at)
    day = until.day - timedelta(days=1) if until.period else until.day
    return datetime.combine(day, time(23, 59, 59))


def _next_occurrence(at: time, after: datetime) -> datetime:
    """The first local ``at`` after ``after``: that day's, else the next day's."""
    today = datetime.combine(after.date(), at)
    return today if today > after else today + timedelta(days=1)
