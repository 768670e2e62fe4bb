"""FastAPI/Starlette lifespan: the service starts and stops with the app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from scheduler_service.config import Settings
from scheduler_service.tools import Tool

if TYPE_CHECKING:
    import anthropic


@contextlib.asynccontextmanager
async def lifespan(
    app: Any,
    settings: Settings | None = None,
    *,
    tools: Sequence[Tool] = (),
    anthropic_client: anthropic.AsyncAnthropic | None = None,
    role: str | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Use as ``FastAPI(lifespan=lifespan)``, or with your settings and tools as
    ``FastAPI(lifespan=functools.partial(lifespan, settings=..., tools=[MyTool()]))``.

    The service is in ``app.state.scheduler`` (and in the lifespan state as
    ``scheduler``). Tools given here are registered before any run can start.
    ``role``: "worker" (the default unless ``SCHEDULER__ENABLED=false`` or
    ``SCHEDULER__ROLE=client``) or "client" (e.g. each of ``uvicorn --workers N``, beside
    a ``task-scheduler run`` worker): see docs/deployment.md.
    """
    from scheduler_service.service import SchedulerService

    service = SchedulerService(settings, tools=tools, anthropic_client=anthropic_client, role=role)
    async with service:
        state = getattr(app, "state", None)
        if state is not None:
            state.scheduler = service
        yield {"scheduler": service}
