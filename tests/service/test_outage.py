"""PostgreSQL outages under load: a 10 s stop, and a restart.

The service reaches the real server through ``OutageProxy``, which resets every
connection and refuses new ones while "down". The test tool records, in this process,
each run that acted; the test's checks connect to the server directly. After the
database returns:

* nothing stays queued or running longer than ``check_interval`` (plus the backoff of
  the retry that notices the database is back);
* every run whose tool acted is recorded ``succeeded`` (the tool's work is not lost);
* every fire time has exactly one final outcome, and no fire time acted twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from config import SchedulerConfig, Settings
from scheduler_service import SchedulerService
from scheduler_service.runs.runner import current_run
from tests.processes.test_replicas import FINAL, rows, utc
from tests.tcp_proxy import OutageProxy, outage_proxy
from tools import Tool, ToolContext

CTX = ToolContext(user_id="u1", conversation_id="c1")
CHECK_INTERVAL = 2
TASKS = 6


class ActingTool(Tool):
    """Records each run that acted: (run id, task, fire time)."""

    name = "acting_tool"
    description = "Records runs (outage tests only)."
    input_schema = {"type": "object", "properties": {"operation": {"enum": ["act"]}}}

    def __init__(self) -> None:
        self.acted: list[tuple[str, str, datetime]] = []
        self.first = asyncio.Event()
        self.again = asyncio.Event()  # set at each run that acts

    async def run(
        self, operation: str, kwargs: dict[str, Any] | str | None, *, context: ToolContext
    ) -> dict[str, Any]:
        run = current_run.get()
        self.acted.append((run.run_id, run.task_id, run.fire_time))
        self.first.set()
        self.again.set()
        await asyncio.sleep(0.05)
        return {"message": "acted"}


@pytest.fixture
async def proxy() -> AsyncIterator[OutageProxy]:
    async with outage_proxy() as started:
        yield started


def through(proxy: OutageProxy, url: str) -> str:
    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(False)


async def run_under_outage(pg_url: str, proxy: OutageProxy, down_for: float) -> ActingTool:
    settings = Settings(
        database_url=through(proxy, pg_url),
        scheduler=SchedulerConfig(
            check_interval=CHECK_INTERVAL, min_interval=1, misfire_grace_time=2
        ),
        anthropic_api_key=None,
    )
    tool = ActingTool()
    service = SchedulerService(settings, leader_retry=0.5)
    service.tools.register(tool)
    async with service:
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
        for i in range(TASKS):
            rule = f"DTSTART:{start:%Y%m%dT%H%M%SZ}\nRRULE:FREQ=SECONDLY;INTERVAL=1"
            await service.scheduler_tool.run(
                "create_task",
                {
                    "name": f"every second {i}",
                    "frequency": "custom",
                    "custom_schedule": rule,
                    "tool_name": "acting_tool",
                    "operation": "act",
                    "max_retries": 0,
                },
                context=CTX,
            )
        await tool.first.wait()
        await asyncio.sleep(1.0)  # under load: runs in flight when the database goes
        proxy.cut()
        await asyncio.sleep(down_for)  # the outage itself
        proxy.restore()
        back, restored_at = time.monotonic(), datetime.now(UTC)
        await settled_within(pg_url, CHECK_INTERVAL + 8)  # margin for a loaded machine
        print(f"\nno run left queued/running {time.monotonic() - back:.2f} s after recovery")
        # The scheduler runs on after the outage: every task acts again for a fire time
        # after the database came back (if the leader lost its lock meanwhile, once it
        # has taken it again).
        await acted_after(tool, restored_at, CHECK_INTERVAL + 8)
        print(f"every task acted again {time.monotonic() - back:.2f} s after recovery")
    return tool


async def acted_after(tool: ActingTool, since: datetime, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while len({task for _, task, fire in tool.acted if fire >= since}) < TASKS:
            tool.again.clear()
            await tool.again.wait()


async def settled_within(pg_url: str, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        active = "select id from task_scheduler_runs where status in ('queued', 'running')"
        while rows(pg_url, active):  # noqa: ASYNC110 (rows another connection writes)
            await asyncio.sleep(0.1)


def check(pg_url: str, tool: ActingTool) -> Counter[str]:
    runs = rows(pg_url, "select * from task_scheduler_runs")
    handed_back = [r for r in runs if r["status"] == "queued" and r["worker"] is None]
    left = [r for r in runs if r["status"] not in FINAL and r not in handed_back]
    assert not left, "a run was left queued/running by the stopped worker"  # handed back: ok
    status = {r["id"]: r["status"] for r in runs}
    lost = [run_id for run_id, *_ in tool.acted if status.get(run_id) != "succeeded"]
    assert not lost, f"runs that acted but are not recorded succeeded: {lost}"
    acted = Counter((task_id, utc(fire)) for _, task_id, fire in tool.acted)
    assert max(acted.values()) <= 1, "a fire time acted twice"
    finals = Counter(
        (r["task_id"], utc(r["fire_time"])) for r in runs if "retry_at" not in (r["details"] or {})
    )
    assert max(finals.values()) == 1, [k for k, n in finals.items() if n > 1]
    return Counter(status.values())


async def test_a_10_second_outage_under_load(
    pg_url: str, proxy: OutageProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="scheduler_service")
    tool = await run_under_outage(pg_url, proxy, down_for=10)
    outcomes = check(pg_url, tool)
    assert outcomes["succeeded"] >= TASKS * 2
    print(f"outcomes {dict(outcomes)}")
    # The loops that retry every second (leadership check, wake-up, queue) say once that
    # they fail and once that they recovered: not a traceback a second.
    loops = ("the leadership check", "the scheduler wake-up", "taking queued runs")
    lines = [r for r in caplog.records if r.getMessage().startswith(loops)]
    traces = [r for r in lines if r.exc_info]
    assert len(lines) <= 3 * 4 and len(traces) <= 3, [r.getMessage() for r in lines]
    print(f"{len(lines)} log lines from the retrying loops, {len(traces)} with a traceback")


async def test_a_server_restart_under_load(pg_url: str, proxy: OutageProxy) -> None:
    tool = await run_under_outage(pg_url, proxy, down_for=0)
    outcomes = check(pg_url, tool)
    assert outcomes["succeeded"] >= TASKS * 2
    print(f"outcomes {dict(outcomes)}")
