"""The orchestration loop against the real ``AsyncAnthropic`` client and a scripted API.

Only the network is fake (``scheduler_service.testing``), so these tests also check that the
loop builds requests the SDK accepts and reads responses the way the SDK parses them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import httpx2
import pytest
import pytest_asyncio

from scheduler_service.runs.orchestration import (
    OrchestrationLimits,
    OrchestrationResult,
    build_system_prompt,
    run_orchestration,
)
from scheduler_service.testing import (
    FakeAnthropic,
    error_body,
    text_message,
    tool_use_ids,
    tool_use_message,
)
from tools.base import ToolError

MODEL = "claude-haiku-5-5"
SYSTEM = "You are a careful scheduling assistant."
TASK = "Remind the user to water the plants."

REMINDER_TOOL: dict[str, Any] = {
    "name": "reminder_tool",
    "description": "Create a reminder. Use it when the task asks to remind the user.",
    "input_schema": {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    },
}
WEATHER_TOOL: dict[str, Any] = {
    "name": "weather_tool",
    "description": "Get the weather for a city. Use it before outdoor advice.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
TOOLS = [REMINDER_TOOL, WEATHER_TOOL]


class RecordingTools:
    """A ``call_tool`` that records calls and answers from a per-tool function."""

    def __init__(self, **handlers: Any) -> None:
        self.handlers = handlers
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((name, tool_input))
        handler = self.handlers.get(name)
        if handler is None:
            return {"ok": True, "tool": name}
        result: dict[str, Any] = handler(tool_input)
        return result


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    fake = FakeAnthropic()
    yield fake
    await fake.aclose()


async def run(
    fake: FakeAnthropic,
    call_tool: Any = None,
    *,
    tools: list[dict[str, Any]] | None = None,
    **limits: Any,
) -> OrchestrationResult:
    return await run_orchestration(
        fake.client(),
        model=MODEL,
        system=SYSTEM,
        task_description=TASK,
        tools=TOOLS if tools is None else tools,
        call_tool=call_tool or RecordingTools(),
        limits=OrchestrationLimits(**limits),
    )


def user_tool_results(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool_result blocks of the last (user) message of a request."""
    last = request["messages"][-1]
    assert last["role"] == "user"
    blocks: list[dict[str, Any]] = last["content"]
    assert all(block["type"] == "tool_result" for block in blocks)
    return blocks


@pytest.mark.asyncio
async def test_multi_step_run_sends_expected_requests(fake: FakeAnthropic) -> None:
    first = tool_use_message(("reminder_tool", {"text": "water the plants"}), text="On it.")
    fake.add(first)
    fake.add(text_message("Reminder created for the plants."))
    tools = RecordingTools(reminder_tool=lambda _input: {"reminder_id": "rem_1"})
    caller_tools = [dict(REMINDER_TOOL), dict(WEATHER_TOOL)]

    result = await run(fake, tools, tools=caller_tools, max_tokens=512)

    assert result.ok, result.error
    assert result.final_text == "Reminder created for the plants."
    assert result.error is None and result.error_kind is None and not result.retryable
    assert result.iterations == 2
    assert result.model == MODEL
    assert tools.calls == [("reminder_tool", {"text": "water the plants"})]
    [record] = result.tool_calls
    assert record.name == "reminder_tool" and record.ok
    assert record.output == {"reminder_id": "rem_1"} and record.error is None
    assert record.duration_ms >= 0

    assert len(fake.requests) == 2 and fake.pending == 0
    req1, req2 = fake.requests
    for req in (req1, req2):
        assert req["model"] == MODEL
        assert req["max_tokens"] == 512
        assert req["system"] == SYSTEM
        assert "temperature" not in req
        assert [tool["name"] for tool in req["tools"]] == ["reminder_tool", "weather_tool"]
        assert "cache_control" not in req["tools"][0]
        assert req["tools"][1]["cache_control"] == {"type": "ephemeral"}
        assert req["tools"][0]["input_schema"] == REMINDER_TOOL["input_schema"]
    # The caller's tool definitions were copied, not mutated.
    assert "cache_control" not in caller_tools[1]
    assert req1["messages"] == [{"role": "user", "content": TASK}]

    user, assistant, results = req2["messages"]
    assert user == {"role": "user", "content": TASK}
    assert assistant["role"] == "assistant"
    assert assistant["content"] == first["content"]
    assert results["role"] == "user"
    [tool_result] = user_tool_results(req2)
    assert tool_result["tool_use_id"] == tool_use_ids(first)[0]
    assert json.loads(tool_result["content"]) == {"reminder_id": "rem_1"}
    assert not tool_result.get("is_error", False)
    # The key goes in a header, never in the body.
    assert "test-key" not in json.dumps(fake.requests)


