"""kill -9 in the middle of a burst of runs, then restart: nothing runs twice, nothing is lost.

The service runs as a real subprocess (``tests.fault_worker``) on a real SQLite file. Its
test tool appends each side effect (task, fire time, attempt, pid) to a separate file
with fsync before returning, and the worker appends each task ``create_task`` acknowledged
to another. The worker starts the burst after a lead it measures on the machine as it is,
so a loaded machine makes the test slower, not wrong. We kill the process with SIGKILL
once every task is created and a third of the runs have acted, start it again, let it
finish, and check the invariants on the acknowledged tasks:

* every fire time has exactly one final outcome row (succeeded, failed, interrupted or
  missed) and no row is left queued or running — no fire time vanished;
* at most one side effect per fire time (at-most-once: a run killed after acting is
  recorded ``interrupted`` at restart and not run again);
* every ``succeeded`` row has its side effect.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNS = 200
KILL_AFTER = RUNS // 3  # side effects seen before the kill
FINAL = {"succeeded", "failed", "interrupted", "missed", "timed_out", "skipped"}
WORKER_ENV = {
    "SCHEDULER__CHECK_INTERVAL": "1",
    "SCHEDULER__MAX_CONCURRENT_TASKS": "8",
    "SCHEDULER__MISFIRE_GRACE_TIME": "2",  # some late runs still run, some are missed
    "SCHEDULER__RETRY_BACKOFF_BASE": "0.3",
    "SCHEDULER__SHUTDOWN_GRACE": "1",
    "SCHEDULER__MIN_INTERVAL": "1",
    "SCHEDULER__LOG_LEVEL": "WARNING",
    "SCHEDULER_TOOL__MAX_TASKS_PER_USER": str(RUNS + 10),
}

pytestmark = [
    pytest.mark.processes,
    pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL"),
]


async def start_worker(db: Path, side: Path, *args: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC", "SCHEDULER"))}
    env.update(WORKER_ENV)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fault_worker",
        str(db),
        str(side),
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )


async def read_until(
    proc: asyncio.subprocess.Process, done: Callable[[Counter[str]], bool], timeout: float
) -> Counter[str]:
    """Read the worker's event lines until ``done(counts)`` is true."""
    assert proc.stdout is not None
    counts: Counter[str] = Counter()
    async with asyncio.timeout(timeout):
        while not done(counts):
            line = await proc.stdout.readline()
            if not line:
                raise AssertionError(f"worker exited early (code {await proc.wait()})")
            counts[line.decode().strip()] += 1
    return counts


def utc(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def load_db(db: Path) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        tasks = {r["id"]: dict(r) for r in conn.execute("select * from task_scheduler_tasks")}
        runs = [dict(r) for r in conn.execute("select * from task_scheduler_runs")]
    return tasks, runs


def load_lines(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines]


def check_invariants(db: Path, side: Path, acks: Path) -> dict[str, Any]:
    tasks, runs = load_db(db)
    effects = load_lines(side)
    acked = {ack["task_id"] for ack in load_lines(acks)}
    assert set(tasks) == acked, "the tasks stored are not the tasks acknowledged"
    assert not [t for t in tasks.values() if t["status"] == "scheduled"]
    assert not [r for r in runs if r["status"] not in FINAL], "a run was left queued/running"

    by_fire: dict[tuple[str, datetime], list[dict[str, Any]]] = {}
    for run in runs:
        by_fire.setdefault((run["task_id"], utc(run["fire_time"])), []).append(run)
    for task in tasks.values():  # each once task's fire time has rows: nothing vanished
        assert (task["id"], utc(task["start_at"])) in by_fire, f"fire time of {task['id']} lost"
    outcomes: Counter[str] = Counter()
    for key, rows in by_fire.items():
        final = [r for r in rows if "retry_at" not in json.loads(r["details"] or "{}")]
        assert len(final) == 1, f"{key}: final rows {[(r['attempt'], r['status']) for r in final]}"
        assert final[0]["attempt"] == max(r["attempt"] for r in rows)
        outcomes[final[0]["status"]] += 1

    per_fire = Counter((e["task_id"], utc(e["fire_time"])) for e in effects)
    assert max(per_fire.values(), default=0) <= 1, "a fire time acted twice"
    acted = {(e["task_id"], utc(e["fire_time"]), e["attempt"]) for e in effects}
    for run in runs:
        if run["status"] == "succeeded":
            assert (run["task_id"], utc(run["fire_time"]), run["attempt"]) in acted
    assert set(per_fire) <= set(by_fire), "a side effect without a claimed run"
    return {
        "outcomes": outcomes,
        "pids": Counter(e["pid"] for e in effects),
    }


def created_and_acted(counts: Counter[str]) -> bool:
    """All creates answered (``ready``) and a third of the burst has acted."""
    return counts["ready"] > 0 and counts["effect"] >= KILL_AFTER


async def test_kill_9_mid_burst_then_restart(tmp_path: Path) -> None:
    db, side, acks = tmp_path / "tasks.db", tmp_path / "effects.jsonl", tmp_path / "acks.jsonl"
    create = ("--create", str(RUNS), "--spread", "3", "--acks", str(acks))
    first = await start_worker(db, side, *create)
    try:
        seen = await read_until(first, created_and_acted, timeout=90)
    finally:
        first.send_signal(signal.SIGKILL)
        await first.wait()
    acked, killed_at = len(load_lines(acks)), len(load_lines(side))
    assert acked + seen["past"] == RUNS, "a create was neither acknowledged nor refused"
    assert acked > KILL_AFTER, f"{seen['past']} of {RUNS} creates came too late to test"
    assert killed_at < acked, "the burst finished before the kill"

    second = await start_worker(db, side)
    try:
        await read_until(second, lambda c: c["finished"] > 0, timeout=90)
        assert await asyncio.wait_for(second.wait(), 10) == 0
    finally:
        if second.returncode is None:
            second.kill()
            await second.wait()

    summary = check_invariants(db, side, acks)
    assert summary["pids"][first.pid] == killed_at
    print(
        f"{acked} tasks acknowledged ({seen['past']} refused as past); killed after "
        f"{killed_at} side effects; final outcomes {dict(summary['outcomes'])}"
    )
