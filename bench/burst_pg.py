"""The 09:00 burst on PostgreSQL replicas: ``python -m bench.burst_pg --tasks 20000 --replicas 3``.

N one-time reminder tasks (the built-in ``reminder_tool``: a real reminder row per run),
spread over N/20 users, all due at one instant, run by R ``task-scheduler run`` processes
with default settings on a fresh PostgreSQL database. Prints one table row:

- last run finished: when the last run's outcome was recorded, after the due instant;
- runs/s: N over that time;
- replica CPU per run: user+system CPU of the replica processes during the burst, per run;
- server CPU per run: CPU of the PostgreSQL backends serving this database, per run
  (each backend's CPU is read every 0.2 s, so one that exits during the burst counts up to
  its last reading);
- connections opened: new server sessions on this database during the burst (a pool
  smaller than the work's concurrency opens and closes connections all the time);
- start lateness p50 / p99: ``started_at - fire_time`` over the runs;
- duplicates / lost: runs or reminders beyond one per task, and tasks without a finished run;
- failed (printed below the row, when any): runs that finished without succeeding, by
  status and error (a run that failed was recorded and notified: not lost, but not a
  reminder either, e.g. a server short of connections for the replicas' pools).

and below it when the leader had claimed half, and all, of the fire times (the runs'
``queued_at``): where that trails the starts, claiming is what the burst waits for.

The tasks are created through the public API by a client process (this one) before the due
instant; the replicas stay idle until then.

``--callgrind DIR`` runs each replica under valgrind's callgrind, instrumented only from
0.5 s before the due instant to the last run, and prints below the row the replicas'
instructions per run: a count the host's load barely moves, where CPU seconds per run on
a two-core host vary by ±20% and rise when replicas outnumber cores. The replicas run
~25× slower, so the row's times and CPU are valgrind's, not the service's; idle work
(polls, heartbeats: ~4 M instructions a second a replica) is counted over that longer
window; and the server is not slowed, so batches differ from a native run's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from bench.callgrind import VALGRIND
from bench.callgrind import switch as callgrind_switch
from bench.probes import percentile
from bench.run import cpu_seconds, pg_database, sync_url
from scheduler_service import SchedulerService
from scheduler_service.config import SchedulerConfig, Settings
from scheduler_service.tools import ToolContext

USERS_PER_TASK = 20  # N tasks over N/20 users (the default quota is 20 tasks a user)


def reminder_task(i: int, due: datetime) -> dict[str, Any]:
    return {
        "name": f"reminder {i}",
        "frequency": "once",
        "scheduled_time": due.isoformat(),
        "execution_mode": "direct",
        "tool_name": "reminder_tool",
        "operation": "add_reminder",
        "parameters": {"title": f"reminder {i}", "date": "today"},
    }


async def create_tasks(url: str, n: int, lead: float | None, parallel: int = 8) -> datetime:
    """Create the N tasks as a client (``enabled=False``: it never runs them), all due at
    one instant: ``lead`` seconds from now, or far enough ahead for the creation rate
    measured on a few warm-up tasks. Returns the due instant."""
    settings = Settings(
        database_url=url,
        scheduler=SchedulerConfig(enabled=False, log_level="WARNING"),
        anthropic_api_key=None,
    )
    async with SchedulerService(settings) as service:

        async def create(queue: list[int], due: datetime, prefix: str) -> None:
            while queue:
                i = queue.pop()
                user = f"{prefix}{i // USERS_PER_TASK}"
                context = ToolContext(user_id=user, conversation_id=f"conv-{user}")
                task = reminder_task(i, due)
                await service.scheduler_tool.run("create_task", task, context=context)

        async def create_all(count: int, due: datetime, prefix: str) -> None:
            queue = list(range(count))
            await asyncio.gather(*(create(queue, due, prefix) for _ in range(parallel)))

        if lead is None:  # warm-up tasks far ahead, never due in the bench
            t0 = time.perf_counter()
            await create_all(200, datetime.now(UTC) + timedelta(days=1), "warmup")
            lead = 3.0 + n / (200 / (time.perf_counter() - t0)) * 1.5
        due = (datetime.now(UTC) + timedelta(seconds=lead)).replace(microsecond=0)
        await create_all(n, due, "user")
    return due


def replica_env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "SCHEDULER__LOG_LEVEL": "WARNING",
        "ANTHROPIC_API_KEY": "",
    }


def start_replicas(
    url: str, count: int, run_for: float, callgrind: Path | None = None
) -> list[subprocess.Popen[str]]:
    exe = shutil.which("task-scheduler") or os.path.join(
        os.path.dirname(sys.executable), "task-scheduler"
    )
    command = [exe, "run", "--run-for", str(run_for)]
    if callgrind is not None:
        callgrind.mkdir(parents=True, exist_ok=True)
        out = callgrind / "replica-%p.out"
        command = [
            *VALGRIND,
            f"--callgrind-out-file={out}",
            sys.executable,
            "-m",
            "scheduler_service",
            *command[1:],
        ]
    procs = [
        subprocess.Popen(
            command,
            env=replica_env(url),
            stdout=subprocess.PIPE,
            stderr=sys.stderr,
            text=True,
        )
        for _ in range(count)
    ]
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "scheduler running" not in line:
            raise RuntimeError(f"a replica did not start: {line!r}")
    return procs


def instructions(directory: Path, procs: list[subprocess.Popen[str]]) -> int:
    """The instructions callgrind counted in the replicas (their output files, written
    at exit; a file per dump or thread is summed). A replica without a count is an
    error, not a zero."""
    total = 0
    for proc in procs:
        counts = [
            int(found.group(1))
            for path in directory.glob(f"replica-{proc.pid}.out*")
            if (found := re.search(r"^totals: (\d+)", path.read_text(), re.M))
        ]
        if not counts:
            raise RuntimeError(f"no callgrind count for replica {proc.pid} in {directory}")
        total += sum(counts)
    return total


def server_pids(engine: Any, database: str) -> list[int]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT pid FROM pg_stat_activity WHERE datname = :d"), {"d": database}
        ).all()
    return [int(r[0]) for r in rows]


def read_cpu(pids: set[int], seen: dict[int, float]) -> None:
    """Each backend's CPU so far into ``seen``; one that exited keeps its last reading."""
    for pid in pids:
        cpu = cpu_seconds(pid)
        if not math.isnan(cpu):
            seen[pid] = cpu


