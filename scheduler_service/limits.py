"""Size and shape limits on what callers hand the service, and on what it stores.

A model on behalf of a user, a careless host or a hostile input can send any JSON. What
the database stores must fit its columns and both backends (PostgreSQL refuses NUL
characters and text that is not UTF-8), what the service walks must not recurse without
bound, and what goes back to the model must stay short. So kwargs are checked here once,
before any operation looks at them, and results are cut before they are stored.

The configurable bounds live in ``scheduler_service.config.LimitsConfig`` (docs/limits.md).
"""

from __future__ import annotations

import json
import math
from typing import Any

from scheduler_service.config import SchedulerConfig
from scheduler_service.tools.base import ToolError, quote

MAX_NODES = 20_000  # values (objects, lists, scalars) in one call's kwargs
TRUNCATED = "… [truncated: {total} characters in all]"

# The Anthropic SDK refuses a non-streaming request whose max_tokens could take longer
# than 10 minutes at its planning rate of 128,000 tokens an hour.
NON_STREAMING_MAX_TOKENS = 128_000 * 600 // 3600


def cut(text: str, limit: int) -> str:
    """``text`` at most ``limit`` characters (marker included) with a visible marker."""
    if len(text) <= limit:
        return text
    marker = TRUNCATED.format(total=len(text))
    return text[: max(0, limit - len(marker))] + marker


def cut_json(value: dict[str, Any] | None, limit: int) -> dict[str, Any] | None:
    """A JSON object kept whole if its text fits ``limit`` characters, else replaced by a
    marked preview of its text (a stored result is for reading, not for re-parsing)."""
    if value is None:
        return None
    text = json.dumps(value, default=str, ensure_ascii=False)
    if len(text) <= limit:
        return value
    return {"truncated": True, "characters": len(text), "preview": cut(text, limit)}


def _bad_text(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (a lone surrogate), which cannot be stored"
    return None


def check_json(value: Any, field: str, *, max_depth: int) -> None:
    """Refuse a value no backend can store or that is too deep/large to walk safely.

    Iterative, so a value nested 100,000 levels deep is refused, not a RecursionError.
    The error names the path of the first bad part (``parameters.items.3``).
    """
    stack: list[tuple[Any, str, int]] = [(value, field, 0)]
    nodes = 0
    while stack:
        item, path, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise ToolError(
                "invalid_input",
                f"{field}: more than {MAX_NODES} values in all; send less data",
            )
        if depth > max_depth:
            raise ToolError(
                "invalid_input",
                f"{path}: nested more than {max_depth} levels deep; flatten the value",
            )
        if isinstance(item, str):
            problem = _bad_text(item)
            if problem:
                raise ToolError("invalid_input", f"{path}: {problem}; remove it")
        elif isinstance(item, float) and not math.isfinite(item):
            raise ToolError(
                "invalid_input", f"{path}: {item!r} is not a JSON number; give a finite number"
            )
        elif isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise ToolError(
                        "invalid_input", f"{path}: object keys must be strings, got {quote(key)}"
                    )
                problem = _bad_text(key)
                if problem:
                    raise ToolError("invalid_input", f"{path}: a key {problem}; remove it")
                stack.append((child, f"{path}.{key[:40]}", depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{path}.{i}", depth + 1) for i, child in enumerate(item))
        elif item is not None and not isinstance(item, bool | int | float):
            raise ToolError(
                "invalid_input",
                f"{path}: {type(item).__name__} is not a JSON value; use strings, numbers, "
                "booleans, null, lists and objects",
            )


def json_size(value: Any) -> int:
    """UTF-8 bytes of ``value`` as compact JSON (call after ``check_json``)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def max_tokens_limit(cfg: SchedulerConfig) -> int:
    """The largest max_tokens an orchestrated run can actually use with the configured
    model: its own limit (``model_max_tokens``), and what the SDK accepts without
    streaming."""
    limit = min(cfg.model_max_tokens, NON_STREAMING_MAX_TOKENS)
    try:
        from anthropic._constants import MODEL_NONSTREAMING_TOKENS
    except ImportError:  # a private table: absent in some SDK versions
        return limit
    model_limit = MODEL_NONSTREAMING_TOKENS.get(cfg.orchestration_model)
    return min(limit, model_limit) if model_limit else limit
