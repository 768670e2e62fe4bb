"""SchedulerService: wires the database, APScheduler, the runner and the tools together."""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Awaitable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from scheduler_service.cluster.leadership import leadership_for
from scheduler_service.cluster.leading import LeaderLoop
from scheduler_service.cluster.wakeups import JOBS_CHANNEL, RUNS_CHANNEL, wakeups_for
from scheduler_service.cluster.workers import Role, WorkerRegistry, live_workers
from scheduler_service.config import ConfigError, Settings, load_settings, warn_unknown_variables
from scheduler_service.logs import ensure_service_logging
from scheduler_service.logs import escape as log_escape
from scheduler_service.runs.execution import Execution
from scheduler_service.runs.model_gate import model_gate_for
from scheduler_service.runs.notifications import NotificationCallback, Notifier
from scheduler_service.runs.recovery import (
    reconcile,
)
from scheduler_service.runs.runner import TaskRunner
from scheduler_service.runs.token_budget import token_budget_for
from scheduler_service.scheduling import (
    PG_POLL_INTERVAL_S,
    POLL_INTERVAL_S,
    FireTimeExecutor,
    JobControl,
    build_scheduler,
)
from scheduler_service.storage.db import Database, pool_size_for
from scheduler_service.tasks.manager import TaskManager
from scheduler_service.tools import Tool, ToolRegistry

if TYPE_CHECKING:
    import anthropic

    from scheduler_service.tasks.scheduler_tool import SchedulerTool

log = logging.getLogger(__name__)

LEADER_RETRY_S = 0.5  # how often a standby retries the scheduling lock (and a leader checks it)


