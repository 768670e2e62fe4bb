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

from abc import abstractmethod
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from dateutil import rrule as du

from scheduler_service.clock.cron import CronSpec, parse_cron
from scheduler_service.clock.rrule import compile_rules, hours_of, parse_rrule
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


def skip_except_dates(
    first: Callable[[datetime], datetime | None],
    threshold: datetime,
    zone: tzinfo,
    except_dates: frozenset[date],
) -> datetime | None:
    """The first fire at/after ``threshold`` whose local date is not an exception date.

    A fire on an exception date moves the search to the next local midnight; each date
    is passed at most once, so this ends.
    """
    for _ in range(len(except_dates) + 1):
        fire = first(threshold)
        if fire is None or not except_dates:
            return fire
        day = wall(fire, zone).date()
        if day not in except_dates:
            return fire
        threshold = max(fire, localize(datetime.combine(day + ONE_DAY, time()), zone))  # type: ignore[arg-type]
    return None


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
        except_dates: tuple[date, ...] = (),
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
        self.except_dates = tuple(sorted(set(except_dates)))
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
        fire = skip_except_dates(
            self._first_fire, threshold, self._zone, frozenset(self.except_dates)
        )
        if fire is None or (self.end_time is not None and fire > self.end_time):
            return None
        return fire.astimezone(UTC)

    def _first_fire(self, threshold: datetime) -> datetime | None:
        # A gap reading can push a fire past midnight: start one local day early.
        d = max(wall(threshold, self._zone).date() - ONE_DAY, self.anchor)
        try:
            while True:
                d = self.next_date(d)
                fire = self.fire_on(d)
                if fire >= threshold:
                    return fire
                d += ONE_DAY
        except (OverflowError, ValueError):  # past year 9999
            return None

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
        state = {"version": 1, **{key: getattr(self, key) for key in self._STATE_KEYS}}
        if self.except_dates:  # version 2: exception dates (version 1 had none)
            state |= {"version": 2, "except_dates": self.except_dates}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("version", 1) > 2:
            raise ValueError(f"WallClockTrigger state version {state['version']} is not supported")
        for key in self._STATE_KEYS:
            setattr(self, key, state[key])
        self.except_dates = tuple(state.get("except_dates", ()))
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
        except_dates: tuple[date, ...] = (),
    ) -> None:
        self.expression = expression
        self.timezone = timezone
        self.not_before = not_before.astimezone(UTC)
        self.end_time = end_time.astimezone(UTC) if end_time else None
        self.except_dates = tuple(sorted(set(except_dates)))
        self._until: datetime | None = None
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
        first = self._first_fixed if self.fixed_hours else self._first_beat
        try:
            fire = skip_except_dates(first, threshold, self._zone, frozenset(self.except_dates))
        except (OverflowError, ValueError):  # past year 9999
            return None
        if fire is None or (self.end_time is not None and fire > self.end_time):
            return None
        if self._until is not None and fire > self._until:  # a UTC UNTIL bounds instants
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
        state: dict[str, Any] = {
            "version": 1,
            "expression": self.expression,
            "timezone": self.timezone,
            "not_before": self.not_before,
            "end_time": self.end_time,
        }
        if self.except_dates:  # version 2: exception dates (version 1 had none)
            state |= {"version": 2, "except_dates": self.except_dates}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("version", 1) > 2:
            name = type(self).__name__
            raise ValueError(f"{name} state version {state['version']} is not supported")
        self.expression = state["expression"]
        self.timezone = state["timezone"]
        self.not_before = state["not_before"]
        self.end_time = state["end_time"]
        self.except_dates = tuple(state.get("except_dates", ()))
        self._until = None
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


# -- RRULE -----------------------------------------------------------------------------
_STEPS = {du.WEEKLY: timedelta(weeks=1), du.DAILY: ONE_DAY, du.HOURLY: timedelta(hours=1)}
_STEPS |= {du.MINUTELY: timedelta(minutes=1), du.SECONDLY: ONE_SECOND}


