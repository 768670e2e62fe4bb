"""Roles across real processes: operators' commands and client processes during a
backlog take no run (both backends), and a rolling restart in the middle of a burst
loses and doubles nothing (PostgreSQL, three workers).

The workers are ``tests.replica_worker`` processes, whose tool writes each side effect
to a file with fsync: the file is the truth about what acted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.processes.test_replicas import FINAL, REPLICA_ENV, effects, spawn, utc
from tests.workers import ROOT

pytestmark = pytest.mark.processes

BACKLOG_ENV = {
    **REPLICA_ENV,
    "SCHEDULER__MAX_CONCURRENT_TASKS": "5",
    "SCHEDULER__MISFIRE_GRACE_TIME": "600",  # a run waiting for a slot is still due
    "SCHEDULER_TOOL__MAX_TASKS_PER_USER": "2500",
}


def sync_rows(url: str, sql: str) -> list[dict[str, object]]:
    """Rows of another process's database, SQLite or PostgreSQL."""
    from sqlalchemy import create_engine, text

    from scheduler_service.storage.db import sync_url

    engine = create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql))
            return [dict(row._mapping) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


async def finished(url: str, runs: int, timeout: float) -> None:
    """Until ``runs`` runs have a final status (rows other processes write: polled)."""
    final = ", ".join(f"'{status}'" for status in sorted(FINAL))
    done = f"select count(*) as n from task_scheduler_runs where status in ({final})"
    async with asyncio.timeout(timeout):
        while int(str(sync_rows(url, done)[0]["n"])) < runs:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def cli(url: str, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``python -m scheduler_service ARGV`` as an operator runs it: a separate process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "scheduler_service", *argv, "--database-url", url,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_operator_commands_during_a_backlog_take_no_run(
    database_url: str, tmp_path: Path
) -> None:
    """One worker with 5 slots, 20 runs of 1 s due together; while they wait, read-only
    commands and a client `tool` call run in their own processes. All 20 succeed, each
    executed once, by the worker."""
    side = tmp_path / "effects.jsonl"
    worker = await spawn(database_url, side, BACKLOG_ENV)
    try:
        ready = await worker.event("ready", timeout=30)
        await worker.send("burst", count=20, hold=1.0)
        made = await worker.event("burst", timeout=60)

        async def backlog_started() -> bool:
            return len(effects(side)) >= 1

        async with asyncio.timeout(30):
            while not await backlog_started():  # noqa: ASYNC110 (another process's file)
                await asyncio.sleep(0.05)
        results = await asyncio.gather(
            cli(database_url, "tasks", "--user", "nobody"),
            cli(database_url, "tasks", "--user", "nobody", "--json"),
            cli(database_url, "workers", "--json"),
            cli(database_url, "tool", "get_tasks", "--user", "nobody"),
        )
        assert [code for code, _ in results] == [0, 0, 0, 0], results
        await finished(database_url, 20, timeout=60)
    finally:
        await worker.stop()
    runs = sync_rows(database_url, "select task_id, status, worker from task_scheduler_runs")
    assert sorted(str(r["task_id"]) for r in runs) == sorted(made["task_ids"])
    assert {r["status"] for r in runs} == {"succeeded"}
    assert {r["worker"] for r in runs} == {ready["worker"]}
    acted = [e["task_id"] for e in effects(side)]
    assert sorted(acted) == sorted(made["task_ids"])


async def test_a_rolling_restart_in_the_middle_of_a_burst_loses_and_doubles_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    """Three workers, 2,000 one-time reminders due at one instant; a second into the
    burst one worker gets SIGTERM and a new one starts. Every task succeeds exactly
    once: the stopping worker hands its unstarted runs back instead of interrupting
    them."""
    side = tmp_path / "effects.jsonl"
    count = 2000
    group = [await spawn(pg_url, side, BACKLOG_ENV) for _ in range(3)]
    try:
        for worker in group:
            await worker.event("ready", timeout=30)
        await group[0].send("burst", count=count, hold=0.0)
        made = await group[0].event("burst", timeout=240)
        due = utc(made["due"]).timestamp()

        async with asyncio.timeout(max(0.0, due - time.time()) + 60):  # due: after the creates
            while len(effects(side)) < 50:  # noqa: ASYNC110 (another process's file)
                await asyncio.sleep(0.05)
        stopping = group[1]
        stopping.proc.send_signal(signal.SIGTERM)
        group.append(await spawn(pg_url, side, BACKLOG_ENV))
        await stopping.event("stopped", timeout=30)
        await finished(pg_url, count, timeout=180)
    finally:
        await asyncio.gather(*(w.stop() for w in group))
    runs = sync_rows(pg_url, "select task_id, status from task_scheduler_runs")
    assert len(runs) == count and {r["status"] for r in runs} == {"succeeded"}, {
        str(r["status"]) for r in runs
    }
    assert sorted(str(r["task_id"]) for r in runs) == sorted(made["task_ids"])
    acted = [e["task_id"] for e in effects(side)]
    assert sorted(acted) == sorted(made["task_ids"]), "a reminder sent twice, or never"
    last = max(e["at"] for e in effects(side))
    print(f"\n{count} runs, one worker restarted mid-burst: last effect T+{last - due:.1f} s")


async def test_two_processes_running_one_task_now_at_one_instant_get_one_run(
    database_url: str, tmp_path: Path
) -> None:
    """Two operators' shells run the same task now at the same instant, twenty times
    over: each time one run is queued and the other shell is refused (the claim is the
    fence), whichever process gets there first."""
    created = await cli(
        database_url, "tool", "create_task",
        '{"name": "twice?", "frequency": "daily", "scheduled_time": "09:00", '
        '"tool_name": "reminder_tool", "operation": "get_reminders"}',
        "--user", "u1", "--json",
    )  # fmt: skip
    assert created[0] == 0, created[1]
    task_id = json.loads(created[1])["task"]["task_id"]
    env = {"LIMITS__MANUAL_RUN_INTERVAL": "0"}
    for _ in range(20):
        answers = await asyncio.gather(
            cli(database_url, "run-now", task_id, "--no-wait", env=env),
            cli(database_url, "run-now", task_id, "--no-wait", env=env),
        )
        codes = sorted(code for code, _ in answers)
        assert codes == [0, 1], answers
        assert "already running" in next(out for code, out in answers if code == 1)
        sync_rows(database_url, "delete from task_scheduler_runs")  # nobody runs them: clear
    runs = sync_rows(database_url, "select id from task_scheduler_runs")
    assert runs == []
