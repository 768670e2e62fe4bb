"""SchedulerService: wires the database, APScheduler, the runner and the tools together."""

from __future__ import annotations

import importlib
import logging
from types import TracebackType
from typing import TYPE_CHECKING, Any

from config import Settings, load_settings
from scheduler_service.db import Database, create_sync_engine
from scheduler_service.engine import FireTimeExecutor, JobControl, build_scheduler
from scheduler_service.notifications import NotificationCallback, Notifier
from scheduler_service.orchestrate import OrchestratedExecution
from scheduler_service.reconcile import reconcile
from scheduler_service.runner import TaskRunner
from scheduler_service.tasks import TaskManager
from tools import Tool, ToolRegistry

if TYPE_CHECKING:
    import anthropic

    from tools.scheduler_tool import SchedulerTool

log = logging.getLogger(__name__)


def load_tool(path: str) -> Tool:
    """'package.module:attribute' → a Tool instance (a class is instantiated)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"TOOLS entry {path!r}: use 'package.module:ToolClass'")
    target = getattr(importlib.import_module(module_name), attribute)
    tool = target() if isinstance(target, type) else target
    if not isinstance(getattr(tool, "name", None), str) or not hasattr(tool, "run"):
        raise ValueError(f"TOOLS entry {path!r} is not a Tool (needs name and run)")
    return tool  # type: ignore[no-any-return]


def default_anthropic_client(settings: Settings) -> anthropic.AsyncAnthropic | None:
    """A client from settings or ANTHROPIC_API_KEY; None when there is no key."""
    import os

    import anthropic

    key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
    key = key or os.environ.get("ANTHROPIC_API_KEY")
    return anthropic.AsyncAnthropic(api_key=key) if key else None


class SchedulerService:
    """The embeddable service. Use ``async with SchedulerService(settings) as service``."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        anthropic_client: anthropic.AsyncAnthropic | None = None,
        on_notification: NotificationCallback | None = None,
    ) -> None:
        from tools.reminder_tool import ReminderTool
        from tools.scheduler_tool import SchedulerTool

        self.settings = settings or load_settings()
        self.db = Database(self.settings.database_url)
        self.tools = ToolRegistry()
        self.notifier = Notifier(self.db)
        if on_notification is not None:
            self.notifier.callbacks.append(on_notification)
        client = anthropic_client or default_anthropic_client(self.settings)
        self.orchestrator = OrchestratedExecution(self.settings, self.tools, client)
        self.runner = TaskRunner(
            db=self.db,
            settings=self.settings,
            registry=self.tools,
            notifier=self.notifier,
            orchestrator=self.orchestrator,
        )
        self._jobstore_engine = create_sync_engine(self.db.sync_url)
        self.scheduler = build_scheduler(
            serialize=self.db.serialized,
            max_sleep=float(self.settings.scheduler.check_interval),
            executor=FireTimeExecutor(self.runner.on_fire, self.runner.on_retry),
            engine=self._jobstore_engine,
        )
        self.jobs = JobControl(self.scheduler, self.db.serialized)
        self.runner.jobs = self.jobs
        self.tasks = TaskManager(
            db=self.db,
            settings=self.settings,
            registry=self.tools,
            runner=self.runner,
            jobs=self.jobs,
            has_llm=client is not None,
        )
        self.scheduler_tool: SchedulerTool = SchedulerTool(self)
        self.tools.register(ReminderTool(self.db, self.settings.default_timezone))
        if self.settings.scheduler_tool.enabled:
            self.tools.register(self.scheduler_tool)
        for path in self.settings.tools:
            self.tools.register(load_tool(path))
        self.started = False

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        """Migrate, recover, reconcile, then start firing jobs."""
        logging.getLogger("scheduler_service").setLevel(self.settings.scheduler.log_level.upper())
        await self.db.migrate()
        await self.runner.recover_interrupted()
        self.scheduler.start(paused=True)
        await self.reconcile()
        if self.settings.scheduler.enabled:
            self.scheduler.resume()
        self.started = True
        log.info("scheduler service started on %s", self.db.engine.url.render_as_string())

    async def stop(self) -> None:
        if not self.started:
            await self.db.dispose()
            return
        self.started = False
        if self.scheduler.running:
            self.scheduler.shutdown()
        await self.runner.drain(self.settings.scheduler.shutdown_grace)
        await self.tasks.drain_background()
        self._jobstore_engine.dispose()
        await self.db.dispose()
        log.info("scheduler service stopped")

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
        """Make task rows and jobs agree (invariant 3); see ``TaskRunner.reconcile``."""
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
