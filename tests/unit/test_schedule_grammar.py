"""Everyday requests as people phrase them, through the whole schedule path.

Each row is a request as a user or a model writes it in ``custom_schedule``, said on
Wednesday 7 January 2026 at 15:00 in New York. The expected runs are written out by hand
(local wall time, minute precision) or computed here with dateutil directly — never by
asking the service. A row passes when the request is accepted on the first try and its
first runs, zone, end and warnings are as expected; the share of passing rows is the
acceptance rate of the grammar.

The second half checks the requests that must be refused or warned about, and a
property: the clauses of a phrase may come in any order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from dateutil import rrule as du
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler_service.schedules import (
    Schedule,
    ScheduleError,
    ScheduleInput,
    next_runs,
    parse_schedule,
    preview,
)

NY = "America/New_York"
NOW = datetime(2026, 1, 7, 20, 0, tzinfo=UTC)  # Wednesday 15:00 in New York


def parse(text: str, **fields: Any) -> Schedule:
    return parse_schedule(
        ScheduleInput("custom", custom_schedule=text, **fields),
        now=NOW,
        default_timezone=NY,
        min_interval=60,
    )


def local_runs(schedule: Schedule, count: int) -> list[str]:
    return [
        f"{r.astimezone(schedule.zone):%Y-%m-%dT%H:%M}" for r in next_runs(schedule, count, NOW)
    ]


def warnings_of(schedule: Schedule) -> list[str]:
    return list(preview(schedule, now=NOW, count=1)["warnings"])


def rule(freq: int, start: str, count: int, **parts: Any) -> list[str]:
    """Expected runs from dateutil's rrule directly (naive local wall time)."""
    first = datetime.fromisoformat(start)
    return [f"{d:%Y-%m-%dT%H:%M}" for d in du.rrule(freq, dtstart=first, count=count, **parts)]


@dataclass(frozen=True)
class Request:
    phrase: str
    runs: list[str]  # the first runs, local wall time
    zone: str = NY
    end: str | None = None  # the end_time, local, minute precision
    max_runs: int | None = None
    all_runs: bool = False  # ``runs`` are every run there is (an end or a run limit)
    warns: tuple[str, ...] = ()  # substrings each warning list must contain
    fields: dict[str, Any] = field(default_factory=dict)


