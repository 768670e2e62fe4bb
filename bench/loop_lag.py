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
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import LagProbe, NoopTool
from scheduler_service import SchedulerService
from scheduler_service.config import SchedulerConfig, SchedulerToolConfig, Settings
from scheduler_service.tools import ToolContext


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
