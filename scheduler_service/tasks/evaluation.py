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
  When the budget runs out, ``BudgetExceeded`` is raised *inside* the evaluating thread
  (dateutil is pure Python, so the interpreter delivers it promptly): the thread is freed,
  not left computing for nobody, and the caller gets a clear refusal.

The asynchronous exception is fenced: it is only ever set while the call runs (under the
call's lock), a late one is dropped as the call ends, and one delivered in the last
instructions of the call reaches ``Evaluator.run`` through the future, where it becomes
``BudgetExceeded`` too, so it never reaches the host's code.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


class BudgetExceeded(Exception):
    """A schedule evaluation ran out of its time budget."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the schedule needs more than {seconds:g} s to evaluate")
        self.seconds = seconds


class _Expired(BaseException):
    """Raised asynchronously in an evaluation thread (BaseException: library code that
    catches Exception cannot swallow it)."""


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


class _Call:
    """One evaluation, which ``expire`` can interrupt while (and only while) it runs."""

    def __init__(self, fn: Callable[[], Any], on_start: Callable[[], object]) -> None:
        self.fn = fn
        self.on_start = on_start
        self.lock = threading.Lock()
        self.thread_id: int | None = None
        self.finished = False

    def __call__(self) -> Any:
        with self.lock:
            self.thread_id = threading.get_ident()
        self.on_start()
        try:
            return self.fn()
        except _Expired:
            raise BudgetExceeded(0) from None
        finally:
            with self.lock:
                self.finished = True
                _raise_in(threading.get_ident(), None)  # drop one delivered too late

    def expire(self) -> bool:
        with self.lock:
            if self.thread_id is None or self.finished:
                return False
            _raise_in(self.thread_id, _Expired)
            return True


class Evaluator:
    """Runs schedule computations in a pool of ``workers`` threads, each within
    ``budget`` seconds of its start."""

    def __init__(self, *, workers: int, budget: float) -> None:
        self.budget = budget
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="schedule-eval")

    async def run(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """``fn(*args, **kwargs)`` in the pool; ``BudgetExceeded`` past the budget."""
        loop = asyncio.get_running_loop()
        started = asyncio.Event()
        call = _Call(
            functools.partial(fn, *args, **kwargs),
            lambda: loop.call_soon_threadsafe(started.set),
        )
        future = loop.run_in_executor(self._pool, call)
        # Queueing for a thread is not the schedule's cost: the budget starts with the call.
        waiter = asyncio.ensure_future(started.wait())
        try:
            await asyncio.wait({future, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not future.done():
            done, _ = await asyncio.wait({future}, timeout=self.budget)
            if not done and call.expire():
                await asyncio.wait({future})
        try:
            result: R = future.result()
        except (BudgetExceeded, _Expired):  # _Expired: delivered as the call was ending
            raise BudgetExceeded(self.budget) from None
        return result

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
