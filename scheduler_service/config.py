"""Service configuration, read from the environment and `.env`.

Every field can be set from the environment: top-level fields by their upper-case name
(``DATABASE_URL``, ``DEFAULT_TIMEZONE``, ``TOOLS``), nested ones with ``__`` between the
section and the field (``SCHEDULER__MAX_CONCURRENT_TASKS=10``,
``SCHEDULER_TOOL__MAX_TASKS_PER_USER=50``). Lists are JSON (``TOOLS='["pkg.mod:MyTool"]'``).
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SYSTEM_PROMPT = (
    "You are a task automation assistant running a scheduled task on behalf of a user who is "
    "not present. Use the available tools to accomplish the task described by the user "
    "message. Do not ask questions: nobody will answer. When you are done, reply with a short "
    "summary of what you did and any result the user should see."
)


def _check_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown IANA timezone {value!r}; use a name such as 'UTC' or 'Europe/Paris'"
        ) from None
    return value


class SchedulerConfig(BaseModel):
    """Configuration for the task scheduler."""

    enabled: bool = Field(default=True, description="Whether the scheduler is enabled by default")
    check_interval: int = Field(
        default=60,
        ge=1,
        description="Interval in seconds to check for scheduled tasks. The scheduler wakes at "
        "each due time anyway (and within ~1 s of a job another process adds); this bounds "
        "how long it can sleep, and how often the leader looks for runs of dead workers.",
    )
    log_level: str = Field(default="INFO", description="Logging level for the scheduler")
    max_concurrent_tasks: int = Field(
        default=5, ge=1, description="Maximum number of tasks to run concurrently"
    )
    task_timeout: int = Field(default=300, ge=1, description="Default timeout for tasks in seconds")
    orchestration_model: str = Field(
        default="claude-haiku-5-5", description="Model to use for orchestrated tasks"
    )
    default_system_prompt: str = Field(
        default=DEFAULT_SYSTEM_PROMPT, description="Default system prompt for orchestrated tasks"
    )
    misfire_grace_time: int = Field(
        default=3600,
        ge=0,
        description="Seconds after a missed fire time (service down) within which one "
        "catch-up run still happens; older missed times are recorded as missed.",
    )
    min_interval: int = Field(
        default=60, ge=1, description="Shortest allowed interval between runs, in seconds"
    )
    max_retries: int = Field(default=3, ge=0, description="Default retries of a failed run")
    retry_backoff_base: float = Field(default=10.0, gt=0, description="First retry delay, s")
    retry_backoff_factor: float = Field(default=2.0, ge=1, description="Delay multiplier")
    retry_backoff_cap: float = Field(default=600.0, gt=0, description="Longest retry delay, s")
    max_consecutive_failures: int = Field(
        default=5, ge=1, description="Failed fire times in a row after which a task pauses"
    )
    shutdown_grace: float = Field(
        default=10.0, ge=0, description="Seconds a stop waits for running tasks"
    )
    max_iterations: int = Field(default=10, ge=1, description="Model calls per orchestrated run")
    max_tokens: int = Field(default=1024, ge=1, description="max_tokens per model call")
    model_max_tokens: int = Field(
        default=64_000,
        ge=1,
        description="The orchestration model's own output limit: a task's max_tokens above "
        "it is refused at create/update time instead of failing every run",
    )
    token_budget: int | None = Field(
        default=None, ge=1, description="Input+output tokens allowed per orchestrated run"
    )

    @model_validator(mode="after")
    def _tokens_within_model(self) -> SchedulerConfig:
        if self.max_tokens > self.model_max_tokens:
            raise ValueError(
                f"max_tokens={self.max_tokens} is above model_max_tokens="
                f"{self.model_max_tokens}; every orchestrated run would fail"
            )
        return self


class SchedulerToolConfig(BaseModel):
    """Configuration for the scheduler_tool."""

    enabled: bool = Field(default=True, description="Whether this tool is enabled by default")
    max_tasks_per_user: int = Field(
        default=20, ge=1, description="Maximum number of tasks a user can create"
    )


class LimitsConfig(BaseModel):
    """Bounds on what one user, one model or one scheduled run can make the service store
    or compute. Every limit answers ``invalid_input`` (or ``quota_exceeded`` /
    ``conflict``) naming the field; see docs/limits.md."""

    max_name_chars: int = Field(default=200, ge=1, le=200, description="Task name length")
    max_description_chars: int = Field(default=2000, ge=1, description="Task description length")
    max_prompt_chars: int = Field(
        default=10_000, ge=1, description="task_description and task_prompt length"
    )
    max_parameters_bytes: int = Field(
        default=16_384, ge=2, description="Direct task parameters, as UTF-8 JSON bytes"
    )
    max_depth: int = Field(
        default=20, ge=2, description="Nesting depth of kwargs and parameters (objects/lists)"
    )
    max_list_items: int = Field(
        default=50, ge=1, description="Items in available_tools, day_of_week and list filters"
    )
    max_stored_chars: int = Field(
        default=20_000,
        ge=100,
        description="Run results and errors, task last_result/last_error and notification "
        "messages are cut to this many characters (JSON text for results), with a marker",
    )
    max_rrule_count: int = Field(default=1000, ge=1, description="Largest COUNT an RRULE may give")
    schedule_eval_seconds: float = Field(
        default=1.0,
        gt=0,
        description="Time budget of one schedule evaluation (parse, preview, next run); a "
        "schedule that needs more is refused as invalid_input",
    )
    schedule_eval_workers: int = Field(
        default=2,
        ge=1,
        description="Threads that evaluate schedules (their own pool: costly schedules "
        "cannot starve the rest of the service)",
    )
    max_creates_per_run: int = Field(
        default=3, ge=0, description="Tasks one scheduled run may create through scheduler_tool"
    )
    retention_days: float = Field(
        default=30,
        gt=0,
        description="Finished tasks (completed, cancelled, failed, missed), finished runs and "
        "displayed notifications older than this are deleted",
    )
    max_finished_tasks_per_user: int = Field(
        default=100,
        ge=0,
        description="Finished tasks kept per user; creating a task deletes the oldest beyond it",
    )
    manual_run_interval: float = Field(
        default=5.0,
        ge=0,
        description="Seconds between two execute_task_now of the same task",
    )


class Settings(BaseSettings):
    """Top-level settings. See the module docstring for the environment names."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="__",
        extra="ignore",
    )

    database_url: str = Field(
        default="sqlite+aiosqlite:///tasks.db",
        description="SQLAlchemy async URL: sqlite+aiosqlite:///file.db or "
        "postgresql+asyncpg://user@host/db",
    )
    default_timezone: str = Field(default="UTC", description="IANA zone for tasks without one")
    tools: list[str] = Field(
        default_factory=list,
        description='Extra tools registered at start, as "module:attribute" (a Tool class or '
        "instance)",
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None, description="Key for orchestrated runs (ANTHROPIC_API_KEY)"
    )
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    scheduler_tool: SchedulerToolConfig = Field(default_factory=SchedulerToolConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)

    @field_validator("default_timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        return _check_timezone(value)

    @field_validator("database_url")
    @classmethod
    def _async_url(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                f"unsupported database URL {value!r}; use sqlite+aiosqlite:///path.db "
                "or postgresql+asyncpg://user@host/dbname"
            )
        return value


class ConfigError(Exception):
    """Settings could not be loaded; the message names the environment variable."""


def env_name(loc: tuple[int | str, ...]) -> str:
    """('scheduler', 'max_concurrent_tasks') -> 'SCHEDULER__MAX_CONCURRENT_TASKS'."""
    return "__".join(str(part).upper() for part in loc if not isinstance(part, int))


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning validation errors into one readable message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [
            f"{env_name(err['loc'])}: {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()
        ]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
