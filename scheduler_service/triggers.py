"""APScheduler triggers that follow the project's time rules.

Pickled into the job store by module path: never rename this module or its classes
(a job whose trigger class cannot be imported is deleted by APScheduler on load). Each
class pickles a small versioned dict of plain values and rebuilds everything else on
load, so the stored state does not depend on APScheduler's or dateutil's internals.

Wall-clock rule (RFC 5545): a schedule fires once per scheduled local date and time. A
local time that does not exist (spring forward) is read with the offset before the gap,
so 02:30 on the day clocks jump from 02:00 to 03:00 fires at 03:30 new time; a local time
that occurs twice (fall back) fires at its first occurrence only. Python's ``fold=0``
gives exactly these readings, so localising with ``fold=0`` is the whole rule.

Cadence rule (cron or RRULE whose hours cover all 24 hours, e.g. ``*/15 * * * *``): the
schedule is a beat within every hour, so it follows real time: every real instant whose
local time matches fires — a repeated local time fires at both occurrences and a local
time inside a gap is skipped (it never shows on the clock). See docs/time.md.

Assumption used to bound searches: near any future instant no zone changes its UTC offset
more than once within a day, nor by a day or more (true of every zone's future rules).
"""

from __future__ import annotations

import calendar
import re
from abc import abstractmethod
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from dateutil import rrule as du

WALL_CLOCK_UNITS = ("days", "weeks", "months")
ONE_DAY = timedelta(days=1)
ONE_SECOND = timedelta(seconds=1)
_MICROSECOND = timedelta(microseconds=1)


# Fire times are returned in UTC: Python compares and subtracts two datetimes that share
# a tzinfo object by wall time, which is wrong across a DST change (01:00 EDT and 01:00 EST
# would be "equal"). ZoneInfo objects are cached, so any two in one zone share it.


# -- local time helpers ----------------------------------------------------------------
def localize(local: datetime, zone: ZoneInfo) -> datetime:
    """A naive local wall time → the aware instant the wall-clock rule assigns to it."""
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC).astimezone(zone)


def wall(instant: datetime, zone: tzinfo) -> datetime:
    """The naive local wall time an aware instant shows in ``zone``."""
    return instant.astimezone(zone).replace(tzinfo=None)


def readings(local: datetime, zone: tzinfo) -> list[datetime]:
    """Every real instant (UTC) whose local time is ``local``: none in a gap, two in an overlap."""
    found: list[datetime] = []
    for fold in (0, 1):
        instant = local.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if wall(instant, zone) == local and instant not in found:
            found.append(instant)
    return sorted(found)


def offset_swing(zone: tzinfo, instant: datetime) -> timedelta:
    """How far the zone's UTC offset moves within a day of ``instant`` (0 almost always)."""
    offsets = [
        (instant + k * ONE_DAY).astimezone(zone).utcoffset() or timedelta() for k in (-1, 0, 1)
    ]
    return max(offsets) - min(offsets)


@dataclass(frozen=True)
class Transition:
    """A change of UTC offset: at ``at`` (UTC) the offset goes from ``before`` to ``after``."""

    at: datetime
    before: timedelta
    after: timedelta

    @property
    def is_gap(self) -> bool:
        return self.after > self.before

    def local_span(self) -> tuple[datetime, datetime]:
        """The naive local times that do not exist (gap) or occur twice (overlap)."""
        start = (self.at + min(self.before, self.after)).replace(tzinfo=None)
        return start, start + abs(self.after - self.before)


def offset_transitions(zone: tzinfo, start: datetime, end: datetime) -> list[Transition]:
    """The UTC offset changes of ``zone`` between two instants, found by scan and bisection."""
    step = timedelta(hours=6)
    found: list[Transition] = []
    here = start.astimezone(UTC)
    before = here.astimezone(zone).utcoffset()
    while here < end:
        there = min(here + step, end.astimezone(UTC))
        after = there.astimezone(zone).utcoffset()
        if after != before and before is not None and after is not None:
            low, high = here, there
            while high - low > ONE_SECOND:
                middle = low + (high - low) / 2
                low, high = (
                    (middle, high)
                    if middle.astimezone(zone).utcoffset() == before
                    else (low, middle)
                )
            found.append(Transition(high.replace(microsecond=0), before, after))
        here, before = there, after
    return found