WEEKDAY = (du.MO, du.TU, du.WE, du.TH, du.FR)
REQUESTS = [
    # -- clause order, except anywhere, zone, synonyms
    Request(
        "every day at 6:30 except weekends",
        ["2026-01-08T06:30", "2026-01-09T06:30", "2026-01-12T06:30"],
    ),
    Request(
        "every day except weekends at 6:30",
        ["2026-01-08T06:30", "2026-01-09T06:30", "2026-01-12T06:30"],
    ),
    Request(
        "at 8am every workday",
        ["2026-01-08T08:00", "2026-01-09T08:00", "2026-01-12T08:00"],
    ),
    Request(
        "at 10:00 on mondays and thursdays",
        ["2026-01-08T10:00", "2026-01-12T10:00", "2026-01-15T10:00"],
    ),
    Request(
        "every weekday at 9am (Berlin)",
        ["2026-01-08T09:00", "2026-01-09T09:00", "2026-01-12T09:00"],
        zone="Europe/Berlin",
    ),
    Request(
        "every day at 18:00 (Europe/London)",
        ["2026-01-08T18:00", "2026-01-09T18:00"],
        zone="Europe/London",
    ),
    Request("every day at 7:00 Berlin time", ["2026-01-08T07:00"], zone="Europe/Berlin"),
    Request(
        "daily at 9:30 am (Europe/Paris)",
        ["2026-01-08T09:30", "2026-01-09T09:30"],
        zone="Europe/Paris",
    ),
    Request(
        "twice a day at 9am and 5pm except on weekends",
        ["2026-01-07T17:00", "2026-01-08T09:00", "2026-01-08T17:00", "2026-01-09T09:00"],
    ),
    Request(
        "every 15 minutes between 9am and 5pm except weekends",
        ["2026-01-07T15:00", "2026-01-07T15:15", "2026-01-07T15:30"],
    ),
    Request(
        "every hour from 9am to 5pm on weekdays",
        ["2026-01-07T15:00", "2026-01-07T16:00", "2026-01-07T17:00", "2026-01-08T09:00"],
    ),
    Request("each weekday at 07:30", ["2026-01-08T07:30", "2026-01-09T07:30", "2026-01-12T07:30"]),
    Request(
        "every day at 9am except Jan 9 and Jan 10",
        ["2026-01-08T09:00", "2026-01-11T09:00", "2026-01-12T09:00"],
        warns=("2026-01-09, 2026-01-10",),
    ),
    Request(
        "every weekday except friday at 08:00",
        ["2026-01-08T08:00", "2026-01-12T08:00", "2026-01-13T08:00", "2026-01-14T08:00"],
    ),
    Request(
        "at 16:00 on the last business day of the month",
        rule(du.MONTHLY, "2026-01-07T16:00", 3, byweekday=WEEKDAY, bysetpos=-1),
    ),
    Request(
        "on the first working day of the month at 09:00",
        rule(du.MONTHLY, "2026-01-08T09:00", 3, byweekday=WEEKDAY, bysetpos=1),
    ),
    Request(
        "every first monday of the month at 10am",
        rule(du.MONTHLY, "2026-01-08T10:00", 3, byweekday=du.MO(+1)),
    ),
    Request("monthly on the 15th at 9am", ["2026-01-15T09:00", "2026-02-15T09:00"]),
    Request("every sunday at 8pm", ["2026-01-11T20:00", "2026-01-18T20:00"]),
    # -- start and end clauses
    Request(
        "every 3 weeks on Thursday starting Feb 4",
        ["2026-02-05T15:00", "2026-02-26T15:00", "2026-03-19T15:00"],
    ),
    Request(
        "every 6 hours starting at 7am",
        ["2026-01-08T07:00", "2026-01-08T13:00", "2026-01-08T19:00", "2026-01-09T01:00"],
    ),
    Request(
        "every Monday at 9am starting next month",
        ["2026-02-02T09:00", "2026-02-09T09:00", "2026-02-16T09:00"],
    ),
    Request(
        "every 4 months starting May 1 at 9am",
        ["2026-05-01T09:00", "2026-09-01T09:00", "2027-01-01T09:00"],
    ),
    Request(
        "every other friday at 4pm starting next week",
        ["2026-01-16T16:00", "2026-01-30T16:00", "2026-02-13T16:00"],
    ),
    Request(
        "every weekday at 9am starting Monday",
        ["2026-01-12T09:00", "2026-01-13T09:00", "2026-01-14T09:00"],
    ),
    Request(
        "every 10 minutes for the next hour",
        [*(f"2026-01-07T15:{m}0" for m in range(1, 6)), "2026-01-07T16:00"],
        end="2026-01-07T16:00",
        all_runs=True,
    ),
    Request(
        "every monday at 9am for 4 weeks",
        ["2026-01-12T09:00", "2026-01-19T09:00", "2026-01-26T09:00", "2026-02-02T09:00"],
        end="2026-02-04T15:00",
        all_runs=True,
    ),
    Request(
        "every day at 9am until June",
        ["2026-01-08T09:00", "2026-01-09T09:00"],
        end="2026-05-31T23:59",
        warns=("before 2026-06-01",),
    ),
    Request(
        "every Tuesday at 9am until March 1",
        rule(du.WEEKLY, "2026-01-13T09:00", 7, byweekday=du.TU),
        end="2026-03-01T23:59",
        all_runs=True,
    ),
    Request(
        "every day at 8am, 5 times",
        rule(du.DAILY, "2026-01-08T08:00", 5),
        max_runs=5,
        all_runs=True,
    ),
    # -- day parts and time formats
    Request(
        "every saturday evening at 7",
        ["2026-01-10T19:00", "2026-01-17T19:00", "2026-01-24T19:00"],
    ),
    Request("every morning at 7", ["2026-01-08T07:00", "2026-01-09T07:00"]),
    Request("every night at 11", ["2026-01-07T23:00", "2026-01-08T23:00"]),
    Request("every day at noon", ["2026-01-08T12:00", "2026-01-09T12:00"]),
    Request("every day at midnight", ["2026-01-08T00:00", "2026-01-09T00:00"]),
    Request("every day at 0715", ["2026-01-08T07:15", "2026-01-09T07:15"]),
    Request("every day at quarter to 9", ["2026-01-08T08:45"]),
    Request("every weekday at half past 8", ["2026-01-08T08:30", "2026-01-09T08:30"]),
    Request("every 1.5 hours", ["2026-01-07T16:30", "2026-01-07T18:00"]),
    Request("every half hour", ["2026-01-07T15:30", "2026-01-07T16:00"]),
    # -- lists and combinations
    Request(
        "on March 1, June 1 and September 1 at 9am",
        ["2026-03-01T09:00", "2026-06-01T09:00", "2026-09-01T09:00", "2027-03-01T09:00"],
    ),
    Request(
        "on the 10th and the last day of the month at 9",
        ["2026-01-10T09:00", "2026-01-31T09:00", "2026-02-10T09:00", "2026-02-28T09:00"],
    ),
    Request(
        "every year on the second Monday of October at 9am",
        rule(du.YEARLY, "2026-01-08T09:00", 3, bymonth=10, byweekday=du.MO(+2)),
    ),
    Request(
        "three times a week on Mon, Wed and Fri at 7am",
        ["2026-01-09T07:00", "2026-01-12T07:00", "2026-01-14T07:00"],
    ),
    # -- one time
    Request("next Friday at 2pm", ["2026-01-09T14:00"], all_runs=True),
    Request("March 3 at 5pm", ["2026-03-03T17:00"], all_runs=True),
    Request("on 3 March at 17:00", ["2026-03-03T17:00"], all_runs=True),
    Request("in two and a half hours", ["2026-01-07T17:30"], all_runs=True),
    Request("the 5th of next month at noon", ["2026-02-05T12:00"], all_runs=True),
    Request("tomorrow morning at 8", ["2026-01-08T08:00"], all_runs=True),
    Request("tonight at 9", ["2026-01-07T21:00"], all_runs=True),
]

