"""Background loops stop between steps: a database call in progress is never cancelled
(with SQLAlchemy over asyncpg a cancelled query can leave its connection, and whoever
waits for it, hanging), and what that step produced is not lost."""

from __future__ import annotations

import asyncio

import pytest

from scheduler_service.runs.queue import RunQueue
from scheduler_service.stopping import pause, stop_loop, wait_at_most


async def test_stopping_the_queue_lets_a_take_in_progress_finish_and_start_its_runs() -> None:
    taking = asyncio.Event()
    answer = asyncio.Event()
    taken: list[str] = []
    started: list[list[str]] = []

    async def take(limit: int) -> list[str]:
        taking.set()
        await answer.wait()  # a query the stop must not cancel
        taken.extend(["run-1", "run-2"][:limit])
        return taken

    queue = RunQueue(take=take, start=started.append, free_slots=lambda: 2, slots=2)  # type: ignore[arg-type]
    queue.start()
    queue.poke()
    await taking.wait()
    stopping = asyncio.create_task(queue.stop())
    await asyncio.sleep(0)
    assert not stopping.done()  # waits for the take
    answer.set()
    await stopping
    assert started == [["run-1", "run-2"]]


async def test_a_loop_that_does_not_stop_in_time_is_cancelled() -> None:
    stop = asyncio.Event()
    cancelled = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()  # never looks at ``stop``
        except asyncio.CancelledError:
            cancelled.set()
            raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await stop_loop(task, stop, grace=0.05)
    assert cancelled.is_set() and task.cancelled()


async def test_pause_ends_early_when_asked_to_stop() -> None:
    stop = asyncio.Event()
    waiting = asyncio.create_task(pause(stop, 60))
    await asyncio.sleep(0)
    stop.set()
    assert await asyncio.wait_for(waiting, 5) is True
    assert await pause(asyncio.Event(), 0.001) is False


async def test_a_cancellation_arriving_as_the_wait_ends_is_not_swallowed() -> None:
    """``asyncio.wait_for`` (Python 3.11) would return normally here, and a loop built on
    it would go on after ``cancel()``: the run-queue consumer did, and stop hung."""
    event = asyncio.Event()
    waiting = asyncio.create_task(wait_at_most(event.wait(), 60))
    await asyncio.sleep(0)  # it is waiting on the event
    event.set()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_the_queue_consumer_ends_when_stopped_as_a_run_is_announced() -> None:
    takes: list[int] = []

    async def take(limit: int) -> list[str]:
        takes.append(limit)
        return []

    queue = RunQueue(take=take, start=lambda runs: None, free_slots=lambda: 1, slots=1)  # type: ignore[arg-type]
    queue.start()
    await asyncio.sleep(0)  # the consumer waits for a signal
    queue.poke()  # a run finished at the moment the service stops
    await asyncio.wait_for(queue.stop(), 10)
