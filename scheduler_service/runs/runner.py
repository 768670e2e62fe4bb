"""The runner: where every run starts, waits for a slot, executes and is recorded.

Read top to bottom, a fire time goes: ``on_fire`` (APScheduler fired a job, via
``jobs.fire_task``) → ``claims.Claims.fire`` (the ``task_runs`` row) → a FIFO slot
(``slots``) → ``execution.Execution.run`` → ``outcomes.record_outcome`` (retry or settle)
→ the notifier. Retries (``on_retry``) and manual runs (``run_now``) take the same path
from a claim of one attempt.

The runner also keeps the set of runs in flight in this process: it answers whether a
task is running, and ``drain`` stops it cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time as monotonic
from collections import Counter
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from scheduler_service.config import Settings
from scheduler_service.engine import JobControl
from scheduler_service.runs.claims import Claims, FireClaim
from scheduler_service.runs.execution import Execution
from scheduler_service.runs.notifications import Notifier
from scheduler_service.runs.outcomes import (
    INTERRUPTED,
    NOT_STARTED,
    Outcome,
    interrupted,
    record_outcome,
)
from scheduler_service.runs.slots import FifoSlots
from scheduler_service.statuses import ACTIVE_RUN, RunKind, RunStatus
from scheduler_service.storage.db import Database
from scheduler_service.storage.models import ScheduledTask, TaskNotification, TaskRun, utcnow
from scheduler_service.storage.retry import retry_transient

log = logging.getLogger(__name__)

__all__ = ["INTERRUPTED", "NOT_STARTED", "RunInfo", "TaskRunner", "current_run"]


@dataclass(frozen=True)
class RunInfo:
    """The run a tool call belongs to (``current_run``), including its real fire time."""

    run_id: str
    task_id: str
    fire_time: datetime
    attempt: int
    kind: str


current_run: ContextVar[RunInfo] = ContextVar("current_run")


class TaskRunner:
    """Executes runs for one service; bounded by ``max_concurrent_tasks``."""

    def __init__(
        self,
        *,
        db: Database,
        settings: Settings,
        notifier: Notifier,
        execution: Execution,
    ) -> None:
        self.db = db
        self.settings = settings
        self.cfg = settings.scheduler
        self.notifier = notifier
        self.execution = execution
        self.claims = Claims(
            db=db, cfg=self.cfg, notifier=notifier, overlaps=self.has_scheduled_in_flight
        )
        self.jobs: JobControl | None = None
        self._slots = FifoSlots(self.cfg.max_concurrent_tasks)
        self._tickets = itertools.count()
        self._entries: set[asyncio.Task[Any]] = set()  # every fire/retry/manual in progress
        self._active: dict[str, asyncio.Task[Any]] = {}  # claimed run id → its task
        self._started: set[str] = set()  # claimed run ids that hold a slot
        self._scheduled: Counter[str] = Counter()  # task id → scheduled/retry runs in flight
        self._manual: Counter[str] = Counter()  # task id → manual runs in flight
        self._stopping = False

    @property
    def worker(self) -> str | None:
        """This worker's id, recorded on every run it claims."""
        return self.claims.worker

    @worker.setter
    def worker(self, value: str | None) -> None:
        self.claims.worker = value

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
            await self._apply_job_action(task_id, claim.job)
            await self._publish(claim.published)
            if claim.run is not None:
                await self._execute_claimed(claim.run, ticket)

    async def on_retry(self, task_id: str, fire_time: datetime, attempt: int) -> None:
        await self.execute(task_id, fire_time, kind=RunKind.RETRY, attempt=attempt)

    async def run_now(self, task: ScheduledTask) -> TaskRun | None:
        """A manual run: its own key (now), never consuming or blocking a scheduled one."""
        return await self.execute(task.id, utcnow(), kind=RunKind.MANUAL, attempt=1)

    async def execute(
        self, task_id: str, fire_time: datetime, *, kind: str, attempt: int
    ) -> TaskRun | None:
        """Claim and run one attempt (a retry or a manual run)."""
        with self._entry() as ticket:
            if self._stopping:  # a retry stays restorable: see recovery.restore_retries
                log.warning("not starting %s of task %s: the service is stopping", kind, task_id)
                return None
            run = await self.claims.attempt(task_id, fire_time, kind, attempt)
            if run is None or run.status == RunStatus.SKIPPED:
                return run
            return await self._execute_claimed(run, ticket)

    async def _claim_fire_retrying(
        self, task_id: str, run_times: list[datetime]
    ) -> FireClaim | None:
        """Claim a fire, retrying a database error a few times.

        APScheduler has already moved the job on, so giving up must not lose the time:
        the task's ``next_run_at`` (untouched by the failed transaction) still names it,
        and the task's next fire, or the next start, claims it (see ``claims._fire_plan``).
        """
        what = f"claiming the fire of task {task_id} at {run_times[-1]}"
        try:
            return await retry_transient(
                lambda: self.claims.fire(task_id, run_times, utcnow()), what
            )
        except Exception:
            log.exception("%s failed", what)
        log.error(
            "gave up claiming task %s at %s; its next fire or the next start will record it",
            task_id,
            run_times[-1],
        )
        return None

    # -- one execution -----------------------------------------------------------------
    async def _execute_claimed(self, run: TaskRun, ticket: int) -> TaskRun:
        current = asyncio.current_task()
        assert current is not None
        in_flight = self._manual if run.kind == RunKind.MANUAL else self._scheduled
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

    async def _run_in_slot(self, run: TaskRun, ticket: int) -> Outcome:
        try:
            await self._slots.acquire(ticket)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            return interrupted(NOT_STARTED)
        try:
            if self._stopping:
                return interrupted(NOT_STARTED)
            self._started.add(run.id)
            return await self._run_started(run)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            return interrupted(INTERRUPTED)
        finally:
            self._slots.release()

    async def _run_started(self, run: TaskRun) -> Outcome:
        task = await self.claims.mark_running(run)
        if task is None:
            return Outcome(RunStatus.SKIPPED, error="the task was deleted before its run started")
        started = monotonic.perf_counter()
        outcome = await self.execution.run(task, run)
        outcome.details["duration_ms"] = round((monotonic.perf_counter() - started) * 1000)
        return outcome

    # -- finishing -----------------------------------------------------------------------
    async def _finish_retrying(self, run: TaskRun, outcome: Outcome) -> TaskRun:
        """Record the outcome, retrying a database error: a run left ``running`` by a live
        process is never recovered, would block execute_task_now and never notify."""
        what = f"recording run {run.id} ({outcome.status})"
        try:
            return await retry_transient(lambda: self.finish(run, outcome), what)
        except Exception:
            log.exception("%s failed", what)
        log.error(
            "gave up recording run %s; it stays %s until this worker restarts", run.id, run.status
        )
        return run

    async def finish(self, run: TaskRun, outcome: Outcome) -> TaskRun:
        """Record the outcome; then schedule a retry, or settle the task and notify."""
        recorded = await record_outcome(
            self.db, self.cfg, run, outcome, stopping=lambda: self._stopping
        )
        run = recorded.run
        if recorded.retry_at is not None and self.jobs is not None:
            await self.jobs.schedule_retry(
                run.task_id, run.fire_time, run.attempt + 1, recorded.retry_at
            )
        await self._apply_job_action(run.task_id, recorded.job)
        await self._publish(recorded.published)
        return run

    async def _apply_job_action(self, task_id: str, job: str | None) -> None:
        if self.jobs is None:
            return
        if job == "remove":
            await self.jobs.remove(task_id)
        elif job == "pause":
            await self.jobs.pause(task_id)

    async def _publish(self, published: list[TaskNotification]) -> None:
        if published:
            await self.notifier.publish(published)

    # -- what is in flight -----------------------------------------------------------------
    def has_scheduled_in_flight(self, task_id: str) -> bool:
        """Whether a scheduled or retry run of the task is in flight in this process (a
        new one would overlap it; a manual run overlaps nothing)."""
        return bool(self._scheduled[task_id])

    def is_claimed_here(self, run_id: str) -> bool:
        """Whether this process is executing (or about to execute) the run."""
        return run_id in self._active

    async def is_running(self, task_id: str) -> bool:
        """Is this task running? Yes if any process recorded a run of it queued or running,
        or a run of it is in flight in this process (claimed, not yet recorded)."""
        async with self.db.read() as session:
            active = await session.scalar(
                select(func.count())
                .select_from(TaskRun)
                .where(TaskRun.task_id == task_id, TaskRun.status.in_(ACTIVE_RUN))
            )
        return bool(active) or bool(self._scheduled[task_id] or self._manual[task_id])

    # -- stop ------------------------------------------------------------------------------
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
