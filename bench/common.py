"""Helpers shared by the benchmarks: a no-op and a sleeping tool, a loop-lag probe, settings, statistics.

Everything here uses the service's public API only (``SchedulerService``,
``scheduler_tool``, ``Tool``/``ToolContext``, ``Settings``) plus plain reads of its tables.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench.probes import LagProbe, peak_rss_mb, percentile, spread
from scheduler_service import SchedulerService
from scheduler_service.config import SchedulerConfig, SchedulerToolConfig, Settings
from scheduler_service.tools import Tool, ToolContext

BENCH_USER = ToolContext(user_id="bench", conversation_id="bench")


class NoopTool(Tool):
    """The cheapest possible async tool: what remains is the scheduler's own cost."""

    name = "noop"
    description = "Does nothing (benchmark)."
    input_schema = {"type": "object", "properties": {"operation": {"enum": ["tick"]}}}

    async def run(
        self, operation: str, kwargs: dict[str, Any] | str | None, *, context: ToolContext
    ) -> dict[str, Any]:
        return {"message": "tick"}


class SleepTool(Tool):
    """Awaits a fixed time, as a run waiting on an LLM or an API does: a replica is then
    bound by its slots (``max_concurrent_tasks``), not by the scheduler's CPU, which is
    where spreading runs over replicas pays."""

    name = "sleep"
    description = "Awaits a fixed time (benchmark)."
    input_schema = {"type": "object", "properties": {"operation": {"enum": ["tick"]}}}

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.running = 0
        self.peak = 0  # the most runs of this process in the tool at once

    async def run(
        self, operation: str, kwargs: dict[str, Any] | str | None, *, context: ToolContext
    ) -> dict[str, Any]:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.running -= 1
        return {"message": "slept"}


def settings_for(
    url: str, *, concurrency: int = 50, max_tasks: int = 1_000_000, enabled: bool = True
) -> Settings:
    """Service settings for a benchmark: no LLM, quiet logs, a quota that never binds."""
    return Settings(
        database_url=url,
        scheduler=SchedulerConfig(
            max_concurrent_tasks=concurrency, log_level="WARNING", enabled=enabled
        ),
        scheduler_tool=SchedulerToolConfig(max_tasks_per_user=max_tasks),
        anthropic_api_key=None,
        tools=[],
    )


def once_task(name: str, when_iso: str, tool: str = NoopTool.name) -> dict[str, Any]:
    return {
        "name": name,
        "frequency": "once",
        "scheduled_time": when_iso,
        "execution_mode": "direct",
        "tool_name": tool,
        "operation": "tick",
        "parameters": {},
    }


def daily_task(name: str, hhmm: str) -> dict[str, Any]:
    return {**once_task(name, hhmm), "frequency": "daily"}


async def call(
    service: SchedulerService,
    operation: str,
    kwargs: dict[str, Any],
    context: ToolContext = BENCH_USER,
) -> dict[str, Any]:
    """One scheduler_tool call (a failure raises ``ToolError``)."""
    return await service.scheduler_tool.run(operation, kwargs, context=context)


__all__ = [
    "BENCH_USER",
    "LagProbe",
    "NoopTool",
    "SleepTool",
    "call",
    "daily_task",
    "once_task",
    "peak_rss_mb",
    "percentile",
    "settings_for",
    "spread",
]
