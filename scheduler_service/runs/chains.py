"""No chains: what a run may do to tasks through scheduler_tool.

A run acts while nobody watches, on text a model may have been tricked by (a web page, an
email). If it could create a task holding scheduler_tool, or a tool the run itself lacks,
one prompt injection would outlive the run and grow: a child task with more powers, a
grandchild. So, for every scheduler_tool call made by a run (``ToolContext.scheduled_run``):

* it acts only on its owner's tasks (the context's user, as any call);
* a task it creates, changes, resumes or runs now may hold only tools the run holds,
  never scheduler_tool (so the run cannot touch its own task, nor any task with more
  powers than it has);
* it creates at most ``limits.max_creates_per_run`` tasks;
* every change it makes is written in its journal, and the run's notification lists them.

The journal is a ``ContextVar`` set by ``execution`` around the run: tool calls made on
the run's behalf see it; anything else claiming ``scheduled_run`` without it holds no
tool, so it can create nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

from scheduler_service.tools import ToolContext, ToolError

SCHEDULER_TOOL = "scheduler_tool"
TASK_CHANGES = "task_changes"  # the key of Outcome.details that lists them


@dataclass
class RunJournal:
    """What one run holds (its tools) and what it did to tasks."""

    run_id: str | None
    tools: frozenset[str]
    creates: int = 0
    changes: list[str] = field(default_factory=list)

    @property
    def grantable(self) -> frozenset[str]:
        """Tools a task touched by this run may hold."""
        return self.tools - {SCHEDULER_TOOL}

    def record(self, change: str) -> None:
        self.changes.append(change)


_journal: ContextVar[RunJournal | None] = ContextVar("run_journal", default=None)


@contextlib.contextmanager
def journal_for(run_id: str, tools: Iterable[str]) -> Iterator[RunJournal]:
    """The journal of a run, seen by every tool call made inside the block."""
    journal = RunJournal(run_id, frozenset(tools))
    token = _journal.set(journal)
    try:
        yield journal
    finally:
        _journal.reset(token)


def journal_of(context: ToolContext) -> RunJournal | None:
    """None for a call from a conversation; the run's journal for a run's call (one
    holding no tool if the caller claims ``scheduled_run`` outside a run)."""
    if not context.scheduled_run:
        return None
    journal = _journal.get()
    if journal is None or journal.run_id != context.run_id:
        return RunJournal(context.run_id, frozenset())
    return journal


def check_tools(journal: RunJournal, tools: Iterable[str], field_name: str) -> None:
    """A task touched by the run may hold only tools the run holds, never scheduler_tool."""
    extra = sorted(set(tools) - journal.grantable)
    if not extra:
        return
    held = ", ".join(sorted(journal.grantable)) or "none"
    raise ToolError(
        "forbidden",
        f"{field_name}: a scheduled run cannot create or change a task that can use "
        f"{', '.join(extra)[:200]}; a task touched by a scheduled run may use only tools the "
        f"run itself has, never {SCHEDULER_TOOL} (this run may give: {held})",
    )


def reserve_create(journal: RunJournal, limit: int) -> None:
    """Count one create against the run's limit (before any await, so parallel calls of
    one run cannot all pass the check); ``release_create`` if the create then fails."""
    if journal.creates >= limit:
        raise ToolError(
            "quota_exceeded",
            f"a scheduled run may create at most {limit} task(s); this run has reached it",
        )
    journal.creates += 1


def release_create(journal: RunJournal) -> None:
    journal.creates -= 1