def clamp_day(year: int, month: int, day: int) -> int:
    """Day 29–31 → last day of a shorter month; -1 → last day."""
    last = calendar.monthrange(year, month)[1]
    return last if day == -1 else min(day, last)


def _month_index(d: date) -> int:
    return d.year * 12 + d.month - 1


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def scheduled_date(fire: datetime, at: time, zone: ZoneInfo) -> date:
    """The local date a wall-clock fire belongs to.

    Usually the fire's own local date; the day before when a gap reading pushed the run past
    midnight (America/Nuuk: 23:30 on the spring-forward evening runs at 00:30 next day).
    """
    day = wall(fire, zone).date()
    if localize(datetime.combine(day, at), zone).astimezone(UTC) == fire.astimezone(UTC):
        return day
    return day - ONE_DAY


def _threshold(previous: datetime | None, now: datetime, not_before: datetime) -> datetime:
    """The earliest instant the next fire may take (APScheduler's previous/now contract)."""
    start = previous + _MICROSECOND if previous is not None else now
    return max(start.astimezone(UTC), not_before)


# -- every N days / weeks / months at a local time -------------------------------------
class WallClockTrigger(BaseTrigger):  # type: ignore[misc]
    """Every N days / weeks (on given weekdays) / months (on a day) at a local time.

    ``anchor`` is the first scheduled local date: the N-day/week/month grid counts from it
    (weeks from the Monday of its week, months from its month).
    """

    fixed_hours = True

    def __init__(
        self,
        *,
        timezone: str,
        at: time,
        unit: str,
        interval: int = 1,
        weekdays: tuple[int, ...] = (),
        day_of_month: int | None = None,
        anchor: date,
        not_before: datetime,
        end_time: datetime | None = None,
    ) -> None:
        if unit not in WALL_CLOCK_UNITS:
            raise ValueError(f"unit must be one of {WALL_CLOCK_UNITS}")
        if interval < 1:
            raise ValueError("interval must be >= 1")
        if unit == "months" and day_of_month is None:
            raise ValueError("monthly schedules need day_of_month")
        self.timezone = timezone
        self.at = at.replace(tzinfo=None, fold=0)
        self.unit = unit
        self.interval = interval
        self.weekdays = tuple(sorted(set(weekdays))) if unit == "weeks" else ()
        if unit == "weeks" and not self.weekdays:
            self.weekdays = (anchor.weekday(),)
        self.day_of_month = day_of_month
        self.anchor = anchor
        self.not_before = not_before.astimezone(UTC)
        self.end_time = end_time.astimezone(UTC) if end_time else None
        self._zone = ZoneInfo(timezone)

    @property
    def zone(self) -> ZoneInfo:
        return self._zone

    # -- the schedule as local dates -------------------------------------------------
    def next_date(self, d: date) -> date:
        """The first scheduled local date on or after ``d``."""
        d = max(d, self.anchor)
        if self.unit == "days":
            return self.anchor + timedelta(
                days=_ceil_div((d - self.anchor).days, self.interval) * self.interval
            )
        if self.unit == "weeks":
            return self._next_week_date(d)
        return self._next_month_date(d)

    def _next_week_date(self, d: date) -> date:
        first_monday = self.anchor - timedelta(days=self.anchor.weekday())
        while True:
            monday = d - timedelta(days=d.weekday())
            behind = -((monday - first_monday).days // 7) % self.interval
            if behind:  # not a scheduled week: jump to the next one
                d = monday + timedelta(weeks=behind)
                continue
            for weekday in self.weekdays:
                if weekday >= d.weekday():
                    return monday + timedelta(days=weekday)
            d = monday + timedelta(weeks=self.interval)

    def _next_month_date(self, d: date) -> date:
        assert self.day_of_month is not None
        first = _month_index(self.anchor)
        index = first + max(0, _ceil_div(_month_index(d) - first, self.interval)) * self.interval
        while True:
            year, month = divmod(index, 12)
            candidate = date(year, month + 1, clamp_day(year, month + 1, self.day_of_month))
            if candidate >= d:
                return candidate
            index += self.interval

    def fire_on(self, d: date) -> datetime:
        return localize(datetime.combine(d, self.at), self._zone)

    def next_wall_time(self, after: datetime) -> datetime | None:
        """The first scheduled local (naive) wall time at or after ``after``."""
        d = self.next_date(after.date())
        if datetime.combine(d, self.at) < after:
            d = self.next_date(d + ONE_DAY)
        return datetime.combine(d, self.at)

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        threshold = _threshold(previous_fire_time, now, self.not_before)
        # A gap reading can push a fire past midnight: start one local day early.
        d = max(wall(threshold, self._zone).date() - ONE_DAY, self.anchor)
        try:
            while True:
                d = self.next_date(d)
                fire = self.fire_on(d)
                if fire >= threshold:
                    break
                d += ONE_DAY
        except (OverflowError, ValueError):  # past year 9999
            return None
        if self.end_time is not None and fire > self.end_time:
            return None
        return fire.astimezone(UTC)

    # -- persistence -----------------------------------------------------------------
    _STATE_KEYS = (
        "timezone",
        "at",
        "unit",
        "interval",
        "weekdays",
        "day_of_month",
        "anchor",
        "not_before",
        "end_time",
    )

    def __getstate__(self) -> dict[str, Any]:
        return {"version": 1, **{key: getattr(self, key) for key in self._STATE_KEYS}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("version", 1) > 1:
            raise ValueError(f"WallClockTrigger state version {state['version']} is not supported")
        for key in self._STATE_KEYS:
            setattr(self, key, state[key])
        self._zone = ZoneInfo(self.timezone)

    def __str__(self) -> str:
        return f"wallclock[{self.unit}/{self.interval} at {self.at} {self.timezone}]"

    def __repr__(self) -> str:
        return f"<WallClockTrigger {self.__getstate__()!r}>"


# -- rules over local wall time (cron, RRULE) ------------------------------------------
class _LocalRuleTrigger(BaseTrigger):  # type: ignore[misc]
    """A rule that yields naive local wall times, mapped to real instants by the time rules.

    Subclasses give ``next_wall_time`` and ``fixed_hours``; the state is the expression,
    the zone, the first instant allowed and the end.
    """

    fixed_hours: bool
    _zone: tzinfo

    def __init__(
        self,
        *,
        expression: str,
        timezone: str,
        not_before: datetime,
        end_time: datetime | None = None,
    ) -> None:
        self.expression = expression
        self.timezone = timezone
        self.not_before = not_before.astimezone(UTC)
        self.end_time = end_time.astimezone(UTC) if end_time else None
        self._compile()

    @abstractmethod
    def _compile(self) -> None:
        """Build the matcher from ``expression``; set ``fixed_hours`` and ``_zone``."""

    @abstractmethod
    def next_wall_time(self, after: datetime) -> datetime | None:
        """The first local (naive) wall time of the rule at or after ``after``."""

    @property
    def zone(self) -> tzinfo:
        """The zone the rule is evaluated in."""
        return self._zone

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        threshold = _threshold(previous_fire_time, now, self.not_before)
        try:
            fire = self._first_fixed(threshold) if self.fixed_hours else self._first_beat(threshold)
        except (OverflowError, ValueError):  # past year 9999
            return None
        if fire is None or (self.end_time is not None and fire > self.end_time):
            return None
        return fire.astimezone(UTC)

    def _first_fixed(self, threshold: datetime) -> datetime | None:
        """Wall-clock rule: each local time at fold=0, earliest at/after ``threshold``.

        fold=0 readings never fall in the second half of an overlap, and on them local time
        grows with real time; so once a candidate's local time passes the best fire's local
        time, nothing earlier can follow. A gap reading moves a time forward by at most the
        offset swing, and the offset itself differs by at most the swing: start 2 swings early.
        """
        cursor = wall(threshold, self._zone) - 2 * offset_swing(self._zone, threshold)
        best: datetime | None = None
        while (candidate := self.next_wall_time(cursor)) is not None:
            if best is not None and candidate > wall(best, self._zone):
                break
            fire = candidate.replace(tzinfo=self._zone, fold=0).astimezone(UTC)
            if fire >= threshold and (best is None or fire < best):
                best = fire
            cursor = candidate + ONE_SECOND
        return best

    def _first_beat(self, threshold: datetime) -> datetime | None:
        """Cadence rule: every real instant whose local time matches, at/after ``threshold``."""
        cursor = wall(threshold, self._zone) - offset_swing(self._zone, threshold)
        best: datetime | None = None
        while (candidate := self.next_wall_time(cursor)) is not None:
            if best is not None and candidate > wall(best, self._zone) + offset_swing(
                self._zone, best
            ):
                break
            for fire in readings(candidate, self._zone):
                if fire >= threshold and (best is None or fire < best):
                    best = fire
            cursor = candidate + ONE_SECOND
        return best

    # -- persistence -----------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "version": 1,
            "expression": self.expression,
            "timezone": self.timezone,
            "not_before": self.not_before,
            "end_time": self.end_time,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("version", 1) > 1:
            name = type(self).__name__
            raise ValueError(f"{name} state version {state['version']} is not supported")
        self.expression = state["expression"]
        self.timezone = state["timezone"]
        self.not_before = state["not_before"]
        self.end_time = state["end_time"]
        self._compile()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.__getstate__()!r}>"


# -- cron ------------------------------------------------------------------------------
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
_MAX_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


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

    def matchers(self) -> list[CronTrigger]:
        """CronTriggers over naive wall time (as UTC). Two when both day fields restrict:
        standard cron runs when *either* matches, APScheduler's CronTrigger needs both."""
        names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
        common = {
            "second": "0",
            "minute": _join(self.minutes, 60),
            "hour": _join(self.hours, 24),
            "month": _join(self.months, 12),
            "timezone": UTC,
        }
        days = _join(self.days, 31)
        weekdays = "*" if len(self.weekdays) == 7 else ",".join(names[d] for d in self.weekdays)
        if self.days_star or self.weekdays_star:
            return [CronTrigger(day=days, day_of_week=weekdays, **common)]
        return [
            CronTrigger(day=days, day_of_week="*", **common),
            CronTrigger(day="*", day_of_week=weekdays, **common),
        ]


def _join(values: tuple[int, ...], every: int) -> str:
    """APScheduler field text; "*" for a full set (a 24-item list is much slower)."""
    return "*" if len(values) == every else ",".join(str(v) for v in values)


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
        day <= _MAX_MONTH_DAYS[m - 1] for m in spec.months for day in spec.days
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


class LocalCronTrigger(_LocalRuleTrigger):
    """Standard cron over local wall time; hours fixed → wall-clock rule, else cadence rule."""

    def _compile(self) -> None:
        spec = parse_cron(self.expression)
        self.fixed_hours = spec.fixed_hours
        self._zone = ZoneInfo(self.timezone)
        self._matchers = spec.matchers()

    def next_wall_time(self, after: datetime) -> datetime | None:
        start = after.replace(tzinfo=UTC)
        found = [m.get_next_fire_time(None, start) for m in self._matchers]
        times = [t.replace(tzinfo=None) for t in found if t is not None]
        return min(times) if times else None

    def __str__(self) -> str:
        return f"cron[{self.expression} {self.timezone}]"

    def __getstate__(self) -> dict[str, Any]:
        return super().__getstate__()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)


