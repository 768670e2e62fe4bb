"""The builders of the repeating rows of the grammar table: every N minutes or hours,
days, weeks, weekdays, months, quarters and years.

Each turns a matched row (``form_context.FormContext``) into the simplest schedule that
says it: ``Elapsed`` for real-time steps, ``WallClock`` for one time of day every N
days, weeks or months, and otherwise RRULE lines (``days`` writes them) anchored at the
first run. Pure.
"""

from __future__ import annotations

import re
from datetime import time
from typing import Literal

from scheduler_service.schedules.days import DaySet, byday, month_days, year_days
from scheduler_service.schedules.form_context import FormContext, anchored_rule
from scheduler_service.schedules.phrase_model import Elapsed, Phrase, WallClock
from scheduler_service.schedules.words import PhraseError, parse_day_list


def every_unit(ctx: FormContext) -> Phrase:
    """every 15 minutes / every 2 hours / every minute / every 30 seconds (refused by the
    minimum interval) — with a window, days, excepted days or a minute of the hour: a
    clock-aligned rule."""
    unit = ctx.group("unit") or ""
    interval = ctx.interval()
    days_text = ctx.group("days")
    c = ctx.clauses
    if c.times:
        raise PhraseError(
            f"{ctx.text!r}: 'at …' does not fit every N minutes or hours; say where the runs "
            "start ('every 2 hours starting at 9am'), give the first run in scheduled_time, "
            "or a window such as 'every 15 minutes between 9 and 17'"
        )
    plain = c.window is None and days_text is None and c.minute is None
    if unit == "second" or (plain and not c.free.excluded):
        if c.minute is not None:
            raise PhraseError(f"{ctx.text!r}: a minute of the hour needs hours")
        plural: Literal["seconds", "minutes", "hours"] = (
            "seconds" if unit == "second" else "minutes" if unit == "minute" else "hours"
        )
        return Elapsed(plural, interval)
    step = interval * (60 if unit == "hour" else 1)
    if unit == "minute" and c.minute is not None:
        raise PhraseError(f"{ctx.text!r}: a minute of the hour fits 'every hour', not minutes")
    start, end = c.window or (time(0, c.minute or 0), time(23, 59))
    if c.window is not None and c.minute is not None:
        start = start.replace(minute=c.minute)
    times = _window_times(start, end, step, wraps=c.window is not None)
    weekdays = ctx.keep(parse_day_list(days_text) if days_text else tuple(range(7)))
    day = DaySet("DAILY", "" if len(weekdays) == 7 else byday(weekdays))
    return anchored_rule(ctx, [day], 1, times)


def _window_times(start: time, end: time, step: int, *, wraps: bool) -> tuple[time, ...]:
    """start, start+step … up to end inclusive (past midnight when end is earlier)."""
    if step >= 1440:
        raise PhraseError("a window holds steps shorter than a day")
    a = start.hour * 60 + start.minute
    b = end.hour * 60 + end.minute
    if b <= a:
        if not wraps or b == a:
            raise PhraseError("the window must not be empty")
        b += 1440
    return tuple(
        sorted({time(((a + k) // 60) % 24, (a + k) % 60) for k in range(0, b - a + 1, step)})
    )


def every_days(ctx: FormContext) -> Phrase:
    """every day at 7:15 / daily at 9am / every 3 days at 8 / every other day / twice a
    day at 8 and 20 / every day except weekends (the days of the week that are left)."""
    ctx.refuse("window", "minute")
    interval = ctx.interval()
    if ctx.clauses.free.excluded:
        if interval > 1:
            raise PhraseError(
                f"{ctx.text!r}: 'except …' fits days of the week, not every {interval} days; "
                "name the days, e.g. 'every monday, wednesday and friday at 9'"
            )
        return _weekly(ctx, 1, ctx.keep(tuple(range(7))))
    times = ctx.times()
    if len(times) == 1 and ctx.clauses.per_day in (None, 1):
        return WallClock("days", interval, ctx.single_time())
    return anchored_rule(ctx, [DaySet("DAILY")], interval, times)


def every_weeks(ctx: FormContext) -> Phrase:
    """every week / every 2 weeks on monday and thursday at 8:00 / weekly on fri at 5pm."""
    ctx.refuse("window", "minute")
    days = ctx.group("days")
    weekdays = ctx.keep(parse_day_list(days)) if days else None
    return _weekly(ctx, ctx.interval(), weekdays)


def every_weekdays(ctx: FormContext) -> Phrase:
    """every weekday at 9am / every monday and thursday / every mon-thu at 18:30 /
    every other tuesday at 9 / every 3 fridays / on weekends at 10 / every business day."""
    ctx.refuse("window", "minute")
    return _weekly(ctx, ctx.interval(), ctx.keep(parse_day_list(ctx.group("days") or "")))


def _weekly(ctx: FormContext, interval: int, weekdays: tuple[int, ...] | None) -> Phrase:
    times = ctx.times()
    if len(times) == 1:
        return WallClock("weeks", interval, ctx.single_time(), weekdays)
    days = weekdays or (ctx.first_day.weekday(),)
    freq = "WEEKLY" if interval > 1 else "DAILY"
    return anchored_rule(ctx, [DaySet(freq, byday(days))], interval, times)


def every_months(ctx: FormContext) -> Phrase:
    """every month on the 15th at 10 / every 2 months on the last day / monthly on the
    first monday / every month on the 1st and 15th / every 3 months."""
    ctx.refuse("window", "minute")
    spec = ctx.group("spec")
    return _monthly(ctx, ctx.interval(), spec)


def of_the_month(ctx: FormContext) -> Phrase:
    """first monday of the month at 10 / last friday of every month / the last day of the
    month / on the 1st and 15th at 9 / second-to-last day of the month / first business
    day / the 10th and the last day of the month."""
    ctx.refuse("window", "minute")
    return _monthly(ctx, 1, ctx.group("spec"))


def _monthly(ctx: FormContext, interval: int, spec: str | None) -> Phrase:
    times = ctx.times()
    if spec is None or re.fullmatch(
        r"(?:on )?(?:the )?(?:day )?(?:\d{1,2}(?:st|nd|rd|th)?|last day)", spec
    ):
        if len(times) == 1:
            day = None
            if spec is not None:
                digits = re.sub(r"\D", "", spec)
                day = int(digits) if digits else -1
                if not (day == -1 or 1 <= day <= 31):
                    raise PhraseError(
                        f"day {day} is not a day of the month; use 1–31 or 'last day'"
                    )
            return WallClock("months", interval, ctx.single_time(), day_of_month=day)
        spec = spec or str(ctx.first_day.day)
    return anchored_rule(ctx, month_days(spec), interval, times)


def quarterly(ctx: FormContext) -> Phrase:
    """every quarter on the 1st at 9 / quarterly on the last day / every quarter on the
    first monday / the last business day of the quarter. Quarters are Jan–Mar, Apr–Jun …"""
    ctx.refuse("window", "minute")
    days = month_days(ctx.group("spec") or "1st", quarter=True)
    return anchored_rule(ctx, days, 1, ctx.times())


def yearly(ctx: FormContext) -> Phrase:
    """every year on March 3 at 9 / every March 3 at 9am / every 2 years on 1 July /
    annually on dec 24 at 18:00 / on March 1, June 1 and September 1 / every year on the
    second Monday of October. February 29 runs in leap years only (RFC 5545)."""
    ctx.refuse("window", "minute")
    return anchored_rule(ctx, year_days(ctx.group("date") or ""), ctx.interval(), ctx.times())
