"""Schedule evaluation off the event loop, in a pool of its own, within a time budget.

Evaluating a user's schedule (parsing it, listing its next runs, finding its next fire)
walks dateutil rules in pure Python; a sparse or contrived rule can take seconds. Three
things keep that from hurting anyone else:

* it never runs on the event loop (which serves every user's calls and every run),
  except a new task's built-in frequency (``schedules.bounded_cost``): a few fixed cron
  or interval steps, cheaper than the hop here;
* it runs in its own small thread pool, so a burst of costly schedules cannot starve
  the default pool that the rest of the service (sync tools, the database) relies on;
* each evaluation has a time budget counted from when it starts (not while it queues).
  The computation checks the budget itself, once per step of its search (each period
  dateutil walks, each fire time listed: ``clock.budget``), and raises
  ``BudgetExceeded``, an ordinary exception, when it is spent: the thread is freed, not
  left computing for nobody, and the caller gets a clear refusal. Nothing is raised
  into a thread from outside, so nothing can reach the host's code.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from scheduler_service.clock.budget import BudgetExceeded, within

__all__ = ["BudgetExceeded", "Evaluator"]

P = ParamSpec("P")
R = TypeVar("R")


def _within_budget(seconds: float, call: Callable[[], R], /) -> R:
    """``call()`` with its budget starting now (in the pool thread, once it has one)."""
    with within(seconds):
        return call()


class Evaluator:
    """Runs schedule computations in a pool of ``workers`` threads, each within
    ``budget`` seconds of its start."""

    def __init__(self, *, workers: int, budget: float) -> None:
        self.budget = budget
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="schedule-eval")

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``fn(*args, **kwargs)`` in the pool; ``BudgetExceeded`` past the budget."""
        call = functools.partial(fn, *args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, _within_budget, self.budget, call)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
