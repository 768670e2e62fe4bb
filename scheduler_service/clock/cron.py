"""Standard 5-field cron expressions (Vixie cron), parsed and expanded.

Weekdays here are 0=Monday … 6=Sunday. Turning a ``CronSpec`` into fire times over local
wall time is the trigger's job (``scheduler_service.triggers.LocalCronTrigger``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from scheduler_service.clock.zones import MAX_MONTH_DAYS

_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# name, lowest, highest, names (index + lowest = value)
_CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTH_NAMES),
    ("day of week", 0, 7, _DOW_NAMES),
)
_CRON_PART = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/(\d+))?$")


@dataclass(frozen=True)
class CronSpec:
    """A standard 5-field cron expression, expanded. Weekdays here are 0=Monday … 6=Sunday."""

    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]
    days_star: bool  # the day-of-month field starts with "*" (Vixie cron's rule)
    weekdays_star: bool

    @property
    def fixed_hours(self) -> bool:
        return len(self.hours) < 24


def parse_cron(text: str) -> CronSpec:
    """Parse standard cron (Vixie): 5 fields, names, ranges, steps, lists, @macros.

    Raises ValueError saying which field is wrong and why.
    """
    source = " ".join(text.lower().split())
    source = _CRON_MACROS.get(source, source)
    fields = source.split(" ")
    if len(fields) != 5:
        raise ValueError(
            f"a cron expression has 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(fields)}"
        )
    values = [_cron_field(f, *spec) for f, spec in zip(fields, _CRON_FIELDS, strict=True)]
    weekdays = tuple(sorted({(d + 6) % 7 for d in values[4]}))  # cron 0/7=Sunday → 6
    spec = CronSpec(
        expression=source,
        minutes=values[0],
        hours=values[1],
        days=values[2],
        months=values[3],
        weekdays=weekdays,
        days_star=fields[2].startswith("*"),
        weekdays_star=fields[4].startswith("*"),
    )
    # With "*" as day of week the day of month must match: it must exist in some month.
    if spec.weekdays_star and not any(
        day <= MAX_MONTH_DAYS[m - 1] for m in spec.months for day in spec.days
    ):
        raise ValueError("the day-of-month and month fields never meet (e.g. 30 2 is 30 February)")
    return spec


def _cron_field(
    text: str, name: str, low: int, high: int, names: tuple[str, ...]
) -> tuple[int, ...]:
    found: set[int] = set()
    for part in text.split(","):
        match = _CRON_PART.match(part)
        if not match:
            raise ValueError(f"{name} field {text!r}: {part!r} is not a value, range or step")
        step = int(match[2]) if match[2] else 1
        if step < 1:
            raise ValueError(f"{name} field {text!r}: the step must be at least 1")
        if match[1] == "*":
            first, last = low, high
        else:
            ends = [_cron_value(v, name, low, high, names) for v in match[1].split("-")]
            first, last = ends[0], ends[-1] if len(ends) > 1 or not match[2] else high
            if first > last:
                raise ValueError(f"{name} field {text!r}: the range {match[1]} runs backwards")
        found.update(range(first, last + 1, step))
    return tuple(sorted(found))


def _cron_value(token: str, name: str, low: int, high: int, names: tuple[str, ...]) -> int:
    if token.isdigit() and low <= int(token) <= high:
        return int(token)
    if token[:3] in names and len(token) == 3:
        return names.index(token) + low
    accepted = f"{low}–{high}" + (f" or {names[0]}…{names[-1]}" if names else "")
    raise ValueError(f"{name} field: {token!r} is not allowed; use {accepted}")
