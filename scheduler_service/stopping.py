"""Stopping a background loop between its steps, not in the middle of one.

Cancelling a task while it waits on the database is not safe with every driver:
SQLAlchemy over asyncpg can leave a cancelled query's connection half-closed, and the
cancelled task (or whoever awaits it) may then wait forever. So the service's background
loops (leadership checks, the run-queue consumer, the trigger check) are asked to stop
through an event they look at between steps; they are cancelled only if they have not
ended within a grace period, and a stop never waits for them without a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any

log = logging.getLogger(__name__)

STOP_GRACE_S = 5.0  # how long a loop may take to finish its current step


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds``, or less if ``stop`` is set; True when the loop should end."""
    await wait_at_most(stop.wait(), seconds)
    return stop.is_set()


async def wait_at_most(awaitable: Awaitable[Any], seconds: float) -> None:
    """Await ``awaitable`` for up to ``seconds``.

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that arrives as
    the awaited thing completes, so a loop built on it can outlive ``Task.cancel`` (the
    run-queue consumer did, and the service's stop waited for it forever).
    ``asyncio.timeout`` passes the cancellation on."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await awaitable


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
    await asyncio.wait({task}, timeout=grace)
    if not task.done():
        log.error("a background loop ignored its cancellation; leaving it behind")
