"""What an operator (not a user) may see and do: every user's tasks, runs and notifications.

``scheduler_tool`` scopes everything to the user in its ``ToolContext``, as an LLM-facing
tool must. An operator works across users, so listings here query the tables directly,
and actions on one task (pause, resume, cancel, run now, backfill) are carried out through
``scheduler_tool`` on behalf of the task's owner — the same validation, job updates and
notifications as when the user asks, with no second code path to keep in step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from scheduler_service.runs.notifications import to_dict as notification_to_dict
from scheduler_service.storage.models import ScheduledTask, TaskNotification, TaskRun
from scheduler_service.tasks.views import run_to_dict, task_to_dict
from scheduler_service.tools import ToolContext, ToolError

if TYPE_CHECKING:
    from scheduler_service.service import SchedulerService

# CLI action name → scheduler_tool operation.
ACTIONS = {
    "pause": "pause_task",
    "resume": "resume_task",
    "cancel": "cancel_task",
    "run-now": "execute_task_now",
}
NEXT_RUNS = 5


class Operator:
    """Cross-user views and owner-scoped actions on a started service."""

    def __init__(self, service: SchedulerService) -> None:
        self.service = service
        self.db = service.db

    async def tasks(
        self, *, user: str | None = None, status: str | None = None, limit: int = 500
    ) -> list[dict[str, Any]]:
        query = select(ScheduledTask)
        if user is not None:
            query = query.where(ScheduledTask.user_id == user)
        if status is not None:
            query = query.where(ScheduledTask.status == status)
        query = query.order_by(
            ScheduledTask.next_run_at.is_(None), ScheduledTask.next_run_at, ScheduledTask.created_at
        ).limit(limit)
        async with self.db.read() as session:
            rows = (await session.scalars(query)).all()
        return [{**task_to_dict(t), "user_id": t.user_id} for t in rows]

    async def owner(self, task_id: str) -> ToolContext:
        """The context of the task's owner, for acting on their behalf."""
        async with self.db.read() as session:
            task = await session.get(ScheduledTask, task_id)
        if task is None:
            raise ToolError("not_found", f"task_id: no task {task_id!r}; list them with `tasks`")
        return ToolContext(user_id=task.user_id, conversation_id=task.conversation_id)

    async def task(self, task_id: str) -> dict[str, Any]:
        """The task with its recent runs and, when it is scheduled, its next run times."""
        context = await self.owner(task_id)
        tool = self.service.scheduler_tool
        task: dict[str, Any] = (await tool.run("get_task", {"task_id": task_id}, context=context))[
            "task"
        ]
        task["user_id"] = context.user_id
        task["next_runs"] = []
        if task["status"] == "scheduled":
            preview = await tool.run(
                "preview_schedule", {"task_id": task_id, "count": NEXT_RUNS}, context=context
            )
            task["next_runs"] = preview["next_runs"]
        return task

    async def runs(self, task_id: str, *, limit: int = 20) -> list[dict[str, Any]]:
        async with self.db.read() as session:
            task = await session.get(ScheduledTask, task_id)
            if task is None:
                raise ToolError(
                    "not_found", f"task_id: no task {task_id!r}; list them with `tasks`"
                )
            rows = (
                await session.scalars(
                    select(TaskRun)
                    .where(TaskRun.task_id == task_id)
                    .order_by(TaskRun.fire_time.desc(), TaskRun.attempt.desc())
                    .limit(limit)
                )
            ).all()
        return [run_to_dict(r, task.timezone) for r in rows]

    async def notifications(
        self, *, conversation: str | None = None, include_displayed: bool = False, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Notifications (pending only, unless asked); listing never marks them displayed."""
        query = select(TaskNotification)
        if conversation is not None:
            query = query.where(TaskNotification.conversation_id == conversation)
        if not include_displayed:
            query = query.where(TaskNotification.displayed_at.is_(None))
        query = query.order_by(TaskNotification.created_at.desc()).limit(limit)
        async with self.db.read() as session:
            rows = (await session.scalars(query)).all()
        return [notification_to_dict(n) for n in rows]

    async def act(
        self, action: str, task_id: str, *, wait: bool = True, note: str | None = None
    ) -> dict[str, Any]:
        """pause / resume / cancel / run-now, as the task's owner would. ``run-now``
        queues the run for a worker and, with ``wait``, returns its record; ``pause``
        keeps ``note``."""
        context = await self.owner(task_id)
        kwargs: dict[str, Any] = {"task_id": task_id}
        if action == "run-now":
            kwargs["wait"] = wait
        if action == "pause" and note is not None:
            kwargs["note"] = note
        return await self.service.scheduler_tool.run(ACTIONS[action], kwargs, context=context)

    async def backfill(
        self, task_id: str, start: str, end: str, max_runs: int | None = None
    ) -> dict[str, Any]:
        """backfill_task as the task's owner: the task's past fire times in [start, end)
        that never ran are queued for the workers."""
        context = await self.owner(task_id)
        kwargs: dict[str, Any] = {"task_id": task_id, "start": start, "end": end}
        if max_runs is not None:
            kwargs["max_backfill_runs"] = max_runs
        return await self.service.scheduler_tool.run("backfill_task", kwargs, context=context)