@pytest.mark.asyncio
async def test_two_tool_uses_in_one_turn_answered_in_one_message(fake: FakeAnthropic) -> None:
    first = tool_use_message(
        ("weather_tool", {"city": "Paris"}),
        ("reminder_tool", {"text": "take an umbrella"}),
    )
    fake.add(first).add(text_message("Done."))
    tools = RecordingTools(weather_tool=lambda i: {"city": i["city"], "rain": True})

    result = await run(fake, tools)

    assert result.ok
    assert [name for name, _ in tools.calls] == ["weather_tool", "reminder_tool"]
    assert [r.name for r in result.tool_calls] == ["weather_tool", "reminder_tool"]
    results = user_tool_results(fake.requests[1])
    assert [r["tool_use_id"] for r in results] == tool_use_ids(first)
    assert json.loads(results[0]["content"]) == {"city": "Paris", "rain": True}
    assert json.loads(results[1]["content"]) == {"ok": True, "tool": "reminder_tool"}
    # Exactly one user message follows the assistant turn.
    assert [m["role"] for m in fake.requests[1]["messages"]] == ["user", "assistant", "user"]


@pytest.mark.asyncio
async def test_tool_error_becomes_is_error_result_and_model_recovers(fake: FakeAnthropic) -> None:
    def reminder(tool_input: dict[str, Any]) -> dict[str, Any]:
        if "when" not in tool_input:
            raise ToolError("invalid_input", "when: missing; give an ISO 8601 datetime")
        return {"reminder_id": "rem_2"}

    bad = tool_use_message(("reminder_tool", {"text": "water"}))
    good = tool_use_message(("reminder_tool", {"text": "water", "when": "2026-01-01T09:00"}))
    fake.add(bad).add(good).add(text_message("Fixed and created."))
    tools = RecordingTools(reminder_tool=reminder)

    result = await run(fake, tools)

    assert result.ok and result.iterations == 3
    failed, succeeded = result.tool_calls
    assert not failed.ok and failed.output is None
    assert failed.error is not None and "when: missing" in failed.error
    assert succeeded.ok and succeeded.output == {"reminder_id": "rem_2"}
    [error_result] = user_tool_results(fake.requests[1])
    assert error_result["is_error"] is True
    assert error_result["tool_use_id"] == tool_use_ids(bad)[0]
    assert "invalid_input" in error_result["content"]
    assert "give an ISO 8601 datetime" in error_result["content"]


