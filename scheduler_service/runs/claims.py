"""Claims: a fire time becomes a ``task_scheduler_runs`` row before anything runs.

Every execution starts by inserting its ``task_scheduler_runs`` row keyed by (task_id, fire_time,
attempt). The key is unique in the database, so a fire time that two processes (or a
restart) both try to run is executed by whichever inserts first; the other sees the
conflict and does nothing: no fire time runs twice.

When a scheduled fire time is claimed, the task's ``next_run_at`` moves past it in the
same transaction. So ``next_run_at`` always names the oldest fire time not yet claimed,
and start-up can put back any fire time the job store consumed but nobody claimed (a
crash between the two): see ``recovery.reconcile``.

Every claim first locks the task row (``Database.lock_task``), so two claims of one task
— a slow claim overlapping the next fire, a catch-up overlapping a regular fire, two
processes — run one after the other, and the second sees what the first wrote.

Fire times too late to run (beyond the misfire grace time) are recorded ``missed``, one
row per fire time under the same key a run would take (attempt 1), so the database
itself refuses to run a fire time that was recorded missed, however it comes round
again; a fire time that would overlap a run of the same task still in flight is recorded
``skipped``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from scheduler_service.config import LimitsConfig, SchedulerConfig
from scheduler_service.runs import buffering, cancelling, notifications, store
from scheduler_service.runs.notifications import Notifier
from scheduler_service.runs.outcomes import Outcome, update_task
from scheduler_service.runs.policy import (
    Fire,
    FirePlan,
    PlanInput,
    fire_plans,
    on_overlap,
    overlap_of,
    split_missed,
)
from scheduler_service.runs.store import Taken
from scheduler_service.schedules import Schedule
from scheduler_service.statuses import (
    ExecutionMode,
    Frequency,
    JobAction,
    Overlap,
    RunKind,
    RunStatus,
    TaskStatus,
)
from scheduler_service.storage.db import Database
from scheduler_service.storage.models import (
    ScheduledTask,
    TaskNotification,
    TaskRun,
    new_id,
    utcnow,
)
from scheduler_service.tools import ToolError

log = logging.getLogger(__name__)

__all__ = ["Claims", "FireClaim", "allowed", "schedule_of"]


@dataclass
class FireClaim:
    """What claiming one APScheduler fire produced (written in one transaction)."""

    run: TaskRun | None = None
    published: list[TaskNotification] = field(default_factory=list)
    job: JobAction | None = None  # what to do with the task's job afterwards


def allowed(task: ScheduledTask) -> bool:
    """Whether the task's runs may overlap (overlap ``allow``)."""
    return overlap_of(task.options) == Overlap.ALLOW


def schedule_of(task: ScheduledTask) -> Schedule:
    return Schedule.from_dict(task.schedule)


def _fires_now(task: ScheduledTask | None) -> bool:
    return task is not None and task.status == TaskStatus.SCHEDULED


def _still(
    planned: dict[str, tuple[tuple[Any, datetime | None], FirePlan]], task: ScheduledTask
) -> bool:
    """Whether the plan read for ``task`` was computed from its current values."""
    seen = planned.get(task.id)
    return seen is not None and seen[0] == (task.schedule, task.next_run_at)


