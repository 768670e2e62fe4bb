"""Service configuration, read from the environment and `.env`.

Every field can be set from the environment: top-level fields by their upper-case name
(``DATABASE_URL``, ``DEFAULT_TIMEZONE``, ``TOOLS``), nested ones with ``__`` between the
section and the field (``SCHEDULER__MAX_CONCURRENT_TASKS=10``,
``SCHEDULER_TOOL__MAX_TASKS_PER_USER=50``). Lists are JSON (``TOOLS='["pkg.mod:MyTool"]'``).
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import re
from collections.abc import Mapping
from typing import Any, Literal
from zoneinfo import available_timezones

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from scheduler_service.storage.urls import (
    URL_SCHEMES,
    DatabaseUrl,
    DatabaseUrlError,
    parse_database_url,
    redact,
)

__all__ = ["URL_SCHEMES", "DatabaseUrlError"]  # re-exported for existing importers

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

DEFAULT_SYSTEM_PROMPT = (
    "You are a task automation assistant running a scheduled task on behalf of a user who is "
    "not present. Use the available tools to accomplish the task described by the user "
    "message. Do not ask questions: nobody will answer. When you are done, reply with a short "
    "summary of what you did and any result the user should see."
)


# Names in the zone database whose meaning depends on the host, not on the name:
# ``localtime`` is whatever the host is set to, ``Factory`` means "zone not set",
# ``posixrules`` is a template. A task stored with one would run at different times on
# different workers, and fail to load on a host without system zone files.
HOST_DEPENDENT_ZONES = frozenset({"localtime", "Factory", "posixrules", "leapseconds"})
ZONE_FORM = (
    "use an IANA name of the form Area/Location such as 'Europe/Paris' or "
    "'America/New_York', or 'UTC'"
)


@functools.cache
def iana_zone_names() -> frozenset[str]:
    """The zone names accepted everywhere a zone is named: the IANA database's, without
    the host-dependent ones (and without the ``posix/`` and ``right/`` copies some
    systems keep)."""
    return frozenset(
        name
        for name in available_timezones()
        if name not in HOST_DEPENDENT_ZONES and not name.startswith(("posix/", "right/"))
    ) | {"UTC"}


def _check_timezone(value: str) -> str:
    if value.strip() not in iana_zone_names():
        raise ValueError(f"unknown IANA timezone {value!r}; {ZONE_FORM}")
    return value


class SchedulerConfig(BaseModel):
    """Configuration for the task scheduler."""

    @property
    def is_worker(self) -> bool:
        """Whether this process executes runs: ``role`` if set, else ``enabled``."""
        return self.role == "worker" if self.role is not None else self.enabled

    enabled: bool = Field(
        default=True,
        description="Whether this process runs tasks (a worker). false makes it a client: it "
        "manages tasks and queues manual runs for the workers, and never runs one itself",
    )
    role: Literal["worker", "client"] | None = Field(
        default=None,
        description="worker (fires jobs, executes runs with its tools) or client (manages "
        "tasks, reads runs, queues manual runs). Unset: worker if enabled, else client",
    )
    check_interval: int = Field(
        default=60,
        ge=1,
        description="Interval in seconds to check for scheduled tasks. The scheduler wakes at "
        "each due time anyway (and within ~1 s of a job another process adds); this bounds "
        "how long it can sleep, and how often the leader looks for runs of dead workers.",
    )
    log_level: str = Field(default="INFO", description="Logging level for the scheduler")
    log_format: Literal["text", "json"] = Field(
        default="text", description="text, or json: one JSON object per log line"
    )
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
    failure_alert_interval: float = Field(
        default=3600.0,
        ge=0,
        description="Seconds between two failure notifications of one task while it keeps "
        "failing: the first failure notifies, later ones at most once per interval until a "
        "success (0: every failure notifies)",
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
    model_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="The model gate: at most this many orchestrated runs in a model call at "
        "once, counted across every process on PostgreSQL. Calls are then paced to the rate "
        "the API accepts, and a 429/529 pauses every run's calls for its retry-after instead "
        "of each run retrying on its own. Unset: no gate (the client's own retries)",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _known_level(cls, value: Any) -> Any:
        level = str(value).strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"unknown log level {value!r}; use one of {', '.join(LOG_LEVELS)}")
        return level

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
    max_manual_runs_per_minute: int = Field(
        default=30,
        ge=0,
        description="execute_task_now calls a user may make in any minute, over all of the "
        "user's tasks (0: no limit)",
    )
    max_backfill_runs: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="Past fire times one backfill_task call queues at most (its max_runs "
        "may ask for fewer); the rest are reported, to backfill in a later call",
    )
    daily_token_budget_per_user: int | None = Field(
        default=None,
        ge=1,
        description="Input+output tokens one user's orchestrated runs may spend per day, over "
        "all of the user's tasks (the day runs from midnight in the zone of the task being "
        "run). Past it their orchestrated runs are recorded skipped, the user is told once, "
        "and runs resume at midnight; direct runs are never held. Unset: no budget (and no "
        "query)",
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
        return normalize_database_url(value)

    @property
    def database(self) -> DatabaseUrl:
        """``database_url`` parsed: its redacted form, sync URL and driver options."""
        return parse_database_url(self.database_url)


def redact_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for logs, banners and errors)."""
    return redact(url)


