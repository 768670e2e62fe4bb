"""A concurrency limit that serves waiters in arrival order."""

from __future__ import annotations

import asyncio
import heapq


class FifoSlots:
    """A semaphore that serves waiters by ticket (arrival order), never by luck.

    ``asyncio.Semaphore`` serves waiters in the order they call ``acquire``, which for a
    run is after its claim transaction; tickets are taken when the fire arrives, so runs
    start in the order they became due even if their claims finish out of order.
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def acquire(self, ticket: int) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (ticket, future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot was handed over just as we were cancelled
            raise

    def release(self) -> None:
        while self._waiters:
            _ticket, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
                return
        self._free += 1

    @property
    def waiting(self) -> int:
        return sum(not f.done() for _t, f in self._waiters)
