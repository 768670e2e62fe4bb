"""RFC 5545 RRULE text (DTSTART, one or more RRULEs, EXDATEs), parsed and compiled with dateutil.

The compiled rules run over naive wall time in the task's zone; the trigger
(``scheduler_service.triggers.LocalRRuleTrigger``) maps their occurrences to instants.
Several RRULE lines mean their union (the phrase grammar writes "at 8:00 and 20:30" so).
Every rule is a ``CheckedRRule``: its search checks the computation's time budget
(``clock.budget``) once per period it walks.
"""

from __future__ import annotations

import re
import types
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from dateutil import rrule as du

from scheduler_service.clock.budget import check
from scheduler_service.clock.zones import MAX_MONTH_DAYS, wall

_DTSTART = re.compile(r"^DTSTART(?:;(?P<params>[^:]*))?:(?P<value>\d{8}(?:T\d{6}Z?)?)$")
_EXDATE = re.compile(r"^EXDATE(?:;(?P<params>[^:]*))?:(?P<values>[0-9TZ,]+)$")
_UNTIL_UTC = re.compile(r"UNTIL=(\d{8}T\d{6})Z")
_STAMP = re.compile(r"^\d{8}(?:T\d{6}Z?)?$")


class _Periods(du._iterinfo):  # type: ignore[misc,name-defined]
    """dateutil's state of one search; each period's day set it asks for is one step of
    the budget. (dateutil walks period by period, up to the year 9999 for a rule that
    never matches, and checks UNTIL only on a match: the periods are what to count.)"""

    def ydayset(self, year: int, month: int, day: int) -> Any:
        check()
        return super().ydayset(year, month, day)

    def mdayset(self, year: int, month: int, day: int) -> Any:
        check()
        return super().mdayset(year, month, day)

    def wdayset(self, year: int, month: int, day: int) -> Any:
        check()
        return super().wdayset(year, month, day)

    def ddayset(self, year: int, month: int, day: int) -> Any:
        check()
        return super().ddayset(year, month, day)


class CheckedRRule(du.rrule):
    """dateutil's rrule whose search checks the time budget once per period.

    ``_iter`` is dateutil's own search, the same code object, with the one name it looks
    up for its state (``_iterinfo``) bound to ``_Periods``: same results, one check per
    period, and no change to dateutil for anyone else in the process.
    """

    _iter = types.FunctionType(
        du.rrule._iter.__code__,  # type: ignore[attr-defined]
        {**vars(du), "_iterinfo": _Periods},
        "_iter",
    )

    def replace(self, **kwargs: Any) -> CheckedRRule:
        """As ``rrule.replace`` (which builds a plain rrule): a CheckedRRule."""
        return CheckedRRule(**(_rule_kwargs(self) | kwargs))


def _rule_kwargs(rule: Any) -> dict[str, Any]:
    """The keyword arguments that build ``rule`` again (as ``rrule.replace`` reads them)."""
    return {
        "interval": rule._interval,
        "count": rule._count,
        "dtstart": rule._dtstart,
        "freq": rule._freq,
        "until": rule._until,
        "wkst": rule._wkst,
        "cache": rule._cache is not None,
        **rule._original_rule,
    }


def checked_rrule(text: str, dtstart: datetime) -> CheckedRRule:
    """``RRULE:…`` text from ``dtstart`` as a rule whose search checks the budget."""
    rule = du.rrulestr(text, dtstart=dtstart)
    if not isinstance(rule, du.rrule):
        raise ValueError("give one RRULE per line")
    return CheckedRRule(**_rule_kwargs(rule))


