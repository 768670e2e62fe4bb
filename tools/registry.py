"""``tools.registry`` in a checkout: the code lives in ``scheduler_service.tools.registry``."""

from scheduler_service.tools.registry import ToolRegistry

__all__ = ["ToolRegistry"]