# A second table, written after the grammar work on the first, before running it: the
# same kind of requests in other words (its first acceptance rate is in the closing note).
REQUESTS_2 = [
    Request(
        "every weekday morning at 8:30",
        ["2026-01-08T08:30", "2026-01-09T08:30", "2026-01-12T08:30"],
    ),
    Request("Mon/Wed/Fri at 6pm", ["2026-01-07T18:00", "2026-01-09T18:00", "2026-01-12T18:00"]),
    Request(
        "every Tuesday and Thursday at 10:30am",
        ["2026-01-08T10:30", "2026-01-13T10:30", "2026-01-15T10:30"],
    ),
    Request("daily at 17:45", ["2026-01-07T17:45", "2026-01-08T17:45"]),
    Request("at 9am on weekdays (London)", ["2026-01-08T09:00"], zone="Europe/London"),
    Request(
        "every 2 hours between 9am and 5pm on weekdays",
        ["2026-01-07T15:00", "2026-01-07T17:00", "2026-01-08T09:00"],
    ),
    Request(
        "every 30 min during business hours",
        ["2026-01-07T15:00", "2026-01-07T15:30", "2026-01-07T16:00"],
        warns=("09:00",),
    ),
    Request("first of every month at 9am", ["2026-02-01T09:00", "2026-03-01T09:00"]),
    Request("on the 1st of each month at 08:00", ["2026-02-01T08:00", "2026-03-01T08:00"]),
    Request(
        "every month on the last Friday at 4pm",
        ["2026-01-30T16:00", "2026-02-27T16:00", "2026-03-27T16:00"],
    ),
    Request("every year on Jan 1 at midnight", ["2027-01-01T00:00", "2028-01-01T00:00"]),
    Request("every Sunday night at 9", ["2026-01-11T21:00", "2026-01-18T21:00"]),
    Request(
        "every hour from 8am to 6pm on weekdays",
        [*(f"2026-01-07T{h}:00" for h in range(15, 19)), "2026-01-08T08:00"],
    ),
    Request("every 45 minutes", ["2026-01-07T15:45", "2026-01-07T16:30"]),
    Request(
        "every other Monday at 10am starting January 12",
        ["2026-01-12T10:00", "2026-01-26T10:00", "2026-02-09T10:00"],
    ),
    Request(
        "every Friday at 5pm until the end of March",
        rule(du.WEEKLY, "2026-01-09T17:00", 12, byweekday=du.FR),
        end="2026-03-31T23:59",
        all_runs=True,
    ),
    Request(
        "every day at 7am for the next 5 days",
        rule(du.DAILY, "2026-01-08T07:00", 5),
        end="2026-01-12T15:00",
        all_runs=True,
    ),
    Request(
        "every 5 minutes for 30 minutes",
        [f"2026-01-07T15:{m:02d}" for m in range(5, 31, 5)],
        end="2026-01-07T15:30",
        all_runs=True,
    ),
    Request(
        "every hour for the next 3 hours",
        ["2026-01-07T16:00", "2026-01-07T17:00", "2026-01-07T18:00"],
        end="2026-01-07T18:00",
        all_runs=True,
    ),
    Request(
        "twice a week on Tuesday and Friday at 9am",
        ["2026-01-09T09:00", "2026-01-13T09:00", "2026-01-16T09:00"],
    ),
    Request(
        "on weekdays at 7:30am except Wednesdays",
        rule(du.WEEKLY, "2026-01-08T07:30", 5, byweekday=(du.MO, du.TU, du.TH, du.FR)),
    ),
    Request(
        "every Saturday and Sunday at 10am",
        ["2026-01-10T10:00", "2026-01-11T10:00", "2026-01-17T10:00"],
    ),
    Request("every day at 1pm Tokyo time", ["2026-01-08T13:00"], zone="Asia/Tokyo"),
    Request(
        "every weekday at 9am ET",
        ["2026-01-08T09:00", "2026-01-09T09:00"],
        warns=("America/New_York",),
    ),
    Request("every 15th of the month at noon", ["2026-01-15T12:00", "2026-02-15T12:00"]),
    Request("every quarter on the first day at 9am", ["2026-04-01T09:00", "2026-07-01T09:00"]),
    Request("every last day of the month at 6pm", ["2026-01-31T18:00", "2026-02-28T18:00"]),
    Request("every weekday at noon except Fridays", ["2026-01-08T12:00", "2026-01-12T12:00"]),
    Request("at 6:00 every morning", ["2026-01-08T06:00", "2026-01-09T06:00"]),
    Request("every evening at 8", ["2026-01-07T20:00", "2026-01-08T20:00"]),
    Request(
        "every 3 hours starting at 9am",
        ["2026-01-08T09:00", "2026-01-08T12:00", "2026-01-08T15:00"],
    ),
    Request("next Monday at 10am", ["2026-01-12T10:00"], all_runs=True),
    Request("tomorrow at 3:30pm", ["2026-01-08T15:30"], all_runs=True),
    Request("in 45 minutes", ["2026-01-07T15:45"], all_runs=True),
    Request("on Friday at noon", ["2026-01-09T12:00"], all_runs=True),
    Request("January 20 at 10am", ["2026-01-20T10:00"], all_runs=True),
    Request("in 3 hours", ["2026-01-07T18:00"], all_runs=True),
    Request("Dec 24 at 6pm", ["2026-12-24T18:00"], all_runs=True),
    Request("this Friday at 4pm", ["2026-01-09T16:00"], all_runs=True),
    Request("on 2026-02-14 at 19:00", ["2026-02-14T19:00"], all_runs=True),
]


