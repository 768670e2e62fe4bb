"""The concurrency limit: at most ``size`` runs hold a slot, the rest wait in arrival order."""

from __future__ import annotations

import heapq
from typing import Generic, TypeVar

T = TypeVar("T")


class SlotLine(Generic[T]):
    """Runs waiting for a slot, served by ticket (arrival order), never by luck.

    A waiting run is an entry here, not a suspended task: a task and its chain of
    coroutines cost ~35 objects a run, and a burst of 10,000 due runs on 50 slots would
    hold 9,950 of them, all walked by every full garbage collection while the event loop
    waits. Tickets are taken when the fire arrives, so runs start in the order they
    became due even if their claims finish out of order.

    Pure bookkeeping: ``put`` then ``ready`` hands out what may start, ``release`` gives a
    slot back. The caller starts what it is handed.
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiting: list[tuple[int, T]] = []  # a heap by ticket; tickets are unique

    def put(self, ticket: int, item: T) -> None:
        heapq.heappush(self._waiting, (ticket, item))

    def ready(self) -> list[T]:
        """Waiting items that may start now, lowest ticket first; each takes a slot."""
        started: list[T] = []
        while self._free > 0 and self._waiting:
            self._free -= 1
            started.append(heapq.heappop(self._waiting)[1])
        return started

    def release(self) -> None:
        """A started item finished with its slot."""
        self._free += 1

    def drop_waiting(self) -> list[T]:
        """Remove and return every waiting item, lowest ticket first (at stop)."""
        dropped = [item for _ticket, item in sorted(self._waiting, key=lambda e: e[0])]
        self._waiting.clear()
        return dropped

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def open(self) -> int:
        """Slots that no run holds or waits for: how many more could start at once."""
        return self._free - len(self._waiting)
