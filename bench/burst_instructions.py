"""The SQLite burst counted in instructions: a measure the shared host's load barely moves.

``python -m bench.burst_instructions --runs 1000 [--side project|asyncio|both] [--jobs 2]``

Timings on a shared two-core host drift by ±20% within minutes, more than most changes
to the run path are worth, so an A/B of CPU seconds needs many alternated repetitions.
This runs each burst (the service, and the asyncio baseline of ``bench/bare.py``) in its
own interpreter under valgrind's callgrind, with instrumentation switched on only for
the burst's window (from 0.3 s before the due instant to the last run recorded, the
window ``bench.sqlite_burst`` measures CPU over), and prints the instructions executed
in that window per run. Repeated, the same code gives the same count within ~1%.

Caveats: everything runs ~50× slower under valgrind, so the burst's batches may differ
from a native run's (the same for both sides); instructions are not cycles (cache
misses and the database's fsyncs cost time they don't count). Needs ``valgrind`` and
``callgrind_control`` on ``PATH``; a 1,000-run burst takes ~1 min per side.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.callgrind import VALGRIND, switch
from bench.run import bare_burst, project_burst, sqlite_url


class CallgrindWindow:
    """A ``profiler`` for the burst functions: its start and stop switch callgrind's
    instrumentation of this process on and off."""

    def start(self) -> None:
        self._switch("on")

    def stop(self) -> None:
        self._switch("off")

    @staticmethod
    def _switch(state: str) -> None:
        switch([os.getpid()], state)


async def one_burst(side: str, runs: int, work: Path) -> dict[str, Any]:
    """One burst in this process (the child, under valgrind)."""
    window = CallgrindWindow()
    if side == "project":
        url = sqlite_url(work / "service.db")
        return await project_burst(url, runs, 50, 900.0, profiler=window, margin=3.0)
    url = f"sqlite:///{work / 'bare.db'}"
    return await bare_burst(url, runs, 50, "async_row", 900.0, 3.0, profiler=window)


def counted(side: str, runs: int) -> dict[str, Any]:
    """Run one burst of ``side`` under callgrind; the instructions of its window."""
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        out = Path(tmp) / "callgrind.out"
        proc = subprocess.run(
            [
                *VALGRIND,
                f"--callgrind-out-file={out}",
                sys.executable,
                "-m",
                "bench.burst_instructions",
                "--child",
                side,
                "--runs",
                str(runs),
            ],
            capture_output=True,
            text=True,
            timeout=1800,
        )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode or found is None or not int(found.group(1)):
        return {"side": side, "error": f"exit {proc.returncode}: {proc.stderr[-500:]}"}
    instructions = int(found.group(1))
    return {"side": side, "instructions": instructions, "per_run": instructions / runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--side", choices=["project", "asyncio", "both"], default="both")
    parser.add_argument(
        "--jobs", type=int, default=2, choices=[1, 2], help="bursts counted at once"
    )
    parser.add_argument("--child", choices=["project", "asyncio"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.child:
        with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
            result = asyncio.run(one_burst(args.child, args.runs, Path(tmp)))
        if "error" in result:
            sys.exit(f"burst failed: {result['error']}")
        return
    sides = ["project", "asyncio"] if args.side == "both" else [args.side]
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda side: counted(side, args.runs), sides))
    for r in results:
        if "error" in r:
            print(f"{r['side']:8s} ERROR {r['error']}")
        else:
            print(
                f"{r['side']:8s} {r['instructions'] / 1e9:.3f} G instructions, "
                f"{r['per_run'] / 1e6:.2f} M a run"
            )
    per_run = {r["side"]: float(r["per_run"]) for r in results if "per_run" in r}
    if "project" in per_run and "asyncio" in per_run:
        print(f"ratio service / asyncio: {per_run['project'] / per_run['asyncio']:.2f}×")


if __name__ == "__main__":
    main()