# -- RRULE -----------------------------------------------------------------------------
_DTSTART = re.compile(r"^DTSTART(?:;(?P<params>[^:]*))?:(?P<value>\d{8}(?:T\d{6}Z?)?)$")
_UNTIL_UTC = re.compile(r"UNTIL=(\d{8}T\d{6})Z")
_STEPS = {du.WEEKLY: timedelta(weeks=1), du.DAILY: ONE_DAY, du.HOURLY: timedelta(hours=1)}
_STEPS |= {du.MINUTELY: timedelta(minutes=1), du.SECONDLY: ONE_SECOND}


@dataclass(frozen=True)
class RRuleSpec:
    """``DTSTART`` (optional) and one ``RRULE``, as text parts.

    ``dtstart`` is naive: wall time in the task's zone, or UTC when ``utc`` (a ``Z`` value).
    """

    rule: str
    dtstart: datetime | None = None
    utc: bool = False
    tzid: str | None = None

    def text(self) -> str:
        """Canonical form, stored with the task (DTSTART first, no TZID: the task has it)."""
        lines = [f"RRULE:{self.rule}"]
        if self.dtstart is not None:
            stamp = self.dtstart.strftime("%Y%m%dT%H%M%S") + ("Z" if self.utc else "")
            lines.insert(0, f"DTSTART:{stamp}")
        return "\n".join(lines)


