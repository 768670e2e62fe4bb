"""The daily token budget: a cost circuit breaker per user.

With ``limits.daily_token_budget_per_user`` set, an orchestrated run first sums the
input and output tokens the user's runs have recorded since midnight; once that reaches
the budget, the run does not call the model: it is recorded ``skipped`` with the reason
(``skip_outcome``) and runs again from the next midnight. A budget skip is neutral: it
is not a run of the task (no ``run_count``, no ``max_runs``), not a failure (no failure
streak, no auto-pause, no failure alert) and never retried (``settle_skip``).

The user hears of it once a day, not once a run: the transaction that records a budget
skip claims the user's notice row (``claim_notices``, an upsert keyed by the user), and
only the run that claims it notifies; the others are recorded with the reason. Two
replicas recording at once meet on that row, so exactly one of them tells.

A user has no zone of their own: "midnight" is in the zone of the task being run. A
user whose tasks live in several zones has a day per zone; the notice stands until the
end of the day of the task that told it.

Direct runs spend no tokens and are never held. Runs already in flight when the budget is
reached finish (the budget is read where a run starts, not during it), so a day's spend
can pass the budget by what those runs use; each run's own ``token_budget`` bounds that.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Insert, Select, Table, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from scheduler_service.clock.zones import localize
from scheduler_service.runs import notifications
from scheduler_service.runs.policy import Outcome
from scheduler_service.statuses import (
    ON_REQUEST,
    Frequency,
    JobAction,
    RunKind,
    RunStatus,
    TaskStatus,
)
from scheduler_service.storage.db import Database
from scheduler_service.storage.models import (
    BudgetNotice,
    ScheduledTask,
    TaskNotification,
    TaskRun,
    utcnow,
)
from scheduler_service.tools.base import quote

log = logging.getLogger(__name__)

SKIP_KIND = "daily_token_budget"  # the error_kind of a budget skip, and its details key


def day_of(now: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The local day in ``zone`` that contains ``now``: (its first instant, the next
    day's first instant), both in UTC. A midnight that does not exist (a zone whose
    clocks spring forward at 00:00) starts the day at the transition; a day is 23 or 25
    hours long across a daylight-saving change."""
    today = now.astimezone(zone).date()
    start = localize(datetime.combine(today, time()), zone)
    end = localize(datetime.combine(today + timedelta(days=1), time()), zone)
    return start.astimezone(UTC), end.astimezone(UTC)


@dataclass(frozen=True)
class BudgetState:
    """A user's budget for the day of one zone: the limit, the tokens used since the
    day began, and when it begins again."""

    limit: int
    used: int
    since: datetime  # the day's first instant, in the zone
    resets_at: datetime  # the next day's first instant, in the zone

    @property
    def spent(self) -> bool:
        return self.used >= self.limit

    @property
    def zone(self) -> str:
        return str(self.since.tzinfo)

    def to_dict(self) -> dict[str, Any]:
        """As ``get_task`` and a skipped run's details show it."""
        return {
            "daily_limit": self.limit,
            "used_today": self.used,
            "spent": self.spent,
            "zone": self.zone,
            "since": self.since.isoformat(),
            "resets_at": self.resets_at.isoformat(),
        }


def tokens_used(user_id: str, since: datetime) -> Select[tuple[int]]:
    """Input plus output tokens of the user's runs recorded since ``since`` (the partial
    index of runs with usage, by user and finish time, answers it)."""
    usage = TaskRun.usage
    tokens = func.coalesce(usage["input_tokens"].as_integer(), 0) + func.coalesce(
        usage["output_tokens"].as_integer(), 0
    )
    return select(func.coalesce(func.sum(tokens), 0)).where(
        TaskRun.user_id == user_id,
        TaskRun.finished_at >= since,
        TaskRun.usage.is_not(None),
    )


def read_state(
    session: Session, limit: int, user_id: str, zone_name: str, now: datetime
) -> BudgetState:
    """The user's budget for the day that contains ``now`` in ``zone_name``."""
    zone = ZoneInfo(zone_name)
    start, end = day_of(now, zone)
    used = int(session.scalar(tokens_used(user_id, start)) or 0)
    return BudgetState(limit, used, start.astimezone(zone), end.astimezone(zone))


def skip_reason(user_id: str, state: BudgetState) -> str:
    """The run's error: what happened, until when, and that nothing is broken."""
    return (
        f"daily token budget of {state.limit} tokens for user {quote(user_id, 60)} spent "
        f"({state.used} used since {state.since:%H:%M} {state.zone}); resumes at midnight "
        f"({state.resets_at.isoformat()}). The model was not called; this is not a failure "
        "of the task, and nothing needs fixing"
    )


def skip_outcome(user_id: str, state: BudgetState) -> Outcome:
    """A run held back by the spent budget, as recorded."""
    return Outcome(
        RunStatus.SKIPPED,
        error=skip_reason(user_id, state),
        error_kind=SKIP_KIND,
        details={SKIP_KIND: state.to_dict()},
    )


def is_skip(outcome: Outcome) -> bool:
    return outcome.status == RunStatus.SKIPPED and outcome.error_kind == SKIP_KIND


