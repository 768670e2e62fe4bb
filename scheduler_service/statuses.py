"""Every status, run kind, frequency and execution mode, defined once.

They are ``StrEnum``: a member equals the plain string stored in the database and
serialises to it in JSON, so stored rows and tool answers keep their exact values.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal


class TaskStatus(StrEnum):
    """Where a task is in its life. ``scheduled`` and ``paused`` are live (the task has a
    job); the others are final."""

    SCHEDULED = "scheduled"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    MISSED = "missed"


class RunStatus(StrEnum):
    """The state of one ``task_scheduler_runs`` row. ``queued`` and ``running`` are active;
    ``buffered`` waits for the task's running run to end (overlap ``buffer_one``), then
    becomes ``queued``."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"
    MISSED = "missed"
    SKIPPED = "skipped"
    BUFFERED = "buffered"


class RunKind(StrEnum):
    """Why a run row exists: a scheduled fire time, a retry of one, a manual run, a
    record of fire times that were missed, or a past fire time run on request
    (``backfill_task``)."""

    SCHEDULED = "scheduled"
    RETRY = "retry"
    MANUAL = "manual"
    MISSED = "missed"
    BACKFILL = "backfill"


class Overlap(StrEnum):
    """What a task's scheduled fire does while an earlier run of the task is in flight."""

    SKIP = "skip"  # recorded skipped (the default)
    BUFFER_ONE = "buffer_one"  # one fire waits and starts when the running one ends
    ALLOW = "allow"  # runs alongside
    CANCEL_PREVIOUS = "cancel_previous"  # the running one is stopped, then this one starts


class Frequency(StrEnum):
    ONCE = "once"
    MINUTELY = "minutely"
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    CUSTOM = "custom"


class ExecutionMode(StrEnum):
    DIRECT = "direct"
    ORCHESTRATED = "orchestrated"


class JobAction(StrEnum):
    """What the run path does to a task's job after a claim or a final attempt."""

    REMOVE = "remove"  # the task is finished or gone
    PAUSE = "pause"  # the task was paused (by the user, or after repeated failures)


ACTIVE_RUN = (RunStatus.QUEUED, RunStatus.RUNNING)  # a run in progress somewhere
LIVE_TASK = (TaskStatus.SCHEDULED, TaskStatus.PAUSED)  # a task that keeps its job
FINISHED_TASK = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.MISSED)
FREQUENCIES = tuple(Frequency)
# Runs asked for by a user, not the schedule's own: they neither count toward run_count /
# max_runs nor settle the task, and are not retried.
ON_REQUEST = (RunKind.MANUAL, RunKind.BACKFILL)

# The same values as ``Literal`` types, for pydantic input models (their JSON schema lists
# the plain strings). Keep them equal to the enums above.
FrequencyName = Literal["once", "minutely", "hourly", "daily", "weekly", "monthly", "custom"]
ModeName = Literal["direct", "orchestrated"]
OverlapName = Literal["skip", "buffer_one", "allow", "cancel_previous"]
