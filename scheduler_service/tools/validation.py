"""Tool input validation: a kwargs dict becomes a pydantic model, or a ToolError that
names each wrong field, what was wrong and what is accepted."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from scheduler_service.config import Settings
from scheduler_service.tools.base import ToolError, quote

Model = TypeVar("Model", bound=BaseModel)

__all__ = ["validate"]


def _describe_error(model: type[BaseModel], err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"]) or "kwargs"
    if err["type"] == "extra_forbidden":
        fields = ", ".join(n for n in model.model_fields)
        return f"{loc}: unknown field; accepted fields are: {fields}"
    if err["type"] == "missing":
        return f"{loc}: required"
    got = err.get("input")
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg} (got {quote(got)})"


def validate(model: type[Model], data: dict[str, Any], settings: Settings | None = None) -> Model:
    """The operation's kwargs as ``model``; ``settings`` brings the configured limits."""
    try:
        return model.model_validate(data, context={"settings": settings})
    except ValidationError as exc:
        seen: list[str] = []
        for err in exc.errors():
            text = _describe_error(model, err)
            field = text.split(":", 1)[0]
            if not any(s.startswith(field.split(".")[0] + ":") for s in seen):
                seen.append(text)
        raise ToolError("invalid_input", "; ".join(seen)) from None
