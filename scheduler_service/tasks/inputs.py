"""The kwargs of scheduler_tool operations, validated with pydantic.

Validation errors become one ``ToolError("invalid_input", ...)`` naming each bad field,
what was wrong and what is accepted, so an LLM can fix its call on the next try.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from scheduler_service.config import HOST_DEPENDENT_ZONES, ZONE_FORM, Settings, iana_zone_names
from scheduler_service.limits import max_tokens_limit
from scheduler_service.runs.notify_policy import NOTHING_TO_REPORT, NotifyName
from scheduler_service.statuses import (
    FREQUENCIES,
    FrequencyName,
    ModeName,
    OverlapName,
    TaskStatus,
)

TASK_STATUSES = tuple(status.value for status in TaskStatus)
Frequency = FrequencyName
Mode = ModeName

# Column sizes (storage/models.py): a longer value is refused here, on every backend.
TASK_ID_CHARS = 40
NAME_CHARS = 200
TIME_CHARS = 40
CUSTOM_SCHEDULE_CHARS = 200
ZONE_CHARS = 64
TOOL_CHARS = 100
PAUSE_NOTE_CHARS = 500
LIST_ITEMS = 50  # before de-duplication; the configured max_list_items applies after
OFFSET_MAX = 1_000_000_000
SMALL_INT = 1_000_000  # day_of_month / day_of_week numbers: far beyond any valid value
_DTSTART_YEAR = re.compile(r"DTSTART[^:\s]*:(\d{4})", re.IGNORECASE)
MIN_DTSTART_YEAR = 1900
_COUNT = re.compile(r"COUNT\s*=\s*(\d+)", re.IGNORECASE)
MAX_RRULE_COUNT = 1000  # without settings (LimitsConfig.max_rrule_count's default)


_Day = Annotated[int, Field(ge=-SMALL_INT, le=SMALL_INT)] | Annotated[str, Field(max_length=20)]
Weekdays = _Day | Annotated[list[_Day], Field(max_length=LIST_ITEMS)]


def _zones() -> frozenset[str]:
    """The IANA names, without host-dependent ones such as 'localtime' and 'Factory'."""
    return iana_zone_names()


def _check_zone(value: str | None) -> str | None:
    """Only names of the IANA database: any other text never reaches the file system, and
    no name whose meaning depends on the host (a task must mean the same on every worker)."""
    if value is None or not value.strip() or value.strip() in _zones():
        return value
    host = value.strip() in HOST_DEPENDENT_ZONES
    raise ValueError(
        ("a host-dependent zone name; " if host else "not an IANA timezone; ") + ZONE_FORM
    )


def known_zone(value: str | None) -> bool:
    """Whether ``value`` names a zone of the IANA database."""
    return value is not None and value.strip() in _zones()


def _settings(info: ValidationInfo) -> Settings | None:
    context = info.context
    return context.get("settings") if isinstance(context, dict) else None


def _dedupe(value: Any) -> Any:
    if isinstance(value, list):
        out: list[Any] = []
        for item in value:
            if item not in out:
                out.append(item)
        return out
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ScheduleFields(_Strict):
    """The schedule fields and their checks, written once: create_task, update_task and
    preview_schedule all take them."""

    frequency: Frequency | None = Field(None, description=f"One of {', '.join(FREQUENCIES)}")
    scheduled_time: str | None = Field(
        None,
        max_length=TIME_CHARS,
        description="HH:MM[:SS] or 9am / 9:30 pm / noon (next occurrence, task timezone), "
        "an ISO 8601 datetime, or for once tasks 'in 2 hours', 'tomorrow at 7', "
        "'next tuesday at 9' (relative to the now in the answers)",
    )
    day_of_week: Weekdays | None = Field(
        None, description="weekly: 0=Monday … 6=Sunday, a name, or a list"
    )
    day_of_month: int | None = Field(
        None, ge=-SMALL_INT, le=SMALL_INT, description="monthly: 1–31, or -1 for the last day"
    )
    custom_schedule: str | None = Field(
        None,
        max_length=CUSTOM_SCHEDULE_CHARS,
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
    timezone: str | None = Field(
        None, max_length=ZONE_CHARS, description="IANA zone, e.g. Europe/Paris"
    )
    end_time: str | None = Field(
        None, max_length=TIME_CHARS, description="ISO 8601; no runs after it"
    )
    max_runs: int | None = Field(
        None, ge=1, le=1_000_000, description="Complete the task after this many runs"
    )

    @field_validator("frequency", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("day_of_month", mode="before")
    @classmethod
    def _day_of_month(cls, value: Any) -> Any:
        return _day_number(value)

    _zone = field_validator("timezone")(_check_zone)

    @field_validator("custom_schedule")
    @classmethod
    def _rule_bounds(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _check_count(_check_dtstart(value), info)

    @field_validator("day_of_week", mode="after")
    @classmethod
    def _unique_days(cls, value: Any, info: ValidationInfo) -> Any:
        return _distinct_items(value, info)


def _distinct_items(value: Any, info: ValidationInfo) -> Any:
    """A list without repeats, within the configured ``max_list_items``."""
    value = _dedupe(value)
    settings = _settings(info)
    if isinstance(value, list) and settings and len(value) > settings.limits.max_list_items:
        raise ValueError(
            f"at most {settings.limits.max_list_items} distinct items, got {len(value)}"
        )
    return value


class TaskFields(ScheduleFields):
    """Fields shared by create_task and update_task (all optional here)."""

    name: str | None = Field(
        None, min_length=1, max_length=NAME_CHARS, description="Short task name"
    )
    description: str | None = Field(None, max_length=100_000)
    execution_mode: Mode | None = None
    tool_name: str | None = Field(
        None, max_length=TOOL_CHARS, description="direct: the tool to call"
    )
    operation: str | None = Field(
        None, max_length=TOOL_CHARS, description="direct: the tool operation"
    )
    parameters: dict[str, Any] | None = Field(None, description="direct: the operation's kwargs")
    task_description: str | None = Field(
        None, max_length=1_000_000, description="orchestrated: what the LLM should accomplish"
    )
    task_prompt: str | None = Field(
        None, max_length=1_000_000, description="orchestrated: system prompt"
    )
    available_tools: list[Annotated[str, Field(max_length=TOOL_CHARS)]] | None = Field(
        None,
        max_length=LIST_ITEMS,
        description="orchestrated: tools the LLM may use (default: all but scheduler_tool)",
    )
    timeout: int | None = Field(None, ge=1, le=86_400, description="Seconds per run")
    max_retries: int | None = Field(None, ge=0, le=10, description="Retries of a failed run")
    misfire_grace_time: int | None = Field(
        None,
        ge=0,
        le=31_622_400,
        description="Seconds within which a run missed during downtime still runs (≤ 1 year)",
    )
    overlap: OverlapName | None = Field(
        None,
        description="When a run is due while the previous run of this task is still going: "
        "'skip' (default: that run is recorded skipped), 'buffer_one' (it waits and starts "
        "when the previous one ends; further ones meanwhile are skipped), 'allow' (it "
        "runs at the same time) or 'cancel_previous' (the previous run is stopped, then "
        "this one starts)",
    )
    max_iterations: int | None = Field(None, ge=1, le=50, description="orchestrated: model calls")
    max_tokens: int | None = Field(None, ge=1, le=64_000, description="orchestrated: per call")
    token_budget: int | None = Field(
        None, ge=1, le=100_000_000, description="orchestrated: tokens per run"
    )
    spread: bool | None = Field(
        None,
        description="Recurring tasks: true starts every run at a fixed offset after its "
        "time (derived from the task id; at most 10% of the period and 15 min), so that "
        "many tasks on one schedule do not all start in the same second; the answer's "
        "schedule and next_runs show the offset. false: runs start on time (the default)",
    )
    notify: NotifyName | None = Field(
        None,
        description="When the user is told about a run (every run is recorded anyway): "
        "always (default, every run); on_change (only when the result differs from the last "
        "successful run's); model_decides (orchestrated only: the model answers "
        f"{NOTHING_TO_REPORT} when there is nothing worth telling, e.g. 'tell me only if the "
        "price drops below 50'); on_failure (only failures). Failures always notify: the "
        "first at once, repeats at most once per interval until a success",
    )

    @field_validator("execution_mode", "notify", "overlap", mode="before")
    @classmethod
    def _lower_mode(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("available_tools", mode="after")
    @classmethod
    def _unique_tools(cls, value: Any, info: ValidationInfo) -> Any:
        return _distinct_items(value, info)

    @field_validator("name", "description", "task_description", "task_prompt")
    @classmethod
    def _length(cls, value: str | None, info: ValidationInfo) -> str | None:
        settings = _settings(info)
        if value is None or settings is None:
            return value
        limits = settings.limits
        limit = {
            "name": limits.max_name_chars,
            "description": limits.max_description_chars,
        }.get(info.field_name or "", limits.max_prompt_chars)
        if len(value) > limit:
            raise ValueError(f"at most {limit} characters, got {len(value)}")
        return value

    @field_validator("max_tokens")
    @classmethod
    def _model_tokens(cls, value: int | None, info: ValidationInfo) -> int | None:
        settings = _settings(info)
        if value is None or settings is None:
            return value
        limit = max_tokens_limit(settings.scheduler)
        if value > limit:
            raise ValueError(
                f"{value} is above what the model {settings.scheduler.orchestration_model} "
                f"accepts per call; give 1-{limit}"
            )
        return value


def _day_number(value: Any) -> Any:
    """day_of_month as text ('last', '15th') is refused with the number to send instead."""
    if isinstance(value, str) and not value.strip().lstrip("-").isdigit():
        raise ValueError(
            f"{value!r} is not a number; give 1–31, or -1 for the last day of the month "
            "(for 'first monday' and the like use frequency custom with custom_schedule "
            "'first monday of the month at 10')"
        )
    return value


def _check_count(value: str | None, info: ValidationInfo) -> str | None:
    """An RRULE's COUNT bounds the occurrences walked from its DTSTART on every
    evaluation: refuse one beyond ``limits.max_rrule_count``."""
    settings = _settings(info)
    match = _COUNT.search(value or "")
    if match is None:
        return value
    limit = settings.limits.max_rrule_count if settings else MAX_RRULE_COUNT
    if int(match[1]) > limit:
        raise ValueError(
            f"COUNT={match[1][:12]} is more than {limit}; give COUNT up to {limit}, or "
            "UNTIL=<date> / max_runs to end the rule"
        )
    return value


def _check_dtstart(value: str | None) -> str | None:
    """A DTSTART before 1900 would make the rule's stored text unreadable (years below
    1000 are not zero-padded) and its evaluation long; refuse it with a clear message."""
    if value is None:
        return value
    match = _DTSTART_YEAR.search(value)
    if match and int(match[1]) < MIN_DTSTART_YEAR:
        raise ValueError(
            f"DTSTART year {match[1]} is before {MIN_DTSTART_YEAR}; give a DTSTART from "
            f"{MIN_DTSTART_YEAR} on (or none: the rule then starts now)"
        )
    return value


class CreateTask(TaskFields):
    name: str = Field(..., min_length=1, max_length=NAME_CHARS, description="Short task name")
    frequency: Frequency = Field(..., description=f"One of {', '.join(FREQUENCIES)}")


class UpdateTask(TaskFields):
    task_id: str = Field(..., min_length=1, max_length=TASK_ID_CHARS)


class PreviewSchedule(ScheduleFields):
    """preview_schedule: the schedule fields of create_task, or a task_id (plus changes)."""

    task_id: str | None = Field(None, min_length=1, max_length=TASK_ID_CHARS)
    count: int = Field(5, ge=1, le=100, description="How many next runs to list")


class TaskRef(_Strict):
    task_id: str = Field(..., min_length=1, max_length=TASK_ID_CHARS)


class PauseTask(TaskRef):
    note: str | None = Field(
        None,
        min_length=1,
        max_length=PAUSE_NOTE_CHARS,
        description="pause_task: why it is paused (shown by get_task until it is resumed)",
    )


class ExecuteNow(TaskRef):
    wait: bool = Field(True, description="Wait for the run to finish and return its result")


ISO_FORM = "an ISO 8601 date or datetime such as '2026-11-01' or '2026-11-01T09:00' (without an offset: in the task's timezone)"


def _iso_instant(value: str | None) -> str | None:
    """A backfill bound must read as an ISO 8601 date or datetime (zone applied later)."""
    if value is None:
        return value
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not {ISO_FORM}") from None
    return value


class Backfill(TaskRef):
    """backfill_task: run the task's past fire times in [start, end) that never ran."""

    start: str = Field(
        ...,
        max_length=TIME_CHARS,
        description="backfill_task: first instant of the window (inclusive), ISO 8601; "
        "naive = the task's timezone",
    )
    end: str = Field(
        ...,
        max_length=TIME_CHARS,
        description="backfill_task: end of the window (exclusive), ISO 8601, not in the future",
    )
    max_backfill_runs: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="backfill_task: queue at most this many fire times, oldest first "
        "(default and upper bound: the configured limit, 100 unless changed)",
    )

    _instants = field_validator("start", "end")(_iso_instant)

    @field_validator("max_backfill_runs")
    @classmethod
    def _at_most_configured(cls, value: int | None, info: ValidationInfo) -> int | None:
        settings = _settings(info)
        if value is None or settings is None:
            return value
        limit = settings.limits.max_backfill_runs
        if value > limit:
            raise ValueError(f"at most {limit} a call; give 1-{limit} and backfill the rest later")
        return value


class ListTasks(_Strict):
    status: (
        Literal[TASK_STATUSES]  # type: ignore[valid-type]
        | Annotated[list[Literal[TASK_STATUSES]], Field(max_length=LIST_ITEMS)]  # type: ignore[valid-type]
        | None
    ) = None
    frequency: Frequency | Annotated[list[Frequency], Field(max_length=LIST_ITEMS)] | None = None
    execution_mode: Mode | None = None
    limit: int = Field(20, ge=1, le=100)
    offset: int = Field(0, ge=0, le=OFFSET_MAX)
    cursor: str | None = Field(None, max_length=1000)


OPTION_FIELDS = ("max_iterations", "max_tokens", "token_budget", "overlap")
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
