"""Loop-lag probe: 1,000 runs due at the same moment, how long does the event loop stall?

Run from the repository root::

    .venv/bin/python -m bench.loop_lag            # 1,000 runs, default settings
    .venv/bin/python -m bench.loop_lag --runs 200 --concurrency 20

It starts a real ``SchedulerService`` on a fresh SQLite file, creates ``--runs`` one-time
tasks (a trivial async tool) all due at the same instant a few seconds ahead, and samples
the loop every 10 ms (``sleep(0.01)`` and how late it woke up) from just before that
instant until every run has finished. It prints the maximum and p99 lag over the burst
and the end-to-end time from the due instant to the last finished run. The figures for
the current code are in ``docs/performance.md``.

A full (generation 2) garbage collection stops every thread of the process for as long
as it takes to walk the whole heap (tens of ms here, mostly the host's and libraries'
objects), so the probe also reports the longest gen-2 pause and the maximum lag of the
samples that did not overlap one. ``--gc-freeze`` calls ``gc.freeze()`` once the service
has started, as a latency-sensitive host can, which takes start-up objects out of it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scheduler_service import SchedulerService
from scheduler_service.config import SchedulerConfig, SchedulerToolConfig, Settings
from scheduler_service.tools import Tool, ToolContext

SAMPLE_S = 0.01


class NoopTool(Tool):
    """The cheapest possible async tool: what remains is the scheduler's own cost."""

    name = "noop"
    description = "Does nothing (benchmark)."
    input_schema = {"type": "object", "properties": {"operation": {"enum": ["tick"]}}}

    async def run(
        self, operation: str, kwargs: dict[str, Any] | str | None, *, context: ToolContext
    ) -> dict[str, Any]:
        return {"message": "tick"}


class LagProbe:
    """Samples how late a 10 ms sleep wakes up: that delay is time the loop was blocked.

    Also records every gen-2 garbage collection, to tell the process's GC pauses apart
    from the scheduler's own work.
    """

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (start, lag)
        self.gc_pauses: list[tuple[float, float]] = []  # (start, end) of gen-2 collections
        self._gc_start = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(SAMPLE_S)
            self.samples.append((start, time.perf_counter() - start - SAMPLE_S))

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_pauses.append((self._gc_start, time.perf_counter()))

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._task = asyncio.get_running_loop().create_task(self._sample())

    async def stop(self) -> None:
        assert self._task is not None
        gc.callbacks.remove(self._on_gc)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def _overlaps_gc(self, start: float, lag: float) -> bool:
        end = start + SAMPLE_S + lag
        return any(g0 < end and start < g1 for g0, g1 in self.gc_pauses)

    def summary(self) -> dict[str, float]:
        ordered = sorted(lag for _s, lag in self.samples)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        no_gc = [lag for s, lag in self.samples if not self._overlaps_gc(s, lag)]
        return {
            "samples": len(ordered),
            "max_ms": ordered[-1] * 1000,
            "p99_ms": p99 * 1000,
            "median_ms": statistics.median(ordered) * 1000,
            "max_no_gc_ms": max(no_gc, default=0.0) * 1000,
            "gc2_count": len(self.gc_pauses),
            "gc2_max_ms": max((b - a for a, b in self.gc_pauses), default=0.0) * 1000,
        }


async def create_tasks(service: SchedulerService, runs: int, due: datetime) -> None:
    ctx = ToolContext(user_id="bench", conversation_id="bench")
    for i in range(runs):
        await service.scheduler_tool.run(
            "create_task",
            {
                "name": f"bench {i}",
                "frequency": "once",
                "scheduled_time": due.isoformat(),
                "execution_mode": "direct",
                "tool_name": "noop",
                "operation": "tick",
                "parameters": {},
            },
            context=ctx,
        )


async def bench(
    runs: int, concurrency: int, lead: float, db_path: Path, gc_freeze: bool
) -> dict[str, Any]:
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{db_path}",
        scheduler=SchedulerConfig(max_concurrent_tasks=concurrency, log_level="WARNING"),
        scheduler_tool=SchedulerToolConfig(max_tasks_per_user=runs + 1),
        anthropic_api_key=None,
    )
    finished = 0
    all_done = asyncio.Event()
    last_finish = 0.0

    async def on_notification(_n: dict[str, Any]) -> None:
        nonlocal finished, last_finish
        finished += 1
        last_finish = time.perf_counter()
        if finished >= runs:
            all_done.set()

    async with SchedulerService(settings, on_notification=on_notification) as service:
        service.tools.register(NoopTool())
        if gc_freeze:
            gc.collect()
            gc.freeze()
        due = (datetime.now(UTC) + timedelta(seconds=lead)).replace(microsecond=0)
        await create_tasks(service, runs, due)
        ahead = (due - datetime.now(UTC)).total_seconds()
        if ahead < 0.5:
            raise SystemExit(f"creating {runs} tasks took too long; raise --lead (now {lead})")
        await asyncio.sleep(ahead - 0.3)
        probe = LagProbe()
        probe.start()
        due_perf = time.perf_counter() + (due - datetime.now(UTC)).total_seconds()
        await asyncio.wait_for(all_done.wait(), timeout=300)
        await probe.stop()
    return {
        "runs": runs,
        "max_concurrent_tasks": concurrency,
        "end_to_end_s": last_finish - due_perf,
        **probe.summary(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=5, help="max_concurrent_tasks")
    parser.add_argument("--lead", type=float, default=15.0, help="seconds until the burst")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() after start")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(
            bench(args.runs, args.concurrency, args.lead, Path(tmp) / "b.db", args.gc_freeze)
        )
    print(
        f"runs={result['runs']} max_concurrent_tasks={result['max_concurrent_tasks']} "
        f"gc_freeze={args.gc_freeze}\n"
        f"loop lag: max {result['max_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
        f"median {result['median_ms']:.2f} ms over {result['samples']} samples\n"
        f"max lag outside gen-2 GC pauses: {result['max_no_gc_ms']:.1f} ms; "
        f"gen-2 collections: {result['gc2_count']}, longest {result['gc2_max_ms']:.1f} ms\n"
        f"end-to-end (due instant to last run finished): {result['end_to_end_s']:.2f} s"
    )


if __name__ == "__main__":
    main()
