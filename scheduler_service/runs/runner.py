"""The runner: where every run starts, waits for a slot, executes and is recorded.

Read top to bottom, a fire time goes: ``on_fire`` (APScheduler fired a job, via
``jobs.fire_task``) → ``claims.Claims.fire`` (the ``task_scheduler_runs`` row) → a FIFO slot
(``slots``) → ``execution.Execution.run`` → ``outcomes.record_outcomes`` (retry or settle)
→ the notifier. Retries (``on_retry``) and manual runs (``run_now``) take the same path
from a claim of one attempt.

The runner also keeps the set of runs in flight in this process, from the claim's commit
to the recorded outcome: it answers whether a task is running, tells recovery which of
this worker's rows are still being handled, and ``drain`` stops it cleanly.

Every database write on this path is retried for as long as the service runs
(``storage.retry.retry_transient``): an outage delays claims, starts and records, and
loses none — a run whose tool acted is recorded with what it did once the database is
back.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import time as monotonic
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler_service.config import Settings
from scheduler_service.logs.failures import FailureLog
from scheduler_service.runs import cancelling, store
from scheduler_service.runs.backfill import queue_backfill
from scheduler_service.runs.batching import Batcher
from scheduler_service.runs.claims import Claims, FireClaim
from scheduler_service.runs.execution import Execution
from scheduler_service.runs.notifications import Notifier
from scheduler_service.runs.outcomes import (
    INTERRUPTED,
    NOT_STARTED,
    Outcome,
    Recorded,
    interrupted,
    record_outcomes,
)
from scheduler_service.runs.parked import ParkedRun, park, unpark
from scheduler_service.runs.policy import BackfillPlan, Fire
from scheduler_service.runs.queue import RunQueue
from scheduler_service.runs.slots import SlotLine
from scheduler_service.runs.store import Taken
from scheduler_service.scheduling import JobControl
from scheduler_service.statuses import ACTIVE_RUN, ON_REQUEST, JobAction, RunKind, RunStatus
from scheduler_service.stopping import pause, stop_loop
from scheduler_service.storage.db import Database
from scheduler_service.storage.models import ScheduledTask, TaskNotification, TaskRun, utcnow
from scheduler_service.storage.retry import retry_transient
from scheduler_service.tools import ToolError

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

RECORD_POLL_S = 0.2  # how often a caller awaiting another worker's run reads its row
WORKER_CHECK_S = 2.0  # how often that caller checks that some worker is alive


@dataclass(frozen=True)
class _Waiter:
    """A caller awaiting a queued run's record (a manual run), and the context it runs in."""

    context: contextvars.Context
    done: asyncio.Future[TaskRun]


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
        self.claims.limits = settings.limits
        # Group commits: a burst is claimed, started and recorded in a few transactions.
        self._fires: Batcher[Fire, FireClaim] = Batcher(self._claim_fires)
        self._starts: Batcher[TaskRun, ScheduledTask | None] = Batcher(
            self.claims.mark_running_many
        )
        self._records: Batcher[tuple[TaskRun, Outcome], Recorded] = Batcher(self._record_many)
        self._releases: Batcher[TaskRun, bool] = Batcher(self.claims.release_many)
        # The run queue: runs claimed unassigned (every scheduled run on PostgreSQL; a
        # client's manual run; a run whose tool this worker lacks; a run a stopping
        # worker handed back) wait there for a worker. Started by workers only.
        self.queue: RunQueue[Taken] = RunQueue(
            take=self.claims.take_queued,
            start=self.take,
            free_slots=self._free_slots,
            slots=self.cfg.max_concurrent_tasks,
        )
        # Runs the take already recorded started (PostgreSQL), with their tasks.
        self._started: dict[str, ScheduledTask] = {}
        # Called with each final run recorded here, and whether a notification of it
        # follows (a quiet run has none), before that notification is published.
        self.recorded_run_callbacks: list[Callable[[TaskRun, bool], None]] = []
        self.announce_runs: Callable[[], Awaitable[None]] | None = None  # tells replicas
        self.jobs: JobControl | None = None
        self._line: SlotLine[ParkedRun] = SlotLine(self.cfg.max_concurrent_tasks)
        self._waiters: dict[str, _Waiter] = {}  # run id → the caller awaiting it
        self._tickets = itertools.count()
        self._entries: set[asyncio.Task[Any]] = set()  # fires/retries/manual runs being claimed
        self._runs: set[asyncio.Task[Any]] = set()  # claimed runs holding a slot or settling
        self._in_flight: set[str] = set()  # run ids claimed here and not yet recorded
        self._scheduled: Counter[str] = Counter()  # task id → scheduled/retry runs in flight
        self._manual: Counter[str] = Counter()  # task id → manual runs in flight
        self._stopping = False
        # overlap cancel_previous: runs asked to stop, the tasks executing runs, and the
        # loop that looks for stop requests while runs are in flight (runs.cancelling)
        self._stop_requested: set[str] = set()
        self._executing: dict[str, asyncio.Task[Any]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._watch_stop = asyncio.Event()
        self._stop_failures = FailureLog(log, "looking for stop requests")  # per state change
        # The tools of each live worker (the service reads the workers table): None
        # while nobody asked, [] when no worker is alive.
        self.live_workers: Callable[[], Awaitable[list[list[str]]]] | None = None
        # How long execute_task_now(wait=true) waits for a run another worker executes.
        self.record_wait = float(self.cfg.task_timeout) + 30.0

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
        """APScheduler fired ``task_id`` for ``run_times`` (oldest first): claim them and
        queue the run for a slot. Returns then; the run is recorded and notified later."""
        with self._entry() as ticket:
            if self._stopping:  # unclaimed: next_run_at still names it; reconciled at start
                log.warning("not claiming task %s: the service is stopping", task_id)
                return
            claim = await self._claim_fire_retrying(task_id, run_times)
            if claim is None:
                return
            queued = claim.run is not None and claim.run.worker is None
            if claim.run is not None and not queued:
                self._in_flight.add(claim.run.id)  # no await since the commit: see recovery
            await self._apply_job_action(task_id, claim.job)
            await self._publish(claim.published)
            if queued:
                await self._queued()
            elif claim.run is not None:
                self._enqueue(claim.run, ticket)

    async def _queued(self) -> None:
        """A run went into the queue: this replica looks, and the others are told."""
        if self.queue is not None:
            self.queue.poke()
        if self.announce_runs is not None:
            await self.announce_runs()

    async def await_record(self, run: TaskRun) -> TaskRun:
        """Wait for a run another worker executes to be recorded: its row, once settled,
        or as it is when ``record_wait`` seconds have passed. Refuses at once, and at
        any moment while waiting, when no worker is alive to take it."""
        deadline = monotonic.monotonic() + self.record_wait
        checked = float("-inf")
        while True:
            rows = await self.db.read_sync(lambda session: store.runs_by_id(session, [run.id]))
            row = rows.get(run.id)
            if row is None or row.status not in ACTIVE_RUN:
                return row or run
            now = monotonic.monotonic()
            if now >= deadline:
                return row
            if row.worker is None and now - checked >= WORKER_CHECK_S:
                checked = now
                if self.live_workers is not None and not await self.live_workers():
                    raise ToolError(
                        "unavailable",
                        f"the run {run.id} is queued but no worker is running to execute "
                        "it; it runs when a worker (`task-scheduler run`, or the host app "
                        "as a worker) starts within the task's misfire grace time",
                    )
            await asyncio.sleep(RECORD_POLL_S)

    def _free_slots(self) -> int:
        """Runs this worker could start now: its free slots, less the runs already
        waiting for one. A run that finished its tool gives its slot back while its
        outcome is recorded, so the next runs start (and their records group with it)."""
        return self._line.open

    async def on_retry(self, task_id: str, fire_time: datetime, attempt: int) -> None:
        """A retry job fired: claim the attempt and queue it for a slot (not awaited)."""
        await self.execute(task_id, fire_time, kind=RunKind.RETRY, attempt=attempt, wait=False)

    async def run_now(self, task: ScheduledTask, *, wait: bool = True) -> TaskRun | None:
        """A manual run: its own key (now), never consuming or blocking a scheduled one.
        Claimed under the task's lock with its fences (``Claims.attempt``); executed here
        if this process is a worker with the task's tool, else by a worker that has it.
        With ``wait``, returns its record; without, the claimed run."""
        return await self.execute(task.id, utcnow(), kind=RunKind.MANUAL, attempt=1, wait=wait)

    async def backfill(self, task_id: str, times: list[datetime], max_runs: int) -> BackfillPlan:
        """Queue past fire times no row covers as ``backfill`` runs (``runs.backfill``):
        like a client's manual run, they wait in the run queue for a worker with the
        task's tool, and run within its free slots."""
        plan = await queue_backfill(self.db, self.claims.new_run, task_id, times, max_runs)
        if plan.queued:
            await self._queued()
        return plan

    async def execute(
        self, task_id: str, fire_time: datetime, *, kind: str, attempt: int, wait: bool = True
    ) -> TaskRun | None:
        """Claim and run one attempt (a retry or a manual run). With ``wait``, return its
        record once it is settled; without, once it is claimed and queued for a slot."""
        with self._entry() as ticket:
            if self._stopping:  # a retry stays restorable: see recovery.restore_retries
                log.warning("not starting %s of task %s: the service is stopping", kind, task_id)
                return None
            claimed = await retry_transient(
                lambda: self._attempt(task_id, fire_time, kind, attempt),
                f"claiming {kind} attempt {attempt} of task {task_id}",
                keep_trying=self._running,
            )
            if isinstance(claimed, ToolError):  # refused by a fence: an answer, not a fault
                raise claimed
            run = claimed
            if run is None or run.status == RunStatus.SKIPPED:
                return run
            if run.worker is None:  # for another worker (see Claims.assigns)
                await self._queued()
                return await self.await_record(run) if wait else run
            self._in_flight.add(run.id)
            if not wait:
                self._enqueue(run, ticket)
                return run
            done: asyncio.Future[TaskRun] = asyncio.get_running_loop().create_future()
            self._enqueue(run, ticket, done)
            return await done

    async def _attempt(
        self, task_id: str, fire_time: datetime, kind: str, attempt: int
    ) -> TaskRun | ToolError | None:
        """``Claims.attempt``, with a fence's refusal returned (never retried)."""
        try:
            return await self.claims.attempt(task_id, fire_time, kind, attempt)
        except ToolError as exc:
            return exc

    def adopt(self, runs: list[TaskRun]) -> None:
        """Run claimed runs recovery took over (they never started; now this worker's)."""
        for run in runs:
            log.warning("running %s, claimed by a worker that stopped before starting it", run.id)
        self.take([(run, None) for run in runs])

    def take(self, taken: list[Taken]) -> None:
        """Run queued runs now assigned to this worker (taken from the queue, adopted),
        each with its task if the take already recorded it started. Taken as the
        service stops, a run goes back to the queue (its tool never started)."""
        for run, task in taken:
            self._in_flight.add(run.id)
            if task is not None:
                self._started[run.id] = task
            self._enqueue(run, next(self._tickets))

    def _running(self) -> bool:
        """Whether database writes on the run path are still worth retrying."""
        return not self._stopping

    async def _claim_fire_retrying(
        self, task_id: str, run_times: list[datetime]
    ) -> FireClaim | None:
        """Claim a fire, retrying a database error until it succeeds or the service stops.

        APScheduler has already moved the job on, so giving up (at stop) must not lose
        the time: the task's ``next_run_at`` (untouched by the failed transaction) still
        names it, and the task's next fire, or the next start, claims it (see
        ``claims._fire_plan``)."""
        what = f"claiming the fire of task {task_id} at {run_times[-1]}"
        try:
            return await retry_transient(
                lambda: self._fires.submit((task_id, run_times)), what, keep_trying=self._running
            )
        except Exception:
            log.exception("%s failed", what)
        log.error(
            "gave up claiming task %s at %s; its next fire or the next start will record it",
            task_id,
            run_times[-1],
        )
        return None

    async def _claim_fires(self, fires: Sequence[Fire]) -> list[FireClaim]:
        """Claim a batch of fires: one transaction for fires of distinct tasks; a second
        fire of the same task waits for the next transaction, so it sees the first."""
        claims: dict[int, FireClaim] = {}
        remaining = list(enumerate(fires))
        while remaining:
            tasks: set[str] = set()
            batch: list[tuple[int, Fire]] = []
            later: list[tuple[int, Fire]] = []
            for index, fire in remaining:
                (later if fire[0] in tasks else batch).append((index, fire))
                tasks.add(fire[0])
            claimed = await self.claims.fire_many([fire for _, fire in batch], utcnow())
            claims.update(zip([index for index, _ in batch], claimed, strict=True))
            remaining = later
        return [claims[index] for index in range(len(fires))]

    # -- one execution -----------------------------------------------------------------
    def _enqueue(
        self, run: TaskRun, ticket: int, done: asyncio.Future[TaskRun] | None = None
    ) -> None:
        """A claimed run waits for a slot, parked (``parked``, ``slots.SlotLine``); at stop
        it is recorded as never started instead. A caller awaiting the run (a manual run)
        has it run in a copy of its context, as if in its own task; any other run starts
        in a fresh one (a job's context holds nothing the run needs)."""
        self._count_in_flight(run, +1)
        self._watch_stop_requests()
        if done is not None:
            self._waiters[run.id] = _Waiter(contextvars.copy_context(), done)
        if self._stopping:
            self._spawn(run, in_slot=False)
            return
        self._line.put(ticket, park(run))
        self._start_ready()

    def _start_ready(self) -> None:
        """Start every waiting run a free slot allows (none once the service stops)."""
        if self._stopping:
            return
        for parked in self._line.ready():
            self._spawn(unpark(parked), in_slot=True)

    def _spawn(self, run: TaskRun, *, in_slot: bool) -> None:
        waiter = self._waiters.pop(run.id, None)
        task = asyncio.get_running_loop().create_task(
            self._run_claimed(run, in_slot, waiter),
            context=waiter.context if waiter is not None else contextvars.Context(),
        )
        self._runs.add(task)
        task.add_done_callback(self._run_done)

    def _run_done(self, task: asyncio.Task[None]) -> None:
        self._runs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a run failed outside its own error handling", exc_info=task.exception())

    async def _run_claimed(self, run: TaskRun, in_slot: bool, waiter: _Waiter | None) -> None:
        """Execute the run (or record it never started), telling a waiting caller."""
        done = waiter.done if waiter is not None else None
        try:
            recorded = await self._execute_claimed(run, in_slot)
        except BaseException as exc:
            if done is not None and not done.done():
                if isinstance(exc, asyncio.CancelledError):
                    done.cancel()
                else:
                    done.set_exception(exc)
            raise
        if done is not None and not done.done():
            done.set_result(recorded)

    async def _execute_claimed(self, run: TaskRun, in_slot: bool) -> TaskRun:
        token = current_run.set(RunInfo(run.id, run.task_id, run.fire_time, run.attempt, run.kind))
        started = self._started.pop(run.id, None)  # its take started it (PostgreSQL)
        try:
            outcome = await self._run_in_slot(run, started) if in_slot else None
        finally:
            current_run.reset(token)
            self._count_in_flight(run, -1)
            if in_slot:
                self._line.release()
                self._start_ready()
                if self.queue is not None:
                    self.queue.poke()  # a slot is free
        if outcome is None:
            return await self._release(run)
        return await self._finish_retrying(run, outcome)

    async def _release(self, run: TaskRun) -> TaskRun:
        """A run this worker claimed but never started, at a stop: back to the queue for
        another worker (or the next start, within its grace time), not interrupted. If
        the database refuses, the row stays this worker's, and the leader's recovery
        takes it over once this worker is gone."""
        try:
            released = await self._releases.submit(run)
        except Exception:
            log.exception("run %s could not be handed back to the queue", run.id)
            released = False
        finally:
            self._in_flight.discard(run.id)
        if released:
            run.worker = None
            log.info("run %s handed back to the queue (it had not started)", run.id)
            if self.announce_runs is not None:
                with contextlib.suppress(Exception):
                    await self.announce_runs()
        return run

    def _count_in_flight(self, run: TaskRun, delta: int) -> None:
        in_flight = self._manual if run.kind in ON_REQUEST else self._scheduled
        in_flight[run.task_id] += delta

    async def _run_in_slot(self, run: TaskRun, started: ScheduledTask | None) -> Outcome | None:
        """The run's outcome; None if it never started (handed back to the queue). A
        run a newer fire asked to stop (overlap cancel_previous) is stopped here.
        ``started``: its task, if the take already recorded the run started."""
        try:
            if self._stopping:
                return None
            if run.id in self._stop_requested:
                return cancelling.stopped()
            task = asyncio.current_task()
            assert task is not None
            self._executing[run.id] = task
            return await self._run_started(run, started)
        except asyncio.CancelledError:
            if not self._stopping and run.id in self._stop_requested:
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
                return cancelling.stopped()
            if not self._stopping:
                raise
            return interrupted(INTERRUPTED)
        finally:
            self._executing.pop(run.id, None)

    def _watch_stop_requests(self) -> None:
        """Look for stop requests while runs are in flight here (one loop at most)."""
        idle = self._watcher is None or self._watcher.done()
        if idle and not self._stopping and self.worker is not None:
            self._watcher = asyncio.get_running_loop().create_task(self._stop_requests())

    async def _stop_requests(self) -> None:
        """Every ``cancelling.STOP_POLL_S`` while this worker has runs in flight: its runs
        a newer fire asked to stop are stopped (cancelled if executing; a run still
        waiting for its slot is recorded without starting)."""
        query = cancelling.stop_requests(self.worker)
        while self._in_flight and not await pause(self._watch_stop, cancelling.STOP_POLL_S):
            try:
                asked = await self.db.read_sync(lambda session: session.scalars(query).all())
            except Exception as exc:
                self._stop_failures.failed(exc, retry_in=cancelling.STOP_POLL_S)
                continue
            self._stop_failures.succeeded()
            for run_id in asked:
                if run_id in self._in_flight and run_id not in self._stop_requested:
                    log.info("stopping run %s: a newer run of its task is due", run_id)
                    self._stop_requested.add(run_id)
                    if (task := self._executing.get(run_id)) is not None:
                        task.cancel()

    async def _run_started(self, run: TaskRun, task: ScheduledTask | None) -> Outcome | None:
        if task is None:  # not started by its take: record the start now
            try:
                task = await retry_transient(
                    lambda: self._starts.submit(run),
                    f"starting run {run.id}",
                    keep_trying=self._running,
                )
            except Exception:  # stopping while the database is unreachable: never started
                log.exception("run %s could not be recorded as started", run.id)
                return None
        if task is None:
            return Outcome(RunStatus.SKIPPED, error="the task was deleted before its run started")
        started = monotonic.perf_counter()
        outcome = await self.execution.run(task, run)
        outcome.details["duration_ms"] = round((monotonic.perf_counter() - started) * 1000)
        return outcome

    # -- finishing -----------------------------------------------------------------------
    async def _finish_retrying(self, run: TaskRun, outcome: Outcome) -> TaskRun:
        """Record the outcome, retrying a database error for as long as the service runs:
        a run left ``running`` by a live process would block execute_task_now and never
        notify, and the work its tool did would be reported as interrupted. Then carry
        out what the record decided (a retry job, the task's job, notifications), each
        job-store call retried on its own: the record is not written twice."""
        try:
            recorded = await retry_transient(
                lambda: self.record(run, outcome),
                f"recording run {run.id} ({outcome.status})",
                keep_trying=self._running,
            )
        except Exception:
            log.exception("gave up recording run %s at stop; the next leader settles it", run.id)
            return run
        finally:
            self._in_flight.discard(run.id)
            self._stop_requested.discard(run.id)
        await self._carry_out(recorded)
        return recorded.run

    async def record(self, run: TaskRun, outcome: Outcome) -> Recorded:
        """Write the outcome: a retry time, or the settled task (group-committed with the
        outcomes of runs finishing at the same moment)."""
        return await self._records.submit((run, outcome))

    async def _record_many(self, finished: Sequence[tuple[TaskRun, Outcome]]) -> list[Recorded]:
        return await record_outcomes(self.db, self.cfg, finished, stopping=lambda: self._stopping)

    async def _carry_out(self, recorded: Recorded) -> None:
        run = recorded.run
        if recorded.retry_at is not None and self.jobs is not None:
            retry_at, jobs = recorded.retry_at, self.jobs
            await self._job_store_call(
                lambda: jobs.schedule_retry(run.task_id, run.fire_time, run.attempt + 1, retry_at),
                f"storing the retry of run {run.id}",
            )
        await self._apply_job_action(run.task_id, recorded.job)
        if recorded.written and recorded.retry_at is None:
            for callback in self.recorded_run_callbacks:
                callback(run, bool(recorded.published))
        await self._publish(recorded.published)
        if recorded.released:  # a fire that waited for this run is queued now
            await self._queued()

    async def _job_store_call(self, call: Callable[[], Awaitable[None]], what: str) -> None:
        """A job-store change after a commit, retried while the service runs. If it still
        fails (at stop), the next leader's reconciliation makes the job agree."""
        try:
            await retry_transient(call, what, keep_trying=self._running)
        except Exception:
            log.exception("%s failed; reconciliation at the next start will repair it", what)

    async def _apply_job_action(self, task_id: str, job: JobAction | None) -> None:
        jobs = self.jobs
        if jobs is None or job is None:
            return
        if job == JobAction.REMOVE:
            await self._job_store_call(lambda: jobs.remove(task_id), f"removing job {task_id}")
        elif job == JobAction.PAUSE:
            await self._job_store_call(lambda: jobs.pause(task_id), f"pausing job {task_id}")

    async def _publish(self, published: list[TaskNotification]) -> None:
        if published:
            await self.notifier.publish(published)

    # -- what is in flight -----------------------------------------------------------------
    def has_scheduled_in_flight(self, task_id: str) -> bool:
        """Whether a scheduled or retry run of the task is in flight in this process (a
        new one would overlap it; a manual run overlaps nothing)."""
        return bool(self._scheduled[task_id])

    def is_claimed_here(self, run_id: str) -> bool:
        """Whether this process claimed the run and has not finished recording it."""
        return run_id in self._in_flight

    async def settled(self) -> None:
        """Wait until every run claimed in this process so far is recorded (or handed
        back): a host (or a test) that started manual runs with ``wait=false``."""
        while pending := [t for t in (*self._entries, *self._runs) if not t.done()]:
            await asyncio.gather(*pending, return_exceptions=True)

    # -- stop ------------------------------------------------------------------------------
    def stop_starting(self) -> None:
        """From now on no claim is made and no claimed run starts (they are recorded
        interrupted, never started): the first step of a stop, before anything awaits."""
        self._stopping = True

    async def drain(self, grace: float) -> None:
        """Stop starting runs; wait up to ``grace`` s for those running, then cancel them.

        Runs still waiting for a slot go back to the run queue at once, for another
        worker (or the next start). Every cancelled run records itself ``interrupted``
        before this returns.
        """
        self._stopping = True
        for parked in self._line.drop_waiting():
            self._spawn(unpark(parked), in_slot=False)
        await stop_loop(self._watcher, self._watch_stop)
        pending = [t for t in (*self._entries, *self._runs) if not t.done()]
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

    @property
    def in_flight(self) -> int:
        """Runs this worker has claimed or taken and not yet recorded."""
        return len(self._in_flight)

    @property
    def waiting(self) -> int:
        """Claimed runs of this process waiting for a free slot."""
        return self._line.waiting
