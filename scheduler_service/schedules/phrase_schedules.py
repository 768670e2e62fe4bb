"""A phrase of the grammar (``phrases``) as a schedule: the kind it compiles to (elapsed,
wall clock, once or an RRULE), with the start, end and run count it says checked
against the fields, and notes when it leaves a day unnamed."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time

from scheduler_service.clock.zones import localize
from scheduler_service.schedules import phrases
from scheduler_service.schedules.fields import (
    TIME_OF_DAY,
    WEEKDAY_NAMES,
    parse_local_datetime,
    parse_time_of_day,
)
from scheduler_service.schedules.frequencies import (
    Context,
    WallSpec,
    check_end,
    elapsed_schedule,
    past_once_message,
    wall_clock_schedule,
)
from scheduler_service.schedules.model import Schedule, ScheduleError, ScheduleInput
from scheduler_service.schedules.rules import CUSTOM_EXAMPLES, rule_schedule, rule_start
from scheduler_service.statuses import Frequency
from scheduler_service.triggers import LocalRRuleTrigger


def phrase_schedule(ctx: Context, text: str) -> Schedule:
    """A phrase of the grammar in ``phrases``, as the kind of schedule it compiles to."""
    scheduled = (ctx.data.scheduled_time or "").strip()
    default_time: time | None = None
    origin: datetime | None = None
    if scheduled and TIME_OF_DAY.match(scheduled):
        default_time = parse_time_of_day(scheduled)
    elif scheduled:
        origin, local = parse_local_datetime(scheduled, ctx.zone, "scheduled_time")
        default_time = local.time().replace(microsecond=0)
    try:
        result = phrases.parse_phrase(text, zone=ctx.zone, now=ctx.now, default_time=default_time)
        if isinstance(result, phrases.Rule) and origin is not None:
            if result.limits.start is not None:
                raise phrases.PhraseError(_TWO_STARTS)
            # The rule's INTERVAL grid counts from the ISO start (past or future).
            result = phrases.parse_phrase(
                text, zone=ctx.zone, now=origin, default_time=default_time
            )
    except phrases.PhraseError as exc:
        message = str(exc).split("; accepted forms")[0]
        if repr(text) not in message:
            message = f"{text!r}: {message}"
        raise ScheduleError(
            "custom_schedule", f"{message}; accepted forms: {CUSTOM_EXAMPLES}"
        ) from None
    ctx = _with_phrase_limits(ctx, text, result.limits, origin)
    schedule = _compiled_schedule(ctx, text, result)
    notes = result.limits.notes + _unnamed_day_notes(ctx.data, result, schedule)
    if result.limits.except_dates:  # checked with except_dates (in parse)
        schedule = replace(schedule, except_dates=result.limits.except_dates)
    return replace(schedule, notes=schedule.notes + notes) if notes else schedule


_TWO_STARTS = (
    "the phrase says when it starts ('starting …') and scheduled_time gives a start too; "
    "give the start once"
)


def _with_phrase_limits(
    ctx: Context, text: str, limits: phrases.Limits, origin: datetime | None
) -> Context:
    """The start, end and run count a phrase says, as if given in their fields (a field
    given as well must not say otherwise)."""
    data, end_time = ctx.data, ctx.end_time
    if limits.start is not None:
        if origin is not None:
            raise ScheduleError("custom_schedule", f"{text!r}: {_TWO_STARTS}")
        data = replace(data, scheduled_time=limits.start.isoformat())
    if limits.end is not None:
        end_time = localize(limits.end, ctx.zone).astimezone(UTC)
        if ctx.end_time is not None and ctx.end_time != end_time:
            raise ScheduleError(
                "end_time",
                f"the phrase {text!r} ends at {limits.end.isoformat()} but end_time is "
                f"{data.end_time}; give the end once (in the phrase or in end_time)",
            )
        if end_time <= ctx.now and not ctx.allow_past:
            raise ScheduleError(
                "custom_schedule",
                f"{text!r} ends at {limits.end.isoformat()}, which is in the past; give a "
                "later end (or end_time / max_runs)",
            )
        data = replace(data, end_time=limits.end.isoformat())
    if limits.max_runs is not None:
        if data.max_runs is not None and data.max_runs != limits.max_runs:
            raise ScheduleError(
                "max_runs",
                f"the phrase {text!r} says {limits.max_runs} runs but max_runs is "
                f"{data.max_runs}; give the number once",
            )
        data = replace(data, max_runs=limits.max_runs)
    return replace(ctx, data=data, end_time=end_time)


def _compiled_schedule(ctx: Context, text: str, result: phrases.Phrase) -> Schedule:
    if isinstance(result, phrases.Elapsed):
        return elapsed_schedule(ctx, Frequency.CUSTOM, result.unit, result.interval)
    if isinstance(result, phrases.WallClock):
        spec = WallSpec(
            result.unit, result.interval, result.at, result.weekdays, result.day_of_month
        )
        return wall_clock_schedule(ctx, Frequency.CUSTOM, spec)
    if isinstance(result, phrases.OneTime):
        if result.at <= ctx.now and not ctx.allow_past:
            raise ScheduleError("custom_schedule", past_once_message(text, result.at, ctx.zone))
        schedule = Schedule(frequency=Frequency.ONCE, start_at=result.at, phrase=text, **ctx.common)
        check_end(ctx, schedule, result.at)
        return schedule
    trigger = LocalRRuleTrigger(
        expression=result.text(), timezone=ctx.zone.key, not_before=rule_start(ctx)
    )
    return replace(rule_schedule(ctx, text, trigger, "rrule"), phrase=text)


def _unnamed_day_notes(
    data: ScheduleInput, result: phrases.Phrase, schedule: Schedule
) -> tuple[str, ...]:
    """'every 2 weeks at 9' names no weekday: say which day the runs took (the first
    run's), so a wrong guess is seen before the task is created."""
    if not isinstance(result, phrases.WallClock) or result.limits.start is not None:
        return ()  # (a start date names the first day)
    if result.unit == "weeks" and result.weekdays is None and data.day_of_week is None:
        day = WEEKDAY_NAMES[schedule.weekdays[0]].capitalize() if schedule.weekdays else "?"
        return (
            f"no day of the week is named: the runs are on {day}s (the first run's day); "
            "name the day to choose another, e.g. 'every 2 weeks on monday at 9'",
        )
    if result.unit == "months" and result.day_of_month is None and data.day_of_month is None:
        return (
            f"no day of the month is named: the runs are on day {schedule.day_of_month} (the "
            "first run's day); name the day to choose another, e.g. 'every month on the 1st'",
        )
    return ()
