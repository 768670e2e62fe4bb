"""The job functions APScheduler stores by reference.

STORAGE FORMAT: APScheduler pickles a job's function as "module:qualname"
(``scheduler_service.jobs:fire_task``, ``scheduler_service.jobs:retry_task``) and deletes
any job whose function it cannot import. Existing databases depend on this module path
and these names: never rename or move them. They take only plain arguments (ids, ISO times); the runner that does the work
reaches them through a ContextVar set by ``FireTimeExecutor`` together with the fire
times APScheduler computed, which the job function would otherwise never learn.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

JOB_FUNCTION = "scheduler_service.jobs:fire_task"
RETRY_FUNCTION = "scheduler_service.jobs:retry_task"


@dataclass(frozen=True)
class FireContext:
    """What the executor tells a job it is starting: the fire times and who handles them."""

    run_times: list[datetime]
    on_fire: Callable[[str, list[datetime]], Awaitable[Any]]
    on_retry: Callable[[str, datetime, int], Awaitable[Any]]


current_fire: ContextVar[FireContext] = ContextVar("current_fire")


async def fire_task(task_id: str) -> None:
    """A task's schedule fired: hand every due fire time to the runner."""
    fire = current_fire.get()
    await fire.on_fire(task_id, fire.run_times)


async def retry_task(task_id: str, fire_time: str, attempt: int) -> None:
    """A failed run's retry is due: run attempt ``attempt`` of the same fire time."""
    fire = current_fire.get()
    await fire.on_retry(task_id, datetime.fromisoformat(fire_time), attempt)
