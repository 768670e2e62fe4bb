"""FastAPI/Starlette lifespan: the service starts and stops with the app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from scheduler_service.config import Settings


@contextlib.asynccontextmanager
async def lifespan(app: Any, settings: Settings | None = None) -> AsyncIterator[dict[str, Any]]:
    """Use as ``FastAPI(lifespan=lifespan)``; the service is in ``app.state.scheduler``
    (and in the lifespan state as ``scheduler``)."""
    from scheduler_service.service import SchedulerService

    async with SchedulerService(settings) as service:
        state = getattr(app, "state", None)
        if state is not None:
            state.scheduler = service
        yield {"scheduler": service}
