"""The tool contract, importable as ``tools`` from a checkout.

The code lives in ``scheduler_service.tools``; an installed distribution ships only the
``scheduler_service`` package (a host application keeps its own ``tools``), so code
outside this repository imports ``from scheduler_service.tools import Tool``.
"""

from scheduler_service.tools import Tool, ToolContext, ToolError, ToolRegistry, parse_kwargs

__all__ = ["Tool", "ToolContext", "ToolError", "ToolRegistry", "parse_kwargs"]
