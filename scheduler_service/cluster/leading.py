"""The leader/standby loop of one worker: who fires jobs, and what the leader keeps right.

A worker starts with the scheduling lock (``cluster.leadership``) if it is free and
leads: it settles the runs dead workers left, makes jobs agree with tasks, resumes
APScheduler and listens for job-store changes. Every ``leader_retry`` s the loop then
checks: a leader that its lock is still held (else it steps down) and, every
``check_interval``, recovers dead workers' runs and beats the heartbeat; a standby
retries the lock and settles its own lost rows. Every worker beats its row in the
workers table from here.
"""

from __future__ import annotations

import asyncio
import logging

from scheduler_service.cluster.health import Heartbeat
from scheduler_service.cluster.leadership import Leadership
from scheduler_service.cluster.wakeups import Wakeups
from scheduler_service.cluster.workers import WorkerRegistry, forget_dead
from scheduler_service.config import Settings
from scheduler_service.logs.failures import FailureLog
from scheduler_service.runs.notifications import Notifier
from scheduler_service.runs.recovery import check_triggers, reconcile, recover_interrupted
from scheduler_service.runs.runner import TaskRunner
from scheduler_service.scheduling import JobControl, ResilientAsyncIOScheduler
from scheduler_service.stopping import pause, stop_loop
from scheduler_service.storage.db import Database
from scheduler_service.tasks.retention import Retention

log = logging.getLogger(__name__)

TRIGGER_CHECK_REST = 3.0  # the background trigger check rests 3× each chunk's time


