"""APScheduler triggers that follow the project's time rules.

STORAGE FORMAT: APScheduler pickles each trigger into the job store as a
"module:qualname" reference (``scheduler_service.triggers:WallClockTrigger``,
``…:LocalCronTrigger``, ``…:LocalRRuleTrigger``), and deletes any job whose trigger class
it cannot import. Existing databases depend on this module path and these class names:
never rename or move them. Each class pickles a small versioned dict of plain values and
rebuilds everything else on load, so the stored state does not depend on APScheduler's or
dateutil's internals. The time math itself lives in ``scheduler_service.clock``.

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

import functools
from abc import abstractmethod
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from dateutil import rrule as du

from scheduler_service.clock.cron import CronSpec, parse_cron
from scheduler_service.clock.rrule import compile_rrule, parse_rrule
from scheduler_service.clock.zones import (
    ONE_DAY,
    ONE_SECOND,
    ceil_div,
    clamp_day,
    localize,
    month_index,
    offset_swing,
    readings,
    wall,
)

WALL_CLOCK_UNITS = ("days", "weeks", "months")
_MICROSECOND = timedelta(microseconds=1)


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
                days=ceil_div((d - self.anchor).days, self.interval) * self.interval
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
        first = month_index(self.anchor)
        index = first + max(0, ceil_div(month_index(d) - first, self.interval)) * self.interval
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
def cron_matchers(spec: CronSpec) -> list[CronTrigger]:
    """CronTriggers over naive wall time (as UTC). Two when both day fields restrict:
    standard cron runs when *either* matches, APScheduler's CronTrigger needs both."""
    names = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    common = {
        "second": "0",
        "minute": _join(spec.minutes, 60),
        "hour": _join(spec.hours, 24),
        "month": _join(spec.months, 12),
        "timezone": UTC,
    }
    days = _join(spec.days, 31)
    weekdays = "*" if len(spec.weekdays) == 7 else ",".join(names[d] for d in spec.weekdays)
    if spec.days_star or spec.weekdays_star:
        return [CronTrigger(day=days, day_of_week=weekdays, **common)]
    return [
        CronTrigger(day=days, day_of_week="*", **common),
        CronTrigger(day="*", day_of_week=weekdays, **common),
    ]


def _join(values: tuple[int, ...], every: int) -> str:
    """APScheduler field text; "*" for a full set (a 24-item list is much slower)."""
    return "*" if len(values) == every else ",".join(str(v) for v in values)


class LocalCronTrigger(_LocalRuleTrigger):
    """Standard cron over local wall time; hours fixed → wall-clock rule, else cadence rule."""

    def _compile(self) -> None:
        spec = parse_cron(self.expression)
        self.fixed_hours = spec.fixed_hours
        self._zone = ZoneInfo(self.timezone)
        self._matchers = cron_matchers(spec)

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
_STEPS = {du.WEEKLY: timedelta(weeks=1), du.DAILY: ONE_DAY, du.HOURLY: timedelta(hours=1)}
_STEPS |= {du.MINUTELY: timedelta(minutes=1), du.SECONDLY: ONE_SECOND}


COUNT_REBASE_MAX = 100_000  # larger COUNTs are refused at input (limits.max_rrule_count)


@functools.lru_cache(maxsize=1024)
def _last_occurrence(expression: str, timezone: str) -> datetime:
    """The last occurrence of a COUNT rule, walked once per process (a trigger is
    compiled each time its job is loaded), keyed by the rule's text and zone."""
    spec = parse_rrule(expression)
    rule = compile_rrule(spec, UTC if spec.utc else ZoneInfo(timezone))
    last: list[datetime] = list(rule)[-1:] or [rule._dtstart]
    return last[0]


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
        self._until_from_count = False
        if self._rule._count is not None and self._rule._count <= COUNT_REBASE_MAX:
            # COUNT is counted from DTSTART, so dateutil would walk from there on every
            # query: find the last occurrence once and keep it as UNTIL, then re-base.
            last = _last_occurrence(self.expression, self.timezone)
            self._rule = self._rule.replace(count=None, until=last)
            self._until_from_count = True
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
        if self._rule._until is not None and not self._until_from_count:
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
