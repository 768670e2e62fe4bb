"""``tools.base`` in a checkout: the code lives in ``scheduler_service.tools.base``."""

from scheduler_service.tools.base import Tool, ToolContext, ToolError, parse_kwargs

__all__ = ["Tool", "ToolContext", "ToolError", "parse_kwargs"]