class LeaderLoop:
    """Leading and standing by, for one worker (see the module docstring)."""

    def __init__(
        self,
        *,
        settings: Settings,
        db: Database,
        leadership: Leadership,
        scheduler: ResilientAsyncIOScheduler,
        jobs: JobControl,
        wakeups: Wakeups,
        runner: TaskRunner,
        notifier: Notifier,
        registry: WorkerRegistry,
        leader_retry: float,
    ) -> None:
        self.settings = settings
        self.db = db
        self.leadership = leadership
        self.scheduler = scheduler
        self.jobs = jobs
        self.wakeups = wakeups
        self.runner = runner
        self.notifier = notifier
        self.registry = registry
        self.leading = asyncio.Event()  # set while this process runs the scheduler
        self.heartbeat = Heartbeat(db, settings.scheduler.check_interval / 2)
        self.retention = Retention(db, settings.limits)
        self._leader_retry = leader_retry
        self._standby: asyncio.Task[None] | None = None
        self._standby_stop = asyncio.Event()
        self._trigger_check: asyncio.Task[None] | None = None
        self._trigger_check_stop = asyncio.Event()
        self._recovered_at = 0.0  # loop time of the leader's last sweep for dead workers' runs
        self._failures = FailureLog(log, "the leadership check")  # a line per state change

    @property
    def is_leader(self) -> bool:
        return self.leading.is_set()

    def _where(self) -> str:
        return self.db.engine.url.render_as_string(hide_password=True)

    async def start(self) -> None:
        """Lead now if the lock is free, and keep checking (or retrying) it."""
        if await self.leadership.try_acquire():
            await self._lead()
        self._standby_stop = asyncio.Event()
        self._standby = asyncio.get_running_loop().create_task(self._hold_leadership())

    async def stop(self) -> bool:
        """Stop the loop and firing; returns whether this worker was leading (the caller
        lets the lock go once it has stopped taking runs)."""
        await self._stop_standby()
        if self.scheduler.running:
            self.scheduler.shutdown()
        was_leader = self.is_leader
        self.leading.clear()
        await self.wakeups.stop_listening()
        await self.stop_trigger_check()
        return was_leader

    async def _lead(self) -> None:
        """The leader's steps, at start or on taking over: settle the runs dead workers
        left, make jobs agree with tasks, then fire jobs."""
        await self.recover()
        await reconcile(self.db, self.jobs, triggers=False)  # cheap at any size
        self.scheduler.resume()
        self.wakeups.listen(self.scheduler.wakeup)
        self.leading.set()
        self._trigger_check_stop = asyncio.Event()
        self._trigger_check = asyncio.get_running_loop().create_task(self._check_triggers())
        await self.heartbeat.beat(self.leadership.worker)
        await self.registry.beat(leading=True, in_flight=self.runner.in_flight)

    async def _check_triggers(self) -> None:
        """The slow half of reconciliation, after the leader has started firing."""
        try:
            await check_triggers(
                self.db, self.jobs, stop=self._trigger_check_stop, rest=TRIGGER_CHECK_REST
            )
        except Exception:
            log.exception("checking the jobs' triggers failed; the next start checks again")

    async def stop_trigger_check(self) -> None:
        task, self._trigger_check = self._trigger_check, None
        await stop_loop(task, self._trigger_check_stop)

    async def recover(self, *, own_only: bool = False) -> None:
        """Settle runs nobody will finish and run those that never started (see
        ``runs.recovery``). The leader does it for every dead worker; a standby only
        for its own rows (``own_only``)."""
        self._recovered_at = asyncio.get_running_loop().time()

        async def alive_unless_dead(worker: str | None) -> bool:
            return own_only or await self.leadership.is_alive(worker)

        recovered = await recover_interrupted(
            self.db,
            self.settings.scheduler,
            self.notifier,
            worker=self.runner.worker,
            claimed_here=self.runner.is_claimed_here,
            is_alive=alive_unless_dead,
            queue=True,
        )
        self.runner.adopt(recovered.adopted)
        if not own_only:
            await forget_dead(self.db, self.leadership.is_alive)

    async def _hold_leadership(self) -> None:
        """Standby: retry the lock every ``leader_retry`` s. Leader: check that it still
        holds it, and keep recovering (see ``_check_leadership``)."""
        stop = self._standby_stop
        while not await pause(stop, self._leader_retry):
            try:
                if self.is_leader:
                    await self._check_leadership()
                    await self.retention.purge_if_due()
                elif await self.leadership.try_acquire():
                    await self._take_over()
                elif self._recovery_due():
                    await self.recover(own_only=True)
                if self.registry.due():
                    await self.registry.beat(
                        leading=self.is_leader, in_flight=self.runner.in_flight
                    )
            except Exception as exc:
                self._failures.failed(exc, retry_in=self._leader_retry)
            else:
                self._failures.succeeded()

    async def _check_leadership(self) -> None:
        """Step down if the lock is gone (a PostgreSQL connection can drop, and the server
        then frees the lock). Every ``check_interval``, interrupt the runs of workers that
        died since: a killed standby's manual run would otherwise stay ``running`` (and
        block ``execute_task_now``) until the next takeover."""
        if not await self.leadership.held():
            await self._step_down("the scheduling lock was lost")
            return
        if self._recovery_due():
            await self.recover()
        if self.heartbeat.due():
            await self.heartbeat.beat(self.leadership.worker)

    def _recovery_due(self) -> bool:
        """Recovery runs every ``check_interval``: after an outage, or a worker's death,
        no run stays queued or running longer than that."""
        since = asyncio.get_running_loop().time() - self._recovered_at
        return since >= self.settings.scheduler.check_interval

    async def _take_over(self) -> None:
        log.warning("taking over the scheduler on %s", self._where())
        try:
            await self._lead()
        except Exception:
            await self._step_down("taking over failed")
            raise
        log.warning("this process now runs the scheduler")

    async def _step_down(self, why: str) -> None:
        """Stop firing jobs and let the lock go (runs in flight finish; their claims fence
        any duplicate with a new leader's runs)."""
        log.error("%s: standing by", why)
        self.leading.clear()
        if self.scheduler.running:
            self.scheduler.pause()
        await self.wakeups.stop_listening()
        await self.stop_trigger_check()
        await self.leadership.release()

    async def _stop_standby(self) -> None:
        task, self._standby = self._standby, None
        await stop_loop(task, self._standby_stop)
