"""Settings of the scheduler, importable as ``config`` from a checkout.

The code lives in ``scheduler_service.config``; an installed distribution ships only the
``scheduler_service`` package (a host application keeps its own ``config`` module), so
code outside this repository imports ``from scheduler_service.config import Settings``.
"""

from scheduler_service.config import (
    DEFAULT_SYSTEM_PROMPT,
    LOG_LEVELS,
    ConfigError,
    LimitsConfig,
    SchedulerConfig,
    SchedulerToolConfig,
    Settings,
    env_name,
    load_settings,
    normalize_database_url,
    redact_url,
    unknown_variables,
    warn_unknown_variables,
)

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "LOG_LEVELS",
    "ConfigError",
    "LimitsConfig",
    "SchedulerConfig",
    "SchedulerToolConfig",
    "Settings",
    "env_name",
    "load_settings",
    "normalize_database_url",
    "redact_url",
    "unknown_variables",
    "warn_unknown_variables",
]
