"""An asyncio task scheduler for LLM-assistant applications."""

from scheduler_service.lifespan import lifespan
from scheduler_service.logs import escape as log_escape
from scheduler_service.service import SchedulerService

log_escape.install()  # every module's logger exists now: user text cannot forge log lines

__all__ = ["SchedulerService", "lifespan"]
