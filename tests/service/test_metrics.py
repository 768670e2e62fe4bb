"""Prometheus metrics from real runs: counts by status, lateness, tokens, leader, queue."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import event

from scheduler_service.metrics import SchedulerMetrics
from scheduler_service.service import SchedulerService
from scheduler_service.testing import FakeAnthropic, text_message
from scheduler_service.tools import ToolContext
from tests.conftest import RecordingTool, make_settings, next_notification, watch_notifications
from tests.design_examples import INVENTORY, SALES

CTX = ToolContext(user_id="u1", conversation_id="c1")
ONE_RUN_BY_ID = re.compile(r"task_scheduler_runs\.id = (\?|\$\d)")  # a read of one run


def sample(metrics: SchedulerMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_runs_lateness_tokens_and_leader(database_url: str) -> None:
    fake = FakeAnthropic(
        text_message("Report sent.", usage={"input_tokens": 40, "output_tokens": 7})
    )
    service = SchedulerService(make_settings(database_url), anthropic_client=fake.client())
    metrics = SchedulerMetrics().bind(service)
    watch_notifications(service)  # after the metrics: notified once they are counted
    service.tools.register(RecordingTool())
    assert sample(metrics, "task_scheduler_leader") == 0.0
    async with service:
        assert sample(metrics, "task_scheduler_leader") == 1.0
        soon = (datetime.now(UTC) + timedelta(seconds=0.3)).isoformat()
        once = {
            **INVENTORY,
            "frequency": "once",
            "scheduled_time": soon,
        }
        await service.scheduler_tool.run("create_task", once, context=CTX)
        await next_notification(service)  # fired by APScheduler at its fire time
        created = await service.scheduler_tool.run("create_task", SALES, context=CTX)
        await service.scheduler_tool.run(
            "execute_task_now", {"task_id": created["task"]["task_id"]}, context=CTX
        )
        await next_notification(service)
        assert sample(metrics, "task_scheduler_runs_total", status="succeeded") == 2.0
        assert sample(metrics, "task_scheduler_fire_lateness_seconds_count") == 2.0
        assert 0 <= sample(metrics, "task_scheduler_fire_lateness_seconds_sum") < 5
        duration = "task_scheduler_run_duration_seconds"
        assert sample(metrics, f"{duration}_count", status="succeeded") == 2.0
        assert 0 < sample(metrics, f"{duration}_sum", status="succeeded") < 30
        assert (
            sample(metrics, "task_scheduler_orchestration_tokens_total", kind="input_tokens") == 40
        )
        assert (
            sample(metrics, "task_scheduler_orchestration_tokens_total", kind="output_tokens") == 7
        )
        assert sample(metrics, "task_scheduler_queue_depth") == 0.0
        text = generate_latest(metrics.registry).decode()
        assert "task_scheduler_runs_total" in text and "task_scheduler_leader 1.0" in text
    assert sample(metrics, "task_scheduler_leader") == 0.0
    await fake.aclose()


def test_metrics_served_over_http_and_mountable() -> None:
    metrics = SchedulerMetrics()
    metrics.runs.labels(status="failed").inc()
    host_registry = CollectorRegistry()
    metrics.register_to(host_registry)
    assert host_registry.get_sample_value("task_scheduler_runs_total", {"status": "failed"}) == 1
    server = metrics.serve(0, addr="127.0.0.1")
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            body: Any = reply.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'task_scheduler_runs_total{status="failed"} 1.0' in body


def test_process_metrics_and_a_loopback_listener() -> None:
    """The service's own registry carries process and platform metrics; they stay out of
    a host registry (which has its own); the listener binds loopback unless told."""
    metrics = SchedulerMetrics()
    assert (metrics.registry.get_sample_value("process_resident_memory_bytes") or 0) > 0
    assert (metrics.registry.get_sample_value("process_cpu_seconds_total") or 0) > 0
    assert "python_info" in generate_latest(metrics.registry).decode()
    host_registry = CollectorRegistry()
    metrics.register_to(host_registry)
    assert host_registry.get_sample_value("process_resident_memory_bytes") is None
    server = metrics.serve(0)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        server.server_close()


async def test_quiet_runs_are_counted_though_nobody_is_told(database_url: str) -> None:
    """A run its task's notify policy keeps quiet sends no notification, which is where
    metrics count runs: it is counted when it is recorded instead, once."""
    service = SchedulerService(make_settings(database_url))
    metrics = SchedulerMetrics().bind(service)
    quiet = asyncio.Event()
    service.runner.recorded_run_callbacks.append(lambda _run, notified: quiet.set())
    watch_notifications(service)
    service.tools.register(RecordingTool())
    async with service:
        soon = (datetime.now(UTC) + timedelta(seconds=0.3)).isoformat()
        once = {**INVENTORY, "frequency": "once", "scheduled_time": soon, "notify": "on_failure"}
        await service.scheduler_tool.run("create_task", once, context=CTX)
        await asyncio.wait_for(quiet.wait(), 10)
        assert sample(metrics, "task_scheduler_runs_total", status="succeeded") == 1.0
        assert sample(metrics, "task_scheduler_fire_lateness_seconds_count") == 1.0
    assert service.notification_queue.empty()  # type: ignore[attr-defined]


async def test_a_run_recorded_here_is_counted_once_without_reading_it_back(
    database_url: str,
) -> None:
    """Counted from the run the runner just recorded, before its notification is
    published; the notification neither counts it again nor reads the run row."""
    service = SchedulerService(make_settings(database_url))
    metrics = SchedulerMetrics().bind(service)
    counted: asyncio.Queue[float] = asyncio.Queue()  # the count as each notification came

    async def on_note(_note: dict[str, Any]) -> None:
        counted.put_nowait(sample(metrics, "task_scheduler_runs_total", status="succeeded"))

    service.add_notification_callback(on_note)
    reads: list[str] = []

    def on_sql(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().startswith("SELECT") and ONE_RUN_BY_ID.search(statement):
            reads.append(statement)

    service.tools.register(RecordingTool())
    async with service:
        engine = service.db.engine.sync_engine
        event.listen(engine, "before_cursor_execute", on_sql)
        try:
            for expected in (1.0, 2.0):
                soon = (datetime.now(UTC) + timedelta(seconds=0.3)).isoformat()
                once = {**INVENTORY, "frequency": "once", "scheduled_time": soon}
                await service.scheduler_tool.run("create_task", once, context=CTX)
                assert await asyncio.wait_for(counted.get(), 10) == expected
        finally:
            event.remove(engine, "before_cursor_execute", on_sql)
    assert sample(metrics, "task_scheduler_runs_total", status="succeeded") == 2.0
    assert reads == []


async def test_a_run_that_pauses_its_task_counts_under_its_own_status(
    database_url: str,
) -> None:
    """The notification says ``paused`` (the task is), the run failed: counted as
    failed, like every other failed run."""
    service = SchedulerService(make_settings(database_url, max_consecutive_failures=1))
    metrics = SchedulerMetrics().bind(service)
    watch_notifications(service)
    service.tools.register(RecordingTool())
    async with service:
        failing = {
            "name": "fails",
            "frequency": "hourly",
            "tool_name": "recording_tool",
            "operation": "fail",
            "max_retries": 0,
        }
        out = await service.scheduler_tool.run("create_task", failing, context=CTX)
        task = out["task"]
        fire_time = datetime.fromisoformat(task["next_run_time"]).astimezone(UTC)
        await service.runner.on_fire(task["task_id"], [fire_time])  # as APScheduler would
        note = await next_notification(service)
        assert note["status"] == "paused"
        assert sample(metrics, "task_scheduler_runs_total", status="failed") == 1.0
        assert sample(metrics, "task_scheduler_runs_total", status="paused") == 0.0
