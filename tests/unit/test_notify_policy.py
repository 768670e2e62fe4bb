"""The notify decision, pure: which final runs tell the user, and why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler_service.runs.notify_policy import (
    NOTHING_TO_REPORT,
    NotifyPolicy,
    Verdict,
    decide,
    fingerprint,
    next_alert_words,
    policy_of,
    reports_nothing,
)

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
HOUR = 3600.0


def verdict(policy: str = "always", status: str = "succeeded", **given: Any) -> Verdict:
    values: dict[str, Any] = {
        "manual": False,
        "paused": False,
        "changed": True,
        "nothing_to_report": False,
        "alert_at": None,
        "now": NOW,
        "interval": HOUR,
    }
    return decide(NotifyPolicy(policy), status=status, **(values | given))


@pytest.mark.parametrize("policy", [p.value for p in NotifyPolicy])
def test_a_first_failure_notifies_under_every_policy_and_starts_the_quiet_period(
    policy: str,
) -> None:
    got = verdict(policy, "failed")
    assert (got.notify, got.reason, got.alert_at) == (True, "first failure", NOW)


def test_further_failures_notify_at_most_once_per_interval_until_a_success() -> None:
    told = NOW - timedelta(minutes=59)
    quiet = verdict("always", "timed_out", alert_at=told)
    assert not quiet.notify and quiet.alert_at == told  # the period runs from the last alert
    assert "already reported" in quiet.reason
    again = verdict("always", "failed", alert_at=NOW - timedelta(hours=1))
    assert again.notify and again.alert_at == NOW
    ok = verdict("always", "succeeded", alert_at=told)
    assert ok.notify and ok.alert_at is None and ok.reason == "succeeded after a reported failure"
    assert verdict("always", "failed", alert_at=None).notify  # after that success: first again


def test_an_interval_of_zero_notifies_every_failure() -> None:
    assert verdict("always", "failed", alert_at=NOW, interval=0).notify


def test_the_pause_after_repeated_failures_and_manual_runs_always_notify() -> None:
    just_told = NOW - timedelta(seconds=1)
    assert verdict("on_change", "failed", alert_at=just_told, paused=True).notify
    assert verdict("always", "failed", alert_at=just_told, manual=True).notify
    manual_ok = verdict("on_failure", "succeeded", manual=True, changed=False)
    assert manual_ok.notify and manual_ok.reason == "manual run"


@pytest.mark.parametrize("status", ["succeeded", "failed"])
def test_a_run_that_changed_the_users_tasks_is_never_silent(status: str) -> None:
    got = verdict("on_failure", status, changed=False, alert_at=NOW, changed_tasks=True)
    assert got.notify and got.reason == "the run changed tasks"


def test_an_interrupted_run_counts_as_a_failure() -> None:
    assert verdict("always", "interrupted").alert_at == NOW
    assert not verdict("always", "interrupted", alert_at=NOW).notify


@pytest.mark.parametrize(
    ("policy", "given", "notify"),
    [
        ("always", {"changed": False}, True),
        ("on_failure", {}, False),
        ("on_change", {"changed": True}, True),
        ("on_change", {"changed": False}, False),
        ("model_decides", {"nothing_to_report": False, "changed": False}, True),
        ("model_decides", {"nothing_to_report": True}, False),
    ],
)
def test_successes_follow_the_policy(policy: str, given: dict[str, Any], notify: bool) -> None:
    got = verdict(policy, "succeeded", **given)
    assert got.notify is notify and got.alert_at is None
    assert got.reason.startswith(policy)  # the run row says which rule decided


def test_fingerprint_is_stable_and_tells_changes() -> None:
    assert fingerprint({"b": 1, "a": [1, 2]}) == fingerprint({"a": [1, 2], "b": 1})
    assert fingerprint({"price": 51}) != fingerprint({"price": 49})
    assert fingerprint(None) != fingerprint({})
    assert len(fingerprint({"text": "x"})) == 64  # the column's size


@pytest.mark.parametrize(
    ("text", "says_nothing"),
    [
        (NOTHING_TO_REPORT, True),
        (f"{NOTHING_TO_REPORT}\nprice 62, above 50", True),
        (f"  **{NOTHING_TO_REPORT}**  ", True),
        (f"`{NOTHING_TO_REPORT}.`", True),
        (f"Checked: the price is 62.\n\n{NOTHING_TO_REPORT}", True),
        ("nothing_to_report", True),
        ("The price dropped to 48!", False),
        (f"The price is 48; I will not say {NOTHING_TO_REPORT}.\nBuy now.", False),
        ("", False),
    ],
)
def test_the_marker_is_read_on_the_first_or_last_line(text: str, says_nothing: bool) -> None:
    assert reports_nothing({"text": text, "message": text}) is says_nothing


def test_a_result_without_text_never_reports_nothing() -> None:
    assert not reports_nothing({"message": NOTHING_TO_REPORT})  # a direct tool's result
    assert not reports_nothing(None)


def test_a_stored_policy_reads_back_with_always_as_the_default() -> None:
    assert policy_of(None) is NotifyPolicy.ALWAYS
    assert policy_of("on_change") is NotifyPolicy.ON_CHANGE


def test_the_next_alert_is_announced_in_words() -> None:
    assert next_alert_words(3600).endswith("at most once every 1 hour, until it succeeds.")
    assert "every 30 minutes" in next_alert_words(1800)
    assert "every 1.5 seconds" in next_alert_words(1.5)