@pytest.mark.asyncio
async def test_unexpected_tool_exception_is_reported_to_model(fake: FakeAnthropic) -> None:
    def boom(_input: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("database is locked")

    fake.add(tool_use_message(("reminder_tool", {"text": "x"}))).add(text_message("Sorry."))
    result = await run(fake, RecordingTools(reminder_tool=boom))

    assert result.ok
    assert result.tool_calls[0].error is not None
    assert "RuntimeError: database is locked" in result.tool_calls[0].error
    [error_result] = user_tool_results(fake.requests[1])
    assert error_result["is_error"] is True
    assert "database is locked" in error_result["content"]


@pytest.mark.asyncio
async def test_disallowed_tool_is_never_executed(fake: FakeAnthropic) -> None:
    first = tool_use_message(("delete_everything", {"confirm": True}))
    fake.add(first).add(text_message("I cannot do that here."))
    tools = RecordingTools()

    result = await run(fake, tools, tools=[REMINDER_TOOL])

    assert result.ok
    assert tools.calls == []
    [record] = result.tool_calls
    assert record.name == "delete_everything" and not record.ok
    assert record.input == {"confirm": True}
    [error_result] = user_tool_results(fake.requests[1])
    assert error_result["is_error"] is True
    assert error_result["tool_use_id"] == tool_use_ids(first)[0]
    assert "not allowed" in error_result["content"]
    assert "reminder_tool" in error_result["content"]


@pytest.mark.asyncio
async def test_iteration_limit(fake: FakeAnthropic) -> None:
    for _ in range(2):
        fake.add(tool_use_message(("reminder_tool", {"text": "again"})))

    result = await run(fake, max_iterations=2)

    assert not result.ok
    assert result.error_kind == "iteration_limit" and not result.retryable
    assert result.error is not None
    assert "max_iterations=2" in result.error and "reached" in result.error
    assert result.iterations == 2
    assert len(result.tool_calls) == 2  # partial record kept
    assert len(fake.requests) == 2 and fake.unexpected_requests == 0


@pytest.mark.asyncio
async def test_token_budget(fake: FakeAnthropic) -> None:
    tools = RecordingTools()
    fake.add(
        tool_use_message(
            ("reminder_tool", {"text": "a"}), usage={"input_tokens": 60, "output_tokens": 20}
        )
    )
    fake.add(
        tool_use_message(
            ("reminder_tool", {"text": "b"}), usage={"input_tokens": 70, "output_tokens": 20}
        )
    )

    result = await run(fake, tools, token_budget=150)

    assert not result.ok
    assert result.error_kind == "token_budget" and not result.retryable
    assert result.error is not None and "token_budget=150" in result.error
    assert result.usage["input_tokens"] == 130 and result.usage["output_tokens"] == 40
    assert result.iterations == 2
    # The tools of the over-budget turn are not run.
    assert tools.calls == [("reminder_tool", {"text": "a"})]
    assert len(result.tool_calls) == 1


@pytest.mark.asyncio
async def test_timeout(fake: FakeAnthropic) -> None:
    fake.add(tool_use_message(("reminder_tool", {"text": "a"})))
    fake.add(text_message("too late"), delay=0.2)

    result = await run(fake, timeout=0.05)

    assert not result.ok
    assert result.error_kind == "timeout" and result.retryable  # retried (policy.retryable)
    assert result.error is not None and "timeout" in result.error
    assert result.iterations == 2
    assert len(result.tool_calls) == 1 and result.tool_calls[0].ok


@pytest.mark.asyncio
async def test_timeout_during_tool_call_keeps_interrupted_record(fake: FakeAnthropic) -> None:
    async def slow_tool(name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.2)
        return {}

    fake.add(tool_use_message(("reminder_tool", {"text": "a"})))
    result = await run(fake, slow_tool, timeout=0.05)

    assert result.error_kind == "timeout"
    [record] = result.tool_calls
    assert not record.ok and record.error is not None and "interrupted" in record.error


@pytest.mark.asyncio
async def test_refusal(fake: FakeAnthropic) -> None:
    fake.add(
        text_message(
            "I can't help with that.",
            "refusal",
            stop_details={"type": "refusal", "category": "cyber", "explanation": "policy"},
        )
    )

    result = await run(fake)

    assert not result.ok and result.error_kind == "refusal" and not result.retryable
    assert result.error is not None and "refused" in result.error and "cyber" in result.error
    assert result.final_text == "I can't help with that."


@pytest.mark.asyncio
async def test_max_tokens(fake: FakeAnthropic) -> None:
    fake.add(text_message("The answer is a very long", "max_tokens"))

    result = await run(fake, max_tokens=16)

    assert not result.ok and result.error_kind == "max_tokens"
    assert result.error is not None and "max_tokens=16" in result.error
    assert result.final_text == "The answer is a very long"


@pytest.mark.asyncio
async def test_context_window_exceeded(fake: FakeAnthropic) -> None:
    fake.add(text_message("", "model_context_window_exceeded"))

    result = await run(fake)

    assert not result.ok and result.error_kind == "context_window_exceeded"
    assert result.error is not None and "context window" in result.error


@pytest.mark.asyncio
async def test_unknown_stop_reason(fake: FakeAnthropic) -> None:
    fake.add(text_message("?", "brand_new_reason"))

    result = await run(fake)

    assert not result.ok and result.error_kind == "api_error"
    assert result.error is not None and "brand_new_reason" in result.error


@pytest.mark.asyncio
async def test_pause_turn_continues(fake: FakeAnthropic) -> None:
    paused = text_message("Still searching", "pause_turn")
    fake.add(paused).add(text_message("All done."))

    result = await run(fake)

    assert result.ok and result.final_text == "All done."
    assert result.iterations == 2
    messages = fake.requests[1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[1]["content"] == paused["content"]


@pytest.mark.asyncio
async def test_rate_limit_is_retryable(fake: FakeAnthropic) -> None:
    fake.add(error_body(429, "rate_limit_error", "Number of requests has exceeded your limit"))

    result = await run(fake)

    assert not result.ok and result.error_kind == "rate_limit" and result.retryable
    assert result.error is not None
    assert "429" in result.error and "exceeded your limit" in result.error
    assert result.iterations == 1


@pytest.mark.asyncio
async def test_overloaded_is_retryable(fake: FakeAnthropic) -> None:
    fake.add(error_body(529, "overloaded_error", "Overloaded"))

    result = await run(fake)

    assert not result.ok and result.error_kind == "overloaded" and result.retryable
    assert result.error is not None and "529" in result.error


@pytest.mark.asyncio
async def test_server_error_keeps_partial_record(fake: FakeAnthropic) -> None:
    fake.add(
        tool_use_message(
            ("reminder_tool", {"text": "a"}), usage={"input_tokens": 7, "output_tokens": 3}
        )
    )
    fake.add(error_body(500, "api_error", "Internal server error"))

    result = await run(fake)

    assert result.error_kind == "server_error" and result.retryable
    assert len(result.tool_calls) == 1 and result.iterations == 2
    assert result.usage["input_tokens"] == 7 and result.usage["output_tokens"] == 3


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "error_type", "kind"),
    [
        (401, "authentication_error", "authentication"),
        (403, "permission_error", "authentication"),
        (400, "invalid_request_error", "bad_request"),
        (404, "not_found_error", "api_error"),
    ],
)
async def test_non_retryable_status_errors(
    fake: FakeAnthropic, status: int, error_type: str, kind: str
) -> None:
    fake.add(error_body(status, error_type, "nope"))

    result = await run(fake)

    assert not result.ok and result.error_kind == kind and not result.retryable
    assert result.error is not None and str(status) in result.error


