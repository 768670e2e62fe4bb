"""Stopping a background loop between its steps, not in the middle of one.

Cancelling a task while it waits on the database is not safe with every driver:
SQLAlchemy over asyncpg can leave a cancelled query's connection half-closed, and the
cancelled task (or whoever awaits it) may then wait forever. So the service's background
loops (leadership checks, the run-queue consumer, the trigger check) are asked to stop
through an event they look at between steps; they are cancelled only if they have not
ended within a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger(__name__)

STOP_GRACE_S = 5.0  # how long a loop may take to finish its current step


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds``, or less if ``stop`` is set; True when the loop should end."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def stop_loop(
    task: asyncio.Task[Any] | None, stop: asyncio.Event, grace: float = STOP_GRACE_S
) -> None:
    """Set ``stop``, let ``task`` end its current step (up to ``grace`` s), then cancel
    it if it is still running."""
    stop.set()
    if task is None or task.done():
        return
    await asyncio.wait({task}, timeout=grace)
    if task.done():
        if not task.cancelled() and task.exception() is not None:
            log.error("a background loop failed", exc_info=task.exception())
        return
    log.warning("a background loop did not stop within %.1f s; cancelling it", grace)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
