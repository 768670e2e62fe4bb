"""An asyncio task scheduler for LLM-assistant applications."""

from scheduler_service.lifespan import lifespan
from scheduler_service.service import SchedulerService

__all__ = ["SchedulerService", "lifespan"]
