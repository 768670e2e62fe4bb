"""The run queue: on PostgreSQL every replica executes scheduled runs, not only the leader.

The leader claims due fire times as runs nobody is assigned yet (``worker`` NULL) and
announces them (``NOTIFY task_scheduler_runs``). Every replica — the leader too — keeps a
consumer: whenever it has free slots (``max_concurrent_tasks`` minus the runs it has in
flight) it takes that many queued runs with ``FOR UPDATE SKIP LOCKED``, records them as
its own, and runs them through the usual path (slot, ``running`` commit, tool, record).
From then on a run belongs to one live worker, and a replica that dies mid-run is
fenced as before: the leader records its runs ``interrupted`` (or runs again those it
took but never started).

The consumer wakes on each announcement, when one of its runs finishes (a slot is
free), and at least every second, so a lost notification delays a run by a second at
most. While runs are waiting (its last take filled every free slot), it takes once per
batch of freed slots instead of once per finished run: it waits until all its slots are
free, or ``TAKE_GATHER_S`` after the first one freed, whichever comes first. A take is a
statement and a round trip whatever its size; in a burst of short runs slots free one at
a time, and a take per finished run was a quarter of the statements a run cost. River
waits between fetches the same way (``FetchCooldown``). With nothing waiting (the last
take came back short), a poke takes at once: a lone run is never held back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from scheduler_service.logs.failures import FailureLog
from scheduler_service.stopping import stop_loop, wait_at_most

log = logging.getLogger(__name__)

POLL_S = 1.0  # the consumer looks at the queue at least this often
TAKE_GATHER_S = 0.01  # a freed slot waits at most this long for others while runs wait

Run = TypeVar("Run")


class RunQueue(Generic[Run]):
    """One replica's consumer of the run queue."""

    def __init__(
        self,
        *,
        take: Callable[[int], Awaitable[list[Run]]],
        start: Callable[[list[Run]], None],
        free_slots: Callable[[], int],
        slots: int,
        gather_s: float = TAKE_GATHER_S,
    ) -> None:
        self._take = take
        self._start = start
        self._free_slots = free_slots
        self._slots = slots  # the worker's slots in all: a batch is never bigger
        self._gather_s = gather_s
        self._signal = asyncio.Event()
        self._consumer: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._failures = FailureLog(log, "taking queued runs")  # a line per state change

    def poke(self) -> None:
        """Runs were queued, or a slot came free: look at the queue now."""
        self._signal.set()

    def start(self) -> None:
        if self._consumer is None or self._consumer.done():
            self._stop = asyncio.Event()
            self._consumer = asyncio.get_running_loop().create_task(self._consume())

    async def stop(self) -> None:
        """Stop taking runs; a take in progress finishes first (its runs go through the
        runner, which records them as not started once the service is stopping)."""
        task, self._consumer = self._consumer, None
        self._signal.set()
        await stop_loop(task, self._stop)

    async def _consume(self) -> None:
        stop = self._stop
        backlogged = False  # the last take filled every free slot: runs may be waiting
        while True:
            await wait_at_most(self._signal.wait(), POLL_S)
            self._signal.clear()
            if stop.is_set():
                return
            free = self._free_slots()
            if free <= 0:
                continue
            if backlogged:
                free = await self._gather_slots(stop)
                if stop.is_set():
                    return
                if free <= 0:  # a run of this worker's own took the slots meanwhile
                    continue
            try:
                runs = await self._take(free)
            except Exception as exc:  # the database is away: the next poke or poll retries
                self._failures.failed(exc, retry_in=POLL_S)
                continue
            self._failures.succeeded()
            if runs:
                self._start(runs)
            backlogged = len(runs) == free
            if backlogged:  # take again as soon as slots free
                self._signal.set()

    async def _gather_slots(self, stop: asyncio.Event) -> int:
        """Wait until all of the worker's slots are free, or for ``gather_s`` at most;
        the free slots then."""
        await wait_at_most(self._all_slots_free(stop), self._gather_s)
        return self._free_slots()

    async def _all_slots_free(self, stop: asyncio.Event) -> None:
        while self._free_slots() < self._slots and not stop.is_set():
            await self._signal.wait()  # a slot freed (or the consumer is stopping)
            self._signal.clear()