def parse_rrule(text: str) -> RRuleSpec:
    """Split RFC 5545 text into DTSTART and RRULE; check the rule with dateutil.

    Only DTSTART and one RRULE are accepted (no RDATE/EXDATE/EXRULE). Raises ValueError.
    """
    rule: str | None = None
    dtstart: tuple[datetime, bool, str | None] | None = None
    for token in text.split():
        upper = token.upper()
        if upper.startswith("DTSTART"):
            dtstart = _parse_dtstart(token)
        elif upper.startswith(("RRULE:", "FREQ=")):
            if rule is not None:
                raise ValueError("give one RRULE only")
            rule = upper.removeprefix("RRULE:")
        else:
            raise ValueError(f"{token!r} is not understood; give DTSTART (optional) and one RRULE")
    if rule is None:
        raise ValueError("no RRULE found; give e.g. RRULE:FREQ=DAILY;BYHOUR=9;BYMINUTE=0")
    for part in rule.split(";"):
        name, _, value = part.partition("=")
        if name == "INTERVAL" and not (value.isdigit() and int(value) >= 1):
            raise ValueError(f"INTERVAL={value} must be a whole number of at least 1")
    spec = RRuleSpec(rule, *(dtstart or (None, False, None)))
    compile_rrule(spec, ZoneInfo("UTC"), default_start=datetime(2000, 1, 1))
    return spec


