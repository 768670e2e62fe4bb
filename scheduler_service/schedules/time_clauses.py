"""The time clauses of a phrase, taken out before the grammar table reads the rest.

The times of the runs ("at 8 and 20", read in the part of the day a free clause said:
"saturday evening at 7" is 19:00), a daily window ("between 9 and 17"), a minute of the
hour ("on the half hour", spelled "at minute 30" by ``spelling``) and an announced
number of runs a day ("twice a day"). Kept apart from the free clauses (``clauses``)
because these say *when in the day* the runs fall, which every builder of the grammar
reads, while the free clauses limit the schedule as a whole. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import time

from scheduler_service.schedules.clauses import Clauses
from scheduler_service.schedules.spelling import COUNT, COUNTS
from scheduler_service.schedules.words import (
    AND,
    CLOCK,
    WINDOW,
    PhraseError,
    ambiguous_hour,
    clock_note,
    parse_clock,
)

_TIMES = rf"{CLOCK}(?:(?:{AND}){CLOCK})*"


@dataclass(frozen=True)
class TimeClauses:
    """The phrase without its time clauses, the time clauses, and what the free clauses
    (``clauses.Clauses``) said."""

    rest: str
    times: tuple[time, ...] = ()
    window: tuple[time, time] | None = None
    minute: int | None = None
    per_day: int | None = None  # "twice a day": how many times were announced
    free: Clauses = field(default_factory=Clauses)
    notes: tuple[str, ...] = ()


_TIMES_CLAUSE = re.compile(rf"(?:^|\s)at (?P<times>{_TIMES})(?=\s|$)")
_WINDOW = re.compile(rf"(?:^|\s){WINDOW}")
_MINUTE = re.compile(r"(?:^|\s)at minute (?P<m>\d{1,2})(?=\s|$)")
_PER_DAY = re.compile(rf"^{COUNT} (?:a day|daily|per day)\b")
# The reading of a part of the day without a time, and how its hours are read.
_PART_TIMES = {
    "morning": time(9),
    "afternoon": time(15),
    "evening": time(18),
    "night": time(21),
    "tonight": time(20),
}


def _in_part(token: str, at: time, part: str) -> time:
    """'7' in the evening → 19:00; '11' at night → 23:00, '2' at night → 02:00."""
    if re.search(r"[ap]m|noon|midnight|midday", token) or not 1 <= at.hour <= 12:
        return at
    if part in ("afternoon", "evening", "tonight") and at.hour < 12:
        return at.replace(hour=at.hour + 12)
    if part == "night":
        return (
            at.replace(hour=0) if at.hour == 12 else at.replace(hour=at.hour + 12 * (at.hour >= 6))
        )
    return at.replace(hour=0) if part == "morning" and at.hour == 12 else at


def _time_list(text: str, part: str | None) -> tuple[tuple[time, ...], tuple[str, ...]]:
    """The times of an 'at …' clause, read in the part of the day, and notes for hours
    that could be morning or evening."""
    tokens = [t for t in re.split(AND, text.strip()) if t]
    read = [(t, parse_clock(t)) for t in tokens]
    if part is not None:
        read = [(t, _in_part(t, at, part)) for t, at in read]
        return tuple(sorted({at for _, at in read})), ()
    day_clock = any(at.hour >= 13 for _, at in read)  # "at 8 and 20": a 24-hour list
    notes = tuple(clock_note(t, at) for t, at in read if ambiguous_hour(t) and not day_clock)
    return tuple(sorted({at for _, at in read})), notes


def take_time_clauses(s: str, free: Clauses) -> TimeClauses:
    """The phrase ``s`` (without its free clauses ``free``) split into the rest and its
    time clauses; a part of the day without a time gives its usual time, with a note."""
    found: dict[str, object] = {"free": free}
    if m := _MINUTE.search(s):
        minute = int(m["m"])
        if minute > 59:
            raise PhraseError(f"minute {minute} of the hour does not exist; use 0–59")
        found["minute"], s = minute, s[: m.start()] + s[m.end() :]
    if m := _WINDOW.search(s):
        found["window"] = (parse_clock(m["a"]), parse_clock(m["b"]))
        s = s[: m.start()] + s[m.end() :]
    if m := _TIMES_CLAUSE.search(s):
        found["times"], found["notes"] = _time_list(m["times"], free.day_part)
        s = s[: m.start()] + s[m.end() :]
    elif free.day_part is not None:
        at = _PART_TIMES[free.day_part]
        found["times"] = (at,)
        word = "tonight" if free.day_part == "tonight" else f"'{free.day_part}'"
        found["notes"] = (f"{word} is read as {at:%H:%M}; give a time to choose another",)
    if m := _PER_DAY.match(s.strip()):
        found["per_day"], s = COUNTS[m["k"]], "every day" + s.strip()[m.end() :]
    return TimeClauses(" ".join(s.split()), **found)  # type: ignore[arg-type]