class Claims:
    """Claims fire times and attempts for one runner.

    ``overlaps(task_id)`` says whether a scheduled or retry run of the task is in flight
    in this process: such runs never overlap, so a new one is recorded skipped.
    """

    def __init__(
        self,
        *,
        db: Database,
        cfg: SchedulerConfig,
        notifier: Notifier,
        overlaps: Callable[[str], bool],
    ) -> None:
        self.db = db
        self.cfg = cfg
        self.notifier = notifier
        self.overlaps = overlaps
        self.worker: str | None = None  # recorded on every run claimed here
        # PostgreSQL: scheduled runs are claimed unassigned (worker NULL) into the run
        # queue, and every replica takes them from there (``take_queued``).
        self.queued = not db.sqlite
        # A client executes nothing: the runs it claims (manual runs) go to the queue.
        self.executes = True
        # The tools of this worker: a run whose tool it lacks goes to the queue, for a
        # worker that has it, instead of failing here.
        self.tools: Callable[[], list[str]] = list
        # the manual-run rate, decided under the task's lock with the claim
        self.limits = LimitsConfig()

    def assigns(self, task: ScheduledTask) -> bool:
        """Whether a run of ``task`` claimed here is this worker's to execute."""
        if not self.executes:
            return False
        return task.execution_mode != ExecutionMode.DIRECT or task.tool_name in self.tools()

    async def fire(self, task_id: str, run_times: list[datetime], now: datetime) -> FireClaim:
        """One transaction: move next_run_at on, record missed times, claim the due one."""
        [claim] = await self.fire_many([(task_id, run_times)], now)
        return claim

    async def fire_many(self, fires: Sequence[Fire], now: datetime) -> list[FireClaim]:
        """Claim several fires (one per task) in one transaction, each as ``fire`` would.

        If another process claimed one of the fire times first, the unique key fails the
        whole transaction; each fire is then claimed on its own, so only that one is
        found already claimed."""
        planned = await self._plans_from_read(fires, now)
        try:
            return await self.db.write_orm(
                lambda session: self._claim_many(session, fires, planned, now)
            )
        except IntegrityError:
            if len(fires) > 1:
                return [claim for fire in fires for claim in await self.fire_many([fire], now)]
            log.info("fire of task %s at %s already claimed", fires[0][0], fires[0][1][-1])
            return [FireClaim()]

    def _claim_many(
        self,
        session: Session,
        fires: Sequence[Fire],
        planned: dict[str, tuple[tuple[Any, datetime | None], FirePlan]],
        now: datetime,
    ) -> list[FireClaim]:
        """``fire_many``'s transaction, in one trip (on SQLite, in the write thread)."""
        tasks = self.db.lock_tasks_sync(session, [task_id for task_id, _ in fires])
        live = [(tasks[t], times) for t, times in fires if _fires_now(tasks.get(t))]
        plans = {t.id: planned[t.id][1] for t, _ in live if _still(planned, t)}
        changed = [
            (t.id, t.schedule, t.next_run_at, times) for t, times in live if t.id not in plans
        ]
        if changed:  # rare: changed since the read; computed here, under the lock (on
            # SQLite in the write thread; on PostgreSQL on the loop, a rare moment)
            plans |= fire_plans(changed, now)
        claimed = self._claimed(session, fires, plans)
        busy = self._busy(session, [task_id for task_id, _ in fires])
        return [
            self._claim_fire(session, tasks.get(task_id), task_id, times, plans, claimed, busy, now)
            for task_id, times in fires
        ]

    async def _plans_from_read(
        self, fires: Sequence[Fire], now: datetime
    ) -> dict[str, tuple[tuple[Any, datetime | None], FirePlan]]:
        """Fire plans computed from a read, off the loop and before the write
        transaction (a sparse RRULE can take dateutil a noticeable moment, which the
        write lock would wait for); each keeps the row values it was computed from, and
        ``fire_many`` uses it only if the locked row still has them."""
        ids = [task_id for task_id, _ in fires]
        rows = await self.db.read_sync(lambda session: store.plan_rows(session, ids))
        times = dict(fires)
        live: list[PlanInput] = [
            (task_id, schedule, next_run_at, times[task_id])
            for task_id, status, schedule, next_run_at in rows
            if status == TaskStatus.SCHEDULED
        ]
        plans = await asyncio.to_thread(fire_plans, live, now)
        return {
            task_id: ((schedule, next_run), plans[task_id])
            for task_id, schedule, next_run, _ in live
        }

    def _claim_fire(
        self,
        session: Session,
        task: ScheduledTask | None,
        task_id: str,
        run_times: list[datetime],
        plans: dict[str, FirePlan],
        claimed: set[tuple[str, datetime]],
        busy: set[str],
        now: datetime,
    ) -> FireClaim:
        if task is None:
            log.warning("job for deleted task %s fired; removing the job", task_id)
            return FireClaim(job=JobAction.REMOVE)
        if task.status != TaskStatus.SCHEDULED:
            log.warning("task %s is %s but its job fired", task_id, task.status)
            paused = task.status == TaskStatus.PAUSED
            return FireClaim(job=JobAction.PAUSE if paused else JobAction.REMOVE)
        earlier, next_run = plans[task_id]
        fresh = [t for t in earlier + run_times if (task_id, t) not in claimed]
        if not fresh:
            log.info("fire of task %s at %s already claimed", task_id, run_times[-1])
            return FireClaim()
        return self._claim_due(session, task, fresh, next_run, now, task_id in busy)

    def _busy(self, session: Session, task_ids: list[str]) -> set[str]:
        """Tasks with a scheduled or retry run queued or running in any replica (only
        asked where runs are spread over replicas; one process knows its own)."""
        return store.busy_tasks(session, task_ids) if self.queued else set()

    @staticmethod
    def _claimed(
        session: Session, fires: Sequence[Fire], plans: dict[str, FirePlan]
    ) -> set[tuple[str, datetime]]:
        """(task, fire time) pairs some row already claims, whatever its attempt: a fire
        time that comes round again (a job store that did not record its firing) is
        never run or missed twice. The unique key still decides between two processes."""
        earliest = min(
            min([*plans.get(task_id, ([], None))[0], *times]) for task_id, times in fires
        )
        return store.claimed_fire_times(session, [task_id for task_id, _ in fires], earliest)

    def _claim_due(
        self,
        session: Session,
        task: ScheduledTask,
        run_times: list[datetime],
        next_run: datetime | None,
        now: datetime,
        busy: bool = False,
    ) -> FireClaim:
        """Missed and due fire times among ``run_times``; next_run_at moves to ``next_run``.
        ``busy``: a run of the task is in flight in another replica."""
        grace = task.misfire_grace_time
        grace = self.cfg.misfire_grace_time if grace is None else grace
        missed, due = split_missed(run_times, now, grace)
        task.next_run_at = next_run
        if due is None and next_run is None and task.frequency != Frequency.ONCE:
            task.status = TaskStatus.COMPLETED
        claim = FireClaim()
        if missed:
            claim.published.append(self._add_missed(session, task, missed, next_run))
        if due is not None:
            overlapping = busy or self.overlaps(task.id) or buffering.overlapped(session, task)
            if not overlapping or not self._held_back(session, task, due, claim):
                # the queue assigns it (PostgreSQL, or a tool this worker lacks)
                worker = None if self.queued or not self.assigns(task) else self.worker
                claim.run = self.new_run(task, due, RunKind.SCHEDULED, 1, worker=worker)
                session.add(claim.run)
        session.add_all(claim.published)
        return claim

    def _held_back(
        self, session: Session, task: ScheduledTask, due: datetime, claim: FireClaim
    ) -> bool:
        """A due fire while a run of its task is in flight, by the task's overlap policy:
        recorded skipped, or buffered until the running one ends (True); or run now
        (False: ``allow``, or ``cancel_previous`` with nothing left running)."""
        waiting = buffering.buffers(task) and buffering.has_buffered(session, task.id)
        action = on_overlap(overlap_of(task.options), waiting)
        if action == "cancel":
            published, running = cancelling.stop_previous(session, task, utcnow())
            claim.published.extend(published)
            if not running:
                return False
        if action == "run":
            return False
        if action in ("buffer", "cancel"):
            status = RunStatus.BUFFERED
            session.add(self.new_run(task, due, RunKind.SCHEDULED, 1, status=status, worker=None))
        else:
            claim.published.append(
                self._add_skip(session, task, due, RunKind.SCHEDULED, 1, also_waiting=waiting)
            )
        return True

    def new_run(
        self, task: ScheduledTask, fire_time: datetime, kind: str, attempt: int, **fields: Any
    ) -> TaskRun:
        """A run row claimed by this worker (so recovery can tell whether it is alive)."""
        now = utcnow()
        values: dict[str, Any] = {
            "status": RunStatus.QUEUED,
            "queued_at": now,
            "worker": self.worker,
            **fields,
        }
        return TaskRun(
            id=new_id("run"),
            task_id=task.id,
            user_id=task.user_id,
            kind=kind,
            fire_time=fire_time,
            attempt=attempt,
            **values,
        )

    async def take_queued(self, limit: int) -> list[Taken]:
        """Assign up to ``limit`` unassigned queued runs that this worker has the tools
        for, oldest fire time first; the caller starts them at once (it asks for as many
        as it has free slots). A run whose fire time is past its task's misfire grace
        time (no worker took it in time) is not taken: recovery records that it did not
        run.

        On PostgreSQL the take also records the runs ``running`` and returns their
        tasks (the start, in the same statement); on SQLite the start follows, as for
        any run (``mark_running_many``)."""
        if self.db.sqlite:
            return [(run, None) for run in await self._take_queued_sqlite(limit)]
        return await self._take_queued_pg(limit)

    async def _take_queued_pg(self, limit: int) -> list[Taken]:
        """``SKIP LOCKED``: replicas taking at once never wait for each other nor take
        the same run. One statement in autocommit (one round trip) takes, starts and
        reads the runs' tasks (``store.take_and_start``). A worker takes only runs it
        starts at once, as River and procrastinate fetch a job straight into
        ``running``: a worker killed right after the take leaves them ``running``, and
        recovery records them interrupted, like any run whose worker died after its
        start."""
        tools, grace = self.tools(), self.cfg.misfire_grace_time
        return await self.db.write_one(
            lambda session: store.take_and_start(
                session, worker=self.worker, tools=tools, grace=grace, limit=limit, now=utcnow()
            )
        )

    async def _take_queued_sqlite(self, limit: int) -> list[TaskRun]:
        """SQLite: a lock-free read first (the consumer polls an empty queue every
        second), then the runs still unassigned are taken under the write lock."""
        tools, grace, now = self.tools(), self.cfg.misfire_grace_time, utcnow()
        ids = await self.db.read_sync(
            lambda session: store.queued_on_sqlite(
                session, tools=tools, grace=grace, limit=limit, now=now
            )
        )
        if not ids:
            return []
        return await self.db.write_orm(
            lambda session: store.assign_on_sqlite(session, ids, self.worker)
        )

    async def release_many(self, runs: Sequence[TaskRun]) -> list[bool]:
        """Runs claimed here whose tool never started go back to the queue (a stop):
        another worker, or this one's successor, runs them. Only rows still this
        worker's and still ``queued`` — or ``running`` from a take or a start whose run
        this process knows it never executed; for each run, whether it was released."""
        ids = [run.id for run in runs]
        released = await self.db.write_one(lambda session: store.release(session, ids, self.worker))
        return [run.id in released for run in runs]

    async def attempt(
        self, task_id: str, fire_time: datetime, kind: str, attempt: int
    ) -> TaskRun | None:
        """Claim one attempt (a retry or a manual run); a retry that overlaps a run of its
        task is recorded skipped. None when nothing is to run."""
        published: list[TaskNotification] = []
        try:
            async with self.db.write() as session:
                task = await self.db.lock_task(session, task_id)
                if task is None:
                    return None
                if kind == RunKind.RETRY and task.status != TaskStatus.SCHEDULED:
                    log.info("not retrying task %s: it is %s", task_id, task.status)
                    note = await self._abandon_retry(session, task, fire_time, attempt - 1)
                    published.extend([note] if note else [])
                    session.add_all(published)
                    run = None
                elif kind == RunKind.RETRY and self.overlaps(task_id) and not allowed(task):
                    published.append(self._add_skip(session, task, fire_time, kind, attempt))
                    session.add_all(published)
                    run = None
                else:
                    if kind == RunKind.MANUAL:
                        await self._fence_manual(session, task)
                    assigned = {} if self.assigns(task) else {"worker": None}
                    run = self.new_run(task, fire_time, kind, attempt, **assigned)
                    session.add(run)
        except IntegrityError:
            log.info(
                "fire time %s of task %s (attempt %d) already claimed", fire_time, task_id, attempt
            )
            return None
        if published:
            await self.notifier.publish(published)
        return run

    async def _fence_manual(self, session: AsyncSession, task: ScheduledTask) -> None:
        """Under the task's lock, in the claim's transaction: no manual run while any run
        of the task is queued or running, and at most one manual run per
        ``manual_run_interval``. Two callers at one instant, in one process or two: one
        claims, the other gets ``conflict`` (or ``quota_exceeded``)."""
        if await store.active_run_count(session, task.id):
            raise ToolError(
                "conflict",
                f"task_id: task {task.id!r} is already running; wait for it to finish "
                "(get_task shows its recent runs)",
            )
        await self._fence_user_rate(session, task)
        interval = self.limits.manual_run_interval
        if interval <= 0:
            return
        last = await store.last_manual_queued_at(session, task.id)
        wait = interval - (utcnow() - last).total_seconds() if last is not None else 0
        if wait > 0:
            raise ToolError(
                "quota_exceeded",
                f"task_id: task {task.id!r} was run manually {interval - wait:.0f} s ago; a task "
                f"runs manually at most once every {interval:g} s, try again in {wait:.0f} s",
            )

    async def _fence_user_rate(self, session: AsyncSession, task: ScheduledTask) -> None:
        """At most ``max_manual_runs_per_minute`` manual runs by one user, over all of the
        user's tasks (creating, running and cancelling fresh tasks would otherwise dodge
        the per-task interval). Counted in the claim's transaction."""
        limit = self.limits.max_manual_runs_per_minute
        if limit <= 0:
            return
        since = utcnow() - timedelta(minutes=1)
        recent = await store.manual_runs_of_user_since(session, task.user_id, since)
        if len(recent) >= limit:
            wait = 60 - (utcnow() - recent[-limit]).total_seconds()
            raise ToolError(
                "quota_exceeded",
                f"task_id: this user started {len(recent)} manual runs in the last minute; "
                f"at most {limit} a minute, try again in {max(wait, 1):.0f} s",
            )

    async def _abandon_retry(
        self, session: AsyncSession, task: ScheduledTask, fire_time: datetime, attempt: int
    ) -> TaskNotification | None:
        """The user paused or cancelled the task (or it completed) while a retry was
        pending: the failed attempt becomes final, with the one failure notification the
        fire time is owed."""
        last = await store.run_of_attempt(session, task.id, fire_time, attempt)
        if last is None or (last.details or {}).get("retry_abandoned"):
            return None
        last.details = {**(last.details or {}), "retry_abandoned": True}
        error = f"{last.error or last.status} (not retried: the task is {task.status})"
        outcome = Outcome(last.status, result=last.result, error=error, error_kind=last.error_kind)
        _job, note = update_task(self.cfg, task, last, outcome, utcnow())
        return note

    def _add_missed(
        self,
        session: Session,
        task: ScheduledTask,
        missed: list[datetime],
        next_run: datetime | None,
    ) -> TaskNotification:
        """One ``missed`` row per fire time (the first lists them all), one notification."""
        now = utcnow()
        rows = [
            self.new_run(
                task,
                fire_time,
                RunKind.MISSED,
                1,
                status=RunStatus.MISSED,
                finished_at=now,
            )
            for fire_time in missed
        ]
        rows[0].details = {"missed_times": [t.isoformat() for t in missed], "count": len(missed)}
        for row in rows[1:]:
            row.details = {"missed_with": rows[0].id}
        session.add_all(rows)
        zone = schedule_of(task).zone
        count = len(missed)
        when = ", ".join(f"{t.astimezone(zone):%Y-%m-%d %H:%M %Z}" for t in missed[:3])
        more = f" and {count - 3} more" if count > 3 else ""
        message = (
            f"missed {count} run{'s' if count != 1 else ''} while the service was down or "
            f"busy ({when}{more})"
        )
        if task.frequency == Frequency.ONCE and next_run is None:
            task.status, task.next_run_at, task.last_status = (
                TaskStatus.MISSED,
                None,
                RunStatus.MISSED,
            )
            message += "; this one-time task will not run"
        elif next_run is not None:
            message += f"; next run at {next_run.astimezone(zone).isoformat()}"
        return notifications.build(task, rows[0], RunStatus.MISSED, message, now)

    def _add_skip(
        self,
        session: Session | AsyncSession,
        task: ScheduledTask,
        fire_time: datetime,
        kind: str,
        attempt: int,
        also_waiting: bool = False,
    ) -> TaskNotification:
        now = utcnow()
        error = "the previous run of this task was still running"
        if also_waiting:  # overlap buffer_one: one fire waits already
            error += " and another run was already waiting to start after it"
        row = self.new_run(
            task,
            fire_time,
            kind,
            attempt,
            status=RunStatus.SKIPPED,
            finished_at=now,
            error=error,
            error_kind="overlap",
        )
        session.add(row)
        message = f"skipped the run due at {fire_time.isoformat()}: {error}"
        return notifications.build(task, row, RunStatus.SKIPPED, message, now)

    async def mark_running_many(self, runs: Sequence[TaskRun]) -> list[ScheduledTask | None]:
        """Record runs that got their slots together as ``running``, in one transaction;
        for each, its task, or None if the task or the run is gone.

        The ``running`` commit comes before the tool acts: recovery re-runs only runs
        that never got it."""
        if not self.db.sqlite:
            return await self.db.write_one(lambda session: _start_on_pg(session, runs))
        return await self.db.write_orm(lambda session: self._mark_running(session, runs))

    def _mark_running(
        self, session: Session, runs: Sequence[TaskRun]
    ) -> list[ScheduledTask | None]:
        tasks = self.db.lock_tasks_sync(session, [run.task_id for run in runs])
        # One plain UPDATE … RETURNING on the run rows (their ORM objects would only be
        # updated and thrown away): it marks those that still exist and names them.
        now = utcnow()
        found = store.start_on_sqlite(session, [r.id for r in runs if r.task_id in tasks], now)
        started: list[ScheduledTask | None] = []
        for run in runs:
            if run.id in found:
                run.started_at = now
                started.append(tasks[run.task_id])
            else:
                started.append(None)
        return started


def _start_on_pg(session: Session, runs: Sequence[TaskRun]) -> list[ScheduledTask | None]:
    """PostgreSQL's ``mark_running_many``: one statement (``store.start_on_pg``).

    It takes no task lock: nothing it reads must stay unchanged after it (the run
    executes the task as it is now, as after any start), and a run deleted with its task
    first is simply not found. A concurrent delete of the same task's runs could meet it
    in the other order; PostgreSQL then aborts one of the two and the run path retries."""
    now = utcnow()
    tasks = store.start_on_pg(session, [run.id for run in runs], now)
    for run in runs:
        if run.id in tasks:
            run.started_at = now
    return [tasks.get(run.id) for run in runs]
