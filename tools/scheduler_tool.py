"""``tools.scheduler_tool`` in a checkout: the code lives in ``scheduler_service.tasks.scheduler_tool``."""

from scheduler_service.tasks.scheduler_tool import SchedulerTool

__all__ = ["SchedulerTool"]
