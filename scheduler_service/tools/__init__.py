"""Tools the scheduler can run and the LLM can call."""

from scheduler_service.tools.base import Tool, ToolContext, ToolError, parse_kwargs
from scheduler_service.tools.registry import ToolRegistry

__all__ = ["Tool", "ToolContext", "ToolError", "ToolRegistry", "parse_kwargs"]