class LocalRRuleTrigger(_LocalRuleTrigger):
    """RFC 5545 RRULEs (their union) over local wall time (UTC when DTSTART ends in Z).

    The DST rule follows the hours the rules can fire in (``hours_of``): fewer than 24 →
    wall-clock rule, all 24 or drifting → cadence rule, as for cron with the same times.
    EXDATEs drop occurrences by local date or local time; a ``Z`` UNTIL bounds instants.
    dateutil iterates from DTSTART on every query, so rules without COUNT are re-based to
    a recent DTSTART on the same INTERVAL grid.
    """

    def _compile(self) -> None:
        spec = parse_rrule(self.expression)
        self._zone = UTC if spec.utc else ZoneInfo(self.timezone)
        compiled = compile_rules(spec, self._zone)
        self._rules = compiled.rules
        self._compiled = compiled
        self._until = compiled.until
        hours = [hours_of(rule) for rule in self._rules]
        self.fixed_hours = (
            all(h is not None for h in hours)
            and len(frozenset().union(*(h for h in hours if h is not None))) < 24
        )
        self._steps = [self._step_of(rule) for rule in self._rules]

    @staticmethod
    def _step_of(rule: Any) -> timedelta | None:
        step = _STEPS.get(rule._freq)
        if step is None or rule._count is not None:
            return None
        return step * rule._interval  # type: ignore[no-any-return]

    @property
    def _rule(self) -> Any:
        return self._rules[0]

    @property
    def dtstart(self) -> datetime:
        start: datetime = self._rule._dtstart
        return start

    def runs_within(self, start: datetime, span: timedelta) -> bool:
        """Does the rule occur within ``span`` of ``start``? Bounded: dateutil would search
        up to year 9999 for a rule that never matches (e.g. BYMONTH=2;BYMONTHDAY=30)."""
        low = wall(start, self._zone) - ONE_DAY
        for index, rule in enumerate(self._rules):
            until = low + span + ONE_DAY
            if rule._until is not None:
                until = min(until, rule._until)
            probe = self._rule_near(index, low).replace(until=until, count=None)
            if probe.after(low) is not None:
                return True
        return False

    def _rule_near(self, index: int, after: datetime) -> Any:
        """Rule ``index`` with DTSTART moved, whole INTERVALs at a time, to just before
        ``after``.

        Same occurrences from there on (no COUNT; inherited BY* parts keep their values as
        the time of day and weekday do not change), without iterating from the start.
        """
        rule, step = self._rules[index], self._steps[index]
        if step is None or after - self.dtstart <= 2 * step:
            return rule
        periods = (after - self.dtstart) // step - 1
        return rule.replace(dtstart=self.dtstart + periods * step)

    def next_wall_time(self, after: datetime) -> datetime | None:
        found = [self._rule_near(i, after).after(after, inc=True) for i in range(len(self._rules))]
        candidates = [f for f in found if f is not None]
        candidate: datetime | None = min(candidates) if candidates else None
        while candidate is not None and self._compiled.excluded(candidate):  # EXDATE
            if candidate.date() in self._compiled.skip_days:
                return self.next_wall_time(datetime.combine(candidate.date() + ONE_DAY, time()))
            return self.next_wall_time(candidate + ONE_SECOND)
        return candidate

    def __str__(self) -> str:
        return f"rrule[{self.expression!r} {self.timezone}]"


# -- a schedule's times, each moved later by a fixed offset ------------------------------


class SpreadTrigger(BaseTrigger):  # type: ignore[misc]
    """Another trigger's fire times, each ``offset`` seconds later.

    A task created with ``spread`` runs at a fixed offset after each of its schedule's
    times, so that many tasks on one schedule do not all start in the same second. The
    wrapped trigger keeps the schedule's rules (wall clock, exception dates, end time);
    this one only shifts: the next fire after ``previous``/``now`` is the wrapped
    trigger's next fire after the same instants moved back by the offset, moved forward.

    Pickled as the wrapped trigger's class reference and state (so two copies of one
    schedule compare equal by state, as reconciliation compares triggers) and the offset.
    """

    def __init__(self, inner: BaseTrigger, offset: int) -> None:
        self.inner = inner
        self.offset = int(offset)

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        shift = timedelta(seconds=self.offset)
        previous = previous_fire_time - shift if previous_fire_time is not None else None
        fire: datetime | None = self.inner.get_next_fire_time(previous, now - shift)
        return fire + shift if fire is not None else None

    def __getstate__(self) -> dict[str, Any]:
        inner = type(self.inner)
        return {
            "version": 1,
            "offset": self.offset,
            "inner_class": f"{inner.__module__}:{inner.__qualname__}",
            "inner_state": self.inner.__getstate__(),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("version", 1) > 1:
            raise ValueError(f"SpreadTrigger state version {state['version']} is not supported")
        from apscheduler.util import ref_to_obj

        inner_class = ref_to_obj(state["inner_class"])
        inner = inner_class.__new__(inner_class)
        inner.__setstate__(state["inner_state"])
        self.inner = inner
        self.offset = int(state["offset"])

    def __str__(self) -> str:
        return f"spread[{self.inner} +{self.offset}s]"

    def __repr__(self) -> str:
        return f"<SpreadTrigger +{self.offset}s {self.inner!r}>"
