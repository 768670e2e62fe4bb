"""What one burst costs, run by run: statements, commits and thread hops, and where the
loop's time goes.

``python -m bench.burst_anatomy --runs 1000 [--side project|asyncio] [--spy out.raw]``

Runs one SQLite burst (the service, or the asyncio baseline of ``bench/bare.py``) and
counts, from 0.3 s before the due instant to the last run recorded:

* SQL statements by verb and commits, split by thread (on the event-loop thread a sync
  statement blocks the loop; elsewhere it is a worker thread's), from SQLAlchemy's
  ``Engine`` events (every sync engine, and the sync side of every async engine);
* thread hops: calls handed to an aiosqlite connection's thread (each a round trip:
  queued there, the result handed back through ``call_soon_threadsafe``) and
  ``run_in_executor`` calls (``asyncio.to_thread`` among them);

each divided by the runs. ``--spy PATH`` also attaches py-spy (``PY_SPY``, default
``py-spy`` on ``PATH``) to this process for that window only, samples every thread at
``--rate`` Hz (on-CPU samples only), writes its raw stacks to PATH and prints each thread's
busy share of the window and the frames the loop thread spends most samples in.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import event
from sqlalchemy.engine import Engine

from bench.run import bare_burst, project_burst, retried, sqlite_url


class Counters:
    """Counts statements, commits and hops while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.loop_thread = threading.get_ident()
        self.counts: collections.Counter[str] = collections.Counter()
        self.window = (0.0, 0.0)

    def where(self) -> str:
        return "loop" if threading.get_ident() == self.loop_thread else "thread"

    def add(self, key: str) -> None:
        if self.on:
            self.counts[key] += 1

    def install(self) -> Callable[[], None]:
        """Hooks SQLAlchemy, aiosqlite and the loop's executor; returns the undo."""

        def on_execute(_conn: Any, _cursor: Any, statement: str, *_a: Any) -> None:
            verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
            self.add(f"sql {verb} ({self.where()})")

        def on_commit(_conn: Any) -> None:
            self.add(f"commit ({self.where()})")

        event.listen(Engine, "before_cursor_execute", on_execute)
        event.listen(Engine, "commit", on_commit)
        original_execute: Any = aiosqlite.Connection._execute
        counters = self

        async def counted_execute(conn: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
            name = getattr(fn, "__name__", type(fn).__name__)
            counters.add(f"aiosqlite hop: {name}")
            return await original_execute(conn, fn, *args, **kwargs)

        aiosqlite.Connection._execute = counted_execute  # type: ignore[method-assign,assignment]
        original_rie = asyncio.BaseEventLoop.run_in_executor

        def counted_rie(loop: Any, executor: Any, func: Any, *args: Any) -> Any:
            target = func  # to_thread hands over partial(context.run, target, ...)
            if getattr(getattr(func, "func", None), "__name__", "") == "run" and func.args:
                target = func.args[0]
            target = getattr(target, "func", target)  # a partial of the target itself
            counters.add(f"run_in_executor: {getattr(target, '__qualname__', target)}")
            return original_rie(loop, executor, func, *args)

        asyncio.BaseEventLoop.run_in_executor = counted_rie  # type: ignore[method-assign,assignment]

        def undo() -> None:
            event.remove(Engine, "before_cursor_execute", on_execute)
            event.remove(Engine, "commit", on_commit)
            aiosqlite.Connection._execute = original_execute  # type: ignore[method-assign]
            asyncio.BaseEventLoop.run_in_executor = original_rie  # type: ignore[method-assign]

        return undo


class Window:
    """The ``profiler`` that ``project_burst``/``bare_burst`` start 0.3 s before the due
    instant and stop after the last run: turns the counters (and py-spy) on and off."""

    def __init__(self, counters: Counters, spy: Path | None, rate: int) -> None:
        self.counters, self.spy, self.rate = counters, spy, rate
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.spy is not None:
            exe = os.environ.get("PY_SPY") or shutil.which("py-spy") or "py-spy"
            command = [exe, "record", "--pid", str(os.getpid()), "--threads", "--nonblocking"]
            command += ["--rate", str(self.rate), "--format", "raw", "--output", str(self.spy)]
            self.proc = subprocess.Popen(
                command,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        self.counters.on = True
        self.counters.window = (time.perf_counter(), 0.0)

    def stop(self) -> None:
        self.counters.on = False
        self.counters.window = (self.counters.window[0], time.perf_counter())
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
            self.proc.wait(60)


def spy_report(path: Path, seconds: float, rate: int, top: int = 25) -> list[str]:
    """Per-thread busy share of the window, and the loop thread's frames (inclusive, each
    counted once per stack; and leaf)."""
    per_thread: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    main_tid = ""
    for line in path.read_text().splitlines():
        stack, _, n_text = line.rpartition(" ")
        frames, n = stack.split(";"), int(n_text)
        thread = frames[0]
        if not main_tid and any("MainThread" in f for f in frames[:2]):
            main_tid = thread
        per_thread[thread] += n
        if thread != main_tid and main_tid:
            continue
        code = [f for f in frames[1:] if "(" in f and "thread (" not in f]
        if code:
            leaf[re.sub(r":\d+\)$", ")", code[-1])] += n
        for f in {re.sub(r":\d+\)$", ")", f) for f in code}:
            inclusive[f] += n
    window = max(seconds * rate, 1.0)
    out = [f"py-spy: {seconds:.2f} s window at {rate} Hz; on-CPU share of the window per thread:"]
    for thread, n in per_thread.most_common(8):
        tag = " (loop)" if thread == main_tid else ""
        out.append(f"  {n / window * 100:5.1f}%  {thread}{tag}")
    main = per_thread[main_tid] or 1
    out.append(f"loop thread, inclusive (% of its {main} samples):")
    for frame, n in inclusive.most_common(top * 3):
        if any(s in frame for s in ("scheduler_service", "apscheduler", "bench/", "sqlalchemy")):
            out.append(f"  {n / main * 100:5.1f}%  {frame}")
    out.append("loop thread, leaf frames:")
    for frame, n in leaf.most_common(top):
        out.append(f"  {n / main * 100:5.1f}%  {frame}")
    return out


async def burst(side: str, work: Path, args: argparse.Namespace, window: Window) -> dict[str, Any]:
    if side == "project":
        return await retried(
            lambda k, m: project_burst(
                sqlite_url(work / f"anatomy-{k}.db"),
                args.runs,
                args.concurrency,
                args.timeout,
                window,
                margin=m,
            )
        )
    return await retried(
        lambda k, m: bare_burst(
            f"sqlite:///{work / f'anatomy-bare-{k}.db'}",
            args.runs,
            args.concurrency,
            "async_row",
            args.timeout,
            m,
            window,
        ),
        1.4,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--side", choices=["project", "asyncio"], default="project")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--spy", type=Path, help="also sample with py-spy; raw stacks here")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    counters = Counters()
    window = Window(counters, args.spy, args.rate)
    undo = counters.install()
    with tempfile.TemporaryDirectory(prefix="bench-anatomy-") as tmp:
        try:
            result = asyncio.run(burst(args.side, Path(tmp), args, window))
        finally:
            undo()
    seconds = counters.window[1] - counters.window[0]
    print(
        f"{args.side}: burst {args.runs:,}: recorded {result.get('recorded_s', math.nan):.3f} s, "
        f"started {result.get('started_s', math.nan):.3f} s, first started "
        f"{result.get('first_start_s', math.nan):.3f} s, CPU {result.get('cpu_ms_per_run', 0):.2f}"
        f" ms/run, load {os.getloadavg()[0]:.2f}"
        + (f"; {result['error']}" if "error" in result else "")
    )
    print(f"per run, over the {seconds:.2f} s window:")
    for key, n in sorted(counters.counts.items(), key=lambda kv: -kv[1]):
        print(f"  {n / args.runs:7.2f}  {key}")
    if args.spy is not None and args.spy.exists():
        print("\n".join(spy_report(args.spy, seconds, args.rate)))


if __name__ == "__main__":
    main()