@pytest.mark.asyncio
async def test_connection_error_is_retryable(fake: FakeAnthropic) -> None:
    fake.add_exception(httpx2.ConnectError("connection refused"))

    result = await run(fake)

    assert not result.ok and result.error_kind == "connection" and result.retryable
    assert result.error is not None and "connection refused" in result.error


@pytest.mark.asyncio
async def test_no_client_means_no_api_key() -> None:
    tools = RecordingTools()
    result = await run_orchestration(
        None,
        model=MODEL,
        system=SYSTEM,
        task_description=TASK,
        tools=TOOLS,
        call_tool=tools,
        limits=OrchestrationLimits(),
    )

    assert not result.ok and result.error_kind == "no_api_key" and not result.retryable
    assert result.error is not None and "ANTHROPIC_API_KEY" in result.error
    assert result.iterations == 0 and tools.calls == []
    assert set(result.usage) == {
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    }


@pytest.mark.asyncio
async def test_usage_totals_include_cache_fields(fake: FakeAnthropic) -> None:
    fake.add(
        tool_use_message(
            ("reminder_tool", {"text": "a"}),
            usage={
                "input_tokens": 100,
                "output_tokens": 20,
                "cache_creation_input_tokens": 900,
                "cache_read_input_tokens": None,
            },
        )
    )
    fake.add(
        text_message(
            "ok",
            usage={
                "input_tokens": 30,
                "output_tokens": 10,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 900,
            },
        )
    )

    result = await run(fake)

    assert result.ok
    assert result.usage == {
        "input_tokens": 130,
        "output_tokens": 30,
        "cache_creation_input_tokens": 900,
        "cache_read_input_tokens": 900,
    }
    json.dumps(result.to_dict())  # JSON-serialisable


