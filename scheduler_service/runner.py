"""Running tasks: claim a fire time, execute within limits, record, notify.

Every execution starts by inserting its ``task_runs`` row keyed by
(task_id, fire_time, attempt). The key is unique in the database, so a fire time that
two processes (or a restart) both try to run is executed by whichever inserts first;
the other sees the conflict and does nothing. That is invariant 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time as monotonic
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from config import Settings
from scheduler_service import notifications
from scheduler_service.db import Database
from scheduler_service.engine import JobControl
from scheduler_service.models import ScheduledTask, TaskNotification, TaskRun, new_id, utcnow
from scheduler_service.notifications import Notifier, summarize
from scheduler_service.orchestrate import OrchestratedExecution
from scheduler_service.schedules import Schedule, build_trigger, describe
from tools import ToolContext, ToolError, ToolRegistry

log = logging.getLogger(__name__)

ACTIVE_RUN = ("queued", "running")
RETRYABLE_TOOL_ERRORS = ("unavailable", "execution_failed")


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


def schedule_of(task: ScheduledTask) -> Schedule:
    return Schedule.from_dict(task.schedule)


def next_fire_after(
    task: ScheduledTask, previous: datetime | None, now: datetime
) -> datetime | None:
    fire: datetime | None = build_trigger(schedule_of(task)).get_next_fire_time(previous, now)
    return fire


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
        self._slots = asyncio.Semaphore(self.cfg.max_concurrent_tasks)
        self._active: dict[str, asyncio.Task[Any]] = {}  # run id → the task executing it
        self._active_tasks: dict[str, int] = {}  # task id → runs in flight here
        self._stopping = False
        self.run_finished = asyncio.Condition()

    # -- entry points ------------------------------------------------------------------
    async def on_fire(self, task_id: str, run_times: list[datetime]) -> None:
        """APScheduler fired ``task_id`` for ``run_times`` (oldest first)."""
        now = utcnow()
        task = await self._load(task_id)
        if task is None:
            log.warning("job for deleted task %s fired; removing the job", task_id)
            await self._remove_job(task_id)
            return
        if task.status != "scheduled":
            log.warning("task %s is %s but its job fired; ignoring", task_id, task.status)
            return
        grace = task.misfire_grace_time
        grace = self.cfg.misfire_grace_time if grace is None else grace
        due: datetime | None = run_times[-1]
        missed = run_times[:-1]
        assert due is not None
        if (now - due).total_seconds() > grace:
            missed, due = run_times, None
        next_run = next_fire_after(task, run_times[-1], now)
        await self._set_next_run(task_id, next_run, finished=due is None and next_run is None)
        if missed:
            await self._record_missed(task_id, missed, next_run)
        if due is not None:
            await self.execute(task_id, due, kind="scheduled", attempt=1)

    async def on_retry(self, task_id: str, fire_time: datetime, attempt: int) -> None:
        await self.execute(task_id, fire_time, kind="retry", attempt=attempt)

    async def run_now(self, task: ScheduledTask) -> TaskRun | None:
        """A manual run: its own key (now), never consuming a scheduled fire time."""
        return await self.execute(task.id, utcnow(), kind="manual", attempt=1)

    # -- one execution -----------------------------------------------------------------
    async def execute(
        self, task_id: str, fire_time: datetime, *, kind: str, attempt: int
    ) -> TaskRun | None:
        if self._stopping:
            log.warning("not starting %s of task %s: the service is stopping", kind, task_id)
            return None
        if kind != "manual" and self._active_tasks.get(task_id):
            await self._record_skip(task_id, fire_time, kind, attempt)
            return None
        run = await self._claim(task_id, fire_time, kind, attempt)
        if run is None:
            return None
        current = asyncio.current_task()
        assert current is not None
        self._active[run.id] = current
        self._active_tasks[task_id] = self._active_tasks.get(task_id, 0) + 1
        try:
            outcome = await self._run_in_slot(run)
        finally:
            self._active.pop(run.id, None)
            self._active_tasks[task_id] -= 1
        return await self._finish(run, outcome)

    async def _run_in_slot(self, run: TaskRun) -> Outcome:
        try:
            async with self._slots:
                task = await self._mark_running(run)
                if task is None:
                    return Outcome("skipped", error="the task was deleted before its run started")
                started = monotonic.perf_counter()
                outcome = await self._execute(task, run)
                outcome.details["duration_ms"] = round((monotonic.perf_counter() - started) * 1000)
                return outcome
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            return Outcome(
                "interrupted",
                error="the service stopped while this run was in progress",
                error_kind="interrupted",
                retryable=True,
            )

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

    # -- database steps ----------------------------------------------------------------
    async def _load(self, task_id: str) -> ScheduledTask | None:
        async with self.db.read() as session:
            return await session.get(ScheduledTask, task_id)

    async def _claim(
        self, task_id: str, fire_time: datetime, kind: str, attempt: int
    ) -> TaskRun | None:
        try:
            async with self.db.write() as session:
                task = await session.get(ScheduledTask, task_id)
                if task is None:
                    return None
                run = TaskRun(
                    id=new_id("run"),
                    task_id=task_id,
                    user_id=task.user_id,
                    kind=kind,
                    fire_time=fire_time,
                    attempt=attempt,
                    status="queued",
                    queued_at=utcnow(),
                )
                session.add(run)
            return run
        except IntegrityError:
            log.info(
                "fire time %s of task %s (attempt %d) already claimed", fire_time, task_id, attempt
            )
            return None

    async def _mark_running(self, run: TaskRun) -> ScheduledTask | None:
        async with self.db.write() as session:
            task = await session.get(ScheduledTask, run.task_id)
            row = await session.get(TaskRun, run.id)
            if task is None or row is None:
                return None
            row.status = "running"
            row.started_at = run.started_at = utcnow()
            return task

    async def _finish(self, run: TaskRun, outcome: Outcome) -> TaskRun:
        now = utcnow()
        retry_at: datetime | None = None
        published: list[TaskNotification] = []
        remove_job = False
        async with self.db.write() as session:
            row = await session.get(TaskRun, run.id)
            task = await session.get(ScheduledTask, run.task_id)
            if row is None:  # the task was deleted meanwhile, with its history
                return run
            self._write_run(row, outcome, now)
            if task is not None:
                retry_at = self._retry_time(task, row, outcome, now)
                if retry_at is not None:
                    row.details = {**(row.details or {}), "retry_at": retry_at.isoformat()}
                else:
                    remove_job, note = self._update_task(task, row, outcome, now)
                    published.append(notifications.build(task, row, note[0], note[1]))
                    session.add_all(published)
            run = row
        if retry_at is not None and self.jobs is not None:
            await self.jobs.schedule_retry(run.task_id, run.fire_time, run.attempt + 1, retry_at)
        if remove_job:
            await self._remove_job(run.task_id)
        await self.notifier.publish(published)
        async with self.run_finished:
            self.run_finished.notify_all()
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
    ) -> tuple[bool, tuple[str, str]]:
        """Counters, last result and status after a final attempt; returns the notification."""
        ok = outcome.status == "succeeded"
        if row.kind != "manual":
            task.run_count += 1
        task.success_count += ok
        task.failure_count += not ok
        task.last_run_at = now
        task.last_status = outcome.status
        task.last_result = outcome.result
        task.last_error = outcome.error
        status = outcome.status
        message = summarize(outcome.result) if ok else (outcome.error or status)
        if row.attempt > 1:
            message += f" (after {row.attempt} attempts)"
        if row.kind == "manual" or task.status != "scheduled":
            return False, (status, message)
        task.consecutive_failures = 0 if ok else task.consecutive_failures + 1
        remove_job = False
        if task.frequency == "once" or task.next_run_at is None:
            task.status = "completed" if ok or task.frequency != "once" else "failed"
            task.next_run_at = None
            remove_job = True
        elif task.max_runs is not None and task.run_count >= task.max_runs:
            task.status, task.next_run_at, remove_job = "completed", None, True
            message += f" — that was run {task.run_count} of {task.max_runs}; the task is complete"
        elif task.consecutive_failures >= self.cfg.max_consecutive_failures:
            task.status, task.next_run_at, remove_job = "paused", None, True
            status = "paused"
            message += (
                f" — the task failed {task.consecutive_failures} times in a row and was paused; "
                f"fix the cause, then resume it with resume_task (task_id {task.id})"
            )
        return remove_job, (status, message)

    async def _set_next_run(self, task_id: str, next_run: datetime | None, finished: bool) -> None:
        async with self.db.write() as session:
            task = await session.get(ScheduledTask, task_id)
            if task is not None:
                task.next_run_at = next_run
                if finished and task.frequency != "once":
                    task.status = "completed"

    async def _record_missed(
        self, task_id: str, missed: list[datetime], next_run: datetime | None
    ) -> None:
        published: list[TaskNotification] = []
        try:
            async with self.db.write() as session:
                task = await session.get(ScheduledTask, task_id)
                if task is None:
                    return
                zone = schedule_of(task).zone
                row = TaskRun(
                    id=new_id("run"),
                    task_id=task_id,
                    user_id=task.user_id,
                    kind="missed",
                    fire_time=missed[0],
                    attempt=0,
                    status="missed",
                    queued_at=utcnow(),
                    finished_at=utcnow(),
                    details={"missed_times": [t.isoformat() for t in missed], "count": len(missed)},
                )
                session.add(row)
                count = len(missed)
                when = ", ".join(f"{t.astimezone(zone):%Y-%m-%d %H:%M %Z}" for t in missed[:3])
                more = f" and {count - 3} more" if count > 3 else ""
                message = (
                    f"missed {count} run{'s' if count != 1 else ''} while the service was down "
                    f"({when}{more})"
                )
                if task.frequency == "once" and next_run is None:
                    task.status, task.next_run_at = "missed", None
                    task.last_status = "missed"
                    message += "; this one-time task will not run"
                elif next_run is not None:
                    message += f"; next run at {next_run.astimezone(zone).isoformat()}"
                published.append(notifications.build(task, row, "missed", message))
                session.add_all(published)
        except IntegrityError:
            return  # another process recorded these already
        await self.notifier.publish(published)

    async def _record_skip(
        self, task_id: str, fire_time: datetime, kind: str, attempt: int
    ) -> None:
        published: list[TaskNotification] = []
        try:
            async with self.db.write() as session:
                task = await session.get(ScheduledTask, task_id)
                if task is None:
                    return
                row = TaskRun(
                    id=new_id("run"),
                    task_id=task_id,
                    user_id=task.user_id,
                    kind=kind,
                    fire_time=fire_time,
                    attempt=attempt,
                    status="skipped",
                    queued_at=utcnow(),
                    finished_at=utcnow(),
                    error="the previous run of this task was still running",
                    error_kind="overlap",
                )
                session.add(row)
                published.append(
                    notifications.build(
                        task,
                        row,
                        "skipped",
                        f"skipped the run due at {fire_time.isoformat()}: the previous run was "
                        "still running",
                    )
                )
                session.add_all(published)
        except IntegrityError:
            return
        await self.notifier.publish(published)

    async def _remove_job(self, task_id: str) -> None:
        if self.jobs is not None:
            await self.jobs.remove(task_id)

    # -- start and stop ------------------------------------------------------------------
    async def recover_interrupted(self) -> int:
        """Runs a dead process left queued/running become ``interrupted``, with a notice."""
        published: list[TaskNotification] = []
        async with self.db.write() as session:
            rows = (
                await session.scalars(select(TaskRun).where(TaskRun.status.in_(ACTIVE_RUN)))
            ).all()
            for row in rows:
                if row.id in self._active:
                    continue
                row.status, row.finished_at = "interrupted", utcnow()
                row.error = "the service stopped while this run was in progress"
                row.error_kind = "interrupted"
                task = await session.get(ScheduledTask, row.task_id)
                if task is not None:
                    task.last_status, task.last_error = "interrupted", row.error
                    published.append(notifications.build(task, row, "interrupted", row.error))
            session.add_all(published)
        await self.notifier.publish(published)
        return len(published)

    def is_running(self, task_id: str) -> bool:
        return bool(self._active_tasks.get(task_id))

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` s for runs in flight, then cancel and record them interrupted."""
        self._stopping = True
        pending = [t for t in self._active.values() if not t.done()]
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

    def describe_schedule(self, task: ScheduledTask) -> str:
        return describe(schedule_of(task))
