"""Prometheus metrics for one service, in a registry the host can mount or serve.

Each :class:`SchedulerMetrics` owns a ``CollectorRegistry`` (several services in one
process, as in tests, never clash on metric names). A host mounts it as it likes, e.g.
``app.mount("/metrics", prometheus_client.make_asgi_app(metrics.registry))``, or adds
its collectors to the global registry with ``metrics.register_to(REGISTRY)``;
``task-scheduler run --metrics-port 9100`` serves it over HTTP.

Runs are counted where they are recorded: a run this process executed when the runner
records its final attempt (attempts that are retried are not counted until their fire
time is settled), notified or kept quiet by its task's notify policy; a fire time recorded
without running (missed, skipped, interrupted by recovery) from its notification. The
leader flag and the queue depth are read at scrape time, so they are never stale.

The registry also carries prometheus_client's process and platform collectors
(``process_cpu_seconds_total``, ``process_resident_memory_bytes``, open file
descriptors, ``python_info``): a scrape of a worker then shows whether a slow scheduler
is short of CPU or memory. :meth:`SchedulerMetrics.register_to` leaves them out, since
the global registry has its own.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

from scheduler_service.storage.models import TaskRun

if TYPE_CHECKING:
    from scheduler_service.service import SchedulerService

log = logging.getLogger(__name__)

LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
# Direct runs take milliseconds, orchestrated ones up to the task timeout (300 s default).
DURATION_BUCKETS = (
    0.005,
    0.01,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    900.0,
    3600.0,
)
DEFAULT_ADDRESS = "127.0.0.1"  # loopback: a scrape from elsewhere is an explicit choice
TOKEN_KINDS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


class SchedulerMetrics:
    """The scheduler's metrics; :meth:`bind` attaches them to a service."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.runs = Counter(
            "task_scheduler_runs",
            "Finished runs, by final status (succeeded, failed, timed_out, missed, ...)",
            ["status"],
            registry=self.registry,
        )
        self.fire_lateness = Histogram(
            "task_scheduler_fire_lateness_seconds",
            "Seconds between a run's fire time and its start",
            buckets=LATENESS_BUCKETS,
            registry=self.registry,
        )
        self.run_duration = Histogram(
            "task_scheduler_run_duration_seconds",
            "Seconds from a run's start to its end, by final status",
            ["status"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "task_scheduler_orchestration_tokens",
            "Anthropic tokens used by orchestrated runs, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "task_scheduler_queue_depth",
            "Runs waiting for a free slot (max_concurrent_tasks) in this process",
            registry=self.registry,
        )
        self.leader = Gauge(
            "task_scheduler_leader",
            "1 while this process holds the scheduling lock and fires jobs, else 0",
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._service: SchedulerService | None = None
        # Runs counted when recorded whose notification is still to come (not counted again)
        self._counted: set[str] = set()

    def bind(self, service: SchedulerService) -> SchedulerMetrics:
        """Count the service's runs and read its leader flag and queue at scrape time."""
        self._service = service
        service.add_notification_callback(self.on_notification)
        service.runner.recorded_run_callbacks.append(self.on_recorded_run)
        self.leader.set_function(lambda: 1.0 if service.is_leader else 0.0)
        self.queue_depth.set_function(lambda: float(service.queue_depth))
        return self

    def register_to(self, registry: CollectorRegistry) -> None:
        """Also expose these metrics from another registry (e.g. the global REGISTRY)."""
        for collector in (
            self.runs,
            self.fire_lateness,
            self.run_duration,
            self.tokens,
            self.queue_depth,
            self.leader,
        ):
            registry.register(collector)

    def serve(self, port: int, addr: str = DEFAULT_ADDRESS) -> WSGIServer:
        """Serve ``/metrics`` on ``addr:port`` (port 0: any free port) from a daemon
        thread. Loopback unless told otherwise: the metrics name the host's tools and
        its load, and need not reach every network the host is on."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server

    async def on_notification(self, notification: dict[str, Any]) -> None:
        """A notification of a run not counted when recorded (a missed or skipped fire
        time, a run recovery interrupted): count it under the run's own status (a
        notification says ``paused`` when the run paused its task), reading the run."""
        run_id = notification.get("run_id")
        if run_id in self._counted:
            self._counted.discard(run_id)
            return
        run: TaskRun | None = None
        if run_id is not None and self._service is not None:
            async with self._service.db.read() as session:
                run = await session.get(TaskRun, run_id)
        status = run.status if run is not None else str(notification.get("status", "unknown"))
        self.observe_run(status, run)

    def on_recorded_run(self, run: TaskRun, notified: bool) -> None:
        """A final run recorded here, counted from the object in hand (no read); if a
        notification of it follows, that one is not counted again."""
        if notified:
            self._counted.add(run.id)
        self.observe_run(run.status, run)

    def observe_run(self, status: str, run: TaskRun | None) -> None:
        self.runs.labels(status=status).inc()
        if run is None:
            return
        if run.started_at is not None:
            self.fire_lateness.observe(max(0.0, _seconds(run.started_at, run.fire_time)))
            if run.finished_at is not None:
                duration = max(0.0, _seconds(run.finished_at, run.started_at))
                self.run_duration.labels(status=status).observe(duration)
        usage = run.usage or {}
        for kind in TOKEN_KINDS:
            value = usage.get(kind)
            if isinstance(value, int) and value > 0:
                self.tokens.labels(kind=kind).inc(value)


def _seconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()
