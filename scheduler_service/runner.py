"""Running tasks: claim a fire time, execute within limits, record, notify.

Every execution starts by inserting its ``task_runs`` row keyed by
(task_id, fire_time, attempt). The key is unique in the database, so a fire time that
two processes (or a restart) both try to run is executed by whichever inserts first;
the other sees the conflict and does nothing. That is invariant 1.

When a scheduled fire time is claimed, the task's ``next_run_at`` moves past it in the
same transaction. So ``next_run_at`` always names the oldest fire time not yet claimed,
and start-up can put back any fire time the job store consumed but nobody claimed (a
crash between the two): see ``reconcile``. That is invariant 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import time as monotonic
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from config import Settings
from scheduler_service import notifications
from scheduler_service.db import Database
from scheduler_service.engine import JobControl
from scheduler_service.models import ScheduledTask, TaskNotification, TaskRun, new_id, utcnow
from scheduler_service.notifications import Notifier, summarize
from scheduler_service.orchestrate import OrchestratedExecution
from scheduler_service.schedules import Schedule, build_trigger
from scheduler_service.slots import FifoSlots
from tools import ToolContext, ToolError, ToolRegistry

log = logging.getLogger(__name__)

ACTIVE_RUN = ("queued", "running")
LIVE_TASK = ("scheduled", "paused")
RETRYABLE_TOOL_ERRORS = ("unavailable", "execution_failed")
INTERRUPTED = "the service stopped while this run was in progress"
NOT_STARTED = "the service stopped before this run started; it did not run"
CLAIM_ATTEMPTS = 3
CLAIM_RETRY_DELAY = 0.5  # s, doubled per attempt
MAX_BACKFILL = 1000  # at most this many earlier fire times recovered by one claim
SAME_INSTANT = timedelta(milliseconds=1)  # job-store times are floats: allow rounding

IsAlive = Callable[[str | None], Awaitable[bool]]  # is the worker that recorded a run alive?


@dataclass(frozen=True)
class RunInfo:
    """The run a tool call belongs to (``current_run``), including its real fire time."""

    run_id: str
    task_id: str
    fire_time: datetime
    attempt: int
    kind: str


current_run: ContextVar[RunInfo] = ContextVar("current_run")


@dataclass
class Outcome:
    """What one execution produced, before it is written down."""

    status: str  # succeeded | failed | timed_out | interrupted | skipped
    result: dict[str, Any] | None = None
    error: str | None = None
    error_kind: str | None = None
    retryable: bool = False
    usage: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class FireClaim:
    """What claiming one APScheduler fire produced (written in one transaction)."""

    run: TaskRun | None = None
    published: list[TaskNotification] = field(default_factory=list)
    job: str | None = None  # "remove" | "pause": what to do with the task's job afterwards


def schedule_of(task: ScheduledTask) -> Schedule:
    return Schedule.from_dict(task.schedule)


def _fire_plan(
    schedule: dict[str, Any],
    next_run_at: datetime | None,
    run_times: list[datetime],
    now: datetime,
) -> tuple[list[datetime], datetime | None]:
    """(fire times the task still names before ``run_times``, the next fire after them).

    ``next_run_at`` names the oldest unclaimed fire time. If it is earlier than what
    APScheduler hands us, a fire was consumed by the job store but never claimed (a
    database error or a crash in between): those times are claimed now too — run or
    recorded missed — instead of vanishing."""
    trigger = build_trigger(Schedule.from_dict(schedule))
    earlier: list[datetime] = []
    fire = next_run_at
    while fire is not None and fire < run_times[0] - SAME_INSTANT and len(earlier) < MAX_BACKFILL:
        earlier.append(fire)
        fire = trigger.get_next_fire_time(fire, now)
    return earlier, trigger.get_next_fire_time(run_times[-1], now)


class TaskRunner:
    """Executes runs for one service; bounded by ``max_concurrent_tasks``."""

    def __init__(
        self,
        *,
        db: Database,
        settings: Settings,
        registry: ToolRegistry,
        notifier: Notifier,
        orchestrator: OrchestratedExecution,
    ) -> None:
        self.db = db
        self.settings = settings
        self.cfg = settings.scheduler
        self.registry = registry
        self.notifier = notifier
        self.orchestrator = orchestrator
        self.jobs: JobControl | None = None
        self.worker: str | None = None  # recorded on every run this runner claims
        self._slots = FifoSlots(self.cfg.max_concurrent_tasks)
        self._tickets = itertools.count()
        self._entries: set[asyncio.Task[Any]] = set()  # every fire/retry/manual in progress
        self._active: dict[str, asyncio.Task[Any]] = {}  # claimed run id → its task
        self._started: set[str] = set()  # claimed run ids that hold a slot
        self._scheduled: Counter[str] = Counter()  # task id → scheduled/retry runs in flight
        self._manual: Counter[str] = Counter()  # task id → manual runs in flight
        self._stopping = False

    # -- entry points ------------------------------------------------------------------
    @contextlib.contextmanager
    def _entry(self) -> Iterator[int]:
        """Track an entry task for ``drain``; its ticket orders it for a slot (FIFO)."""
        task = asyncio.current_task()
        assert task is not None
        self._entries.add(task)
        try:
            yield next(self._tickets)
        finally:
            self._entries.discard(task)

    async def on_fire(self, task_id: str, run_times: list[datetime]) -> None:
        """APScheduler fired ``task_id`` for ``run_times`` (oldest first)."""
        with self._entry() as ticket:
            if self._stopping:  # unclaimed: next_run_at still names it; reconciled at start
                log.warning("not claiming task %s: the service is stopping", task_id)
                return
            claim = await self._claim_fire_retrying(task_id, run_times)
            if claim is None:
                return
            if claim.job == "remove":
                await self._remove_job(task_id)
            elif claim.job == "pause" and self.jobs is not None:
                await self.jobs.pause(task_id)
            await self._publish(claim.published)
            if claim.run is not None:
                await self._execute_claimed(claim.run, ticket)

    async def on_retry(self, task_id: str, fire_time: datetime, attempt: int) -> None:
        await self.execute(task_id, fire_time, kind="retry", attempt=attempt)

    async def run_now(self, task: ScheduledTask) -> TaskRun | None:
        """A manual run: its own key (now), never consuming or blocking a scheduled one."""
        return await self.execute(task.id, utcnow(), kind="manual", attempt=1)

    async def execute(
        self, task_id: str, fire_time: datetime, *, kind: str, attempt: int
    ) -> TaskRun | None:
        """Claim and run one attempt (a retry or a manual run)."""
        with self._entry() as ticket:
            if self._stopping:  # a retry stays restorable: see restore_retries
                log.warning("not starting %s of task %s: the service is stopping", kind, task_id)
                return None
            run = await self._claim(task_id, fire_time, kind, attempt)
            if run is None or run.status == "skipped":
                return run
            return await self._execute_claimed(run, ticket)

    # -- one execution -----------------------------------------------------------------
    async def _execute_claimed(self, run: TaskRun, ticket: int) -> TaskRun:
        current = asyncio.current_task()
        assert current is not None
        in_flight = self._manual if run.kind == "manual" else self._scheduled
        self._active[run.id] = current
        in_flight[run.task_id] += 1
        token = current_run.set(RunInfo(run.id, run.task_id, run.fire_time, run.attempt, run.kind))
        try:
            outcome = await self._run_in_slot(run, ticket)
        finally:
            current_run.reset(token)
            self._active.pop(run.id, None)
            self._started.discard(run.id)
            in_flight[run.task_id] -= 1
        return await self._finish_retrying(run, outcome)

    async def _finish_retrying(self, run: TaskRun, outcome: Outcome) -> TaskRun:
        """Record the outcome, retrying a database error: a run left ``running`` by a live
        process is never recovered, would block execute_task_now and never notify."""
        for attempt in range(CLAIM_ATTEMPTS):
            try:
                return await self._finish(run, outcome)
            except Exception:
                log.exception("recording run %s (%s) failed", run.id, outcome.status)
                if attempt + 1 < CLAIM_ATTEMPTS:
                    await asyncio.sleep(CLAIM_RETRY_DELAY * 2**attempt)
        log.error(
            "gave up recording run %s; it stays %s until this worker restarts", run.id, run.status
        )
        return run

    async def _run_in_slot(self, run: TaskRun, ticket: int) -> Outcome:
        try:
            await self._slots.acquire(ticket)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            return self._interrupted(NOT_STARTED)
        try:
            if self._stopping:
                return self._interrupted(NOT_STARTED)
            self._started.add(run.id)
            return await self._run_started(run)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            return self._interrupted(INTERRUPTED)
        finally:
            self._slots.release()

    async def _run_started(self, run: TaskRun) -> Outcome:
        task = await self._mark_running(run)
        if task is None:
            return Outcome("skipped", error="the task was deleted before its run started")
        started = monotonic.perf_counter()
        outcome = await self._execute(task, run)
        outcome.details["duration_ms"] = round((monotonic.perf_counter() - started) * 1000)
        return outcome

    @staticmethod
    def _interrupted(error: str) -> Outcome:
        return Outcome("interrupted", error=error, error_kind="interrupted")

    async def _execute(self, task: ScheduledTask, run: TaskRun) -> Outcome:
        context = ToolContext(
            user_id=task.user_id,
            conversation_id=task.conversation_id,
            scheduled_run=True,
            task_id=task.id,
            run_id=run.id,
            timezone=task.timezone,
        )
        timeout = float(task.timeout or self.cfg.task_timeout)
        if task.execution_mode == "orchestrated":
            return await self.orchestrator.run(task, run, context, timeout)
        return await self._execute_direct(task, context, timeout)

    async def _execute_direct(
        self, task: ScheduledTask, context: ToolContext, timeout: float
    ) -> Outcome:
        assert task.tool_name and task.operation
        try:
            async with asyncio.timeout(timeout):
                result = await self.registry.call(
                    task.tool_name, task.operation, dict(task.parameters or {}), context=context
                )
        except TimeoutError:
            return self._timed_out(task, timeout)
        except ToolError as exc:
            return Outcome(
                "failed",
                error=exc.message,
                error_kind=exc.code,
                retryable=exc.code in RETRYABLE_TOOL_ERRORS,
            )
        except Exception as exc:
            log.exception("task %s: tool %s raised", task.id, task.tool_name)
            return Outcome(
                "failed",
                error=f"{task.tool_name}.{task.operation} raised {type(exc).__name__}: {exc}",
                error_kind="exception",
                retryable=True,
            )
        return Outcome("succeeded", result=result)

    def _timed_out(self, task: ScheduledTask, timeout: float) -> Outcome:
        """A sync tool's thread cannot be cancelled: say that it was left running."""
        assert task.tool_name
        tool = self.registry.get(task.tool_name) if task.tool_name in self.registry else None
        thread = tool is not None and not inspect.iscoroutinefunction(tool.run)
        note = " (the tool runs in a thread that cannot be cancelled; it was abandoned)"
        return Outcome(
            "timed_out",
            error=f"the run exceeded its timeout of {timeout:g} s{note if thread else ''}",
            error_kind="timeout",
            retryable=True,
            details={"abandoned_thread": thread},
        )

    # -- claiming ------------------------------------------------------------------------
    async def _claim_fire_retrying(
        self, task_id: str, run_times: list[datetime]
    ) -> FireClaim | None:
        """Claim a fire, retrying a database error a few times.

        APScheduler has already moved the job on, so giving up must not lose the time:
        the task's ``next_run_at`` (untouched by the failed transaction) still names it,
        and the task's next fire, or the next start, claims it (see ``_backfill``)."""
        for attempt in range(CLAIM_ATTEMPTS):
            try:
                return await self._claim_fire(task_id, run_times, utcnow())
            except Exception:
                log.exception("claiming the fire of task %s at %s failed", task_id, run_times[-1])
                if attempt + 1 < CLAIM_ATTEMPTS:
                    await asyncio.sleep(CLAIM_RETRY_DELAY * 2**attempt)
        log.error(
            "gave up claiming task %s at %s; its next fire or the next start will record it",
            task_id,
            run_times[-1],
        )
        return None

    async def _claim_fire(
        self, task_id: str, run_times: list[datetime], now: datetime
    ) -> FireClaim:
        """One transaction: move next_run_at on, record missed times, claim the due one."""
        try:
            async with self.db.write() as session:
                task = await session.get(ScheduledTask, task_id)
                if task is None:
                    log.warning("job for deleted task %s fired; removing the job", task_id)
                    return FireClaim(job="remove")
                if task.status != "scheduled":
                    log.warning("task %s is %s but its job fired", task_id, task.status)
                    return FireClaim(job="pause" if task.status == "paused" else "remove")
                # Off the loop: a sparse RRULE can take dateutil a noticeable moment.
                earlier, next_run = await asyncio.to_thread(
                    _fire_plan, task.schedule, task.next_run_at, run_times, now
                )
                fresh = await self._unclaimed(session, task_id, earlier + run_times)
                if not fresh:
                    log.info("fire of task %s at %s already claimed", task_id, run_times[-1])
                    return FireClaim()
                return self._claim_due(session, task, fresh, next_run, now)
        except IntegrityError:
            log.info("fire of task %s at %s already claimed", task_id, run_times[-1])
            return FireClaim()

    @staticmethod
    async def _unclaimed(
        session: AsyncSession, task_id: str, run_times: list[datetime]
    ) -> list[datetime]:
        """The fire times no row claims yet, whatever its attempt: a fire time that comes
        round again (a job store that did not record its firing) is never run or missed
        twice. The unique key still decides between two processes racing."""
        query = select(TaskRun.fire_time).where(
            TaskRun.task_id == task_id, TaskRun.fire_time.in_(run_times)
        )
        claimed = set((await session.scalars(query)).all())
        return [t for t in run_times if t not in claimed]

    def _claim_due(
        self,
        session: AsyncSession,
        task: ScheduledTask,
        run_times: list[datetime],
        next_run: datetime | None,
        now: datetime,
    ) -> FireClaim:
        """Missed and due fire times among ``run_times``; next_run_at moves to ``next_run``."""
        grace = task.misfire_grace_time
        grace = self.cfg.misfire_grace_time if grace is None else grace
        due: datetime | None = run_times[-1]
        missed = run_times[:-1]
        assert due is not None
        if (now - due).total_seconds() > grace:
            missed, due = run_times, None
        task.next_run_at = next_run
        if due is None and next_run is None and task.frequency != "once":
            task.status = "completed"
        claim = FireClaim()
        if missed:
            claim.published.append(self._add_missed(session, task, missed, next_run))
        if due is not None:
            if self._scheduled[task.id]:
                claim.published.append(self._add_skip(session, task, due, "scheduled", 1))
            else:
                claim.run = self._new_run(task, due, "scheduled", 1)
                session.add(claim.run)
        session.add_all(claim.published)
        return claim

    def _new_run(
        self, task: ScheduledTask, fire_time: datetime, kind: str, attempt: int, **fields: Any
    ) -> TaskRun:
        """A run row claimed by this worker (so recovery can tell whether it is alive)."""
        now = utcnow()
        values: dict[str, Any] = {"status": "queued", "queued_at": now, **fields}
        return TaskRun(
            id=new_id("run"),
            task_id=task.id,
            user_id=task.user_id,
            kind=kind,
            fire_time=fire_time,
            attempt=attempt,
            worker=self.worker,
            **values,
        )

    async def _claim(
        self, task_id: str, fire_time: datetime, kind: str, attempt: int
    ) -> TaskRun | None:
        """Claim one attempt; a retry that overlaps a run of its task is recorded skipped."""
        published: list[TaskNotification] = []
        try:
            async with self.db.write() as session:
                task = await session.get(ScheduledTask, task_id)
                if task is None:
                    return None
                if kind == "retry" and task.status != "scheduled":
                    log.info("not retrying task %s: it is %s", task_id, task.status)
                    note = await self._abandon_retry(session, task, fire_time, attempt - 1)
                    published.extend([note] if note else [])
                    session.add_all(published)
                    run = None
                elif kind != "manual" and self._scheduled[task_id]:
                    published.append(self._add_skip(session, task, fire_time, kind, attempt))
                    session.add_all(published)
                    run = None
                else:
                    run = self._new_run(task, fire_time, kind, attempt)
                    session.add(run)
        except IntegrityError:
            log.info(
                "fire time %s of task %s (attempt %d) already claimed", fire_time, task_id, attempt
            )
            return None
        await self._publish(published)
        return run

    async def _abandon_retry(
        self, session: AsyncSession, task: ScheduledTask, fire_time: datetime, attempt: int
    ) -> TaskNotification | None:
        """The user paused or cancelled the task (or it completed) while a retry was
        pending: the failed attempt becomes final, with the one failure notification the
        fire time is owed."""
        last = await session.scalar(
            select(TaskRun).where(
                TaskRun.task_id == task.id,
                TaskRun.fire_time == fire_time,
                TaskRun.attempt == attempt,
            )
        )
        if last is None or (last.details or {}).get("retry_abandoned"):
            return None
        last.details = {**(last.details or {}), "retry_abandoned": True}
        error = f"{last.error or last.status} (not retried: the task is {task.status})"
        outcome = Outcome(last.status, result=last.result, error=error, error_kind=last.error_kind)
        _job, note = self._update_task(task, last, outcome, utcnow())
        return note

    def _add_missed(
        self,
        session: AsyncSession,
        task: ScheduledTask,
        missed: list[datetime],
        next_run: datetime | None,
    ) -> TaskNotification:
        now = utcnow()
        row = self._new_run(
            task,
            missed[0],
            "missed",
            0,
            status="missed",
            finished_at=now,
            details={"missed_times": [t.isoformat() for t in missed], "count": len(missed)},
        )
        session.add(row)
        zone = schedule_of(task).zone
        count = len(missed)
        when = ", ".join(f"{t.astimezone(zone):%Y-%m-%d %H:%M %Z}" for t in missed[:3])
        more = f" and {count - 3} more" if count > 3 else ""
        message = (
            f"missed {count} run{'s' if count != 1 else ''} while the service was down or "
            f"busy ({when}{more})"
        )
        if task.frequency == "once" and next_run is None:
            task.status, task.next_run_at, task.last_status = "missed", None, "missed"
            message += "; this one-time task will not run"
        elif next_run is not None:
            message += f"; next run at {next_run.astimezone(zone).isoformat()}"
        return notifications.build(task, row, "missed", message)

    def _add_skip(
        self,
        session: AsyncSession,
        task: ScheduledTask,
        fire_time: datetime,
        kind: str,
        attempt: int,
    ) -> TaskNotification:
        now = utcnow()
        error = "the previous run of this task was still running"
        row = self._new_run(
            task,
            fire_time,
            kind,
            attempt,
            status="skipped",
            finished_at=now,
            error=error,
            error_kind="overlap",
        )
        session.add(row)
        message = f"skipped the run due at {fire_time.isoformat()}: {error}"
        return notifications.build(task, row, "skipped", message)

    async def _mark_running(self, run: TaskRun) -> ScheduledTask | None:
        async with self.db.write() as session:
            task = await session.get(ScheduledTask, run.task_id)
            row = await session.get(TaskRun, run.id)
            if task is None or row is None:
                return None
            row.status = "running"
            row.started_at = run.started_at = utcnow()
            return task

    # -- finishing -----------------------------------------------------------------------
    async def _finish(self, run: TaskRun, outcome: Outcome) -> TaskRun:
        """Record the outcome; then schedule a retry, or settle the task and notify."""
        now = utcnow()
        retry_at: datetime | None = None
        published: list[TaskNotification] = []
        job: str | None = None
        async with self.db.write() as session:
            row = await session.get(TaskRun, run.id)
            task = await session.get(ScheduledTask, run.task_id)
            if row is None:  # the task was deleted meanwhile, with its history
                return run
            if row.status not in ACTIVE_RUN:
                # Already final: another process judged this worker dead and recorded the
                # run interrupted. Settling it again would notify the user twice.
                log.warning("run %s was already recorded %s; keeping that", row.id, row.status)
                return row
            self._write_run(row, outcome, now)
            if task is not None:
                retry_at = self._retry_time(task, row, outcome, now)
                if retry_at is not None:
                    row.details = {**(row.details or {}), "retry_at": retry_at.isoformat()}
                else:
                    job, note = self._update_task(task, row, outcome, now)
                    published.append(note)
                    session.add(note)
            run = row
        if retry_at is not None and self.jobs is not None:
            await self.jobs.schedule_retry(run.task_id, run.fire_time, run.attempt + 1, retry_at)
        if job == "remove":
            await self._remove_job(run.task_id)
        elif job == "pause" and self.jobs is not None:
            await self.jobs.pause(run.task_id)
        await self._publish(published)
        return run

    @staticmethod
    def _write_run(row: TaskRun, outcome: Outcome, now: datetime) -> None:
        row.status = outcome.status
        row.finished_at = now
        if row.started_at is not None:
            row.duration_ms = int((now - row.started_at).total_seconds() * 1000)
        row.result = outcome.result
        row.error = outcome.error
        row.error_kind = outcome.error_kind
        row.usage = outcome.usage
        row.details = outcome.details or None

    def _retry_time(
        self, task: ScheduledTask, row: TaskRun, outcome: Outcome, now: datetime
    ) -> datetime | None:
        """When the next attempt of this fire time runs, or None if this one is final."""
        if outcome.status in ("succeeded", "skipped") or not outcome.retryable:
            return None
        if row.kind == "manual" or self._stopping:
            return None
        max_retries = self.cfg.max_retries if task.max_retries is None else task.max_retries
        if row.attempt > max_retries:
            return None
        delay = min(
            self.cfg.retry_backoff_cap,
            self.cfg.retry_backoff_base * self.cfg.retry_backoff_factor ** (row.attempt - 1),
        )
        return now + timedelta(seconds=delay)

    def _update_task(
        self, task: ScheduledTask, row: TaskRun, outcome: Outcome, now: datetime
    ) -> tuple[str | None, TaskNotification]:
        """Counters, last result and status after a final attempt; returns the job action
        ("remove" / "pause" / None) and the notification."""
        ok = outcome.status == "succeeded"
        if row.kind != "manual":
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
        job, status = None, outcome.status
        if row.kind != "manual" and task.status == "scheduled":
            job, status, message = self._settle(task, outcome, message)
        return job, notifications.build(task, row, status, message)

    def _settle(
        self, task: ScheduledTask, outcome: Outcome, message: str
    ) -> tuple[str | None, str, str]:
        """A scheduled fire time is final: complete, pause or carry on the task."""
        ok = outcome.status == "succeeded"
        if outcome.status != "interrupted":  # a crash is not the task's failure
            task.consecutive_failures = 0 if ok else task.consecutive_failures + 1
        # A once task's job is gone once it fired; only recurring jobs need removing.
        remove = None if task.frequency == "once" else "remove"
        if task.frequency == "once" or task.next_run_at is None:
            task.status = "completed" if ok or task.frequency != "once" else "failed"
            task.next_run_at = None
            return remove, outcome.status, message
        if task.max_runs is not None and task.run_count >= task.max_runs:
            task.status, task.next_run_at = "completed", None
            message += f" — that was run {task.run_count} of {task.max_runs}; the task is complete"
            return remove, outcome.status, message
        if task.consecutive_failures >= self.cfg.max_consecutive_failures:
            task.status, task.next_run_at = "paused", None
            message += (
                f" — the task failed {task.consecutive_failures} times in a row and was paused; "
                f"fix the cause, then resume it with resume_task (task_id {task.id})"
            )
            return "pause", "paused", message
        return None, outcome.status, message

    async def _publish(self, published: list[TaskNotification]) -> None:
        if published:
            await self.notifier.publish(published)

    async def _remove_job(self, task_id: str) -> None:
        if self.jobs is not None:
            await self.jobs.remove(task_id)

    # -- start and stop ------------------------------------------------------------------
    async def recover_interrupted(self, is_alive: IsAlive | None = None) -> int:
        """Runs a dead worker left queued/running become ``interrupted`` (final, never
        re-run: the tool may have acted), with a notification; their tasks are settled
        as after any final attempt. Runs of a worker ``is_alive`` says is alive (a
        standby executing a manual run) are left to it; without ``is_alive`` every
        other worker counts as dead, which is only safe while no other process runs."""
        dead = await self._runs_of_dead_workers(is_alive)
        if not dead:
            return 0
        published: list[TaskNotification] = []
        now = utcnow()
        async with self.db.write() as session:
            rows = (
                await session.scalars(
                    select(TaskRun)
                    .where(TaskRun.id.in_(dead), TaskRun.status.in_(ACTIVE_RUN))
                    .order_by(TaskRun.queued_at)
                )
            ).all()
            for row in rows:
                if row.id in self._active:
                    continue
                error = INTERRUPTED if row.status == "running" else NOT_STARTED
                outcome = self._interrupted(error)
                self._write_run(row, outcome, now)
                task = await session.get(ScheduledTask, row.task_id)
                if task is not None:
                    _job, note = self._update_task(task, row, outcome, now)
                    published.append(note)
            session.add_all(published)
        await self._publish(published)
        return len(rows)

    async def _runs_of_dead_workers(self, is_alive: IsAlive | None) -> list[str]:
        """Ids of queued/running runs whose worker is dead (asked once per worker, outside
        any write transaction: on PostgreSQL the answer is a query)."""
        async with self.db.read() as session:
            active = (
                await session.execute(
                    select(TaskRun.id, TaskRun.worker).where(TaskRun.status.in_(ACTIVE_RUN))
                )
            ).all()
        alive: dict[str | None, bool] = {}
        for _run_id, worker in active:
            if worker not in alive:
                alive[worker] = is_alive is not None and await is_alive(worker)
        for worker in (w for w, live in alive.items() if live and w != self.worker):
            log.info("leaving the runs of live worker %s to it", worker)
        return [run_id for run_id, worker in active if not alive[worker]]

    def is_running(self, task_id: str) -> bool:
        return bool(self._scheduled[task_id] or self._manual[task_id])

    async def drain(self, grace: float) -> None:
        """Stop starting runs; wait up to ``grace`` s for those running, then cancel them.

        Runs still waiting for a slot are cancelled at once (recorded interrupted, never
        started). Every cancelled run records itself ``interrupted`` before this returns.
        """
        self._stopping = True
        for run_id, task in self._active.items():
            if run_id not in self._started:
                task.cancel()
        pending = [t for t in self._entries if not t.done()]
        if not pending:
            return
        log.info("waiting up to %.1f s for %d running task(s)", grace, len(pending))
        _done, still = await asyncio.wait(pending, timeout=grace)
        for task in still:
            task.cancel()
        if still:
            log.warning("interrupting %d task(s) still running after %.1f s", len(still), grace)
            with contextlib.suppress(Exception):
                await asyncio.wait(still, timeout=5)