@dataclass(frozen=True)
class RRuleSpec:
    """``DTSTART`` (optional), one or more ``RRULE`` bodies and ``EXDATE`` values, as text parts.

    ``dtstart`` is naive: wall time in the task's zone, or UTC when ``utc`` (a ``Z`` value).
    ``exdates`` are the EXDATE values as written (``20261225``, ``20261225T090000``,
    ``20261225T140000Z``).
    """

    rules: tuple[str, ...]
    dtstart: datetime | None = None
    utc: bool = False
    tzid: str | None = None
    exdates: tuple[str, ...] = field(default_factory=tuple)

    @property
    def rule(self) -> str:
        """The RRULE bodies, as one line each joined by a space (for words)."""
        return " ".join(self.rules)

    def text(self) -> str:
        """Canonical form, stored with the task (DTSTART first, no TZID: the task has it)."""
        lines = [f"RRULE:{rule}" for rule in self.rules]
        if self.dtstart is not None:
            stamp = self.dtstart.strftime("%Y%m%dT%H%M%S") + ("Z" if self.utc else "")
            lines.insert(0, f"DTSTART:{stamp}")
        dates = [e for e in self.exdates if "T" not in e]
        times = [e for e in self.exdates if "T" in e]
        if dates:
            lines.append("EXDATE;VALUE=DATE:" + ",".join(dates))
        if times:
            lines.append("EXDATE:" + ",".join(times))
        return "\n".join(lines)


def parse_rrule(text: str) -> RRuleSpec:
    """Split RFC 5545 text into DTSTART, RRULEs and EXDATEs; check the rules with dateutil.

    RDATE and EXRULE are refused. Raises ValueError saying what is accepted.
    """
    rules: list[str] = []
    exdates: list[str] = []
    dtstart: tuple[datetime, bool, str | None] | None = None
    for token in text.split():
        upper = token.upper()
        if upper.startswith("DTSTART"):
            dtstart = _parse_dtstart(token)
        elif upper.startswith(("RRULE:", "FREQ=")):
            rules.append(upper.removeprefix("RRULE:"))
        elif upper.startswith("EXDATE"):
            exdates += _parse_exdate(upper)
        else:
            raise ValueError(
                f"{token!r} is not understood; give DTSTART (optional), RRULE and EXDATE "
                "(optional), e.g. RRULE:FREQ=WEEKLY;BYDAY=MO EXDATE;VALUE=DATE:20261225"
            )
    if not rules:
        raise ValueError("no RRULE found; give e.g. RRULE:FREQ=DAILY;BYHOUR=9;BYMINUTE=0")
    for rule in rules:
        for part in rule.split(";"):
            name, _, value = part.partition("=")
            if name == "INTERVAL" and not (value.isdigit() and int(value) >= 1):
                raise ValueError(f"INTERVAL={value} must be a whole number of at least 1")
    start, utc, tzid = dtstart or (None, False, None)
    spec = RRuleSpec(tuple(rules), start, utc, tzid, tuple(exdates))
    compile_rules(spec, ZoneInfo("UTC"), default_start=datetime(2000, 1, 1))
    return spec


def _parse_dtstart(token: str) -> tuple[datetime, bool, str | None]:
    match = _DTSTART.match(token.upper())
    if not match:
        raise ValueError(
            f"{token!r} is not a DTSTART; use DTSTART:20260105T090000 (task timezone), "
            "DTSTART;TZID=Europe/Paris:20260105T090000 or DTSTART:20260105T090000Z (UTC)"
        )
    value = match["value"]
    stamp = _stamp(value)
    # TZID is case-sensitive (Europe/Paris): read it from the original spelling.
    tzid = re.search(r"TZID=([^:;]+)", token.split(":", 1)[0], flags=re.IGNORECASE)
    return stamp, value.endswith("Z"), tzid[1] if tzid else None


def _stamp(value: str) -> datetime:
    try:
        return datetime.strptime(value.rstrip("Z"), "%Y%m%dT%H%M%S" if "T" in value else "%Y%m%d")
    except ValueError:
        raise ValueError(f"{value!r} is not a date such as 20261225 or 20261225T090000") from None


def _parse_exdate(token: str) -> list[str]:
    match = _EXDATE.match(token)
    values = match["values"].split(",") if match else []
    if not match or not all(_STAMP.match(v) for v in values) or "TZID" in (match["params"] or ""):
        raise ValueError(
            f"{token!r} is not an EXDATE; use EXDATE;VALUE=DATE:20261225,20270101 (whole "
            "days), EXDATE:20261225T090000 (a local time) or EXDATE:20261225T140000Z"
        )
    for value in values:
        _stamp(value)
    return values


