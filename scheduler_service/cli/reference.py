"""The README's scheduler_tool operations table, generated from the tool's own schema.

The operations come from ``scheduler_tool``'s input schema and each operation's kwargs
from the pydantic model that validates them, so the table cannot drift from the code:
``tests/unit/test_docs.py`` fails when the README's copy differs from :func:`operations_table`.
Regenerate it with ``python -m scheduler_service.cli.reference README.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from scheduler_service.tasks.inputs import (
    Backfill,
    CreateTask,
    ExecuteNow,
    ListTasks,
    PauseTask,
    PreviewSchedule,
    TaskRef,
    UpdateTask,
)
from scheduler_service.tasks.paging import COUNT_BOUND
from scheduler_service.tasks.scheduler_tool import INPUT_SCHEMA

START = "<!-- operations-table:start (generated: python -m scheduler_service.cli.reference README.md) -->"
END = "<!-- operations-table:end -->"

INPUTS: dict[str, type[BaseModel]] = {
    "create_task": CreateTask,
    "get_tasks": ListTasks,
    "get_task": TaskRef,
    "update_task": UpdateTask,
    "delete_task": TaskRef,
    "execute_task_now": ExecuteNow,
    "cancel_task": TaskRef,
    "pause_task": PauseTask,
    "resume_task": TaskRef,
    "preview_schedule": PreviewSchedule,
    "backfill_task": Backfill,
}
RETURNS: dict[str, str] = {
    "create_task": '`{"task", "message"}` (+ `warnings`)',
    "get_tasks": '`{"tasks", "count", "total", "total_is_lower_bound", "next_cursor", "message"}`, '
    f"ordered by next run; `total` is exact up to {COUNT_BOUND:,} (beyond: {COUNT_BOUND:,} and "
    f'`total_is_lower_bound` true, "more than {COUNT_BOUND:,}" in the message); pages by cursor '
    "report the total counted for the first page",
    "get_task": '`{"task", "message"}`; the task has `recent_runs` (and '
    "`daily_token_budget` when a budget per user is configured)",
    "update_task": '`{"task", "message"}`; revalidated and rescheduled',
    "delete_task": '`{"task_id", "message"}`; task, job and history removed',
    "execute_task_now": '`{"task_id", "run", "task", "message"}`; the schedule is untouched',
    "cancel_task": '`{"task_id", "status", "message"}`; no more runs, history kept',
    "pause_task": '`{"task_id", "status", "message"}`',
    "resume_task": '`{"task_id", "status", "message"}`',
    "preview_schedule": '`{"description", "next_runs", "warnings", "message"}`; stores nothing',
    "backfill_task": '`{"task_id", "fire_times", "queued", "queued_times", "already_done", '
    '"left_to_schedule", "capped", "continue_from", "message"}`; past fire times that never '
    "ran, queued once each",
}


def _kwargs(model: type[BaseModel]) -> str:
    parts = []
    fields = sorted(model.model_fields.items(), key=lambda item: not item[1].is_required())
    for name, info in fields:
        if info.is_required():
            parts.append(f"**{name}**")
        elif info.default not in (None, PydanticUndefined):
            default = str(info.default).lower() if isinstance(info.default, bool) else info.default
            parts.append(f"{name} (default {default})")
        else:
            parts.append(name)
    return ", ".join(parts)


def operations_table() -> str:
    """The markdown table: one row per operation in scheduler_tool's schema."""
    operations = INPUT_SCHEMA["properties"]["operation"]["enum"]
    rows = ["| operation | kwargs (**bold** = required) | returns |", "|---|---|---|"]
    for op in operations:
        rows.append(f"| `{op}` | {_kwargs(INPUTS[op])} | {RETURNS[op]} |")
    return "\n".join(rows)


def readme_section(text: str) -> str:
    """The generated part of a README (between the markers)."""
    start, end = text.index(START) + len(START), text.index(END)
    return text[start:end].strip()


def write(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    start, end = text.index(START) + len(START), text.index(END)
    path.write_text(text[:start] + "\n" + operations_table() + "\n" + text[end:], encoding="utf-8")


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "README.md"))