def check(request: Request) -> None:
    schedule = parse(request.phrase, **request.fields)
    count = len(request.runs) + (3 if request.all_runs else 0)
    assert local_runs(schedule, count) == request.runs
    assert schedule.timezone == request.zone
    if request.end is not None:
        assert schedule.end_time is not None
        assert f"{schedule.end_time.astimezone(schedule.zone):%Y-%m-%dT%H:%M}" == request.end
    assert schedule.max_runs == request.max_runs
    shown = warnings_of(schedule)
    for text in request.warns:
        assert any(text in w for w in shown), shown


@pytest.mark.parametrize("request_", REQUESTS, ids=[r.phrase for r in REQUESTS])
def test_everyday_request_is_accepted_with_the_right_runs(request_: Request) -> None:
    check(request_)


@pytest.mark.parametrize("request_", REQUESTS_2, ids=[r.phrase for r in REQUESTS_2])
def test_second_table_request_is_accepted_with_the_right_runs(request_: Request) -> None:
    check(request_)


# -- Quartz cron, as models write it ------------------------------------------------------------
@pytest.mark.parametrize(
    ("cron", "expected", "reading"),
    [
        ("0 9 L * *", rule(du.MONTHLY, "2026-01-08T09:00", 3, bymonthday=-1), "last day"),
        ("0 0 9 ? * 6L", rule(du.MONTHLY, "2026-01-08T09:00", 3, byweekday=du.FR(-1)), "Quartz"),
        (
            "0 9 LW * ?",
            rule(du.MONTHLY, "2026-01-08T09:00", 3, byweekday=WEEKDAY, bysetpos=-1),
            "last weekday",
        ),
        (
            "0 9 1W * ?",
            rule(du.MONTHLY, "2026-01-08T09:00", 3, byweekday=WEEKDAY, bysetpos=1),
            "first weekday",
        ),
        ("0 9 ? * MON#2", rule(du.MONTHLY, "2026-01-08T09:00", 3, byweekday=du.MO(+2)), "second"),
        (
            "0 0 9 ? * 2#1",
            rule(du.MONTHLY, "2026-01-08T09:00", 3, byweekday=du.MO(+1)),
            "1 = Sunday",
        ),
        ("0 9 * * 1#1", rule(du.MONTHLY, "2026-01-08T09:00", 3, byweekday=du.MO(+1)), "1 = Monday"),
        ("0 30 8 ? * 2-6", rule(du.WEEKLY, "2026-01-08T08:30", 3, byweekday=WEEKDAY), "Monday"),
        ("0 9 L-2 * ?", ["2026-01-29T09:00", "2026-02-26T09:00", "2026-03-29T09:00"], "before"),
    ],
)
def test_quartz_cron_is_read_and_the_reading_stated(
    cron: str, expected: list[str], reading: str
) -> None:
    schedule = parse(cron)
    assert local_runs(schedule, len(expected)) == expected
    assert any(reading in w and "Quartz" in w for w in warnings_of(schedule))


