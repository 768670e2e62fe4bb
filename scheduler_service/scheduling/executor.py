"""The executor: APScheduler hands due jobs over; the runner decides what runs.

``FireTimeExecutor`` starts coroutine jobs on the loop with their computed fire times
in a ContextVar, never drops a run for ``max_instances`` (overlap is the runner's
decision, recorded as a run row), and leaves cancellation to the runner's graceful stop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any

from apscheduler.executors.base import BaseExecutor

from scheduler_service.jobs import FireContext, current_fire

log = logging.getLogger(__name__)

SPAWN_SLICE = 100  # due jobs started in one loop callback (the loop stays responsive)
MAX_LIVE_JOBS = 250  # job coroutines alive at once; later starts wait as plain tuples


class FireTimeExecutor(BaseExecutor):  # type: ignore[misc]
    """Starts coroutine jobs on the loop, telling each its fire times."""

    def __init__(
        self,
        on_fire: Callable[[str, list[datetime]], Awaitable[Any]],
        on_retry: Callable[[str, datetime, int], Awaitable[Any]],
    ) -> None:
        super().__init__()
        self._on_fire = on_fire
        self._on_retry = on_retry
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._submitted: list[tuple[Any, ...]] = []  # starts queued for the loop
        self._submitted_lock = threading.Lock()
        self._spawn_scheduled = False  # a _spawn_submitted call is on its way (under lock)
        self._spawned = asyncio.Event()  # set each time queued starts were started

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        self._loop = scheduler._eventloop

    def shutdown(self, wait: bool = True) -> None:
        """Running jobs are drained and recorded by the runner, not cancelled here."""

    def submit_job(self, job: Any, run_times: list[datetime]) -> None:
        # No max_instances check: an overlapping fire time is recorded by the runner.
        self._do_submit_job(job, run_times)

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        """Queue the start for the loop (called in the wake-up's thread). One
        ``call_soon_threadsafe`` serves every job submitted before the loop gets to it:
        each call writes to the loop's self-pipe, 10,000 writes for 10,000 due jobs."""
        assert self._loop is not None
        start = (job.id, job.func, tuple(job.args), dict(job.kwargs), tuple(run_times))
        with self._submitted_lock:
            self._submitted.append(start)
            wake, self._spawn_scheduled = not self._spawn_scheduled, True
        if wake:
            self._loop.call_soon_threadsafe(self._spawn_submitted)

    def _spawn_submitted(self) -> None:
        """Start up to ``SPAWN_SLICE`` queued jobs, then yield to the loop: each start's
        first step runs in the same loop iteration, and thousands at once would stall
        the loop for a quarter of a second. At most ``MAX_LIVE_JOBS`` run at once (a job
        lives while its fire is claimed): a burst of 10,000 would otherwise hold 10,000
        suspended coroutine chains, which every full garbage collection walks while the
        loop waits; the rest start as earlier ones finish (``_done``), in order."""
        assert self._loop is not None
        with self._submitted_lock:
            room = max(0, min(SPAWN_SLICE, MAX_LIVE_JOBS - len(self._tasks)))
            starts = self._submitted[:room]
            del self._submitted[:room]
            again = bool(self._submitted) and len(self._tasks) + room < MAX_LIVE_JOBS
            self._spawn_scheduled = again
        for start in starts:
            self._spawn(*start)
        self._spawned.set()
        if again:
            self._loop.call_soon(self._spawn_submitted)

    async def backlog_at_most(self, limit: int) -> None:
        """Return once at most ``limit`` submitted jobs wait to start (loop thread)."""
        while len(self._submitted) > limit:
            self._spawned.clear()
            await self._spawned.wait()

    def _spawn(
        self,
        job_id: str,
        func: Callable[..., Coroutine[Any, Any, Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        run_times: tuple[datetime, ...],
    ) -> None:
        """Start one job's coroutine. Only what it needs is kept, not the ``Job`` (with
        its trigger): a burst's starts wait in ``_submitted`` by the thousand."""
        assert self._loop is not None
        token = current_fire.set(FireContext(list(run_times), self._on_fire, self._on_retry))
        try:
            task = self._loop.create_task(func(*args, **kwargs))
        finally:
            current_fire.reset(token)
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._done, job_id))

    def _done(self, job_id: str, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        with self._submitted_lock:  # room for a start waiting on MAX_LIVE_JOBS
            wake = bool(self._submitted) and not self._spawn_scheduled
            self._spawn_scheduled = self._spawn_scheduled or wake
        if wake:
            assert self._loop is not None
            self._loop.call_soon(self._spawn_submitted)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("job %s failed outside the runner", job_id, exc_info=exc)