def server_cpu(seen: dict[int, float], base: dict[int, float]) -> float:
    """CPU of the backends since ``base`` (0 for a backend that started after it)."""
    return sum(max(cpu - base.get(p, 0.0), 0.0) for p, cpu in seen.items())


def counts(engine: Any, due: datetime) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM task_scheduler_runs "
                    "WHERE fire_time = :t AND finished_at IS NOT NULL"
                ),
                {"t": due.replace(tzinfo=None)},
            ).scalar_one()
        )


def seconds_after_fire(conn: Any, column: str, fire_time: datetime) -> list[float]:
    """``column - fire_time`` in seconds over the runs of ``fire_time`` that have it,
    in ascending order."""
    query = text(
        f"SELECT extract(epoch FROM {column} - fire_time) FROM task_scheduler_runs "
        f"WHERE fire_time = :t AND {column} IS NOT NULL ORDER BY 1"
    )
    return [float(r[0]) for r in conn.execute(query, {"t": fire_time})]


def outcome(engine: Any, due: datetime, n: int) -> dict[str, Any]:
    naive = due.replace(tzinfo=None)
    with engine.connect() as conn:
        late = seconds_after_fire(conn, "started_at", naive)
        last = conn.execute(
            text("SELECT max(finished_at) FROM task_scheduler_runs WHERE fire_time = :t"),
            {"t": naive},
        ).scalar_one()
        claimed = seconds_after_fire(conn, "queued_at", naive)
        run_dupes = conn.execute(
            text(
                "SELECT coalesce(sum(c - 1), 0) FROM (SELECT count(*) c FROM task_scheduler_runs "
                "WHERE fire_time = :t GROUP BY task_id) x"
            ),
            {"t": naive},
        ).scalar_one()
        reminder_dupes = conn.execute(
            text(
                "SELECT coalesce(sum(c - 1), 0) FROM (SELECT count(*) c FROM "
                "task_scheduler_reminders GROUP BY source_task_id) x"
            )
        ).scalar_one()
        reminders = conn.execute(text("SELECT count(*) FROM task_scheduler_reminders")).scalar_one()
        finished = conn.execute(
            text(
                "SELECT count(DISTINCT task_id) FROM task_scheduler_runs "
                "WHERE fire_time = :t AND finished_at IS NOT NULL"
            ),
            {"t": naive},
        ).scalar_one()
        failed = conn.execute(
            text(
                "SELECT status, left(coalesce(error, ''), 100), count(*) "
                "FROM task_scheduler_runs WHERE fire_time = :t AND finished_at IS NOT NULL "
                "AND status != 'succeeded' GROUP BY 1, 2 ORDER BY 3 DESC"
            ),
            {"t": naive},
        ).all()
    return {
        "last_finish_s": (last.replace(tzinfo=UTC) - due).total_seconds() if last else None,
        "late_p50_s": percentile(late, 50) if late else None,
        "late_p99_s": percentile(late, 99) if late else None,
        # when the leader had claimed half, and all, of the fire times (queued_at)
        "claimed_p50_s": percentile(claimed, 50) if claimed else None,
        "claimed_last_s": claimed[-1] if claimed else None,
        "duplicates": int(run_dupes) + int(reminder_dupes),
        "lost": n - int(finished),
        "failed": [(status, error, int(count)) for status, error, count in failed],
        "reminders": int(reminders),
    }


