"""One service process for the benchmarks: ``python -m bench.replica --url URL``.

Starts a ``SchedulerService`` with the benchmark's no-op tool (and, with ``--tool-sleep S``,
a ``sleep`` tool that awaits S seconds a run) and prints JSON lines on
stdout: ``{"event": "ready", ...}`` once started (with the wall-clock time, whether it
leads, its peak RSS and the longest event-loop stall seen since before the start), then
``{"event": "leader"}`` / ``{"event": "standby"}`` when its role changes, and
``{"event": "stopped", "peak_at_once": N}`` at the end (the most runs it had in the
``sleep`` tool at once). It stops on
SIGTERM/SIGINT, when stdin closes, or after ``--run-for`` seconds (a bound, so that a
forgotten replica always ends). ``--exit-when-ready`` stops right after the ready line
(the start-up probe).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time

from bench.common import LagProbe, NoopTool, SleepTool, peak_rss_mb, settings_for
from scheduler_service import SchedulerService


def emit(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, "t": time.time(), **fields}), flush=True)


async def serve(
    url: str, concurrency: int, run_for: float, exit_when_ready: bool, tool_sleep: float
) -> None:
    probe = LagProbe()
    probe.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    service = SchedulerService(settings_for(url, concurrency=concurrency))
    service.tools.register(NoopTool())
    sleeper = SleepTool(tool_sleep)
    if tool_sleep > 0:
        service.tools.register(sleeper)
    async with service:
        ready = time.time()
        if exit_when_ready:
            await asyncio.sleep(0.5)  # stalls right after the start count too
        await probe.stop()
        lag = probe.summary()
        print(
            json.dumps(
                {
                    "event": "ready",
                    "t": ready,
                    "leader": service.is_leader,
                    "rss_mb": peak_rss_mb(),
                    "lag_max_ms": lag["max_ms"],
                }
            ),
            flush=True,
        )
        if exit_when_ready:
            return
        loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.read(1) else None)
        leading = service.is_leader
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(run_for):
                while not stop.is_set():
                    if service.is_leader != leading:
                        leading = service.is_leader
                        emit("leader" if leading else "standby")
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.05)
    emit("stopped", peak_at_once=sleeper.peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="async database URL")
    parser.add_argument("--concurrency", type=int, default=50, help="max_concurrent_tasks")
    parser.add_argument("--run-for", type=float, default=900.0, help="stop after this long")
    parser.add_argument("--exit-when-ready", action="store_true")
    parser.add_argument(
        "--tool-sleep", type=float, default=0.0, help="also a 'sleep' tool awaiting this long, s"
    )
    args = parser.parse_args()
    asyncio.run(
        serve(args.url, args.concurrency, args.run_for, args.exit_when_ready, args.tool_sleep)
    )


if __name__ == "__main__":
    main()
