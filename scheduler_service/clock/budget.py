"""A time budget that a schedule computation checks itself, step by step.

A sparse or contrived rule can make a search walk for seconds (dateutil looks for a
match up to the year 9999). Rather than interrupting such a search from outside, the
search counts its own steps: each period dateutil walks and each fire time listed calls
``check()``, which raises ``BudgetExceeded`` — an ordinary exception, in the computing
thread — once the budget given by ``within`` is spent. One step costs at most a few
milliseconds (a day of a FREQ=SECONDLY rule), so a computation ends within its budget
plus one step. Outside ``within`` (the run path, APScheduler's own calls) ``check`` does
nothing: only a user's request is refused for its cost.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# (deadline on the monotonic clock, the budget in seconds) of the computation running
_BUDGET: ContextVar[tuple[float, float] | None] = ContextVar("schedule_budget", default=None)


class BudgetExceeded(Exception):
    """A schedule computation ran out of its time budget."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the schedule needs more than {seconds:g} s to evaluate")
        self.seconds = seconds


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Computations in this block raise ``BudgetExceeded`` ``seconds`` after it starts."""
    token = _BUDGET.set((time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _BUDGET.reset(token)


def check() -> None:
    """One step of a search: raise ``BudgetExceeded`` if the budget is spent."""
    budget = _BUDGET.get()
    if budget is not None and time.monotonic() > budget[0]:
        raise BudgetExceeded(budget[1])
