"""The SQLite burst alone: the service beside the asyncio baseline, alternately.

``python -m bench.sqlite_burst --runs 1000 --reps 3 [--subprocess] [--threads]``

Each repetition runs one burst of ``--runs`` one-time tasks on the service (a no-op async
tool, ``max_concurrent_tasks = --concurrency``) and one on the asyncio baseline
(``bench/bare.py``: stock ``AsyncIOScheduler``, default executor, a coroutine job writing
one row through aiosqlite, ``misfire_grace_time=None``), each on a fresh SQLite file; the
order alternates (A B, B A, ...) so a drift of the shared host's load hits both alike.
``--threads`` adds the thread-pool baseline (sync job writing one row) to each repetition,
``--engine`` the asyncio baseline writing through an async SQLAlchemy engine (default pool)
instead of one shared aiosqlite connection;
``--subprocess`` runs every burst in a fresh interpreter (no heap, threads or caches
carried over from the previous one). It prints, for each side, due → last run recorded
and CPU per run (median, min–max), the ratio of the medians and the median of the
per-repetition ratios (the burst target is ≤ 1.5×).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.probes import spread
from bench.run import bare_burst, project_burst, retried, say, sqlite_url

SIDES = {
    "project": "service",
    "asyncio": "bare asyncio (aiosqlite row)",
    "threads": "bare threads (row)",
    "engine": "bare asyncio (async engine row)",
}


async def one(side: str, work: Path, runs: int, concurrency: int, timeout: float) -> dict[str, Any]:
    """One burst of ``side`` on a fresh SQLite file in ``work``."""
    path = work / f"{side}-{time.monotonic_ns()}.db"
    if side == "project":
        return await retried(
            lambda k, m: project_burst(
                sqlite_url(path.with_suffix(f".{k}.db")), runs, concurrency, timeout, margin=m
            )
        )
    kind = {"asyncio": "async_row", "engine": "async_engine_row", "threads": "row"}[side]
    return await retried(
        lambda k, m: bare_burst(
            f"sqlite:///{path.with_suffix(f'.{k}.db')}", runs, concurrency, kind, timeout, m
        ),
        1.4,
    )


async def in_subprocess(side: str, runs: int, concurrency: int, timeout: float) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.sqlite_burst",
        "--one",
        side,
        "--runs",
        str(runs),
        "--concurrency",
        str(concurrency),
        "--timeout",
        str(timeout),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        return {"error": f"subprocess exited {proc.returncode}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


async def alternate(args: argparse.Namespace, work: Path) -> dict[str, list[dict[str, Any]]]:
    sides = ["project", "asyncio"] + (["threads"] if args.threads else [])
    sides += ["engine"] if args.engine else []
    res: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    for rep in range(args.reps):
        order = sides if rep % 2 == 0 else list(reversed(sides))
        for side in order:
            if args.subprocess:
                r = await in_subprocess(side, args.runs, args.concurrency, args.timeout)
            else:
                r = await one(side, work, args.runs, args.concurrency, args.timeout)
            res[side].append(r)
            say(
                f"rep {rep + 1}/{args.reps} {side:8s} recorded {r.get('recorded_s', math.nan):.3f} s"
                f"  started {r.get('started_s', math.nan):.3f} s"
                f"  CPU/run {r.get('cpu_ms_per_run', math.nan):.2f} ms"
                f"  load {os.getloadavg()[0]:.2f}"
                + (f"  ERROR {r['error']}" if "error" in r else "")
            )
    return res


def summary(res: dict[str, list[dict[str, Any]]]) -> list[str]:
    def values(side: str, key: str) -> list[float]:
        return [float(r.get(key, math.nan)) for r in res[side]]

    def cell(vals: list[float], unit: str, digits: int) -> str:
        s = spread(vals)
        if not s["n"]:
            return "—"
        return f"{s['median']:.{digits}f} {unit} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"

    lines = []
    for key, unit, digits in (
        ("recorded_s", "s", 3),
        ("started_s", "s", 3),
        ("cpu_ms_per_run", "ms", 2),
    ):
        lines.append(key)
        for side in res:
            lines.append(f"  {SIDES[side]:30s} {cell(values(side, key), unit, digits)}")
        mine = values("project", key)
        for side in res:
            if side == "project":
                continue
            base = values(side, key)
            m, b = spread(mine)["median"], spread(base)["median"]
            paired = [x / y for x, y in zip(mine, base, strict=True) if y and not math.isnan(x / y)]
            lines.append(
                f"  ratio service / {side}: {m / b if b else math.nan:.2f}× of medians; "
                f"per repetition {', '.join(f'{p:.2f}' for p in paired)} "
                f"(median {spread(paired)['median']:.2f}×)"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=50, help="max_concurrent_tasks")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--subprocess", action="store_true", help="each burst in a fresh process")
    parser.add_argument("--threads", action="store_true", help="also the thread-pool baseline")
    parser.add_argument(
        "--engine", action="store_true", help="also the asyncio baseline through an async engine"
    )
    parser.add_argument("--json", type=Path, help="write every raw result here")
    parser.add_argument("--one", choices=sorted(SIDES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-burst-") as tmp:
        if args.one:  # a child of --subprocess: one burst, one JSON line
            result = asyncio.run(
                one(args.one, Path(tmp), args.runs, args.concurrency, args.timeout)
            )
            print(json.dumps(result, default=str), flush=True)
            return
        load = os.getloadavg()
        res = asyncio.run(alternate(args, Path(tmp)))
    print(
        f"\nburst {args.runs:,}, {args.reps} reps, "
        f"{'fresh process each' if args.subprocess else 'one process'}, "
        f"load {load[0]:.2f} → {os.getloadavg()[0]:.2f}; median (min–max)"
    )
    print("\n".join(summary(res)))
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args), "raw": res}, default=str, indent=1))


if __name__ == "__main__":
    main()
