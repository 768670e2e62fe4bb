"""The grammar table of ``custom_schedule``: ``GRAMMAR`` is the whole language.

Each row is a pattern, the builder that turns a match into a schedule
(``repeating_forms``, ``one_time_forms``) and examples of what it accepts (docs/time.md
lists them; a test parses every one). ``build_phrase`` reads the rest of a phrase, once
its clauses are out, with the first row that fits it. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from scheduler_service.schedules.dates import parse_when
from scheduler_service.schedules.days import month_days
from scheduler_service.schedules.form_context import FormContext
from scheduler_service.schedules.one_time_forms import (
    at_only,
    calendar_date,
    day_word,
    from_now,
    next_weekday,
)
from scheduler_service.schedules.phrase_model import EXAMPLES, Phrase
from scheduler_service.schedules.repeating_forms import (
    every_days,
    every_months,
    every_unit,
    every_weekdays,
    every_weeks,
    of_the_month,
    quarterly,
    yearly,
)
from scheduler_service.schedules.time_clauses import TimeClauses
from scheduler_service.schedules.words import (
    DAY_LIST,
    MONTH_NAME,
    NTH_DAY,
    WEEKDAYS,
    PhraseError,
)

_N = r"(?P<n>\d+|other|a|an|one|two|three|four|five|six)"
_DAYS = rf"(?P<days>{DAY_LIST})"
_ONE_DATE = rf"(?:the )?(?:{MONTH_NAME} \d{{1,2}}(?:st|nd|rd|th)?|\d{{1,2}}(?:st|nd|rd|th)? (?:of )?{MONTH_NAME})"
_YEAR_DAY = rf"(?:{_ONE_DATE}|{NTH_DAY})"
_DATE = rf"(?P<date>{_YEAR_DAY})"
_DATES = rf"(?P<date>{_YEAR_DAY}(?:(?:, | and |, and ){_YEAR_DAY})+)"

GRAMMAR: tuple[tuple[re.Pattern[str], Callable[[FormContext], Phrase], str], ...] = tuple(
    (re.compile(pattern), builder, examples)
    for pattern, builder, examples in (
        (
            rf"every (?:{_N} )?(?P<unit>second|minute|hour)s?(?: on {_DAYS})?",
            every_unit,
            "every 15 minutes; every 2 hours; every hour on the half hour; "
            "every 15 minutes between 9 and 17 on weekdays; every 1.5 hours; every half hour",
        ),
        (
            rf"(?:every (?:{_N} )?days?|daily)",
            every_days,
            "every day at 7:15; daily at 9am; every other day at 16:00; twice a day at 8 and 20; "
            "every day at 6:30 except weekends; every morning at 7",
        ),
        (
            rf"(?:every (?:{_N} )?weeks?|weekly)(?: on {_DAYS})?",
            every_weeks,
            "every 2 weeks on monday and thursday at 8:00; weekly on friday at 5pm",
        ),
        (
            rf"every (?:{_N} )?{_DAYS}",
            every_weekdays,
            "every weekday at 9am; every mon-thu at 18:30; every other tuesday at 9; "
            "at 8am every workday; every saturday evening at 7",
        ),
        (
            rf"(?:on )?{_DAYS}",
            every_weekdays,
            "on weekends at 10; mondays and thursdays at 8 (plural: repeating)",
        ),
        (
            rf"(?:every (?:{_N} )?months?|monthly)(?: on (?P<spec>.+))?",
            every_months,
            "every month on the 15th at 10; every 2 months on the last day; "
            "monthly on the first monday at 9",
        ),
        (
            r"(?:every quarter|quarterly)(?: on (?P<spec>.+))?"
            r"|(?:on )?(?:the )?(?P<spec2>.+) of (?:the|every|each) quarter",
            quarterly,
            "every quarter on the 1st at 9; the last business day of the quarter",
        ),
        (
            rf"(?:every (?:{_N} )?years? on |(?:every|annually on|yearly on) ){_DATE}",
            yearly,
            "every year on March 3 at 9; every March 3 at 9am; annually on 24 december; "
            "every year on the second monday of october at 9",
        ),
        (
            rf"(?:on )?(?P<date>{NTH_DAY})",
            yearly,
            "the second monday of october at 9 (a weekday of a named month: every year)",
        ),
        (
            rf"(?:every (?:{_N} )?years? on |(?:every|annually on|yearly on|on) )?{_DATES}",
            yearly,
            "on March 1, June 1 and September 1 at 9am (several dates: repeating)",
        ),
        (
            r"(?:on |every )?(?P<spec>(?:the )?.+?)(?: of (?:the|every|each) month| every month| monthly)?",
            of_the_month,
            "first monday of the month at 10; last friday of the month; on the 1st and 15th at 9; "
            "last business day of the month at 16; the 10th and the last day of the month at 9",
        ),
        (
            r"in (?:(?P<half>half an hour)|(?P<n>\d+(?:\.\d+)?|a|an|one|two|three|four|five|six"
            r"|seven|eight|nine|ten|eleven|twelve) (?P<unit>minute|hour|day|week)s?)",
            from_now,
            "in 2 hours; in 30 minutes; in half an hour; in 3 days at 9; in two and a half hours",
        ),
        (
            r"(?P<day>today|tomorrow|(?:the )?day after tomorrow)",
            day_word,
            "today at 18:00; tomorrow at 7; tonight at 8; tomorrow morning at 8",
        ),
        (
            rf"(?:(?P<next>next) |this |on )?(?P<wd>{'|'.join(WEEKDAYS)}|mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun)",
            next_weekday,
            "next tuesday at 9; on friday at 17:00",
        ),
        (
            r"(?:on )?(?P<date>.+)",
            calendar_date,
            "March 3 at 5pm; on 3 March at 17:00; the 5th of next month at noon",
        ),
        (r"", at_only, "at 9pm"),
    )
)


def build_phrase(
    text: str,
    clauses: TimeClauses,
    zone: ZoneInfo,
    now: datetime,
    default_time: time | None,
    origin: datetime | None,
) -> Phrase:
    """The first row of GRAMMAR that reads the rest of the phrase builds the schedule."""
    rest = clauses.rest
    month_error: PhraseError | None = None
    for pattern, builder, _ in GRAMMAR:
        match = pattern.fullmatch(rest)
        if match is None:
            continue
        if builder is at_only and not clauses.times:
            continue
        if builder is quarterly and match["spec2"]:
            rest2 = re.fullmatch(r"(?P<spec>.+)", match["spec2"])
            assert rest2 is not None
            match = rest2
        if builder is of_the_month and (problem := _month_problem(match["spec"])):
            month_error = month_error or problem
            continue
        if builder is every_weekdays and not rest.startswith("every") and not _plural(rest):
            continue  # "on friday" is one day (one-time); "on fridays", "weekdays" repeat
        if builder is calendar_date and not _is_date(rest, now.astimezone(zone).date()):
            continue
        excepted = clauses.free.excluded
        if excepted and builder not in (every_unit, every_days, every_weeks, every_weekdays):
            raise PhraseError(
                f"{text!r}: 'except' with days of the week fits schedules that run on days "
                "of the week (e.g. 'every day at 9am except weekends'); for other dates use "
                "except_dates (local dates YYYY-MM-DD)"
            )
        return builder(FormContext(text, match, clauses, zone, now, default_time, origin))
    if month_error is not None and re.search(r"month|business|\d(?:st|nd|rd|th)\b|\blast\b", rest):
        raise month_error
    raise PhraseError(f"{text!r} is not understood; accepted forms: {EXAMPLES}")


def _is_date(rest: str, today: date) -> bool:
    try:
        when = parse_when(rest, today)
    except PhraseError:
        return True  # a date that does not exist: let the builder say so
    return when is not None and when.day is not None and when.at is None


def _month_problem(spec: str | None) -> PhraseError | None:
    """None if the text names days of a month ('the 1st and 15th', 'last friday', …)."""
    try:
        month_days(spec or "")
    except PhraseError as exc:
        return exc
    return None


def _plural(days: str) -> bool:
    """Days said as repeating: plurals, weekday(s)/weekend(s), or several days."""
    words = re.findall(r"[a-z]+", days)
    names = [w for w in words if w not in ("on", "and", "or", "to", "through", "thru")]
    several = len(names) > 1 or "-" in days
    return several or all(w.endswith("s") or w in ("weekday", "weekend") for w in names)


def examples() -> list[tuple[str, str]]:
    """(builder name, examples) for every row of GRAMMAR, for docs and tests."""
    return [(builder.__name__, text) for _, builder, text in GRAMMAR]