# -- what must be refused, or accepted with a warning that states the reading -----------------
@pytest.mark.parametrize(
    ("phrase", "fixes"),
    [
        ("every day at dusk", ["not supported", "clock time"]),
        ("at sunrise on weekdays", ["not supported", "clock time"]),
        ("every weekday at 9am except public holidays", ["except_dates"]),
        ("every 10 minutes until the meeting ends", ["end_time", "max_runs"]),
        ("every day at 25:00", ["is not a time of day"]),
        ("every day at 9am starting whenever", ["starting"]),
    ],
)
def test_impossible_requests_are_refused_with_the_fix(phrase: str, fixes: list[str]) -> None:
    with pytest.raises(ScheduleError) as info:
        parse(phrase)
    for fix in fixes:
        assert fix in info.value.message, info.value.message


@pytest.mark.parametrize(
    ("phrase", "reading"),
    [
        ("biweekly at 9am", ["every 2 weeks", "twice a week"]),
        ("bimonthly on the 1st at 9am", ["every 2 months", "twice a month"]),
        ("every saturday at 7", ["07:00", "7pm"]),
        ("every day at 6:30", ["06:30", "6:30pm"]),
        ("every 10th and 31st at 9am", ["Day 31", "last day"]),
        ("every morning", ["09:00"]),
        ("every 2 weeks at 9am", ["Wednesdays"]),
        ("every month at 9am", ["day 7"]),
        ("every 30 minutes during business hours", ["09:00–17:00"]),
        ("every weekday at 9am PST", ["America/Los_Angeles"]),
        ("every second tuesday at 9am", ["2nd Tuesday", "every other tuesday"]),
        ("2nd Monday of October at 9am", ["every year"]),
    ],
)
def test_ambiguous_requests_are_accepted_with_the_reading_stated(
    phrase: str, reading: list[str]
) -> None:
    shown = warnings_of(parse(phrase))
    for text in reading:
        assert any(text in w for w in shown), (phrase, shown)


