"""The ``task-scheduler`` command line: the service, the operator's commands, the MCP
server and the README's generated reference."""

from scheduler_service.cli.commands import main

__all__ = ["main"]
