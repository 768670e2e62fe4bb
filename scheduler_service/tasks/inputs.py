"""The kwargs of scheduler_tool operations, validated with pydantic.

Validation errors become one ``ToolError("invalid_input", ...)`` naming each bad field,
what was wrong and what is accepted, so an LLM can fix its call on the next try.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from scheduler_service.statuses import FREQUENCIES, FrequencyName, ModeName, TaskStatus
from scheduler_service.tools import ToolError

TASK_STATUSES = tuple(status.value for status in TaskStatus)
Frequency = FrequencyName
Mode = ModeName
Model = TypeVar("Model", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class TaskFields(_Strict):
    """Fields shared by create_task and update_task (all optional here)."""

    name: str | None = Field(None, min_length=1, max_length=200, description="Short task name")
    description: str | None = Field(None, max_length=2000)
    frequency: Frequency | None = Field(None, description=f"One of {', '.join(FREQUENCIES)}")
    scheduled_time: str | None = Field(
        None,
        description="HH:MM[:SS] or 9am / 9:30 pm / noon (next occurrence, task timezone), "
        "an ISO 8601 datetime, or for once tasks 'in 2 hours', 'tomorrow at 7', "
        "'next tuesday at 9' (relative to the now in the answers)",
    )
    day_of_week: int | str | list[int | str] | None = Field(
        None, description="weekly: 0=Monday … 6=Sunday, a name, or a list"
    )
    day_of_month: int | None = Field(None, description="monthly: 1–31, or -1 for the last day")
    custom_schedule: str | None = Field(
        None,
        max_length=500,
        description='custom: "every weekday at 9am", "every other tuesday at 9", "twice a '
        'day at 8 and 20", "first monday of the month at 10", "last business day of the month '
        'at 16", "on the 1st and 15th at 9", "every year on March 3 at 9", "every 15 minutes '
        'between 9 and 17 on weekdays", "in 2 hours", a 5-field cron expression ("cron: 30 8 '
        '* * 1-5") or an RFC 5545 "RRULE:FREQ=..." (EXDATE allowed).',
    )
    except_dates: list[str] | None = Field(
        None,
        max_length=1000,
        description="Local dates (YYYY-MM-DD) on which a repeating task does not run, "
        "e.g. holidays",
    )
    timezone: str | None = Field(None, description="IANA zone, e.g. Europe/Paris")
    end_time: str | None = Field(None, description="ISO 8601; no runs after it")
    max_runs: int | None = Field(
        None, ge=1, le=1_000_000, description="Complete the task after this many runs"
    )
    execution_mode: Mode | None = None
    tool_name: str | None = Field(None, description="direct: the tool to call")
    operation: str | None = Field(None, description="direct: the tool operation")
    parameters: dict[str, Any] | None = Field(None, description="direct: the operation's kwargs")
    task_description: str | None = Field(
        None, max_length=10_000, description="orchestrated: what the LLM should accomplish"
    )
    task_prompt: str | None = Field(
        None, max_length=10_000, description="orchestrated: system prompt"
    )
    available_tools: list[str] | None = Field(
        None, description="orchestrated: tools the LLM may use (default: all but scheduler_tool)"
    )
    timeout: int | None = Field(None, ge=1, le=86_400, description="Seconds per run")
    max_retries: int | None = Field(None, ge=0, le=10, description="Retries of a failed run")
    misfire_grace_time: int | None = Field(
        None,
        ge=0,
        le=31_622_400,
        description="Seconds within which a run missed during downtime still runs (≤ 1 year)",
    )
    max_iterations: int | None = Field(None, ge=1, le=50, description="orchestrated: model calls")
    max_tokens: int | None = Field(None, ge=1, le=64_000, description="orchestrated: per call")
    token_budget: int | None = Field(
        None, ge=1, le=100_000_000, description="orchestrated: tokens per run"
    )

    @field_validator("frequency", "execution_mode", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("day_of_month", mode="before")
    @classmethod
    def _day_of_month(cls, value: Any) -> Any:
        return _day_number(value)


def _day_number(value: Any) -> Any:
    """day_of_month as text ('last', '15th') is refused with the number to send instead."""
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        raise ValueError(
            f"{value!r} is not a number; give 1–31, or -1 for the last day of the month "
            "(for 'first monday' and the like use frequency custom with custom_schedule "
            "'first monday of the month at 10')"
        )
    return value


class CreateTask(TaskFields):
    name: str = Field(..., min_length=1, max_length=200, description="Short task name")
    frequency: Frequency = Field(..., description=f"One of {', '.join(FREQUENCIES)}")


class UpdateTask(TaskFields):
    task_id: str = Field(..., min_length=1)


class PreviewSchedule(_Strict):
    """preview_schedule: the schedule fields of create_task, or a task_id (plus changes)."""

    task_id: str | None = Field(None, min_length=1)
    frequency: Frequency | None = None
    scheduled_time: str | None = None
    day_of_week: int | str | list[int | str] | None = None
    day_of_month: int | None = None
    custom_schedule: str | None = Field(None, max_length=500)
    timezone: str | None = None
    end_time: str | None = None
    max_runs: int | None = Field(None, ge=1, le=1_000_000)
    except_dates: list[str] | None = Field(None, max_length=1000)
    count: int = Field(5, ge=1, le=100, description="How many next runs to list")

    @field_validator("frequency", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("day_of_month", mode="before")
    @classmethod
    def _day_of_month(cls, value: Any) -> Any:
        return _day_number(value)


class TaskRef(_Strict):
    task_id: str = Field(..., min_length=1)


class ExecuteNow(TaskRef):
    wait: bool = Field(True, description="Wait for the run to finish and return its result")


class ListTasks(_Strict):
    status: Literal[TASK_STATUSES] | list[Literal[TASK_STATUSES]] | None = None  # type: ignore[valid-type]
    frequency: Frequency | list[Frequency] | None = None
    execution_mode: Mode | None = None
    limit: int = Field(20, ge=1, le=100)
    offset: int = Field(0, ge=0)
    cursor: str | None = Field(None, max_length=1000)


OPTION_FIELDS = ("max_iterations", "max_tokens", "token_budget")
SCHEDULE_FIELDS = (
    "frequency",
    "scheduled_time",
    "day_of_week",
    "day_of_month",
    "custom_schedule",
    "timezone",
    "end_time",
    "max_runs",
    "except_dates",
)


def _describe_error(model: type[BaseModel], err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "kwargs"
    if err["type"] == "extra_forbidden":
        fields = ", ".join(n for n in model.model_fields)
        return f"{loc}: unknown field; accepted fields are: {fields}"
    if err["type"] == "missing":
        return f"{loc}: required"
    got = err.get("input")
    return f"{loc}: {err['msg']} (got {got!r})"


def validate(model: type[Model], data: dict[str, Any]) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        seen: list[str] = []
        for err in exc.errors():
            text = _describe_error(model, err)
            field = text.split(":", 1)[0]
            if not any(s.startswith(field.split(".")[0] + ":") for s in seen):
                seen.append(text)
        raise ToolError("invalid_input", "; ".join(seen)) from None
