"""cron and RFC 5545 RRULE text given as custom_schedule, as schedules: parsed, checked
for a first run and for runs closer than the minimum interval, with hints when an
INTERVAL grid and BYHOUR/BYMINUTE never meet. Quartz cron is read through the RRULE it
translates to."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from itertools import pairwise

from apscheduler.triggers.base import BaseTrigger

from scheduler_service.clock.cron import parse_cron
from scheduler_service.clock.rrule import RRuleSpec, parse_rrule
from scheduler_service.clock.zones import wall
from scheduler_service.schedules import quartz
from scheduler_service.schedules.fields import TIME_OF_DAY, parse_datetime
from scheduler_service.schedules.fires import GAP_SAMPLE, PREVIEW_HORIZON, upcoming_fires
from scheduler_service.schedules.frequencies import Context, check_end
from scheduler_service.schedules.model import Schedule, ScheduleError
from scheduler_service.statuses import Frequency
from scheduler_service.triggers import LocalCronTrigger, LocalRRuleTrigger

# The accepted forms of custom_schedule, quoted by every refusal of one.
CUSTOM_EXAMPLES = (
    '"every 15 minutes", "every day at 07:15", "every 3 days at 09:30", "every weekday at 9am", '
    '"every other tuesday at 9", "twice a day at 8 and 20", "first monday of the month at 10", '
    '"last business day of the month at 16", "on the 1st and 15th at 9", '
    '"every year on March 3 at 9", "every quarter on the 1st at 9", '
    '"every 15 minutes between 9 and 17 on weekdays", "every hour on the half hour", '
    '"every day at 9am except weekends", "every 3 weeks on thursday at 9 starting Feb 4", '
    '"every 10 minutes for the next hour", "every weekday at 9am until June 30", '
    '"every weekday at 9am (Europe/Berlin)", "in 2 hours", "tomorrow at 7", '
    '"next tuesday at 9", "March 3 at 5pm", "cron: 30 8 * * 1-5", '
    '"RRULE:FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=8;BYMINUTE=0"'
)


_CRON_TOKEN = re.compile(r"^(?:[0-9*/,\-?#lw]+|[a-z]{3}(?:l|#\d|(?:[-,/][a-z0-9]{1,3})*))$")


def _custom_error(text: str, problem: str) -> ScheduleError:
    return ScheduleError(
        "custom_schedule", f"{text!r} {problem}; accepted forms: {CUSTOM_EXAMPLES}"
    )


def looks_like_cron(lowered: str) -> bool:
    """5 to 7 cron fields (numbers, ranges, steps, names, Quartz's L W # ?)."""
    tokens = lowered.split()
    return 5 <= len(tokens) <= 7 and all(_CRON_TOKEN.match(t) for t in tokens)


def rule_start(ctx: Context) -> datetime:
    """Rules start now, or at an ISO scheduled_time still ahead (HH:MM does not apply)."""
    text = (ctx.data.scheduled_time or "").strip()
    if text and not TIME_OF_DAY.match(text):
        return max(ctx.now, parse_datetime(text, ctx.zone, "scheduled_time"))
    return ctx.now


def cron_schedule(ctx: Context, text: str) -> Schedule:
    if quartz.is_quartz(text.lower()):
        return _quartz(ctx, text)
    try:
        spec = parse_cron(text)
    except ValueError as exc:
        hint = ""
        if len(text.split()) in (6, 7):
            hint = (
                " (a Quartz expression, seconds first, needs '?' in one day field, e.g. "
                "'0 0 9 ? * MON-FRI')"
            )
        raise _custom_error(text, f"is not a valid cron expression: {exc}{hint}") from None
    start = rule_start(ctx)
    trigger = LocalCronTrigger(expression=spec.expression, timezone=ctx.zone.key, not_before=start)
    return rule_schedule(ctx, text, trigger, "cron")


def _quartz(ctx: Context, text: str) -> Schedule:
    """Quartz cron (L, W, #, ?) as the RRULE lines that say the same, with the reading."""
    try:
        translated = quartz.translate(text)
    except ValueError as exc:
        raise _custom_error(
            text, f"is not a cron expression that can be scheduled: {exc}"
        ) from None
    schedule = rrule_schedule(ctx, translated.rrule)
    note = f"cron {text!r} is read as Quartz cron: {translated.reading}"
    return replace(schedule, phrase=f"cron '{text}'", notes=(*schedule.notes, note))


def rrule_schedule(ctx: Context, text: str) -> Schedule:
    try:
        spec = parse_rrule(text)
    except (ValueError, ZeroDivisionError, OverflowError) as exc:
        rules = re.findall(r"(?:RRULE:)?(FREQ=\S+)", text.upper())
        raise _custom_error(
            " ".join(text.split()), f"is not a valid RRULE: {exc}{_grid_hint(rules, None)}"
        ) from None
    if spec.tzid is not None and spec.tzid != ctx.zone.key:
        raise _custom_error(
            text,
            f"has DTSTART;TZID={spec.tzid} but the task's timezone is {ctx.zone.key}; set "
            f"timezone to {spec.tzid!r} or drop TZID",
        )
    start = rule_start(ctx)
    if spec.dtstart is None:
        # An ISO scheduled_time (past or future) is the rule's DTSTART, so an INTERVAL keeps
        # its phase; the first run is still at or after now.
        scheduled = (ctx.data.scheduled_time or "").strip()
        origin = (
            parse_datetime(scheduled, ctx.zone, "scheduled_time")
            if scheduled and not TIME_OF_DAY.match(scheduled)
            else start
        )
        spec = replace(
            spec, dtstart=_default_dtstart(spec, wall(origin, UTC if spec.utc else ctx.zone))
        )
    try:
        trigger = LocalRRuleTrigger(expression=spec.text(), timezone=ctx.zone.key, not_before=start)
    except ValueError as exc:
        raise _custom_error(
            " ".join(text.split()), f"{exc}{_grid_hint(spec.rules, spec.dtstart)}"
        ) from None
    if not trigger.runs_within(start, timedelta(days=3660)):
        raise _custom_error(
            " ".join(text.split()),
            f"has no run in the next 10 years{_grid_hint(spec.rules, spec.dtstart)}",
        )
    return rule_schedule(ctx, text, trigger, "rrule")


_SUB_DAILY = ("FREQ=HOURLY", "FREQ=MINUTELY", "FREQ=SECONDLY")


def _stepped(rule: str) -> bool:
    """A sub-daily FREQ with INTERVAL > 1: its grid depends on DTSTART's time of day."""
    interval = re.search(r"INTERVAL=(\d+)", rule)
    return rule.startswith(_SUB_DAILY) and interval is not None and int(interval[1]) > 1


def _default_dtstart(spec: RRuleSpec, local: datetime) -> datetime:
    """DTSTART when the rule gives none.

    A sub-daily rule with INTERVAL > 1 counts its grid from local midnight of the start
    day, so FREQ=MINUTELY;INTERVAL=15 runs at :00/:15/:30/:45 and FREQ=HOURLY;INTERVAL=2
    in the even hours (like cron */15 and 0 */2) whenever it is created. Other rules start
    at the start rounded up to a whole minute (implicit BYSECOND=0, first run at/after it).
    """
    if any(_stepped(rule) for rule in spec.rules):
        return datetime.combine(local.date(), time())
    ceiling = local.replace(second=0, microsecond=0)
    return ceiling + timedelta(minutes=1) if ceiling < local else ceiling


def _grid_hint(rules: tuple[str, ...] | list[str], dtstart: datetime | None) -> str:
    """Why an INTERVAL grid and BYHOUR/BYMINUTE may never meet, and the fix."""
    rule = next((r for r in rules if _stepped(r)), None)
    if rule is None or not re.search(r"BY(?:HOUR|MINUTE)=", rule):
        return ""
    n = int(re.search(r"INTERVAL=(\d+)", rule)[1])  # type: ignore[index]
    unit = "hours" if rule.startswith("FREQ=HOURLY") else "minutes"
    start = dtstart.strftime("%H:%M") if dtstart else "00:00"
    even = " (the even hours)" if n == 2 and unit == "hours" else ""
    return (
        f"; INTERVAL={n} counts every {n} {unit} from DTSTART {start}{even}, and BYHOUR/"
        "BYMINUTE keep only the grid times they list: drop INTERVAL (BYHOUR/BYMINUTE already "
        "choose the times) or list times on the grid"
    )


def rule_schedule(
    ctx: Context, text: str, trigger: LocalCronTrigger | LocalRRuleTrigger, syntax: str
) -> Schedule:
    first = trigger.get_next_fire_time(None, trigger.not_before)
    if first is None:
        raise _custom_error(" ".join(text.split()), "has no run after now")
    _check_min_gap(ctx, text, trigger, first)
    schedule = Schedule(
        frequency=Frequency.CUSTOM,
        start_at=first.astimezone(UTC),
        expression=trigger.expression,
        syntax=syntax,
        **ctx.common,
    )
    check_end(ctx, schedule, first)
    return schedule


def _check_min_gap(ctx: Context, text: str, trigger: BaseTrigger, first: datetime) -> None:
    """Refuse a rule whose fire times come closer than min_interval (next few hundred)."""
    fires = list(upcoming_fires(trigger, first, GAP_SAMPLE, first + PREVIEW_HORIZON))
    pairs = list(pairwise(fires))
    if not pairs:
        return
    a, b = min(pairs, key=lambda p: p[1] - p[0])
    seconds = (b - a).total_seconds()
    if seconds < ctx.min_interval:
        raise ScheduleError(
            "custom_schedule",
            f"{' '.join(text.split())!r} runs {seconds:g} s apart (at "
            f"{a.astimezone(ctx.zone).isoformat()} and {b.astimezone(ctx.zone).isoformat()}), "
            f"more often than the minimum interval of {ctx.min_interval} s; choose a sparser "
            "schedule, e.g. '*/5 * * * *' or 'RRULE:FREQ=MINUTELY;INTERVAL=5'",
        )
