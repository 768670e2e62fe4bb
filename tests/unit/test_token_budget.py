"""The daily token budget's pure parts: the user's day in a zone (when the budget resets),
the skip's reason and notice, and the setting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from config import ConfigError, LimitsConfig, load_settings
from scheduler_service.runs.token_budget import (
    BudgetState,
    day_of,
    is_skip,
    notice,
    skip_outcome,
)
from scheduler_service.statuses import RunStatus
from scheduler_service.storage.models import ScheduledTask

PARIS = ZoneInfo("Europe/Paris")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_the_day_resets_at_local_midnight_not_at_utc_midnight() -> None:
    # 23:59:59 in Paris (22:59:59 UTC) is still the 4th; one second later it is the 5th.
    before = day_of(utc("2026-12-04T22:59:59"), PARIS)
    after = day_of(utc("2026-12-04T23:00:00"), PARIS)
    assert before == (utc("2026-12-03T23:00:00"), utc("2026-12-04T23:00:00"))
    assert after == (utc("2026-12-04T23:00:00"), utc("2026-12-05T23:00:00"))
    # UTC midnight changes nothing in Paris (01:00 there, the same local day).
    assert day_of(utc("2026-12-05T00:00:00"), PARIS) == after


def test_a_day_across_a_daylight_saving_change_is_23_or_25_hours() -> None:
    start, end = day_of(utc("2026-03-29T12:00:00"), PARIS)  # clocks spring forward
    assert (start, end - start) == (utc("2026-03-28T23:00:00"), timedelta(hours=23))
    start, end = day_of(utc("2026-10-25T12:00:00"), PARIS)  # clocks fall back
    assert (start, end - start) == (utc("2026-10-24T22:00:00"), timedelta(hours=25))


def test_a_midnight_that_does_not_exist_starts_the_day_at_the_transition() -> None:
    santiago = ZoneInfo("America/Santiago")  # 2026-09-06: 00:00 jumps to 01:00
    start, end = day_of(utc("2026-09-06T12:00:00"), santiago)
    assert start == utc("2026-09-06T04:00:00")  # 00:00 -04 = 01:00 -03, the first instant
    assert start.astimezone(santiago).hour == 1 and end - start == timedelta(hours=23)
    assert day_of(start - timedelta(seconds=1), santiago)[1] == start  # the day before ends


def test_every_instant_lies_in_its_day() -> None:
    now = utc("2026-01-01T00:00:00")
    for zone in ("Europe/Paris", "America/Santiago", "Pacific/Kiritimati", "UTC"):
        for hours in range(0, 24 * 400, 7):
            instant = now + timedelta(hours=hours)
            start, end = day_of(instant, ZoneInfo(zone))
            assert start <= instant < end, (zone, instant)


def state(used: int) -> BudgetState:
    start, end = day_of(utc("2026-12-04T12:00:00"), PARIS)
    return BudgetState(100, used, start.astimezone(PARIS), end.astimezone(PARIS))


def test_the_budget_is_spent_once_the_tokens_used_reach_it() -> None:
    assert not state(99).spent and state(100).spent and state(250).spent


def test_the_skip_says_what_happened_until_when_and_that_nothing_is_broken() -> None:
    outcome = skip_outcome("u1", state(120))
    assert outcome.status == RunStatus.SKIPPED and is_skip(outcome)
    assert outcome.error == (
        "daily token budget of 100 tokens for user 'u1' spent (120 used since 00:00 "
        "Europe/Paris); resumes at midnight (2026-12-05T00:00:00+01:00). The model was not "
        "called; this is not a failure of the task, and nothing needs fixing"
    )
    assert outcome.details["daily_token_budget"] == {
        "daily_limit": 100,
        "used_today": 120,
        "spent": True,
        "zone": "Europe/Paris",
        "since": "2026-12-04T00:00:00+01:00",
        "resets_at": "2026-12-05T00:00:00+01:00",
    }
    task = ScheduledTask(name="Price watch")
    assert notice(task, outcome) == (
        "Your daily token budget is spent: 120 of 100 tokens used by your orchestrated tasks "
        "since 00:00 (Europe/Paris). This run of 'Price watch' was skipped without calling "
        "the model, and so will every orchestrated run of your tasks be until midnight "
        "(2026-12-05 00:00 CET); they are recorded, you will not be told of each, and they "
        "resume by themselves then. Direct tasks still run."
    )


def test_an_overlap_skip_is_not_a_budget_skip() -> None:
    from scheduler_service.runs.policy import Outcome

    assert not is_skip(Outcome(RunStatus.SKIPPED, error="overlap", error_kind="overlap"))


def test_the_setting_is_off_by_default_and_refuses_a_budget_below_one() -> None:
    assert LimitsConfig().daily_token_budget_per_user is None
    assert LimitsConfig(daily_token_budget_per_user=50_000).daily_token_budget_per_user == 50_000
    with pytest.raises(ConfigError) as bad:
        load_settings(limits={"daily_token_budget_per_user": 0})
    assert "LIMITS__DAILY_TOKEN_BUDGET_PER_USER" in str(bad.value)
    assert "greater than or equal to 1" in str(bad.value)
