"""Several replicas on one PostgreSQL database, with the leader killed again and again.

Real replica processes (``tests.replica_worker``) on a fresh database. Their test tool
writes each side effect to a file (fsync) before it returns, so the file is the truth
about what acted, whatever the database says. Checked at the end, with every replica
stopped:

* every fire time of every task has exactly one final outcome, and none is skipped over
  between the first and the last fire time recorded — nothing lost, nothing doubled;
* at most one side effect per fire time; every ``succeeded`` run has its side effect;
* no run is left queued or running;
* takeover (kill -9 of the leader → first side effect by the new one) is measured.

Also: 50 creates at once, spread over three replicas, against a quota of 20 make 20; and
a burst of runs that take time spreads over all three replicas, none running more than
its ``max_concurrent_tasks`` at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

import pytest

from tests.workers import Worker

pytestmark = pytest.mark.processes

FINAL = {"succeeded", "failed", "interrupted", "missed", "timed_out", "skipped"}
REPLICA_ENV = {
    "SCHEDULER__LOG_LEVEL": "WARNING",
    "SCHEDULER__SHUTDOWN_GRACE": "2",
    "SCHEDULER__MIN_INTERVAL": "1",
    "SCHEDULER__CHECK_INTERVAL": "2",
    "SCHEDULER__MISFIRE_GRACE_TIME": "3",
    "SCHEDULER_TOOL__MAX_TASKS_PER_USER": "20",
}
TASKS, EVERY, KILLS = 8, 1, 5
SLOTS, BURST, HOLD = 3, 45, 0.5  # a replica's slots; one-time tasks; s each run takes


def plain_url(async_url: str) -> str:
    return async_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def rows(url: str, sql: str) -> list[dict[str, Any]]:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(plain_url(url), row_factory=dict_row) as conn:
        return list(conn.execute(sql))  # type: ignore[arg-type]


def effects(side: Path) -> list[dict[str, Any]]:
    lines = side.read_text().splitlines() if side.exists() else []
    return [json.loads(line) for line in lines]


def utc(value: str | datetime) -> datetime:
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@contextlib.asynccontextmanager
async def replicas(
    url: str, side: Path, count: int, env: dict[str, str] = REPLICA_ENV
) -> AsyncIterator[list[Worker]]:
    started = [await spawn(url, side, env) for _ in range(count)]
    try:
        yield started
    finally:
        await asyncio.gather(*(w.stop() for w in started))


async def spawn(url: str, side: Path, env: dict[str, str] = REPLICA_ENV) -> Worker:
    return await Worker.spawn(
        "tests.replica_worker", url, str(side), "--leader-retry", "0.5", env=env
    )


async def leader_of(group: list[Worker], timeout: float = 15) -> Worker:
    """The live replica that has announced it leads (waiting until one does)."""
    async with asyncio.timeout(timeout):
        while True:
            for worker in group:
                if worker.alive and worker.named("leader"):
                    return worker
            await asyncio.sleep(0.05)  # events of several processes: no single one to await


async def first_effect_after(side: Path, since: float, timeout: float = 20) -> float:
    """When the first run of a fire time due after ``since`` acted: whoever claimed it
    was leading after ``since`` (runs queued earlier may still be finishing elsewhere)."""
    async with asyncio.timeout(timeout):
        while True:
            later = [e["at"] for e in effects(side) if utc(e["fire_time"]).timestamp() > since]
            if later:
                return min(later)
            await asyncio.sleep(0.02)  # another process's file: polled


async def settled(url: str, timeout: float) -> None:
    """Until no run is queued or running (rows other processes write: polled)."""
    active = "select id from task_scheduler_runs where status in ('queued', 'running')"
    async with asyncio.timeout(timeout):
        while rows(url, active):  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def finished(url: str, runs: int, timeout: float) -> None:
    """Until ``runs`` runs have a final status (rows other processes write: polled)."""
    final = ", ".join(f"'{status}'" for status in sorted(FINAL))
    done = f"select count(*) as n from task_scheduler_runs where status in ({final})"
    async with asyncio.timeout(timeout):
        while rows(url, done)[0]["n"] < runs:  # noqa: ASYNC110
            await asyncio.sleep(0.1)


def check_outcomes(url: str, side: Path) -> Counter[str]:
    runs = rows(url, "select * from task_scheduler_runs")
    assert not [r for r in runs if r["status"] not in FINAL], "a run was left queued/running"
    final: dict[tuple[str, datetime], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        details = run["details"] or {}
        if "retry_at" in details:
            continue
        final[(run["task_id"], utc(run["fire_time"]))].append(run)
    doubled = {k: [r["status"] for r in v] for k, v in final.items() if len(v) > 1}
    assert not doubled, f"fire times with several final outcomes: {doubled}"

    by_task: dict[str, list[datetime]] = defaultdict(list)
    for task_id, fire in final:
        by_task[task_id].append(fire)
    for task_id, fires in by_task.items():  # a fire time every EVERY s: no gap in between
        fires.sort()
        gaps = [b - a for a, b in itertools.pairwise(fires)]
        assert all(g == timedelta(seconds=EVERY) for g in gaps), f"{task_id}: lost fire times"

    acted = Counter((e["task_id"], utc(e["fire_time"])) for e in effects(side))
    assert max(acted.values(), default=0) <= 1, "a fire time acted twice"
    for run in runs:
        if run["status"] == "succeeded":
            assert (run["task_id"], utc(run["fire_time"])) in acted
    assert set(acted) <= set(final), "a side effect without a run row"
    return Counter(v[0]["status"] for v in final.values())


async def test_three_replicas_leader_killed_five_times(pg_url: str, tmp_path: Path) -> None:
    side = tmp_path / "effects.jsonl"
    takeovers: list[float] = []
    async with replicas(pg_url, side, 3) as group:
        for worker in group:
            await worker.event("ready", timeout=30)
        await group[0].send("create", count=TASKS, every=EVERY)
        await group[0].event("created", timeout=30)
        await first_effect_after(side, 0)
        for _ in range(KILLS):
            leader = await leader_of(group)
            await asyncio.sleep(1.0)  # let it run a while: runs in flight when it dies
            killed_at = time.time()
            await leader.kill()
            group.remove(leader)
            group.append(await spawn(pg_url, side))
            takeovers.append(await first_effect_after(side, killed_at) - killed_at)
        await leader_of(group)
        await asyncio.sleep(1.0)
        live = next(w for w in group if w.alive)
        await live.send("pause_all")
        await live.event("paused", timeout=30)
        await settled(pg_url, timeout=30)  # queued runs are taken and finished
    outcomes = check_outcomes(pg_url, side)
    assert outcomes["succeeded"] > TASKS * KILLS
    # Takeover time is measured here and reported (docs/deployment.md, bench); asserted
    # only as a bound a loaded CI machine keeps: a replica that never took over fails.
    assert max(takeovers) <= 10.0, takeovers
    print(
        f"\ntakeover after kill -9 (s): min {min(takeovers):.2f} median {median(takeovers):.2f} "
        f"max {max(takeovers):.2f}; final outcomes {dict(outcomes)}"
    )


@pytest.mark.parametrize("processes", [1, 3])
async def test_concurrent_creates_across_replicas_respect_the_quota(
    pg_url: str, tmp_path: Path, processes: int
) -> None:
    side = tmp_path / "effects.jsonl"
    async with replicas(pg_url, side, processes) as group:
        for worker in group:
            await worker.event("ready", timeout=30)
        share = 50 // processes + 1
        for worker in group:
            await worker.send("create_many", count=share)
        results = [await w.event("created_many", timeout=60) for w in group]
    assert sum(r["ok"] for r in results) == 20, results
    stored = rows(
        pg_url, "select count(*) as n from task_scheduler_tasks where user_id = 'replica'"
    )
    assert stored[0]["n"] == 20


async def test_a_burst_of_slow_runs_spreads_over_three_replicas_within_their_slots(
    pg_url: str, tmp_path: Path
) -> None:
    """Every replica, not only the leader, takes queued runs; none has more than its
    ``max_concurrent_tasks`` runs in the tool at once, nor takes runs it has no free slot
    for (they would wait in its slot queue while another replica's slots are free);
    every fire time runs exactly once.

    One replica alone would need BURST * HOLD / SLOTS s (7.5 s): many times what the
    others take to wake up (a notification, at worst the queue's one-second poll), so
    each of them gets runs however loaded the machine is."""
    side = tmp_path / "effects.jsonl"
    env = {
        **REPLICA_ENV,
        "SCHEDULER__MAX_CONCURRENT_TASKS": str(SLOTS),
        "SCHEDULER__MISFIRE_GRACE_TIME": "600",  # a run waiting in the queue is still due
        "SCHEDULER_TOOL__MAX_TASKS_PER_USER": str(BURST),
    }
    async with replicas(pg_url, side, 3, env) as group:
        for worker in group:
            await worker.event("ready", timeout=30)
        await group[0].send("burst", count=BURST, hold=HOLD)
        made = await group[0].event("burst", timeout=60)
        await finished(pg_url, BURST, timeout=120)
    runs = rows(pg_url, "select * from task_scheduler_runs")
    assert sorted(r["task_id"] for r in runs) == sorted(made["task_ids"]), "one run a task"
    assert {r["status"] for r in runs} == {"succeeded"}
    assert {utc(r["fire_time"]) for r in runs} == {utc(made["due"])}
    acted = effects(side)
    assert sorted(e["task_id"] for e in acted) == sorted(made["task_ids"]), "one effect each"
    by_replica: dict[int, list[int]] = defaultdict(list)
    for effect in acted:
        by_replica[effect["pid"]].append(effect["at_once"])
    assert set(by_replica) == {w.pid for w in group}, "a replica ran none of the burst"
    assert len({r["worker"] for r in runs}) == 3
    peaks = {pid: max(at_once) for pid, at_once in by_replica.items()}
    assert max(peaks.values()) <= SLOTS, peaks
    waited = [(e["pid"], e["waiting"]) for e in acted if e["waiting"]]
    assert not waited, f"taken without a free slot (pid, runs waiting): {waited[:5]}"
    print(f"\nruns per replica {sorted(len(v) for v in by_replica.values())}; peaks {peaks}")