def _parse_dtstart(token: str) -> tuple[datetime, bool, str | None]:
    match = _DTSTART.match(token.upper())
    if not match:
        raise ValueError(
            f"{token!r} is not a DTSTART; use DTSTART:20260105T090000 (task timezone), "
            "DTSTART;TZID=Europe/Paris:20260105T090000 or DTSTART:20260105T090000Z (UTC)"
        )
    value = match["value"]
    stamp = datetime.strptime(value.rstrip("Z"), "%Y%m%dT%H%M%S" if "T" in value else "%Y%m%d")
    # TZID is case-sensitive (Europe/Paris): read it from the original spelling.
    tzid = re.search(r"TZID=([^:;]+)", token.split(":", 1)[0], flags=re.IGNORECASE)
    return stamp, value.endswith("Z"), tzid[1] if tzid else None


def compile_rrule(spec: RRuleSpec, zone: tzinfo, *, default_start: datetime | None = None) -> Any:
    """The dateutil rrule over naive wall time; a ``Z`` UNTIL is turned into ``zone`` wall time."""
    start = spec.dtstart or default_start
    if start is None:
        raise ValueError("the RRULE has no DTSTART")

    def until_to_wall(match: re.Match[str]) -> str:
        instant = datetime.strptime(match[1], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
        return "UNTIL=" + wall(instant, zone).strftime("%Y%m%dT%H%M%S")

    if "FREQ=" not in spec.rule:
        raise ValueError("the RRULE needs FREQ=, e.g. RRULE:FREQ=WEEKLY;BYDAY=MO")
    try:
        rule_text = "RRULE:" + _UNTIL_UTC.sub(until_to_wall, spec.rule)
        rule = du.rrulestr(rule_text, dtstart=start, cache=True)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise ValueError(f"invalid RRULE ({exc})") from None
    _check_days_exist(rule)
    return rule


def _check_days_exist(rule: Any) -> None:
    """Refuse BYMONTHDAY/BYMONTH that never meet (30 February): dateutil would search for
    them up to year 9999, which takes seconds. (Inherited values count: FREQ=YEARLY;
    BYMONTH=2 from a DTSTART on the 31st means 31 February.)"""
    days, months = rule._bymonthday, rule._bymonth
    if not days or rule._bynmonthday or not months:
        return
    if not any(day <= _MAX_MONTH_DAYS[m - 1] for m in months for day in days):
        raise ValueError("BYMONTHDAY and BYMONTH never meet (e.g. 30 February)")


class LocalRRuleTrigger(_LocalRuleTrigger):
    """An RFC 5545 RRULE over local wall time (UTC when DTSTART ends in Z).

    Hours fixed (FREQ=DAILY or longer, or BYHOUR not all 24 hours) → wall-clock rule,
    else cadence rule, as for cron. dateutil iterates from DTSTART on every query, so
    rules without COUNT are re-based to a recent DTSTART on the same INTERVAL grid.
    """

    def _compile(self) -> None:
        spec = parse_rrule(self.expression)
        self._zone = UTC if spec.utc else ZoneInfo(self.timezone)
        self._rule = compile_rrule(spec, self._zone)
        hours = self._rule._byhour
        self.fixed_hours = hours is not None and len(set(hours)) < 24
        step = _STEPS.get(self._rule._freq)
        rebase = step is not None and self._rule._count is None
        self._step = step * self._rule._interval if rebase and step is not None else None

    @property
    def dtstart(self) -> datetime:
        start: datetime = self._rule._dtstart
        return start

    def runs_within(self, start: datetime, span: timedelta) -> bool:
        """Does the rule occur within ``span`` of ``start``? Bounded: dateutil would search
        up to year 9999 for a rule that never matches (e.g. BYMONTH=2;BYMONTHDAY=30)."""
        low = wall(start, self._zone) - ONE_DAY
        until = low + span + ONE_DAY
        if self._rule._until is not None:
            until = min(until, self._rule._until)
        probe = self._rule_near(low).replace(until=until, count=None)
        return probe.after(low) is not None

    def _rule_near(self, after: datetime) -> Any:
        """The rule with DTSTART moved, whole INTERVALs at a time, to just before ``after``.

        Same occurrences from there on (no COUNT; inherited BY* parts keep their values as
        the time of day and weekday do not change), without iterating from the start.
        """
        if self._step is None or after - self.dtstart <= 2 * self._step:
            return self._rule
        periods = (after - self.dtstart) // self._step - 1
        return self._rule.replace(dtstart=self.dtstart + periods * self._step)

    def next_wall_time(self, after: datetime) -> datetime | None:
        found: datetime | None = self._rule_near(after).after(after, inc=True)
        return found

    def __str__(self) -> str:
        return f"rrule[{self.expression!r} {self.timezone}]"

    def __getstate__(self) -> dict[str, Any]:
        return super().__getstate__()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
