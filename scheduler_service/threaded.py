"""The service for synchronous hosts (Flask, Django, WSGI, scripts): a loop in a daemon thread.

The service is asyncio code; a synchronous app has no event loop to run it on. A
:class:`ThreadedScheduler` owns one: a daemon thread runs a private event loop, the
service is created, started and stopped on it, and every method of the facade hands its
work to that loop with ``asyncio.run_coroutine_threadsafe`` and blocks for the answer.
All service state is therefore only ever touched from the loop's thread, which is what
makes the facade safe to call from any number of request threads at once.

    scheduler = ThreadedScheduler(settings, tools=[MyTool()])
    scheduler.start()                      # e.g. at app start-up
    scheduler.call_tool("create_task", {...}, context=ToolContext(user_id="u1"))
    scheduler.get_notifications("c1")
    scheduler.stop()                       # e.g. atexit

Each process of a multi-worker server (gunicorn, uWSGI) starts its own; they share the
database and elect one leader, as async workers do.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from scheduler_service.tools import Tool, ToolContext, ToolError
from scheduler_service.tools.registry import in_tool_thread

if TYPE_CHECKING:
    import anthropic

    from scheduler_service.config import Settings
    from scheduler_service.service import SchedulerService

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 300.0  # longest a facade call blocks (a run can take task_timeout)
START_TIMEOUT_S = 120.0


class ThreadedScheduler:
    """A :class:`SchedulerService` on its own event loop thread, with a blocking API."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        tools: Sequence[Tool] = (),
        anthropic_client: anthropic.AsyncAnthropic | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        role: str | None = None,
    ) -> None:
        self._settings = settings
        self._role = role  # "worker" or "client"; None: from settings (SCHEDULER__ROLE)
        self._tools = list(tools)
        self._client = anthropic_client
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._service: SchedulerService | None = None
        self._lock = threading.Lock()  # start/stop from several threads: one wins
        self._pending: set[concurrent.futures.Future[Any]] = set()  # callers waiting now

    # -- lifecycle -------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._service is not None

    @property
    def service(self) -> SchedulerService:
        """The service; only touch it on the loop (through :meth:`submit`)."""
        if self._service is None:
            raise RuntimeError("the scheduler is not started: call start() first")
        return self._service

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the loop thread and the service on it; returns once it is started."""
        with self._lock:
            if self._service is not None:
                return
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="task-scheduler-loop", daemon=True
            )
            thread.start()
            self._loop, self._thread = loop, thread
            try:
                self._service = self._wait(self._start(), timeout)
            except BaseException:
                self._close_loop()
                raise

    async def _start(self) -> SchedulerService:
        from scheduler_service.service import SchedulerService

        service = SchedulerService(
            self._settings, tools=self._tools, anthropic_client=self._client, role=self._role
        )
        await service.start()
        return service

    def stop(self, timeout: float | None = None) -> None:
        """Stop the service (runs in flight get ``shutdown_grace``), then the loop."""
        with self._lock:
            service, self._service = self._service, None
            if service is None:
                return
            try:
                grace = service.settings.scheduler.shutdown_grace
                self._wait(service.stop(), timeout or grace + 30.0)
            finally:
                for waiting in list(self._pending):  # answered `unavailable`, not left hanging
                    waiting.cancel()
                self._close_loop()

    def _close_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join()
        loop.close()

    def __enter__(self) -> ThreadedScheduler:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- calls -----------------------------------------------------------------------
    def _wait(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._loop is None or self._thread is threading.current_thread():
            coro.close()  # never scheduled: no "coroutine was never awaited" warning
            if self._loop is None:
                raise RuntimeError("the scheduler is not started: call start() first")
            raise RuntimeError("a blocking call from the scheduler's own loop would deadlock")
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        self._pending.add(future)
        try:
            return future.result(timeout if timeout is not None else self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(
                f"the scheduler did not answer within {timeout or self.timeout:g} s"
            ) from None
        except (concurrent.futures.CancelledError, asyncio.CancelledError):
            raise ToolError(
                "unavailable", "the scheduler stopped before answering; try again once it runs"
            ) from None
        finally:
            self._pending.discard(future)

    def _check_caller(self) -> None:
        """A sync tool running inside a run that calls back into the scheduler would
        wait on the run it is part of (a task's own lock, its run's record): refused at
        once instead of blocking until the timeout."""
        if in_tool_thread():
            raise ToolError(
                "forbidden",
                "a tool running inside a scheduled run cannot call the scheduler through "
                "ThreadedScheduler; give the task scheduler_tool (orchestrated) instead",
            )

    def submit(self, work: Callable[[SchedulerService], Awaitable[T]]) -> T:
        """Run ``work(service)`` on the loop and return its result (any service API)."""
        self._check_caller()
        service = self.service
        return self._wait(_call(work, service))

    def call_tool(
        self,
        operation: str,
        kwargs: dict[str, Any] | str | None = None,
        *,
        context: ToolContext,
        tool: str = "scheduler_tool",
    ) -> dict[str, Any]:
        """One tool operation (``scheduler_tool`` by default); raises ``ToolError``."""
        return self.submit(lambda s: s.tools.call(tool, operation, kwargs, context=context))

    def get_notifications(
        self, conversation_id: str, *, user_id: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return self.submit(
            lambda s: s.get_notifications(conversation_id, user_id=user_id, limit=limit)
        )

    def mark_notifications_displayed(
        self, notification_ids: list[str], *, user_id: str | None = None
    ) -> int:
        return self.submit(
            lambda s: s.mark_notifications_displayed(notification_ids, user_id=user_id)
        )

    @property
    def is_leader(self) -> bool:
        return self.service.is_leader


async def _call(work: Callable[[SchedulerService], Awaitable[T]], service: SchedulerService) -> T:
    """Calls ``work`` on the loop thread, so even building the awaitable happens there."""
    return await work(service)