@pytest.mark.parametrize("phrase", ["every day at 18:30", "every saturday at 7pm", "at 08:00"])
def test_unambiguous_times_do_not_warn(phrase: str) -> None:
    assert not any("clock" in w for w in warnings_of(parse(phrase)))


# -- clause order --------------------------------------------------------------------------------
# (days, whether 'except …' fits them)
DAY_CLAUSES = [
    ("every day", True),
    ("every weekday", True),
    ("every monday and thursday", True),
    ("on weekends", True),
    ("every 2 weeks on tuesday", True),
    ("on the first monday of the month", False),
    ("on the 1st and 15th", False),
]
TIME_CLAUSES = ["at 9am", "at 7:30 pm", "at 8 and 20", "at noon", "at 0715"]
EXTRA_CLAUSES = [
    "except fridays",
    "but not on sundays",
    "(Europe/Paris)",
    "Paris time",
    "starting Feb 4",
    "starting next month",
    "until March 31",
    "for 3 weeks",
    "5 times in total",
]
_ONE_OF = [
    {"except fridays", "but not on sundays"},
    {"(Europe/Paris)", "Paris time"},
    {"starting Feb 4", "starting next month"},
    {"until March 31", "for 3 weeks"},
]


def _compatible(extras: list[str], excepts: bool) -> list[str]:
    """At most one clause of each kind, and 'except' only where it fits."""
    kept: list[str] = []
    for extra in extras:
        if ("except" in extra or "but not" in extra) and not excepts:
            continue
        if any(extra in group and kept_one in group for group in _ONE_OF for kept_one in kept):
            continue
        kept.append(extra)
    return kept


@settings(max_examples=150, deadline=None)
@given(
    days=st.sampled_from(DAY_CLAUSES),
    at=st.sampled_from(TIME_CLAUSES),
    extras=st.lists(st.sampled_from(EXTRA_CLAUSES), max_size=3, unique=True),
    order=st.permutations(range(5)),
)
def test_clause_order_does_not_change_the_runs(
    days: tuple[str, bool], at: str, extras: list[str], order: list[int]
) -> None:
    """A phrase and its clause-reordered variants give the same fire times and limits."""
    parts = [days[0], at, *_compatible(extras, days[1])]
    canonical = " ".join(parts)
    shuffled = " ".join(parts[i] for i in order if i < len(parts))
    a, b = _outcome(canonical), _outcome(shuffled)
    if isinstance(a, str) or isinstance(b, str):  # refused (an end before the first run)
        assert a == b, (canonical, shuffled)
        return
    assert (a.timezone, a.max_runs) == (b.timezone, b.max_runs), (canonical, shuffled)
    assert next_runs(a, 200, NOW) == next_runs(b, 200, NOW), (canonical, shuffled)


def _outcome(text: str) -> Schedule | str:
    """The schedule, or the field a refusal names."""
    try:
        return parse(text)
    except ScheduleError as exc:
        return exc.field


@settings(max_examples=60, deadline=None)
@given(
    every=st.sampled_from(["every 2 hours", "every 45 minutes", "every hour"]),
    extras=st.lists(
        st.sampled_from(["starting at 9am", "for 2 days", "(Asia/Tokyo)", "10 times"]),
        min_size=1,
        max_size=3,
        unique=True,
    ),
    order=st.permutations(range(4)),
)
def test_clause_order_does_not_change_elapsed_runs(
    every: str, extras: list[str], order: list[int]
) -> None:
    parts = [every, *extras]
    a = parse(" ".join(parts))
    b = parse(" ".join(parts[i] for i in order if i < len(parts)))
    assert (a.timezone, a.max_runs, a.end_time) == (b.timezone, b.max_runs, b.end_time)
    assert next_runs(a, 60, NOW) == next_runs(b, 60, NOW)
