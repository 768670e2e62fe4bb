"""The tool contract shared by built-in and host tools.

A tool is one named capability with several operations. The LLM (or a direct task)
calls ``run(operation, kwargs, context=...)``; the host, never the LLM, supplies the
``ToolContext`` that says on whose behalf the call is made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, get_args

ErrorCode = Literal[
    "invalid_input",
    "not_found",
    "quota_exceeded",
    "forbidden",
    "conflict",
    "unavailable",
    "execution_failed",
]
ERROR_CODES: tuple[str, ...] = get_args(ErrorCode)


QUOTE_CHARS = 100  # at most this much of a bad value is quoted back in an error


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)`` cut to ``limit`` characters, saying how long it was."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        return f"<{type(value).__name__}>"
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


class ToolError(Exception):
    """A failure the caller can act on.

    ``message`` names the field, what was wrong and what is accepted, so that an LLM can
    correct its next call. It never carries a traceback.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown ToolError code {code!r}; use one of {ERROR_CODES}")
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True)
class ToolContext:
    """Who is acting. Built by the host (or by the scheduler for a scheduled run)."""

    user_id: str
    conversation_id: str | None = None
    scheduled_run: bool = False
    task_id: str | None = None
    run_id: str | None = None
    timezone: str | None = None


MAX_KWARGS_CHARS = 1_000_000  # a kwargs JSON text longer than this is refused unread


def parse_kwargs(kwargs: dict[str, Any] | str | None) -> dict[str, Any]:
    """Accept kwargs as a dict, a JSON object string, or nothing."""
    if kwargs is None:
        return {}
    if isinstance(kwargs, str):
        text = kwargs.strip()
        if not text:
            return {}
        if len(text) > MAX_KWARGS_CHARS:
            raise ToolError(
                "invalid_input",
                f"kwargs: {len(text)} characters of JSON, more than {MAX_KWARGS_CHARS}; "
                "send less data",
            )
        try:
            value = json.loads(text)
        except RecursionError:
            raise ToolError(
                "invalid_input",
                "kwargs: the JSON is nested too deeply; pass a flat JSON object",
            ) from None
        except json.JSONDecodeError as exc:
            raise ToolError(
                "invalid_input",
                f"kwargs: not valid JSON ({exc.msg} at position {exc.pos}); "
                'pass a JSON object such as {"task_id": "task_ab12"}',
            ) from None
        kwargs = value
    if not isinstance(kwargs, dict):
        raise ToolError(
            "invalid_input",
            f"kwargs: expected a JSON object, got {type(kwargs).__name__}; "
            'pass an object such as {"task_id": "task_ab12"}',
        )
    return kwargs


class Tool:
    """Base class for tools.

    Subclasses set ``name``, ``description`` and ``input_schema`` (a JSON Schema object,
    valid as an Anthropic tool ``input_schema``) and implement ``run``. ``run`` may be a
    plain ``def``: the registry then calls it in a worker thread, never on the event loop.
    """

    name: str = ""
    description: str = ""
    input_schema: dict[str, Any] = {"type": "object"}

    async def run(
        self,
        operation: str,
        kwargs: dict[str, Any] | str | None,
        *,
        context: ToolContext,
    ) -> dict[str, Any]:
        raise NotImplementedError

    def definition(self) -> dict[str, Any]:
        """The Anthropic Messages API tool definition for this tool."""
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
        }
