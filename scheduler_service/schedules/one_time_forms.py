"""The builders of the one-time rows of the grammar table: "in 2 hours", "tomorrow at
7", "next tuesday at 9", "March 3 at 5pm", "at 9pm".

Each finds the one local day the phrase means and puts the phrase's time of day on it
(``OneTime``, an aware UTC instant; a local time that occurs twice is its first
occurrence). Minutes and hours from now are real time. Pure.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from scheduler_service.schedules.dates import parse_when
from scheduler_service.schedules.form_context import FormContext
from scheduler_service.schedules.phrase_model import OneTime, Phrase
from scheduler_service.schedules.words import NUMBER_WORDS, PhraseError, weekday_of


def from_now(ctx: FormContext) -> Phrase:
    """in 2 hours / in 30 minutes / in half an hour / in 2.5 hours / in two and a half
    hours / in 3 days (same clock time) / in 2 days at 9am. Minutes and hours are real
    time; days and weeks are calendar days."""
    ctx.refuse("window", "minute")
    n = ctx.group("n") or "1"
    unit = ctx.group("unit") or ""
    if ctx.group("half"):
        return OneTime(ctx.now.astimezone(UTC) + timedelta(minutes=30))
    count = float(NUMBER_WORDS.get(n) or n)
    if unit in ("minute", "hour"):
        ctx.refuse("times")
        delta = timedelta(minutes=count) if unit == "minute" else timedelta(hours=count)
        return OneTime(ctx.now.astimezone(UTC) + delta)
    if count != int(count):
        raise PhraseError(f"{ctx.text!r}: say whole days, or hours ('in 36 hours')")
    days = int(count) * (7 if unit == "week" else 1)
    return _on_date(ctx, ctx.local_now.date() + timedelta(days=days), ctx.local_now.time())


def day_word(ctx: FormContext) -> Phrase:
    """today at 18:00 / tonight at 8 (20:00) / tomorrow at 7 / the day after tomorrow at 9am.

    'tonight' arrives as 'today' with its hours read in the evening (``clauses``)."""
    ctx.refuse("window", "minute")
    word = ctx.group("day") or ""
    offset = {"today": 0, "tomorrow": 1}.get(word.removeprefix("the "), 2)
    return _on_date(ctx, ctx.local_now.date() + timedelta(days=offset), None)


def next_weekday(ctx: FormContext) -> Phrase:
    """next tuesday at 9 (the first Tuesday after today) / on friday at 17:00 / this
    friday at 5pm / saturday at 10 (the next one whose time is still ahead)."""
    ctx.refuse("window", "minute")
    day = weekday_of(ctx.group("wd") or "")
    assert day is not None
    today = ctx.local_now.date()
    ahead = (day - today.weekday()) % 7
    if ctx.group("next"):
        return _on_date(ctx, today + timedelta(days=ahead or 7), None)
    result = _on_date(ctx, today + timedelta(days=ahead), None)
    if isinstance(result, OneTime) and result.at <= ctx.now:
        return _on_date(ctx, today + timedelta(days=7), None)
    return result


def calendar_date(ctx: FormContext) -> Phrase:
    """March 3 at 5pm / on 3 March at 17:00 / the 5th of next month at noon / 2026-03-03
    at 9 — the next such date (this year's if still ahead)."""
    ctx.refuse("window", "minute")
    when = parse_when(ctx.clauses.rest, ctx.local_now.date())
    assert when is not None and when.day is not None
    if when.period:
        raise PhraseError(
            f"{ctx.text!r} names a whole period; give the day, e.g. 'June 1 at 9am', or "
            "repeat with 'every month on the 1st at 9am'"
        )
    return _on_date(ctx, when.day, None)


def at_only(ctx: FormContext) -> Phrase:
    """at 9pm / at 7:30 — the next occurrence (today if still ahead, else tomorrow)."""
    ctx.refuse("window", "minute")
    today = ctx.local_now.date()
    result = _on_date(ctx, today, None)
    if isinstance(result, OneTime) and result.at <= ctx.now:
        return _on_date(ctx, today + timedelta(days=1), None)
    return result


def _on_date(ctx: FormContext, day: date, fallback: time | None) -> OneTime:
    """``day`` at the phrase's one time (else the caller's default, else ``fallback``)."""
    times = ctx.clauses.times
    if len(times) > 1:
        raise PhraseError(f"{ctx.text!r} gives {len(times)} times for one run; give one")
    at = times[0] if times else (ctx.default_time or fallback)
    if at is None:
        raise PhraseError(f"{ctx.text!r} needs a time of day, e.g. '{ctx.text} at 9am'")
    local = datetime.combine(day, at).replace(tzinfo=ctx.zone, fold=0)
    return OneTime(local.astimezone(UTC))