@dataclass(frozen=True)
class CompiledRRule:
    """dateutil rules over naive wall time, and what the trigger checks on instants.

    ``until`` is a ``Z`` UNTIL as an instant (RFC 5545: it bounds instants, so in an
    overlap or a gap it is compared with the real fire time, not the wall time); the
    dateutil rules carry a looser wall-time UNTIL only to stop iterating.
    """

    rules: tuple[Any, ...]
    until: datetime | None
    skip_days: frozenset[date]
    skip_times: frozenset[datetime]

    def excluded(self, local: datetime) -> bool:
        return local.date() in self.skip_days or local in self.skip_times


def compile_rules(
    spec: RRuleSpec, zone: tzinfo, *, default_start: datetime | None = None
) -> CompiledRRule:
    """The dateutil rules over naive wall time in ``zone``, the UTC UNTIL and the EXDATEs."""
    start = spec.dtstart or default_start
    if start is None:
        raise ValueError("the RRULE has no DTSTART")
    untils: list[datetime] = []

    def until_to_wall(match: re.Match[str]) -> str:
        instant = datetime.strptime(match[1], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
        untils.append(instant)
        loose = wall(instant, zone) + timedelta(days=1)  # the instant bounds; this stops
        return "UNTIL=" + loose.strftime("%Y%m%dT%H%M%S")

    rules = []
    for body in spec.rules:
        if "FREQ=" not in body:
            raise ValueError("the RRULE needs FREQ=, e.g. RRULE:FREQ=WEEKLY;BYDAY=MO")
        try:
            rule = checked_rrule("RRULE:" + _UNTIL_UTC.sub(until_to_wall, body), start)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise ValueError(f"invalid RRULE ({exc})") from None
        _check_days_exist(rule)
        rules.append(rule)
    skip_days = {_stamp(v).date() for v in spec.exdates if "T" not in v}
    skip_times = {
        wall(_stamp(v).replace(tzinfo=UTC), zone) if v.endswith("Z") else _stamp(v)
        for v in spec.exdates
        if "T" in v
    }
    return CompiledRRule(
        tuple(rules), max(untils) if untils else None, frozenset(skip_days), frozenset(skip_times)
    )


def _check_days_exist(rule: Any) -> None:
    """Refuse BYMONTHDAY/BYMONTH that never meet (30 February): dateutil would search for
    them up to year 9999, which takes seconds. (Inherited values count: FREQ=YEARLY;
    BYMONTH=2 from a DTSTART on the 31st means 31 February.)"""
    days, months = rule._bymonthday, rule._bymonth
    if not days or rule._bynmonthday or not months:
        return
    if not any(day <= MAX_MONTH_DAYS[m - 1] for m in months for day in days):
        raise ValueError("BYMONTHDAY and BYMONTH never meet (e.g. 30 February)")


def hours_of(rule: Any) -> frozenset[int] | None:
    """The local hours a compiled rule can fire in, or None when they drift from day to
    day (a sub-daily INTERVAL that does not divide 24 hours) — a cadence.

    ``FREQ=HOURLY;INTERVAL=2`` from 00:00 fires in the even hours only, like cron
    ``0 */2 * * *``; ``FREQ=HOURLY`` or ``FREQ=MINUTELY;INTERVAL=15`` in all 24.
    """
    step = {du.HOURLY: 3600, du.MINUTELY: 60, du.SECONDLY: 1}.get(rule._freq)
    allowed = frozenset(rule._byhour) if rule._byhour else None
    if step is None:  # daily or longer: the hours of BYHOUR, else DTSTART's
        return allowed if allowed is not None else frozenset({rule._dtstart.hour})
    seconds = step * rule._interval
    if 86_400 % seconds:
        return allowed
    start = rule._dtstart.hour * 3600 + rule._dtstart.minute * 60 + rule._dtstart.second
    grid = frozenset(((start + k * seconds) % 86_400) // 3600 for k in range(86_400 // seconds))
    return grid & allowed if allowed is not None else grid
