"""RFC 5545 RRULE text (DTSTART plus one RRULE), parsed and compiled with dateutil.

The compiled rule runs over naive wall time in the task's zone; the trigger
(``scheduler_service.triggers.LocalRRuleTrigger``) maps its occurrences to instants.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from dateutil import rrule as du

from scheduler_service.clock.zones import MAX_MONTH_DAYS, wall

_DTSTART = re.compile(r"^DTSTART(?:;(?P<params>[^:]*))?:(?P<value>\d{8}(?:T\d{6}Z?)?)$")
_UNTIL_UTC = re.compile(r"UNTIL=(\d{8}T\d{6})Z")


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
    if not any(day <= MAX_MONTH_DAYS[m - 1] for m in months for day in days):
        raise ValueError("BYMONTHDAY and BYMONTH never meet (e.g. 30 February)")
