"""Log output: plain text or one JSON object per line, chosen by ``SCHEDULER__LOG_FORMAT``.

Two entry points. ``configure_logging`` is for the command line, which owns the process
and configures the root logger. ``ensure_service_logging`` is for an embedded service: a
host that never configured logging (a bare ``uvicorn app:app`` configures only uvicorn's
own loggers) would otherwise see none of the scheduler's INFO lines, so the service gives
its own logger a handler then — and leaves everything alone when the host has one.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
SERVICE_LOGGER = "scheduler_service"
QUIET_LOGGERS = ("alembic", "apscheduler")  # chatty at INFO; their warnings still show
_HANDLER_MARK = "_task_scheduler_handler"

# LogRecord attributes that are not "extra" fields worth adding to a JSON line.
_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, exception, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        return json.dumps(entry, default=str, ensure_ascii=False)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is when a record is emitted, not as it was when the
    handler was made: a host (or a test runner) that replaces ``sys.stderr`` later still
    gets the lines, and a stream it closed meanwhile is never written to."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        """Ignored: the stream is always the current ``sys.stderr``."""


def make_formatter(log_format: Literal["text", "json"]) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(level: str, log_format: Literal["text", "json"] = "text") -> None:
    """Configure the root logger for a command-line process (stderr)."""
    handler = StderrHandler()
    handler.setFormatter(make_formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def ensure_service_logging(level: str, log_format: Literal["text", "json"] = "text") -> None:
    """Set the service's log level; give it a stderr handler if nobody configured one."""
    logger = logging.getLogger(SERVICE_LOGGER)
    logger.setLevel(level)
    if logging.getLogger().handlers or any(
        getattr(h, _HANDLER_MARK, False) for h in logger.handlers
    ):
        return
    handler = StderrHandler()
    handler.setFormatter(make_formatter(log_format))
    setattr(handler, _HANDLER_MARK, True)
    logger.addHandler(handler)
