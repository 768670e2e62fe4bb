"""Group commits: requests made in the same moment share one transaction.

A burst — a thousand reminders due at 09:00 — would otherwise queue a thousand claim
transactions, then a thousand "started" and a thousand outcome transactions, one after
the other on the database's write lock: the last run would start seconds late, and each
run would pay a transaction's fixed cost three times. A ``Batcher`` collects what its
callers submit while the previous batch is being written and hands it, all at once, to
one ``handle`` call (one transaction); each caller gets its own result, or the batch's
error to retry.

A lone request is not delayed: the first submission is written at once, and the next
batch forms while that transaction is in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Res = TypeVar("Res")

MAX_BATCH = 500  # requests in one transaction (bounds its size and its lock time)


class Batcher(Generic[Req, Res]):
    """Serves ``submit(request)`` calls in batches through ``handle(requests)``."""

    def __init__(
        self,
        handle: Callable[[Sequence[Req]], Awaitable[Sequence[Res]]],
        *,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._handle = handle
        self._max_batch = max_batch
        self._pending: list[tuple[Req, asyncio.Future[Res]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def submit(self, request: Req) -> Res:
        future: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())
        return await future

    async def _write(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            batch = [(r, f) for r, f in batch if not f.cancelled()]
            if not batch:
                continue
            try:
                results = await self._handle([request for request, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch:
                    future.cancel()
                raise
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
