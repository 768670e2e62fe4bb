"""A scripted fake of the Anthropic Messages API for tests, over ``httpx2.MockTransport``.

Public so that a host application can test its own Claude-driven code (and the
scheduler's orchestrated tasks) offline: ``from scheduler_service.testing import
FakeAnthropic, text_message, tool_use_message``.

Tests use the REAL ``anthropic.AsyncAnthropic`` client so that request building, response
parsing and error classes are the SDK's own; only the network is replaced. The anthropic
2.x SDK runs on ``httpx2`` (not ``httpx``), so respx cannot intercept it, while a
``MockTransport`` handed to ``httpx2.AsyncClient`` can.

Usage::

    fake = FakeAnthropic()
    fake.add(tool_use_message(("reminder_tool", {"text": "hi"})))
    fake.add(text_message("Done."))
    client = fake.client()
    ...  # run code under test
    assert fake.requests[1]["messages"][-1]["content"][0]["type"] == "tool_result"
    await fake.aclose()

Each scripted reply answers exactly one HTTP request, in order. When the script runs out,
the fake answers 500 with a message naming the extra request, so an unexpected extra model
call fails the test loudly instead of hanging or passing by accident.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx2

__all__ = [
    "DEFAULT_MODEL",
    "FakeAnthropic",
    "Reply",
    "Responder",
    "error_body",
    "message_body",
    "text_message",
    "tool_use_ids",
    "tool_use_message",
]

DEFAULT_MODEL = "claude-haiku-5-5"

Responder = Callable[
    [dict[str, Any]], tuple[int, dict[str, Any]] | Awaitable[tuple[int, dict[str, Any]]]
]
"""Receives the parsed request JSON and returns ``(status, body)`` (may be async)."""


@dataclass
class Reply:
    """One scripted HTTP reply.

    Exactly one of ``body``, ``responder`` or ``exception`` is used: ``exception`` is
    raised from the transport (e.g. ``httpx2.ConnectError``) to simulate network failure.
    ``delay`` seconds are awaited first, inside the async handler, so that a deadline
    enforced with ``asyncio.timeout`` can cancel the request mid-flight.
    """

    status: int = 200
    body: dict[str, Any] | None = None
    responder: Responder | None = None
    exception: Exception | None = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def _usage(usage: dict[str, int | None] | None) -> dict[str, int | None]:
    return dict(usage) if usage is not None else {"input_tokens": 10, "output_tokens": 5}


def message_body(
    content: list[dict[str, Any]],
    *,
    stop_reason: str | None,
    usage: dict[str, int | None] | None = None,
    model: str = DEFAULT_MODEL,
    **extra: Any,
) -> dict[str, Any]:
    """A Messages API response body with the given content blocks.

    ``usage`` defaults to 10 input / 5 output tokens; add ``cache_creation_input_tokens``
    and ``cache_read_input_tokens`` to it to simulate prompt caching. ``extra`` keys
    (e.g. ``stop_details``) are merged into the body.
    """
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": _usage(usage),
        **extra,
    }


def tool_use_message(
    *calls: tuple[str, dict[str, Any]],
    text: str | None = None,
    usage: dict[str, int | None] | None = None,
    model: str = DEFAULT_MODEL,
) -> dict[str, Any]:
    """A ``stop_reason: tool_use`` body with one ``tool_use`` block per ``(name, input)``.

    Ids are unique ``toolu_...`` strings; read them back from the body's ``content`` to
    check that the code under test answered each one. ``text`` adds a leading text block,
    as the model often explains itself before calling tools.
    """
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append({"type": "text", "text": text})
    for name, tool_input in calls:
        content.append(
            {
                "type": "tool_use",
                "id": f"toolu_{uuid.uuid4().hex[:24]}",
                "name": name,
                "input": tool_input,
            }
        )
    return message_body(content, stop_reason="tool_use", usage=usage, model=model)


def text_message(
    text: str,
    stop_reason: str = "end_turn",
    *,
    usage: dict[str, int | None] | None = None,
    model: str = DEFAULT_MODEL,
    **extra: Any,
) -> dict[str, Any]:
    """A body with a single text block (use ``stop_reason`` for refusal, max_tokens...)."""
    return message_body(
        [{"type": "text", "text": text}], stop_reason=stop_reason, usage=usage, model=model, **extra
    )


def error_body(
    status: int, type: str, message: str, *, headers: dict[str, str] | None = None
) -> Reply:
    """An API error reply, e.g. ``error_body(429, "rate_limit_error", "slow down")``;
    ``headers`` such as ``{"retry-after": "1"}`` go with it."""
    return Reply(
        status=status,
        body={"type": "error", "error": {"type": type, "message": message}},
        headers=dict(headers or {}),
    )


def tool_use_ids(body: dict[str, Any]) -> list[str]:
    """The ``tool_use`` ids of a scripted body, in block order."""
    return [block["id"] for block in body["content"] if block["type"] == "tool_use"]


class FakeAnthropic:
    """A queue of scripted replies served to a real ``AsyncAnthropic`` client.

    ``requests`` holds the parsed JSON of every request received (including unexpected
    ones), ``raw_requests`` the ``httpx2.Request`` objects (for headers), and
    ``request_times`` when each arrived (``time.monotonic()``).
    """

    def __init__(self, *replies: dict[str, Any] | Reply | Responder) -> None:
        self._queue: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.raw_requests: list[httpx2.Request] = []
        self.request_times: list[float] = []
        self.unexpected_requests = 0
        self._clients: list[httpx2.AsyncClient] = []
        for reply in replies:
            self.add(reply)

    def add(
        self,
        reply: dict[str, Any] | Reply | Responder,
        *,
        status: int | None = None,
        delay: float | None = None,
    ) -> FakeAnthropic:
        """Queue a reply: a body dict (status 200 unless ``status``), a :class:`Reply`, or
        a callable ``(request_json) -> (status, body)``. Returns ``self`` for chaining."""
        if isinstance(reply, Reply):
            item = Reply(
                status=reply.status if status is None else status,
                body=reply.body,
                responder=reply.responder,
                exception=reply.exception,
                delay=reply.delay if delay is None else delay,
                headers=dict(reply.headers),
            )
        elif isinstance(reply, dict):
            item = Reply(status=200 if status is None else status, body=reply, delay=delay or 0.0)
        else:
            item = Reply(responder=reply, delay=delay or 0.0)
        self._queue.append(item)
        return self

    def add_exception(self, exception: Exception, *, delay: float = 0.0) -> FakeAnthropic:
        """Queue a transport failure, e.g. ``httpx2.ConnectError("connection refused")``."""
        self._queue.append(Reply(exception=exception, delay=delay))
        return self

    @property
    def pending(self) -> int:
        """Scripted replies not yet consumed."""
        return len(self._queue)

    async def _handle(self, request: httpx2.Request) -> httpx2.Response:
        payload: dict[str, Any] = json.loads(request.content) if request.content else {}
        self.requests.append(payload)
        self.raw_requests.append(request)
        self.request_times.append(time.monotonic())
        if not self._queue:
            self.unexpected_requests += 1
            return httpx2.Response(
                500,
                json={
                    "type": "error",
                    "error": {
                        "type": "api_error",
                        "message": (
                            f"FakeAnthropic: no scripted reply left for request "
                            f"#{len(self.requests)} ({request.method} {request.url.path})"
                        ),
                    },
                },
            )
        reply = self._queue.popleft()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.exception is not None:
            raise reply.exception
        status, body = reply.status, reply.body
        if reply.responder is not None:
            result = reply.responder(payload)
            if not isinstance(result, tuple):
                result = await result
            status, body = result
        return httpx2.Response(status, json=body, headers=reply.headers)

    def client(self, **kwargs: Any) -> anthropic.AsyncAnthropic:
        """A real ``AsyncAnthropic`` wired to this fake; no SDK retries unless overridden."""
        http_client = httpx2.AsyncClient(transport=httpx2.MockTransport(self._handle))
        self._clients.append(http_client)
        options: dict[str, Any] = {"api_key": "test-key", "max_retries": 0, **kwargs}
        return anthropic.AsyncAnthropic(http_client=http_client, **options)

    async def aclose(self) -> None:
        """Close the HTTP clients handed out by :meth:`client`."""
        for http_client in self._clients:
            await http_client.aclose()
        self._clients.clear()
