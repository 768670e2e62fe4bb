"""The pieces the phrase grammar is built from: times of day, date expressions, zone
names and the free clauses (start, end, except, zone, part of the day).

Expected values are written out; "today" is Wednesday 7 January 2026.
"""

from __future__ import annotations

from datetime import date, time

import pytest
from dateutil.relativedelta import relativedelta

from scheduler_service.schedules.clauses import take_clauses
from scheduler_service.schedules.dates import When, parse_when
from scheduler_service.schedules.words import PhraseError, ambiguous_hour, parse_clock, zone_named

TODAY = date(2026, 1, 7)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0715", time(7, 15)),
        ("1930", time(19, 30)),
        ("7.30", time(7, 30)),
        ("7.30 pm", time(19, 30)),
        ("midday", time(12)),
    ],
)
def test_more_clock_spellings(text: str, expected: time) -> None:
    assert parse_clock(text) == expected


@pytest.mark.parametrize("text", ["2460", "0790"])
def test_four_digit_times_must_exist(text: str) -> None:
    with pytest.raises(PhraseError):
        parse_clock(text)


@pytest.mark.parametrize(
    ("token", "ambiguous"),
    [
        ("7", True),
        ("6:30", True),
        ("11", True),
        ("07", False),
        ("7am", False),
        ("19", False),
        ("12", False),
        ("07:00", False),
        ("0715", False),
    ],
)
def test_which_hours_are_ambiguous(token: str, ambiguous: bool) -> None:
    assert ambiguous_hour(token) is ambiguous


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("feb 4", When(date(2026, 2, 4))),
        ("4 february", When(date(2026, 2, 4))),
        ("the 5th of march", When(date(2026, 3, 5))),
        ("january 5", When(date(2027, 1, 5))),  # past this year: next year's
        ("january 7", When(date(2026, 1, 7))),  # today counts
        ("feb 29", When(date(2028, 2, 29))),
        ("march 3, 2027", When(date(2027, 3, 3))),
        ("2026-02-04", When(date(2026, 2, 4))),
        ("tomorrow", When(date(2026, 1, 8))),
        ("the day after tomorrow", When(date(2026, 1, 9))),
        ("monday", When(date(2026, 1, 12))),
        ("wednesday", When(date(2026, 1, 7))),
        ("next wednesday", When(date(2026, 1, 14))),
        ("next week", When(date(2026, 1, 12), period=True)),
        ("next month", When(date(2026, 2, 1), period=True)),
        ("june", When(date(2026, 6, 1), period=True)),
        ("the end of june", When(date(2026, 6, 30))),
        ("the end of the month", When(date(2026, 1, 31))),
        ("the 5th of next month", When(date(2026, 2, 5))),
        ("the 15th", When(date(2026, 1, 15))),
        ("in 3 days", When(date(2026, 1, 10))),
        ("2 weeks", When(date(2026, 1, 21))),
        ("at 7am", When(at=time(7))),
        ("noon", When(at=time(12))),
        ("feb 4 at 9am", When(date(2026, 2, 4), time(9))),
        ("june at 9", When(date(2026, 6, 1), time(9))),
    ],
)
def test_date_expressions(text: str, expected: When) -> None:
    assert parse_when(text, TODAY) == expected


@pytest.mark.parametrize("text", ["whenever", "soon", "the meeting", "feb 4th at dawn"])
def test_not_date_expressions(text: str) -> None:
    assert parse_when(text, TODAY) is None


def test_a_date_that_does_not_exist_says_so() -> None:
    with pytest.raises(PhraseError, match="does not exist"):
        parse_when("2026-02-30", TODAY)
    with pytest.raises(PhraseError, match="1–31"):
        parse_when("the 42nd", TODAY)


@pytest.mark.parametrize(
    ("words", "zone"),
    [
        ("Europe/Berlin", "Europe/Berlin"),
        ("europe/berlin", "Europe/Berlin"),
        ("america/new_york", "America/New_York"),
        ("berlin", "Europe/Berlin"),
        ("new york", "America/New_York"),
        ("los angeles", "America/Los_Angeles"),
        ("tokyo", "Asia/Tokyo"),
        ("utc", "UTC"),
        ("et", "America/New_York"),
        ("PST", "America/Los_Angeles"),
        ("standup", None),
        ("same", None),
    ],
)
def test_zone_names(words: str, zone: str | None) -> None:
    assert zone_named(words) == zone


@pytest.mark.parametrize(
    ("phrase", "rest", "said"),
    [
        ("every day at 9 (berlin)", "every day at 9", {"zone": "Europe/Berlin"}),
        ("(europe/paris) every day at 9", "every day at 9", {"zone": "Europe/Paris"}),
        ("every day at 9 new york time", "every day at 9", {"zone": "America/New_York"}),
        ("every day at 9 in europe/london", "every day at 9", {"zone": "Europe/London"}),
        ("every day except weekends at 9", "every day at 9", {"excluded": (5, 6)}),
        ("every day at 9 but not on fri and sat", "every day at 9", {"excluded": (4, 5)}),
        ("every day starting feb 4", "every day", {"start": When(date(2026, 2, 4))}),
        ("every 2 hours starting at 7am", "every 2 hours", {"start": When(at=time(7))}),
        ("every monday from march 2", "every monday", {"start": When(date(2026, 3, 2))}),
        ("every 30 minutes from 9 to 17", "every 30 minutes from 9 to 17", {}),
        ("every day until june", "every day", {"until": When(date(2026, 6, 1), period=True)}),
        ("every day through march 31", "every day", {"until": When(date(2026, 3, 31))}),
        ("every hour for the next 3 hours", "every hour", {"run_for": relativedelta(hours=3)}),
        ("every day for a week", "every day", {"run_for": relativedelta(weeks=1)}),
        ("every day at 9, 10 times", "every day at 9", {"max_runs": 10}),
        (
            "every day except dec 25 and jan 1 at 9",
            "every day at 9",
            {"except_dates": (date(2026, 12, 25), date(2027, 1, 1))},
        ),
        ("three times a day at 8, 12 and 18", "three times a day at 8, 12 and 18", {}),
        ("every saturday evening at 7", "every saturday at 7", {"day_part": "evening"}),
        ("every morning", "every day", {"day_part": "morning"}),
        ("tonight at 9", "today at 9", {"day_part": "tonight"}),
    ],
)
def test_free_clauses_are_taken_out(phrase: str, rest: str, said: dict[str, object]) -> None:
    remaining, found = take_clauses(phrase, TODAY)
    assert remaining == rest
    for name, value in said.items():
        assert getattr(found, name) == value, name


@pytest.mark.parametrize(
    ("phrase", "fix"),
    [
        ("every day at dusk", "not supported"),
        ("every day at 9 except holidays", "except_dates"),
        ("every day at 9 except the meeting", "except_dates"),
        ("every day at 9 until the project ends", "max_runs"),
        ("every day at 9 starting soon", "starting"),
        ("every day at 9 (mars)", "not a timezone"),
    ],
)
def test_free_clauses_refused_with_the_fix(phrase: str, fix: str) -> None:
    with pytest.raises(PhraseError, match=fix):
        take_clauses(phrase, TODAY)
