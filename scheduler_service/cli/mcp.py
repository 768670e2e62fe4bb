"""The scheduler as an MCP server over stdio: ``task-scheduler mcp --user U --conversation C``.

Any MCP host (a desktop assistant, an IDE) can then create and manage scheduled tasks and
collect their notifications. The host process speaks for one user and one conversation,
given on the command line: an MCP client cannot choose whose tasks it touches, just as an
LLM calling ``scheduler_tool`` cannot.

Two MCP tools:

- ``scheduler_tool`` — the same operations, arguments and answers as the Anthropic tool
  (``{"operation": ..., "kwargs": {...}}``); its errors come back as MCP tool errors whose
  text names the field and what is accepted.
- ``get_notifications`` — the conversation's pending notifications (most urgent first),
  marked displayed unless ``mark_displayed`` is false.

The service runs inside the server process, competing for the scheduling lock like any
other worker, so tasks fire even when the MCP server is the only process on the database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError as MCPToolError

from scheduler_service.tasks.scheduler_tool import DESCRIPTION, OPERATIONS
from scheduler_service.tools import ToolContext, ToolError

if TYPE_CHECKING:
    from scheduler_service.config import Settings
    from scheduler_service.service import SchedulerService

SERVER_NAME = "task-scheduler"
INSTRUCTIONS = (
    "Schedules tasks that run later or repeatedly for the user (reminders, reports, checks), "
    "and reports what they did. Call get_notifications to see results of past runs."
)


def build_server(service: SchedulerService, context: ToolContext) -> MCPServer[Any]:
    """An MCP server whose tools act on ``service`` as ``context``'s user."""
    server: MCPServer[Any] = MCPServer(name=SERVER_NAME, instructions=INSTRUCTIONS)

    async def scheduler_tool(
        operation: str, kwargs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        try:
            return await service.scheduler_tool.run(operation, kwargs, context=context)
        except ToolError as exc:
            raise MCPToolError(str(exc)) from None

    async def get_notifications(mark_displayed: bool = True) -> dict[str, Any]:
        conversation = context.conversation_id or ""
        pending = await service.get_notifications(conversation, user_id=context.user_id)
        if mark_displayed and pending:
            await service.mark_notifications_displayed(
                [n["id"] for n in pending], user_id=context.user_id
            )
        return {"notifications": pending, "count": len(pending)}

    server.add_tool(
        scheduler_tool,
        name="scheduler_tool",
        description=DESCRIPTION + f"\nOperations: {', '.join(OPERATIONS)}.",
        structured_output=True,
    )
    server.add_tool(
        get_notifications,
        name="get_notifications",
        description="Pending notifications of this conversation (results of scheduled runs), "
        "most urgent first. They are marked displayed unless mark_displayed is false.",
        structured_output=True,
    )
    return server


async def serve_stdio(
    settings: Settings, *, user: str, conversation: str, worker: bool = False
) -> None:
    """Start the service, serve MCP on stdin/stdout until the client disconnects, stop.
    A client unless ``worker``: its manual runs go to the workers, and it never fires or
    executes another user's task with tools it lacks."""
    from scheduler_service.service import SchedulerService

    context = ToolContext(user_id=user, conversation_id=conversation)
    role = "worker" if worker else "client"
    async with SchedulerService(settings, role=role) as service:
        await build_server(service, context).run_stdio_async()
