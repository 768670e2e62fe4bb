"""How the run-queue consumer sizes its takes: while runs are waiting, one take per batch
of freed slots, not one per finished run; with nothing waiting, a poke takes at once.

The consumer here is the real ``RunQueue``; its take, start and free slots are plain
in-memory stand-ins for the database and the runner (what it asks for is the subject)."""

from __future__ import annotations

import asyncio

from scheduler_service.runs.queue import RunQueue

SLOTS = 5


class Worker:
    """A worker's slots and an endless (or finite) queue, as the consumer sees them."""

    def __init__(self, queued: int | None = None) -> None:
        self.busy = 0
        self.queued = queued  # None: more runs than will ever be taken
        self.takes: list[int] = []
        self.took = asyncio.Event()

    def free_slots(self) -> int:
        return SLOTS - self.busy

    async def take(self, limit: int) -> list[int]:
        count = limit if self.queued is None else min(limit, self.queued)
        if self.queued is not None:
            self.queued -= count
        self.takes.append(limit)
        self.took.set()
        return list(range(count))

    def start(self, runs: list[int]) -> None:
        self.busy += len(runs)

    def finish(self, queue: RunQueue[int]) -> None:
        """One run ends: its slot is free, and the runner pokes the queue."""
        self.busy -= 1
        queue.poke()

    async def take_number(self, n: int) -> int:
        """What the ``n``-th take asked for, once it has happened."""
        while len(self.takes) < n:
            self.took.clear()
            await asyncio.wait_for(self.took.wait(), 10)
        return self.takes[n - 1]


def consumer(worker: Worker, gather_s: float) -> RunQueue[int]:
    return RunQueue(
        take=worker.take,
        start=worker.start,
        free_slots=worker.free_slots,
        slots=SLOTS,
        gather_s=gather_s,
    )


async def settle() -> None:
    """Let the consumer run up to its next wait."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_backlogged_queue_is_taken_once_per_batch_of_freed_slots() -> None:
    """Runs finishing one after another must not each cost a take (a statement and a
    round trip): the consumer waits for its other slots to free (here the wait never
    times out) and takes them together."""
    worker = Worker()
    queue = consumer(worker, gather_s=60.0)
    queue.start()
    try:
        queue.poke()
        assert await worker.take_number(1) == SLOTS  # every slot filled: runs are waiting
        for batch in range(2, 5):
            for _ in range(SLOTS):
                worker.finish(queue)
                await settle()
            assert await worker.take_number(batch) == SLOTS
        assert worker.takes == [SLOTS] * 4
    finally:
        await queue.stop()


async def test_a_freed_slot_waits_for_the_others_only_briefly() -> None:
    """Runs that hold their slots for long (a model call) do not keep a freed slot empty:
    after the gathering time the consumer takes for the slots that are free."""
    worker = Worker()
    queue = consumer(worker, gather_s=0.05)
    queue.start()
    try:
        queue.poke()
        assert await worker.take_number(1) == SLOTS
        worker.finish(queue)  # the other four stay busy
        assert await worker.take_number(2) == 1
    finally:
        await queue.stop()


async def test_with_nothing_left_waiting_a_poke_takes_at_once() -> None:
    """A take that came back short emptied the queue: the next announced run is taken
    at the first poke, without waiting for other slots to free."""
    worker = Worker(queued=2)
    queue = consumer(worker, gather_s=60.0)
    queue.start()
    try:
        queue.poke()
        assert await worker.take_number(1) == SLOTS  # two runs taken: nothing is waiting
        worker.queued = 1  # a run is announced
        assert worker.free_slots() == SLOTS - 2
        queue.poke()
        assert await worker.take_number(2) == SLOTS - 2
        assert worker.busy == 3
    finally:
        await queue.stop()


async def test_stopping_ends_a_wait_for_slots() -> None:
    worker = Worker()
    queue = consumer(worker, gather_s=60.0)
    queue.start()
    queue.poke()
    await worker.take_number(1)
    worker.finish(queue)
    await settle()  # the consumer waits for the other slots
    await asyncio.wait_for(queue.stop(), 5)
    assert worker.takes == [SLOTS]


async def test_slots_taken_by_the_workers_own_runs_meanwhile_are_not_asked_for() -> None:
    """A retry or a manual run of this worker can fill the freed slot while the consumer
    gathers: then it asks the database for nothing (no empty take)."""
    worker = Worker()
    queue = consumer(worker, gather_s=0.05)
    queue.start()
    try:
        queue.poke()
        await worker.take_number(1)
        worker.finish(queue)
        await settle()  # gathering
        worker.busy += 1  # a run of the worker's own took the slot
        await asyncio.sleep(0.15)  # the gathering time ends with no slot free
        assert worker.takes == [SLOTS]
        worker.finish(queue)
        assert await worker.take_number(2) == 1
        assert worker.takes == [SLOTS, 1]
    finally:
        await queue.stop()
