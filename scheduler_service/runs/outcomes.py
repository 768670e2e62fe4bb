"""Outcomes: what one execution produced, and what follows from it.

After an attempt the run row is written, and then either a retry time is set (the task
stays as it is) or the attempt is final: the task's counters move and the task is
settled (completed, paused after too many failures, or left to its next fire), with
one notification.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from scheduler_service.config import SchedulerConfig
from scheduler_service.limits import cut
from scheduler_service.runs import buffering, notifications, notify_policy, store, token_budget
from scheduler_service.runs.chains import TASK_CHANGES
from scheduler_service.runs.notifications import summarize
from scheduler_service.runs.policy import (
    INTERRUPTED,
    NOT_STARTED,
    Outcome,
    interrupted,
    retry_time,
)
from scheduler_service.statuses import (
    ACTIVE_RUN,
    ON_REQUEST,
    Frequency,
    JobAction,
    RunStatus,
    TaskStatus,
)
from scheduler_service.storage.db import Database
from scheduler_service.storage.models import ScheduledTask, TaskNotification, TaskRun, utcnow

log = logging.getLogger(__name__)

__all__ = [
    "INTERRUPTED",
    "NOT_STARTED",
    "Outcome",
    "Recorded",
    "interrupted",
    "record_outcomes",
    "retry_time",
    "update_task",
    "write_run",
]


@dataclass
class Recorded:
    """What recording an outcome decided, for the runner to carry out after the commit."""

    run: TaskRun
    retry_at: datetime | None = None
    job: JobAction | None = None  # what to do with the task's job afterwards
    published: list[TaskNotification] = field(default_factory=list)
    released: bool = False  # a buffered fire of the task went to the run queue
    written: bool = False  # this transaction wrote the outcome (not a row found final)


async def record_outcomes(
    db: Database,
    cfg: SchedulerConfig,
    finished: Sequence[tuple[TaskRun, Outcome]],
    *,
    stopping: Callable[[], bool],
) -> list[Recorded]:
    """Record each outcome, all in one transaction (a group commit): a retry time, or a
    settled task and its notification. No retry is scheduled once ``stopping()`` says the
    service is stopping (asked inside the transaction, just before deciding)."""
    now = utcnow()
    return await db.write_orm(
        lambda session: _record_all(db, cfg, session, finished, now=now, stopping=stopping)
    )


def _record_all(
    db: Database,
    cfg: SchedulerConfig,
    session: Session,
    finished: Sequence[tuple[TaskRun, Outcome]],
    *,
    now: datetime,
    stopping: Callable[[], bool],
) -> list[Recorded]:
    """``record_outcomes``' transaction, in one trip (on SQLite, in the write thread)."""
    tasks, states = store.lock_with_states(session, db.sqlite, [run.id for run, _ in finished])
    told = _budget_notices(db, session, finished, states, now)
    final = [run_id for run_id, (status, _) in states.items() if status not in ACTIVE_RUN]
    # rare: another process recorded them; the caller gets that row
    kept = store.runs_by_id(session, final) if final else {}
    written: list[TaskRun] = []
    recorded = [
        _record(
            cfg,
            session,
            tasks.get(run.task_id),
            states.get(run.id),
            kept,
            run,
            outcome,
            now,
            stopping,
            written,
            run.id in told,
        )
        for run, outcome in finished
    ]
    store.write_task_outcomes(session, tasks.values(), now)
    store.insert_notifications(session, [note for item in recorded for note in item.published])
    if written:
        store.write_outcomes(session, written)
        _release_buffered(session, tasks, written, recorded, now)
    return recorded


def _budget_notices(
    db: Database,
    session: Session,
    finished: Sequence[tuple[TaskRun, Outcome]],
    states: dict[str, store.RunState],
    now: datetime,
) -> set[str]:
    """The budget skips among ``finished`` that tell their user (once a day per user,
    ``runs.token_budget``); no statement unless there is one."""
    skips = [
        (run, outcome)
        for run, outcome in finished
        if token_budget.is_skip(outcome) and states.get(run.id, ("",))[0] in ACTIVE_RUN
    ]
    return token_budget.claim_notices(session, db.sqlite, skips, now) if skips else set()