def spy(pid: int, directory: Path, index: int) -> subprocess.Popen[bytes]:
    """py-spy sampling a replica until interrupted (flame-graph input, collapsed stacks)."""
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"replica-{index}.txt"
    return subprocess.Popen(
        ["py-spy", "record", "-p", str(pid), "-f", "raw", "-r", "250", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def database_counts(engine: Any, database: str) -> tuple[int, int]:
    """Transactions committed and sessions opened in the database so far (the server's
    own counts)."""
    with engine.connect() as conn:
        commits, sessions = conn.execute(
            text("SELECT xact_commit, sessions FROM pg_stat_database WHERE datname = :d"),
            {"d": database},
        ).one()
    return int(commits), int(sessions)


async def burst(
    n: int,
    replicas: int,
    timeout: float,
    lead: float | None,
    profile: Path | None = None,
    callgrind: Path | None = None,
) -> dict[str, Any]:
    with pg_database() as url:
        database = url.rsplit("/", 1)[1]
        engine = create_engine(sync_url(url))
        procs: list[subprocess.Popen[str]] = []
        try:
            procs = start_replicas(url, replicas, run_for=timeout + 600, callgrind=callgrind)
            t0 = time.time()
            due = await create_tasks(url, n, lead)
            created_s = time.time() - t0
            if datetime.now(UTC) > due - timedelta(seconds=1):
                raise RuntimeError(
                    f"creating {n} tasks took {created_s:.1f} s: use a larger --lead"
                )
            await asyncio.sleep((due - datetime.now(UTC)).total_seconds() - 0.5)
            spies = [spy(p.pid, profile, i) for i, p in enumerate(procs)] if profile else []
            if callgrind is not None:
                callgrind_switch([p.pid for p in procs], "on")
            commits0, sessions0 = database_counts(engine, database)
            cpu0 = {p.pid: cpu_seconds(p.pid) for p in procs}
            pids0 = server_pids(engine, database)
            base = {p: cpu_seconds(p) for p in pids0}
            deadline = time.monotonic() + timeout + 1
            pids = set(pids0)
            seen: dict[int, float] = {}
            while time.monotonic() < deadline:
                pids.update(server_pids(engine, database))
                read_cpu(pids, seen)
                if counts(engine, due) >= n:
                    break
                await asyncio.sleep(0.2)
            if callgrind is not None:
                callgrind_switch([p.pid for p in procs], "off")
            replica_cpu = sum(cpu_seconds(p.pid) - cpu0[p.pid] for p in procs)
            read_cpu(pids, seen)
            db_cpu = server_cpu(seen, base)
            commits1, sessions1 = database_counts(engine, database)
            transactions, sessions = commits1 - commits0, sessions1 - sessions0
            for s in spies:
                s.send_signal(signal.SIGINT)
                s.wait(60)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:  # under valgrind a stop is slow, and the count is written at exit
                    proc.wait(30 if callgrind is None else 600)
                except subprocess.TimeoutExpired:
                    proc.kill()
        result = outcome(engine, due, n)
        engine.dispose()
    if callgrind is not None:
        result["replica_instructions_per_run"] = instructions(callgrind, procs) / n
    finish = result["last_finish_s"]
    return {
        "tasks": n,
        "replicas": replicas,
        "created_s": round(created_s, 1),
        **result,
        "runs_per_s": n / finish if finish else None,
        "replica_cpu_ms_per_run": replica_cpu / n * 1000,
        "server_cpu_ms_per_run": db_cpu / n * 1000,
        "transactions_per_run": transactions / n,
        "connections_opened": sessions,
    }


def row(r: dict[str, Any]) -> str:
    def f(v: Any, spec: str) -> str:
        return "—" if v is None else format(v, spec)

    return (
        f"| {r['tasks']:,} | {r['replicas']} | T+{f(r['last_finish_s'], '.1f')} s "
        f"| {f(r['runs_per_s'], '.0f')} | {r['replica_cpu_ms_per_run']:.2f} ms "
        f"| {r['server_cpu_ms_per_run']:.2f} ms "
        f"| {f(r['late_p50_s'], '.1f')} / {f(r['late_p99_s'], '.1f')} s "
        f"| {r['duplicates']} / {r['lost']} | {r['connections_opened']} |"
    )


HEADER = (
    "| N | replicas | last run finished | runs/s | replica CPU per run | server CPU per run "
    "| start lateness p50 / p99 | duplicates / lost | connections opened |"
    "\n|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=600.0, help="bound on the burst, s")
    parser.add_argument("--lead", type=float, help="seconds from start to the due instant")
    parser.add_argument("--json", action="store_true", help="also print the raw result")
    parser.add_argument("--py-spy", type=Path, help="sample each replica with py-spy into DIR")
    parser.add_argument(
        "--callgrind",
        type=Path,
        metavar="DIR",
        help="count each replica's instructions (callgrind), its files in DIR",
    )
    args = parser.parse_args()
    result = asyncio.run(
        burst(args.tasks, args.replicas, args.timeout, args.lead, args.py_spy, args.callgrind)
    )
    print(HEADER)
    print(row(result))
    if result.get("claimed_last_s") is not None:
        print(
            f"claimed: half by T+{result['claimed_p50_s']:.1f} s, "
            f"all by T+{result['claimed_last_s']:.1f} s"
        )
    for status, error, count in result["failed"]:
        print(f"failed: {count} runs {status}: {error}")
    if "replica_instructions_per_run" in result:
        print(f"replica instructions per run: {result['replica_instructions_per_run'] / 1e6:.2f} M")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
