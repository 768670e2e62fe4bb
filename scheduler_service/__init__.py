"""An asyncio task scheduler for LLM-assistant applications."""

from scheduler_service import logs
from scheduler_service.lifespan import lifespan
from scheduler_service.service import SchedulerService

logs.install()  # every module's logger exists now: user text cannot forge log lines

__all__ = ["SchedulerService", "lifespan"]
