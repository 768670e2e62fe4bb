"""The set of tools a service knows, and the one way to call them."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from scheduler_service.tools.base import Tool, ToolContext, ToolError

TOOL_THREAD_PREFIX = "scheduler-tool"
TOOL_THREADS = 32  # sync tool calls at once; a timed-out call keeps its thread till it returns


def in_tool_thread() -> bool:
    """Whether the caller is a sync tool running in the registry's threads."""
    return threading.current_thread().name.startswith(TOOL_THREAD_PREFIX)


class ToolRegistry:
    """Name → tool. Calls sync tools in threads of their own (never the event loop's, nor
    the threads the database work uses: a slow tool cannot hold up other users' calls)."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}
        self._threads: ThreadPoolExecutor | None = None

    def _executor(self) -> ThreadPoolExecutor:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(TOOL_THREADS, thread_name_prefix=TOOL_THREAD_PREFIX)
        return self._threads

    def close(self) -> None:
        """Let the tool threads go (a call still running finishes on its own)."""
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=False, cancel_futures=True)

    def register(self, tool: Tool, *, replace: bool = False) -> Tool:
        name = getattr(tool, "name", "")
        if not isinstance(name, str) or not name:
            raise ValueError(f"tool {tool!r} has no name")
        if name in self._tools and not replace:
            raise ValueError(f"a tool named {name!r} is already registered")
        self._tools[name] = tool
        return tool

    def unregister(self, name: str) -> None:
        self._tools.pop(name, None)

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            raise ToolError(
                "not_found",
                f"tool_name: no tool named {name!r}; available tools: {', '.join(self.names()) or 'none'}",
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def names(self) -> list[str]:
        return sorted(self._tools)

    def tools(self) -> list[Tool]:
        return [self._tools[n] for n in self.names()]

    async def call(
        self,
        name: str,
        operation: str,
        kwargs: dict[str, Any] | str | None,
        *,
        context: ToolContext,
    ) -> dict[str, Any]:
        """Run one operation of one tool; returns its dict or raises ToolError."""
        tool = self.get(name)
        if inspect.iscoroutinefunction(tool.run):
            result = await tool.run(operation, kwargs, context=context)
        else:
            call: Callable[[], Any] = functools.partial(
                tool.run, operation, kwargs, context=context
            )
            run_here = functools.partial(contextvars.copy_context().run, call)  # run's context
            result = await asyncio.get_running_loop().run_in_executor(self._executor(), run_here)
            if inspect.isawaitable(result):
                result = await result
        if not isinstance(result, dict):
            raise ToolError(
                "execution_failed",
                f"tool {name!r} returned {type(result).__name__}, expected a JSON object (dict)",
            )
        return result
