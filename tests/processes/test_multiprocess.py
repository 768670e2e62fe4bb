"""Several processes on one database: one leader schedules, the others stand by.

Real worker processes (``tests.multiprocess_worker``) on one SQLite file, driven through
stdin and observed through their stdout events and the database rows:

* exactly one of two processes started together (on a fresh file) leads; tasks created
  through the standby's ``scheduler_tool`` run once each, in the leader, on time — the
  leader notices them by its job-store poll, not at its next check_interval (60 s here);
* after kill -9 of the leader the standby takes over, runs the remaining tasks, marks
  the dead leader's run ``interrupted`` and leaves its own manual run alone.

Then in one process: two services on one file, and two on one PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median
from typing import Any

import pytest
from apscheduler.schedulers.base import STATE_PAUSED
from sqlalchemy import select, text

from config import SchedulerConfig, Settings
from scheduler_service import SchedulerService
from scheduler_service.cluster.leadership import FileLeadership
from scheduler_service.statuses import ACTIVE_RUN
from scheduler_service.storage.models import ScheduledTask, TaskRun, new_id, utcnow
from tests.conftest import RecordingTool, make_settings, wait_for
from tests.workers import Event, Worker
from tools import ToolContext

CTX = ToolContext(user_id="u1", conversation_id="c1")
WORKER_ENV = {
    "SCHEDULER__LOG_LEVEL": "WARNING",
    "SCHEDULER__SHUTDOWN_GRACE": "1",
    "SCHEDULER_TOOL__MAX_TASKS_PER_USER": "100",
}  # check_interval stays 60 s: only the poll can make standby-created tasks punctual

pytestmark = [
    pytest.mark.processes,
    pytest.mark.skipif(sys.platform == "win32", reason="needs flock and SIGKILL"),
]


@contextlib.asynccontextmanager
async def workers(db: Path, count: int) -> AsyncIterator[list[Worker]]:
    """``count`` workers started together; each stopped (or reaped) at the end."""
    spawns = (
        Worker.spawn("tests.multiprocess_worker", str(db), env=WORKER_ENV) for _ in range(count)
    )
    started = await asyncio.gather(*spawns)
    try:
        yield list(started)
    finally:
        await asyncio.gather(*(w.stop() for w in started))


def runs_by_task(db: Path) -> dict[str, list[dict[str, Any]]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = [
            dict(r) for r in conn.execute("select * from task_scheduler_runs order by queued_at")
        ]
    by_task: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_task.setdefault(row["task_id"], []).append(row)
    return by_task


def settled(db: Path, task_ids: list[str]) -> Callable[[], Awaitable[bool]]:
    """A predicate for ``wait_for``: every run of these tasks is recorded as final."""

    async def done() -> bool:
        runs = runs_by_task(db)
        return all(runs.get(t) and runs[t][-1]["status"] not in ACTIVE_RUN for t in task_ids)

    return done


def notification_count(db: Path, task_id: str) -> int:
    with sqlite3.connect(db) as conn:
        sql = "select count(*) from task_scheduler_notifications where task_id = ?"
        return int(conn.execute(sql, (task_id,)).fetchone()[0])


def lateness(effects: list[Event], due: dict[str, str]) -> list[float]:
    return [e["at"] - datetime.fromisoformat(due[e["task_id"]]).timestamp() for e in effects]


def due_times(created: Event) -> dict[str, str]:
    return {t["task_id"]: t["due"] for t in created["tasks"]}


async def test_tasks_created_on_a_standby_run_once_in_the_leader(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    async with workers(db, 2) as pair:  # started together on a fresh file: migrations race
        ready = [await w.event("ready", timeout=20) for w in pair]
        assert sorted(r["leader"] for r in ready) == [False, True]
        leader, standby = pair if ready[0]["leader"] else pair[::-1]
        leader_worker = (ready if ready[0]["leader"] else ready[::-1])[0]["worker"]

        await standby.send("create", count=20, lead=2, spread=2, op="act")
        due = due_times(await standby.event("created"))
        await leader.wait(lambda events: len([e for e in events if e["event"] == "effect"]) >= 20)

        effects = leader.named("effect")
        assert sorted(e["task_id"] for e in effects) == sorted(due)  # each exactly once
        await wait_for(settled(db, list(due)))
        assert not standby.named("effect")
        runs = runs_by_task(db)
        assert {t: [(r["status"], r["worker"]) for r in runs[t]] for t in due} == {
            t: [("succeeded", leader_worker)] for t in due
        }
        late = lateness(effects, due)
        assert max(late) < 3, late
        print(
            f"\nstandby-created tasks: lateness median {median(late):.3f} s, max {max(late):.3f} s"
        )


async def test_kill_9_of_the_leader_hands_over_to_the_standby(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    async with workers(db, 1) as [leader]:
        assert (await leader.event("ready", timeout=20))["leader"]
        async with workers(db, 1) as [standby]:
            ready = await standby.event("ready", timeout=20)
            assert not ready["leader"]
            await leader.send("create", count=1, lead=0.2, spread=0, op="block")
            dead_run = (await leader.event("blocking"))["task_id"]  # left running by the kill
            await standby.send("run_now")
            manual = (await standby.event("blocking"))["task_id"]  # running at takeover
            await leader.send("create", count=5, lead=1, spread=1, op="act")
            due = due_times(await leader.event("created", nth=1))

            killed_at = time.time()
            leader.proc.kill()
            took_over = (await standby.event("leader"))["at"] - killed_at
            runs = runs_by_task(db)  # recovery is done before "leader" is printed
            assert [r["status"] for r in runs[dead_run]] == ["interrupted"]
            assert [(r["kind"], r["status"]) for r in runs[manual]] == [("manual", "running")]

            await standby.send("release")
            await standby.wait(lambda ev: len([e for e in ev if e["event"] == "effect"]) >= 5)
            effects = standby.named("effect")
            assert sorted(e["task_id"] for e in effects) == sorted(due)
            assert not leader.named("effect")
            await wait_for(settled(db, [*due, manual]))
            assert notification_count(db, manual) == 1
            runs = runs_by_task(db)
            assert [(r["status"], r["worker"]) for r in runs[manual]] == [
                ("succeeded", ready["worker"])
            ]
            assert all([r["status"] for r in runs[t]] == ["succeeded"] for t in due)
            assert notification_count(db, dead_run) == 1
            assert took_over < 5
            late = lateness(effects, due)
            print(f"\ntakeover after kill -9: {took_over:.2f} s; late by at most {max(late):.2f} s")


# -- in one process ------------------------------------------------------------------------
async def test_file_leadership_and_presence(db_path: Path) -> None:
    first, second = FileLeadership(db_path), FileLeadership(db_path)
    await first.open()
    await second.open()
    assert await first.try_acquire() and not await second.try_acquire()
    assert await second.is_alive(first.worker) and await first.is_alive(first.worker)
    assert not await second.is_alive(None)
    assert not await second.is_alive("elsewhere:1:" + uuid.uuid4().hex)
    await first.close()
    assert not await second.is_alive(first.worker)
    assert await second.try_acquire() and await second.held()
    await second.close()
    assert not any(second.dir.glob("worker-*"))


class Notifications:
    """The notifications of one or more services, awaited one at a time."""

    def __init__(self, *services: SchedulerService) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for service in services:
            service.add_notification_callback(self._put)

    async def _put(self, notification: dict[str, Any]) -> None:
        self.queue.put_nowait(notification)

    async def next(self, timeout: float = 10) -> dict[str, Any]:
        return await asyncio.wait_for(self.queue.get(), timeout)


async def create_once(service: SchedulerService, seconds: float, operation: str = "record") -> str:
    due = datetime.now(UTC) + timedelta(seconds=seconds)
    out = await service.scheduler_tool.run(
        "create_task",
        {
            "name": f"once {operation}",
            "frequency": "once",
            "scheduled_time": due.isoformat(),
            "tool_name": "recording_tool",
            "operation": operation,
        },
        context=CTX,
    )
    return str(out["task"]["task_id"])


@contextlib.asynccontextmanager
async def services(settings: Settings, count: int) -> AsyncIterator[list[SchedulerService]]:
    """Services on one database, started in order, each with a RecordingTool."""
    started: list[SchedulerService] = []
    try:
        for _ in range(count):
            service = SchedulerService(settings, leader_retry=0.1)
            service.tools.register(RecordingTool())
            await service.start()
            started.append(service)
        yield started
    finally:
        for service in reversed(started):
            await service.stop()


def tool_of(service: SchedulerService) -> RecordingTool:
    tool = service.tools.get("recording_tool")
    assert isinstance(tool, RecordingTool)
    return tool


async def test_two_services_in_one_process_one_leads(db_path: Path) -> None:
    async with services(make_settings(db_path), 2) as (first, second):
        assert first.is_leader and not second.is_leader
        first_notes, second_notes = Notifications(first), Notifications(second)
        task_id = await create_once(second, 0.5)  # through the standby
        note = await first_notes.next()
        assert (note["task_id"], note["status"]) == (task_id, "succeeded")
        assert not tool_of(second).calls and len(tool_of(first).calls) == 1

        await first.stop()
        await asyncio.wait_for(second.leading.wait(), 5)
        task_id = await create_once(second, 0.2)
        note = await second_notes.next()
        assert (note["task_id"], note["status"]) == (task_id, "succeeded")
        assert second_notes.queue.empty()


# -- PostgreSQL ------------------------------------------------------------------------------
async def running_row(service: SchedulerService, worker: str) -> str:
    """A claimed, running run of ``worker`` (whose presence lock decides its fate)."""
    task_id = await create_once(service, 3600)
    async with service.db.write() as session:
        task = await session.get(ScheduledTask, task_id)
        assert task is not None
        task.next_run_at = None  # the claim moved it on
        run = TaskRun(
            id=new_id("run"),
            task_id=task_id,
            user_id=task.user_id,
            kind="scheduled",
            fire_time=task.start_at,
            attempt=1,
            status="running",
            queued_at=utcnow(),
            worker=worker,
        )
        session.add(run)
    return run.id


async def test_advisory_lock_leadership_on_postgresql(pg_url: str) -> None:
    settings = Settings(database_url=pg_url, scheduler=SchedulerConfig(), anthropic_api_key=None)
    async with services(settings, 2) as (first, second):  # the second waits on migrations
        assert first.is_leader and not second.is_leader
        dead = await running_row(second, f"elsewhere:4242:{uuid.uuid4().hex}")
        manual = await create_once(second, 3600, "block")
        await second.scheduler_tool.run(
            "execute_task_now", {"task_id": manual, "wait": False}, context=CTX
        )
        await tool_of(second).called.wait()
        assert await first.leadership.is_alive(second.leadership.worker)

        await first.stop()
        await asyncio.wait_for(second.leading.wait(), 5)
        async with second.db.read() as session:
            rows = (await session.scalars(select(TaskRun))).all()
        status = {r.id: r.status for r in rows}
        assert status[dead] == "interrupted"
        assert [r.status for r in rows if r.task_id == manual] == ["running"]
        tool_of(second).release.set()
        await second.runner.settled()
        async with second.db.read() as session:
            runs = (await session.scalars(select(TaskRun).where(TaskRun.task_id == manual))).all()
        assert [(r.status, r.worker) for r in runs] == [("succeeded", second.leadership.worker)]


async def test_a_leader_whose_lock_connection_dies_steps_down(pg_url: str) -> None:
    """The server frees a session lock with its connection: the leader must notice."""
    settings = Settings(database_url=pg_url, scheduler=SchedulerConfig(), anthropic_api_key=None)
    async with services(settings, 2) as (first, second):
        assert first.is_leader
        backend = await first.leadership._query("SELECT pg_backend_pid()")  # type: ignore[attr-defined]
        async with second.db.read() as session:
            await session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})

        await asyncio.wait_for(second.leading.wait(), 5)

        async def first_stood_down() -> bool:
            return not first.is_leader

        await wait_for(first_stood_down, 5)
        assert first.scheduler.state == STATE_PAUSED
        # The old leader still serves tool calls and, as a worker, may take the run from
        # the queue: what matters is that the new leader fires it and it runs once.
        notes = Notifications(first, second)
        task_id = await create_once(first, 0.2)
        note = await notes.next()
        assert (note["task_id"], note["status"]) == (task_id, "succeeded")
        assert not first.is_leader
        assert len(tool_of(first).calls) + len(tool_of(second).calls) == 1


async def test_the_leader_keeps_interrupting_runs_of_workers_that_die(db_path: Path) -> None:
    """A killed standby's run is settled within check_interval, not at the next takeover;
    a live standby's run is left alone."""
    settings = make_settings(db_path, check_interval=1)
    async with services(settings, 2) as (leader, standby):
        notes = Notifications(leader)
        dead = await running_row(standby, f"{os.uname().nodename}:1:{uuid.uuid4().hex}")
        live = await running_row(standby, standby.leadership.worker)
        note = await notes.next(timeout=5)
        assert (note["run_id"], note["status"]) == (dead, "interrupted")
        async with leader.db.read() as session:
            row = await session.get(TaskRun, live)
        assert row is not None and row.status == "running"


async def test_a_task_created_on_a_standby_starts_on_time_on_postgresql(pg_url: str) -> None:
    """The standby's job-store change is announced (NOTIFY): the leader wakes at once,
    instead of at its next poll of the job store (seconds on PostgreSQL). The leader
    fires the task into the run queue, which every replica takes from: either may
    execute it, once."""
    settings = Settings(database_url=pg_url, scheduler=SchedulerConfig(), anthropic_api_key=None)
    async with services(settings, 2) as (leader, standby):
        assert leader.is_leader and not standby.is_leader
        notes = Notifications(leader, standby)
        late: list[float] = []
        for _ in range(5):
            task_id = await create_once(standby, 0.5)
            note = await notes.next()
            assert (note["task_id"], note["status"]) == (task_id, "succeeded")
            async with leader.db.read() as session:
                run = await session.scalar(select(TaskRun).where(TaskRun.task_id == task_id))
            assert run is not None and run.started_at is not None
            late.append((run.started_at - run.fire_time).total_seconds())
        assert len(tool_of(leader).calls) + len(tool_of(standby).calls) == 5
        print(
            f"\nstandby-created tasks start late by median {median(late):.3f} s, max {max(late):.3f} s"
        )
        assert max(late) < 0.5, late
