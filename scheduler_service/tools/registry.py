"""The set of tools a service knows, and the one way to call them."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from scheduler_service.tools.base import Tool, ToolContext, ToolError


class ToolRegistry:
    """Name → tool. Calls sync tools in a worker thread so the loop never blocks."""

    def __init__(self) -> None:
        self._tools: dict[str, Tool] = {}

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
            result = await asyncio.to_thread(tool.run, operation, kwargs, context=context)  # type: ignore[arg-type]
            if inspect.isawaitable(result):
                result = await result
        if not isinstance(result, dict):
            raise ToolError(
                "execution_failed",
                f"tool {name!r} returned {type(result).__name__}, expected a JSON object (dict)",
            )
        return result
