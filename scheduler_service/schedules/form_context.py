"""What a builder of the grammar table gets: ``FormContext``, the row's match with the
phrase's clauses, zone and now, and the readings every builder shares (the interval,
the times of day, the excepted weekdays, the clauses a form refuses).

Kept apart from the builders (``repeating_forms``, ``one_time_forms``) so that each of
them reads as the few lines that make its form, and from the table (``grammar``) so the
table is only patterns, builders and examples. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time
from zoneinfo import ZoneInfo

from scheduler_service.schedules.days import DaySet, first_local, rule_lines
from scheduler_service.schedules.phrase_model import EXAMPLES, Rule
from scheduler_service.schedules.time_clauses import TimeClauses
from scheduler_service.schedules.words import NUMBER_WORDS, PhraseError


@dataclass(frozen=True)
class FormContext:
    """A match of one row of the grammar table, with everything its builder reads."""

    text: str  # as given (for messages)
    match: re.Match[str]
    clauses: TimeClauses
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


def anchored_rule(
    ctx: FormContext, days: list[DaySet], interval: int, times: tuple[time, ...]
) -> Rule:
    """RRULE lines anchored at DTSTART: local midnight of the first run's date, so an
    INTERVAL counts periods from the period of the first run (its day, its week from
    Monday, its month, its year)."""
    lines = rule_lines(days, interval, times)
    first = first_local(lines, ctx.first_day, ctx.zone)
    return Rule(tuple(lines), datetime.combine(first.date(), time()))