def _release_buffered(
    session: Session,
    tasks: dict[str, ScheduledTask],
    written: list[TaskRun],
    recorded: list[Recorded],
    now: datetime,
) -> None:
    """The fire waiting for a run just ended (overlap ``buffer_one``) is queued now, in
    the transaction that ended the run (``runs.buffering``)."""
    ended = {
        run.task_id
        for run in written
        if run.kind in buffering.SCHEDULED_KINDS and buffering.buffers(tasks.get(run.task_id))
    }
    if not ended or not session.scalars(buffering.release(ended, now)).all():
        return
    for item in recorded:
        item.released = item.run.task_id in ended


def _record(
    cfg: SchedulerConfig,
    session: Session,
    task: ScheduledTask | None,
    state: store.RunState | None,
    kept: dict[str, TaskRun],
    run: TaskRun,
    outcome: Outcome,
    now: datetime,
    stopping: Callable[[], bool],
    written: list[TaskRun],
    told: bool,
) -> Recorded:
    if state is None:  # the task was deleted meanwhile, with its history
        return Recorded(run)
    status, run.started_at = state
    if status not in ACTIVE_RUN:
        # Already final: another process judged this worker dead and recorded the
        # run interrupted. Settling it again would notify the user twice.
        row = kept[run.id]
        log.warning("run %s was already recorded %s; keeping that", row.id, row.status)
        return Recorded(row)
    recorded = Recorded(run, written=True)
    write_run(run, outcome, now)
    written.append(run)
    if task is not None:
        recorded.retry_at = None if stopping() else retry_time(cfg, task, run, outcome, now)
        if recorded.retry_at is not None:
            run.details = {**(run.details or {}), "retry_at": recorded.retry_at.isoformat()}
        else:
            recorded.job, note = update_task(cfg, task, run, outcome, now, told=told)
            if note is not None:
                recorded.published.append(note)  # inserted with the others (_record_all)
    return recorded


def write_run(row: TaskRun, outcome: Outcome, now: datetime) -> None:
    row.status = outcome.status
    row.finished_at = now
    if row.started_at is not None:
        row.duration_ms = int((now - row.started_at).total_seconds() * 1000)
    row.result = outcome.result
    row.error = outcome.error
    row.error_kind = outcome.error_kind
    row.usage = outcome.usage
    row.details = outcome.details or None


def update_task(
    cfg: SchedulerConfig,
    task: ScheduledTask,
    row: TaskRun,
    outcome: Outcome,
    now: datetime,
    *,
    told: bool = False,
) -> tuple[JobAction | None, TaskNotification | None]:
    """Counters, last result and status after a final attempt; returns the job action
    (or None) and the notification (None when the task's notify policy leaves it out:
    decided here, under the task's lock, so two processes never both tell one change).
    A daily-token-budget skip is neutral and tells once a day (``told``: this one does)."""
    if token_budget.is_skip(outcome):
        return token_budget.settle_skip(task, row, outcome, now, told=told)
    ok = outcome.status == RunStatus.SUCCEEDED
    if row.kind not in ON_REQUEST:  # a manual or backfill run is not the schedule's
        task.run_count += 1
    task.success_count += ok
    task.failure_count += not ok
    task.last_run_at = now
    task.last_status = outcome.status
    task.last_result = outcome.result
    task.last_error = outcome.error
    message = summarize(outcome.result) if ok else (outcome.error or outcome.status)
    if row.attempt > 1:
        message += f" (after {row.attempt} attempts)"
    changes = (outcome.details or {}).get(TASK_CHANGES)
    if changes:  # what the run did to the user's tasks is never silent
        message += f"\nChanges this run made to your tasks: {changes}"
    job: JobAction | None = None
    status = outcome.status
    if row.kind not in ON_REQUEST and task.status == TaskStatus.SCHEDULED:
        job, status, message = settle(cfg, task, outcome, message)
    if not _tells(cfg, task, row, outcome, status, now):
        return job, None
    if outcome.status in notify_policy.FAILURES and status != TaskStatus.PAUSED:
        message = _alert_words(cfg, task, message)
    return job, notifications.build(task, row, status, message, now)


