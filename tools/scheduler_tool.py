"""``tools.scheduler_tool`` in a checkout: the code lives in ``scheduler_service.tools.scheduler_tool``."""

from scheduler_service.tools.scheduler_tool import SchedulerTool

__all__ = ["SchedulerTool"]
