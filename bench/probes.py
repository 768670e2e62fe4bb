"""Measuring helpers with no import of the service (the bare-APScheduler start-up probe
uses them, and must not pay for the service's imports): a loop-lag probe, peak RSS,
percentiles and min/median/max.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import statistics
import time
from collections.abc import Sequence

SAMPLE_S = 0.01


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
        ordered = sorted(lag for _s, lag in self.samples) or [0.0]
        no_gc = [lag for s, lag in self.samples if not self._overlaps_gc(s, lag)]
        return {
            "samples": len(self.samples),
            "max_ms": ordered[-1] * 1000,
            "p99_ms": percentile(ordered, 99) * 1000,
            "median_ms": statistics.median(ordered) * 1000,
            "max_no_gc_ms": max(no_gc, default=0.0) * 1000,
            "gc2_count": len(self.gc_pauses),
            "gc2_max_ms": max((b - a for a, b in self.gc_pauses), default=0.0) * 1000,
        }


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted or unsorted values (nan when empty)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def spread(values: Sequence[float]) -> dict[str, float]:
    """min / median / max of repeated measurements (nan when there are none)."""
    clean = [v for v in values if not math.isnan(v)]
    if not clean:
        return {"min": math.nan, "median": math.nan, "max": math.nan, "n": 0}
    return {
        "min": min(clean),
        "median": statistics.median(clean),
        "max": max(clean),
        "n": len(clean),
    }


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MB."""
    try:
        with open(f"/proc/{os.getpid()}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