def load_tool(path: str) -> Tool:
    """'package.module:attribute' → a Tool instance (a class is instantiated).

    Raises ConfigError naming TOOLS and the entry, never an import traceback.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigError(
            f"invalid configuration: TOOLS entry {path!r}: use 'package.module:ToolClass'"
        )
    try:
        target = getattr(importlib.import_module(module_name), attribute)
        tool = target() if isinstance(target, type) else target
    except Exception as exc:
        raise ConfigError(
            f"invalid configuration: TOOLS entry {path!r} cannot be loaded "
            f"({type(exc).__name__}: {exc}); use 'package.module:ToolClass' importable here"
        ) from None
    if not isinstance(getattr(tool, "name", None), str) or not hasattr(tool, "run"):
        raise ConfigError(
            f"invalid configuration: TOOLS entry {path!r} is not a Tool (needs name and run)"
        )
    return tool  # type: ignore[no-any-return]


def default_anthropic_client(settings: Settings) -> anthropic.AsyncAnthropic | None:
    """A client from settings or ANTHROPIC_API_KEY; None when there is no key (the SDK is
    then never imported)."""
    import os

    key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
    key = key or os.environ.get("ANTHROPIC_API_KEY")
    if not key:
        return None
    import anthropic

    return anthropic.AsyncAnthropic(api_key=key)


class SchedulerService:
    """The embeddable service. Use ``async with SchedulerService(settings) as service``.

    Pass the host's tools as ``tools=[...]``: they are registered before ``start`` catches
    up on missed runs, so no run ever looks for a tool that is only registered later.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        tools: Sequence[Tool] = (),
        anthropic_client: anthropic.AsyncAnthropic | None = None,
        on_notification: NotificationCallback | None = None,
        leader_retry: float = LEADER_RETRY_S,
        role: Role | str | None = None,
        migrate: bool = True,
    ) -> None:
        from scheduler_service.tasks.scheduler_tool import SchedulerTool
        from scheduler_service.tools.reminder_tool import ReminderTool

        self.settings = settings or load_settings()
        if role is None:
            role = Role.WORKER if self.settings.scheduler.is_worker else Role.CLIENT
        self.role = Role(role)
        self._migrate = migrate
        self.db = Database(
            self.settings.database_url,
            pool_size=pool_size_for(self.settings.scheduler.max_concurrent_tasks),
        )
        self.tools = ToolRegistry()
        self.notifier = Notifier(self.db)
        if on_notification is not None:
            self.notifier.callbacks.append(on_notification)
        client = anthropic_client or default_anthropic_client(self.settings)
        self.model_gate = model_gate_for(self.db, self.settings.scheduler.model_concurrency)
        budget = token_budget_for(self.db, self.settings.limits.daily_token_budget_per_user)
        self.execution = Execution(self.settings, self.tools, client, self.model_gate, budget)
        self.runner = TaskRunner(
            db=self.db,
            settings=self.settings,
            notifier=self.notifier,
            execution=self.execution,
        )
        self.wakeups = wakeups_for(self.db.engine, JOBS_CHANNEL)
        self.run_signals = wakeups_for(self.db.engine, RUNS_CHANNEL)
        self.runner.announce_runs = self.run_signals.announce
        self.runner.claims.executes = self.role == Role.WORKER
        self.runner.claims.tools = self.tools.names
        self.scheduler = build_scheduler(
            serialize=self.db.serialized,
            max_sleep=float(self.settings.scheduler.check_interval),
            executor=FireTimeExecutor(self.runner.on_fire, self.runner.on_retry),
            engine=self.db.sync_engine,
            poll_interval=POLL_INTERVAL_S if self.db.sqlite else PG_POLL_INTERVAL_S,
        )
        self.jobs = JobControl(self.scheduler, self.db.serialized, self.wakeups.announce)
        self.runner.jobs = self.jobs
        self.tasks = TaskManager(
            db=self.db,
            settings=self.settings,
            registry=self.tools,
            runner=self.runner,
            jobs=self.jobs,
            has_llm=client is not None,
        )
        self.scheduler_tool: SchedulerTool = SchedulerTool(self.tasks)
        self.runner.live_workers = self._live_workers_tools
        if not self.is_worker:
            self.tasks.workers_tools = self._live_workers_tools
        self.tools.register(ReminderTool(self.db, self.settings.default_timezone))
        if self.settings.scheduler_tool.enabled:
            self.tools.register(self.scheduler_tool)
        for path in self.settings.tools:
            self.tools.register(load_tool(path))
        for tool in tools:
            self.tools.register(tool)
        self.started = False
        self.leadership = leadership_for(self.settings.database_url)
        self.registry = WorkerRegistry(self.db, self.leadership.worker, self.tools.names)
        self.lead = LeaderLoop(
            settings=self.settings,
            db=self.db,
            leadership=self.leadership,
            scheduler=self.scheduler,
            jobs=self.jobs,
            wakeups=self.wakeups,
            runner=self.runner,
            notifier=self.notifier,
            registry=self.registry,
            leader_retry=leader_retry,
        )
        self.leading = self.lead.leading  # set while this process runs the scheduler
        self.heartbeat = self.lead.heartbeat
        log_escape.install()  # again: loggers of modules imported after the package

    # -- lifecycle -------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        """Whether this process fires jobs; a standby only serves tool calls."""
        return self.leading.is_set()

    @property
    def queue_depth(self) -> int:
        """Runs of this process waiting for a free slot (``max_concurrent_tasks``)."""
        return self.runner.waiting

    async def _live_workers_tools(self) -> list[list[str]]:
        """The tools of each live worker (the workers table)."""
        return [worker.tools for worker in await live_workers(self.db)]

    @property
    def is_worker(self) -> bool:
        """Whether this process executes runs (a worker) or only manages tasks (a client)."""
        return self.role == Role.WORKER

    async def start(self) -> None:
        """Migrate (or, with ``migrate=False``, check the schema), then, as a worker,
        lead (recover, reconcile, fire jobs) or stand by, and take queued runs.

        Either way the scheduler is started paused, so this process's tool calls write
        the shared job store; only the holder of the scheduling lock resumes it (one
        leader fires jobs, every process serves tool calls). A standby keeps retrying the
        lock. A client does nothing more: it never leads, claims, executes or interrupts
        a run, and its manual runs go to the workers through the run queue.
        """
        ensure_service_logging(
            self.settings.scheduler.log_level, self.settings.scheduler.log_format
        )
        warn_unknown_variables(log)
        try:
            await self._prepare_schema()
            self.scheduler.start(paused=True)
            if self.is_worker:
                await self._start_worker()
        except BaseException:
            await self._abandon_start()
            raise
        self.started = True
        role = ("leader" if self.is_leader else "standby") if self.is_worker else "client"
        log.info("scheduler service started on %s as %s", self._where(), role)

    async def _prepare_schema(self) -> None:
        """Migrate under the migration lock; a client lets the lock's session go after."""
        if not self._migrate:
            await self.db.check_schema()
            return
        await self.leadership.open()
        async with self.leadership.migrating():
            await self.db.migrate()
        if not self.is_worker:
            await self.leadership.close()

    async def _start_worker(self) -> None:
        self.runner.worker = self.leadership.worker
        await self.registry.register()
        self._start_queue()
        await self.lead.start()

    def _start_queue(self) -> None:
        """A worker takes queued runs, whether it leads or not."""
        self.runner.queue.start()
        self.run_signals.listen(self.runner.queue.poke)

    async def _stop_queue(self) -> None:
        await self.run_signals.stop_listening()
        await self.runner.queue.stop()

    def _where(self) -> str:
        return self.db.engine.url.render_as_string(hide_password=True)

    async def _abandon_start(self) -> None:
        """A failed start leaves no lock, task or running scheduler behind."""
        await self.lead.stop()
        await self._stop_queue()
        with contextlib.suppress(Exception):
            await self.leadership.close()

    async def stop(self) -> None:
        """Stop firing, hand the lock on at once, then drain this process's runs.

        Runs claimed here that had not started go back to the run queue for another
        worker (or the next start); only runs still executing when the shutdown grace
        ends are interrupted. A successor may start while runs drain here: it leaves
        them alone, because this worker's presence lock is held until they are recorded.
        """
        if not self.started:
            await self.db.dispose()
            return
        self.started = False
        self.runner.stop_starting()
        was_leader = await self.lead.stop()
        if self.is_worker:
            await self._stop_worker(was_leader)
        self.tasks.close()
        self.tools.close()
        await self.leadership.close()
        await self.db.dispose()
        log.info("scheduler service stopped")

    async def _stop_worker(self, was_leader: bool) -> None:
        await self._stop_queue()
        await self.leadership.release()
        if was_leader:  # health says "no leader" at once, not a check interval later
            await self._quietly(self.heartbeat.clear(self.leadership.worker), "heartbeat")
        await self.runner.drain(self.settings.scheduler.shutdown_grace)
        if self.model_gate is not None:
            await self.model_gate.aclose()
        await self._quietly(self.registry.unregister(), "the workers table")

    @staticmethod
    async def _quietly(step: Awaitable[None], what: str) -> None:
        """A stop goes on when the database refuses a bookkeeping write."""
        try:
            await step
        except Exception as exc:
            log.warning("updating %s at stop failed: %s", what, exc)

    async def __aenter__(self) -> SchedulerService:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def reconcile(self) -> dict[str, int]:
        """Make task rows and jobs agree; see ``scheduler_service.runs.recovery``."""
        return await reconcile(self.db, self.jobs)

    # -- notifications -----------------------------------------------------------------
    def add_notification_callback(self, callback: NotificationCallback) -> None:
        self.notifier.callbacks.append(callback)

    async def get_notifications(
        self, conversation_id: str, *, user_id: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Undisplayed notifications, most urgent first, then oldest first."""
        return await self.notifier.pending(conversation_id, user_id=user_id, limit=limit)

    async def mark_notifications_displayed(
        self, notification_ids: list[str], *, user_id: str | None = None
    ) -> int:
        return await self.notifier.mark_displayed(notification_ids, user_id=user_id)