class TokenBudget:
    """The budget an orchestrated run checks where it starts (``Execution``)."""

    def __init__(self, db: Database, limit: int) -> None:
        self.db = db
        self.limit = limit

    async def check(self, task: ScheduledTask) -> Outcome | None:
        """The skip if the task's user has spent today's budget, else None (run). A
        failed read lets the run go on: the budget guards spending, it is no reason
        to fail work (and a database that cannot be read fails the run's record too)."""
        now = utcnow()
        try:
            state = await self.db.read_sync(
                lambda session: read_state(session, self.limit, task.user_id, task.timezone, now)
            )
        except Exception:
            log.warning("task %s: could not read the daily token budget", task.id, exc_info=True)
            return None
        return skip_outcome(task.user_id, state) if state.spent else None


def token_budget_for(db: Database, limit: int | None) -> TokenBudget | None:
    """The budget, or None when none is configured (then nothing is ever read)."""
    return None if limit is None else TokenBudget(db, limit)


# -- recording a budget skip ------------------------------------------------------------
NOTICES = cast(Table, BudgetNotice.__table__)


def _claim_statement(on_sqlite: bool) -> Insert:
    """Take the user's notice unless one stands: insert it, or move a notice whose day
    is over to this one; returns the row only when it was taken. On PostgreSQL a second
    transaction waits for the first's commit and then sees its notice standing."""
    insert = sqlite.insert(NOTICES) if on_sqlite else postgresql.insert(NOTICES)
    statement = insert.values(
        user_id=bindparam("user_id"),
        quiet_until=bindparam("quiet_until"),
        run_id=bindparam("run_id"),
    )
    return statement.on_conflict_do_update(
        index_elements=[NOTICES.c.user_id],
        set_={"quiet_until": statement.excluded.quiet_until, "run_id": statement.excluded.run_id},
        where=NOTICES.c.quiet_until <= bindparam("now", type_=NOTICES.c.quiet_until.type),
    ).returning(NOTICES.c.user_id)


CLAIMS = {True: _claim_statement(True), False: _claim_statement(False)}


def claim_notices(
    session: Session, on_sqlite: bool, skips: Sequence[tuple[TaskRun, Outcome]], now: datetime
) -> set[str]:
    """In the transaction recording ``skips`` (budget skips): the ids of the runs that
    tell their users, at most one per user, and only if the user has not been told
    already today. Users are claimed in id order, after the task rows the record
    locked (the lock order), so two records never wait for each other in a circle."""
    first: dict[str, tuple[TaskRun, Outcome]] = {}
    for run, outcome in skips:
        first.setdefault(run.user_id, (run, outcome))
    told: set[str] = set()
    for user_id in sorted(first):
        run, outcome = first[user_id]
        until = datetime.fromisoformat(outcome.details[SKIP_KIND]["resets_at"])
        params = {"user_id": user_id, "quiet_until": until, "run_id": run.id, "now": now}
        if session.execute(CLAIMS[on_sqlite], params).first() is not None:
            told.add(run.id)
    return told


def notice(task: ScheduledTask, outcome: Outcome) -> str:
    """What the user is told, once a day: why runs stop, until when, what still runs."""
    state = outcome.details[SKIP_KIND]
    zone = ZoneInfo(state["zone"])
    since = datetime.fromisoformat(state["since"]).astimezone(zone)
    resets = datetime.fromisoformat(state["resets_at"]).astimezone(zone)
    return (
        f"Your daily token budget is spent: {state['used_today']:,} of "
        f"{state['daily_limit']:,} tokens used by your orchestrated tasks since "
        f"{since:%H:%M} ({zone.key}). This run of '{task.name}' was skipped without "
        f"calling the model, and so will every orchestrated run of your tasks be until "
        f"midnight ({resets:%Y-%m-%d %H:%M %Z}); they are recorded, you will not be told "
        "of each, and they resume by themselves then. Direct tasks still run."
    )


def settle_skip(
    task: ScheduledTask, row: TaskRun, outcome: Outcome, now: datetime, *, told: bool
) -> tuple[JobAction | None, TaskNotification | None]:
    """A budget skip is final and neutral: the task's counters, failure streak and
    result stay as they were. It notifies when it claimed the user's notice of the day
    (``told``), when it is a manual run (the user asked for this one), or when it ends
    the task (a one-time task, or the last fire of a schedule, will not run later)."""
    job, ending = None, ""
    scheduled = row.kind not in ON_REQUEST
    last_fire = task.frequency == Frequency.ONCE or task.next_run_at is None
    if scheduled and last_fire and task.status == TaskStatus.SCHEDULED:
        job, ending = _end(task, outcome)
    if told:
        why = "sent: the user's daily token budget is spent (told once a day)"
    elif row.kind == RunKind.MANUAL:
        why = "sent: manual run"
    elif ending:
        why = "sent: the skip ended the task"
    else:
        why = "not sent: the user was already told today that the daily token budget is spent"
    row.details = {**(row.details or {}), "notification": why}
    if why.startswith("not sent"):
        return job, None
    message = notice(task, outcome) + ending
    return job, notifications.build(task, row, RunStatus.SKIPPED, message, now)


def _end(task: ScheduledTask, outcome: Outcome) -> tuple[JobAction | None, str]:
    """The skipped fire was the schedule's last: the task ends without running it."""
    task.last_status, task.last_error, task.next_run_at = RunStatus.SKIPPED, outcome.error, None
    if task.frequency == Frequency.ONCE:  # its job is gone once it fired
        task.status = TaskStatus.MISSED
        return None, " This one-time task will not run."
    task.status = TaskStatus.COMPLETED
    return JobAction.REMOVE, " That was the task's last scheduled run; the task is complete."