@pytest.mark.asyncio
async def test_no_tools_omits_tools_param(fake: FakeAnthropic) -> None:
    fake.add(text_message("Plain answer."))

    result = await run(fake, tools=[])

    assert result.ok and result.final_text == "Plain answer."
    assert "tools" not in fake.requests[0]


@pytest.mark.asyncio
async def test_api_key_never_logged(fake: FakeAnthropic, caplog: pytest.LogCaptureFixture) -> None:
    fake.add(tool_use_message(("reminder_tool", {"text": "a"}))).add(text_message("ok"))
    with caplog.at_level(logging.DEBUG, logger="scheduler_service.runs.orchestration"):
        result = await run(fake)

    assert result.ok
    assert any("iteration 1" in record.getMessage() for record in caplog.records)
    assert "test-key" not in caplog.text


@pytest.mark.asyncio
async def test_result_to_dict_is_json(fake: FakeAnthropic) -> None:
    fake.add(tool_use_message(("reminder_tool", {"text": "a"}))).add(text_message("ok"))
    result = await run(fake)

    data = json.loads(json.dumps(result.to_dict()))
    assert data["ok"] is True
    assert data["tool_calls"][0]["name"] == "reminder_tool"
    assert data["tool_calls"][0]["output"] == {"ok": True, "tool": "reminder_tool"}


def test_build_system_prompt_includes_run_context() -> None:
    now = datetime(2026, 3, 2, 9, 30, tzinfo=ZoneInfo("Europe/Paris"))

    prompt = build_system_prompt(
        "Base prompt.\n",
        task_name="Water plants",
        schedule="every Monday at 09:30",
        run_number=3,
        local_now=now,
    )

    assert prompt.startswith("Base prompt.\n\n")
    assert "Water plants" in prompt
    assert "every Monday at 09:30" in prompt
    assert "Run number: 3" in prompt
    assert "2026-03-02T09:30:00+01:00" in prompt
    assert "Europe/Paris" in prompt
    assert "Monday" in prompt


def test_build_system_prompt_fixed_offset_and_naive() -> None:
    now = datetime(2026, 3, 2, 9, 30, tzinfo=timezone(timedelta(hours=-5)))
    prompt = build_system_prompt("", task_name="t", schedule="once", run_number=1, local_now=now)
    assert "2026-03-02T09:30:00-05:00" in prompt

    with pytest.raises(ValueError, match="timezone-aware"):
        build_system_prompt(
            "b", task_name="t", schedule="once", run_number=1, local_now=datetime(2026, 1, 1)
        )


@pytest.mark.asyncio
async def test_caller_cancellation_propagates(fake: FakeAnthropic) -> None:
    started = asyncio.Event()

    async def hang(_payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    fake.add(hang)
    task = asyncio.create_task(run(fake, timeout=None))
    await started.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
async def test_sdk_side_validation_error_is_bad_request(fake: FakeAnthropic) -> None:
    # The SDK refuses non-streaming calls whose max_tokens could run over 10 minutes.
    result = await run(fake, max_tokens=200_000)

    assert not result.ok and result.error_kind == "bad_request" and not result.retryable
    assert result.error is not None and "Streaming is required" in result.error
    assert fake.requests == []
