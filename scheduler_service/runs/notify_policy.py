"""Quiet runs: whether a final run notifies the user, and why — pure, no I/O, no clock.

Every run is recorded; only its notification may be left out. A task's ``notify`` policy
says which successes are worth telling:

* ``always`` (the default): every run.
* ``on_change``: a success whose result differs from the last successful run's (the
  first success always tells). Results are compared by ``fingerprint``.
* ``model_decides`` (orchestrated only): a success unless the model's final answer says
  ``NOTHING_TO_REPORT`` (its first or last line); the run's system prompt tells it so.
* ``on_failure``: failures only.

Failures notify under every policy, without spamming: the first failure tells, further
failures at most once per ``failure_alert_interval`` until a success. A task paused for
failing too often, a manual run (the user asked for it), a run that changed the user's
tasks, and the first success after a failure the user was told of (it works again)
always tell.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from scheduler_service.statuses import RunStatus


class NotifyPolicy(StrEnum):
    ALWAYS = "always"
    ON_CHANGE = "on_change"
    MODEL_DECIDES = "model_decides"
    ON_FAILURE = "on_failure"


# The same values as a ``Literal``, for the pydantic input models; keep them equal.
NotifyName = Literal["always", "on_change", "model_decides", "on_failure"]
NOTIFY_POLICIES = tuple(p.value for p in NotifyPolicy)

NOTHING_TO_REPORT = "NOTHING_TO_REPORT"
FAILURES = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.INTERRUPTED})

# Added to an orchestrated run's system prompt, for the policies the model takes part in.
PROMPTS: dict[str, str] = {
    NotifyPolicy.MODEL_DECIDES: (
        "## Telling the user\n"
        "The user is notified of this run only if you have something worth their attention. "
        f"If, once the task is done, there is nothing to report (for example the condition "
        f"the user asked about is not met), make the first line of your final answer exactly "
        f"{NOTHING_TO_REPORT}, optionally followed by one short line for the run history "
        "(such as the value you checked): the run is recorded and the user is not disturbed. "
        f"Otherwise answer normally with what the user should know, and do not write "
        f"{NOTHING_TO_REPORT} anywhere."
    ),
    NotifyPolicy.ON_CHANGE: (
        "## Telling the user\n"
        "The user is notified of this run only if your final answer differs from the previous "
        "run's. Make the final answer just the facts the task asks for, worded the same way "
        "every time (no timestamps, run numbers or greetings), so that an unchanged situation "
        "gives an identical answer."
    ),
}


@dataclass(frozen=True)
class Verdict:
    """Whether this run notifies, why (stored on the run row), and the task's
    ``failure_alert_at`` afterwards (when the current failure streak was last told)."""

    notify: bool
    reason: str
    alert_at: datetime | None


def policy_of(value: str | None) -> NotifyPolicy:
    """A stored policy (NULL: a task from before policies existed) as the enum."""
    return NotifyPolicy(value) if value in NOTIFY_POLICIES else NotifyPolicy.ALWAYS


def fingerprint(result: Any) -> str:
    """A stable hash of a run's result (canonical JSON), to tell whether it changed."""
    text = json.dumps(result, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _bare(line: str) -> str:
    """A line without surrounding whitespace and markdown decoration (``**``, backticks,
    quotes), upper-cased: models dress the marker up now and then."""
    return line.strip().strip("*_`'\"").strip().upper()


def reports_nothing(result: Any) -> bool:
    """Whether an orchestrated result's final answer carries ``NOTHING_TO_REPORT`` on its
    first or last non-empty line."""
    text = result.get("text") if isinstance(result, dict) else None
    if not isinstance(text, str):
        return False
    lines = [line for line in text.splitlines() if line.strip()]
    return bool(lines) and any(
        _bare(line).startswith(NOTHING_TO_REPORT) for line in (lines[0], lines[-1])
    )


def decide(
    policy: NotifyPolicy,
    *,
    status: str,
    manual: bool,
    paused: bool,
    changed: bool,
    nothing_to_report: bool,
    alert_at: datetime | None,
    now: datetime,
    interval: float,
    changed_tasks: bool = False,
) -> Verdict:
    """Whether a final run of ``status`` notifies.

    ``changed``: the result differs from the last success's; ``nothing_to_report``: the
    model said so; ``paused``: this run paused the task; ``alert_at``: when the current
    failure streak was last told (None: no streak told); ``interval``: seconds between
    two alerts of one streak; ``changed_tasks``: the run changed the user's tasks through
    scheduler_tool, which is never silent."""
    if changed_tasks:
        return Verdict(True, "the run changed tasks", now if status in FAILURES else None)
    if status in FAILURES:
        if paused:
            return Verdict(True, "the task was paused after repeated failures", now)
        if manual:
            return Verdict(True, "manual run", now)
        if alert_at is None:
            return Verdict(True, "first failure", now)
        if (now - alert_at).total_seconds() >= interval:
            return Verdict(True, f"still failing after {interval:g} s", now)
        return Verdict(False, f"failure already reported at {alert_at.isoformat()}", alert_at)
    if status != RunStatus.SUCCEEDED:
        return Verdict(True, status, alert_at)
    if manual:
        return Verdict(True, "manual run", None)
    if alert_at is not None:
        return Verdict(True, "succeeded after a reported failure", None)
    if policy == NotifyPolicy.ON_FAILURE:
        return Verdict(False, "on_failure: the run succeeded", None)
    if policy == NotifyPolicy.ON_CHANGE and not changed:
        return Verdict(False, "on_change: same result as the last successful run", None)
    if policy == NotifyPolicy.MODEL_DECIDES and nothing_to_report:
        return Verdict(False, f"model_decides: the model answered {NOTHING_TO_REPORT}", None)
    if policy == NotifyPolicy.ON_CHANGE:
        return Verdict(True, "on_change: the result changed", None)
    return Verdict(True, policy.value, None)


def next_alert_words(interval: float) -> str:
    """What a failure alert adds about the next one."""
    return (
        f"If it keeps failing you will hear again at most once every {_duration(interval)}, "
        "until it succeeds."
    )


def _duration(seconds: float) -> str:
    """'1 hour', '30 minutes', '1.5 seconds'."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g} second{'s' if seconds != 1 else ''}"