def normalize_database_url(value: str) -> str:
    """Map accepted spellings to the async driver the service uses, and check the URL.

    ``postgres://`` and ``postgresql://`` (as hosting platforms print them) become
    ``postgresql+asyncpg://``; ``sqlite:///`` becomes ``sqlite+aiosqlite:///``. TLS
    options keep their libpq names (``sslmode``, ``sslrootcert``, ``sslcert``,
    ``sslkey``; ``ssl=`` is read as ``sslmode=``); any other option is an error.
    """
    return parse_database_url(value).async_url


class ConfigError(Exception):
    """Settings could not be loaded; the message names the environment variable."""


def env_name(loc: tuple[int | str, ...]) -> str:
    """('scheduler', 'max_concurrent_tasks') -> 'SCHEDULER__MAX_CONCURRENT_TASKS'."""
    return "__".join(str(part).upper() for part in loc if not isinstance(part, int))


_SECRET_WORDS = ("key", "password", "secret", "token")


def _shown_input(name: str, value: Any) -> str:
    """The rejected value as an error may show it: URLs without passwords, no secrets."""
    if name == "DATABASE_URL" and isinstance(value, str):
        return repr(redact_url(value))
    if any(word in name.lower() for word in _SECRET_WORDS) and not name.endswith("TOKENS"):
        return "'***'"
    return repr(value)


def _settings_error(exc: SettingsError) -> str:
    """pydantic-settings reports unparsable JSON values as 'error parsing value for
    field "tools" from source ...'; name the variable and say what is accepted."""
    found = re.search(r'field "([^"]+)"', str(exc))
    name = found.group(1).upper() if found else "a setting"
    accepted = (
        'a JSON list of "module:ToolClass" strings, e.g. TOOLS=\'["myapp.tools:Weather"]\''
        if name == "TOOLS"
        else "a valid JSON value"
    )
    return f"invalid configuration: {name}: not valid JSON; use {accepted}"


def load_settings(**overrides: object) -> Settings:
    """Build Settings, turning any error into one readable line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = env_name(err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            if name == "DATABASE_URL":  # the message shows the URL already, redacted
                lines.append(f"{name}: {msg}")
            else:
                lines.append(f"{name}: {msg} (got {_shown_input(name, err.get('input'))})")
        raise ConfigError("invalid configuration: " + "; ".join(lines)) from None
    except SettingsError as exc:
        raise ConfigError(_settings_error(exc)) from None


_PREFIXES: dict[str, type[BaseModel]] = {
    "SCHEDULER__": SchedulerConfig,
    "SCHEDULER_TOOL__": SchedulerToolConfig,
    "LIMITS__": LimitsConfig,
}
# Top-level settings whose misspelt name would silently leave a default in force (the
# default database is ./tasks.db). Checked by closeness, only while the real name is unset.
_TOP_LEVEL = ("DATABASE_URL", "DEFAULT_TIMEZONE", "ANTHROPIC_API_KEY")
_CLOSENESS = 0.85


def _prefix_of(upper: str) -> str | None:
    return next((p for p in _PREFIXES if upper.startswith(p)), None)


def _meant(upper: str, env_upper: set[str]) -> str | None:
    """The top-level setting ``upper`` is a near miss of, if any (and it is unset)."""
    for known in _TOP_LEVEL:
        if known in env_upper or upper == known or abs(len(upper) - len(known)) > 1:
            continue
        if difflib.SequenceMatcher(None, upper, known).ratio() >= _CLOSENESS:
            return known
    return None


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """``SCHEDULER__*`` / ``SCHEDULER_TOOL__*`` / ``LIMITS__*`` names that match no
    setting, and near misses of ``DATABASE_URL`` and the other top-level names (typos).

    Such a variable would otherwise be ignored silently, leaving the default in force.
    """
    env = os.environ if environ is None else environ
    env_upper = {name.upper() for name in env}
    unknown = []
    for name in sorted(env):
        upper = name.upper()
        prefix = _prefix_of(upper)
        if prefix is not None:
            if upper.removeprefix(prefix).lower() not in _PREFIXES[prefix].model_fields:
                unknown.append(name)
        elif _meant(upper, env_upper) is not None:
            unknown.append(name)
    return unknown


def warn_unknown_variables(log: logging.Logger, environ: Mapping[str, str] | None = None) -> None:
    """Log one warning per variable of :func:`unknown_variables`, naming what it may
    have meant."""
    env = os.environ if environ is None else environ
    env_upper = {name.upper() for name in env}
    for name in unknown_variables(env):
        upper = name.upper()
        prefix = _prefix_of(upper)
        if prefix is None:
            meant = _meant(upper, env_upper)
            log.warning("unknown setting %s is ignored; did you mean %s?", name, meant)
            continue
        field = upper.removeprefix(prefix).lower()
        fields = list(_PREFIXES[prefix].model_fields)
        close = difflib.get_close_matches(field, fields, n=1)
        hint = f"did you mean {prefix}{close[0].upper()}? " if close else ""
        known = ", ".join(prefix + f.upper() for f in fields)
        log.warning(
            "unknown setting %s is ignored; %sknown %s settings: %s", name, hint, prefix, known
        )