def _tells(
    cfg: SchedulerConfig,
    task: ScheduledTask,
    row: TaskRun,
    outcome: Outcome,
    status: str,
    now: datetime,
) -> bool:
    """Apply the task's notify policy to a final attempt: the task's fingerprint and
    failure-alert time move on, and the run row says whether it notified and why."""
    ok = outcome.status == RunStatus.SUCCEEDED
    mark = notify_policy.fingerprint(outcome.result) if ok else None
    verdict = notify_policy.decide(
        notify_policy.policy_of(task.notify_policy),
        status=outcome.status,
        manual=row.kind in ON_REQUEST,  # runs the user asked for (manual, backfill)
        paused=status == TaskStatus.PAUSED,
        changed=mark != task.result_fingerprint,
        nothing_to_report=ok and notify_policy.reports_nothing(outcome.result),
        alert_at=task.failure_alert_at,
        now=now,
        interval=cfg.failure_alert_interval,
        changed_tasks=bool((outcome.details or {}).get(TASK_CHANGES)),
    )
    if mark is not None:
        task.result_fingerprint = mark
    task.failure_alert_at = verdict.alert_at
    word = "sent" if verdict.notify else "not sent"
    row.details = {**(row.details or {}), "notification": f"{word}: {verdict.reason}"}
    return verdict.notify


def _alert_words(cfg: SchedulerConfig, task: ScheduledTask, message: str) -> str:
    """A failure alert of a task that goes on says when the next one can come, so the
    silence that follows is not misread as success."""
    if cfg.failure_alert_interval <= 0 or task.status != TaskStatus.SCHEDULED:
        return message
    return f"{message}\n{notify_policy.next_alert_words(cfg.failure_alert_interval)}"


def settle(
    cfg: SchedulerConfig, task: ScheduledTask, outcome: Outcome, message: str
) -> tuple[JobAction | None, str, str]:
    """A scheduled fire time is final: complete, pause or carry on the task."""
    ok = outcome.status == RunStatus.SUCCEEDED
    if outcome.status != RunStatus.INTERRUPTED:  # a crash is not the task's failure
        task.consecutive_failures = 0 if ok else task.consecutive_failures + 1
    # A once task's job is gone once it fired; only recurring jobs need removing.
    once = task.frequency == Frequency.ONCE
    remove = None if once else JobAction.REMOVE
    if once or task.next_run_at is None:
        task.status = TaskStatus.COMPLETED if ok or not once else TaskStatus.FAILED
        task.next_run_at = None
        return remove, outcome.status, message
    if task.max_runs is not None and task.run_count >= task.max_runs:
        task.status, task.next_run_at = TaskStatus.COMPLETED, None
        message += f" — that was run {task.run_count} of {task.max_runs}; the task is complete"
        return remove, outcome.status, message
    if task.consecutive_failures >= cfg.max_consecutive_failures:
        task.status, task.next_run_at = TaskStatus.PAUSED, None
        why = f"the task failed {task.consecutive_failures} times in a row and was paused"
        last = cut(outcome.error or outcome.status, 300)
        task.pause_note = (
            f"Paused automatically after {task.consecutive_failures} failed runs in a row; "
            f"last error: {last}"
        )
        message += (
            f" — {why}; it will not run again until resumed. Fix the cause (execute_task_now "
            f"tests it), then resume it with resume_task (task_id {task.id})"
        )
        return JobAction.PAUSE, TaskStatus.PAUSED, message
    return None, outcome.status, message
