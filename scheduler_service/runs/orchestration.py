"""The Anthropic Messages tool-use loop behind orchestrated (LLM-driven) task runs.

An orchestrated run hands the model a task description and a fixed set of tools and lets
it work until it produces a final answer. This module is only that loop: it knows nothing
about the database or the scheduler, so it can be tested with the real SDK client against
a scripted transport, and the caller decides what to persist.

Why a hand-written loop and not the SDK's beta ``tool_runner``: the runner is beta and
keeps conversation state for us; a plain loop over ``messages.create`` is short, stable,
and lets us enforce our own limits (iterations, token budget, wall-clock timeout) and keep
a complete record of every tool call even when the run fails half-way.

The loop never raises for API, tool or limit failures: it always returns an
:class:`OrchestrationResult` whose ``error_kind`` and ``retryable`` tell the scheduler
what happened and whether trying again later can help. The only exception that escapes is
``asyncio.CancelledError`` when the *caller* cancels the run, because swallowing it would
break task cancellation and shutdown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, cast

import anthropic
from anthropic.types import (
    Message,
    MessageParam,
    ToolResultBlockParam,
    ToolUnionParam,
    ToolUseBlock,
)

from scheduler_service.runs.policy import retryable_kind
from scheduler_service.tools.base import ToolError

if TYPE_CHECKING:
    from scheduler_service.runs.model_gate import ModelGate

__all__ = [
    "ERROR_KINDS",
    "RETRYABLE_ERROR_KINDS",
    "OrchestrationLimits",
    "OrchestrationResult",
    "ToolCallRecord",
    "ToolCaller",
    "build_system_prompt",
    "run_orchestration",
]

logger = logging.getLogger(__name__)

ToolCaller = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""``call_tool(tool_name, tool_input) -> result dict``.

Raises :class:`tools.base.ToolError` (or any other ``Exception``) on failure; the loop
turns the failure into an ``is_error`` tool result so the model can correct itself.
"""

ERROR_KINDS: tuple[str, ...] = (
    "max_tokens",
    "refusal",
    "context_window_exceeded",
    "iteration_limit",
    "token_budget",
    "timeout",
    "rate_limit",
    "overloaded",
    "server_error",
    "connection",
    "authentication",
    "bad_request",
    "api_error",
    "no_api_key",
)
"""Every value :attr:`OrchestrationResult.error_kind` can take (besides ``None``)."""

RETRYABLE_ERROR_KINDS: frozenset[str] = frozenset(
    {"rate_limit", "overloaded", "server_error", "connection"}
)
"""Failures caused by the API's momentary state, so a later attempt may succeed. Whether
the scheduler tries a failed run again is decided in one place, ``policy.retryable``
(which also retries a run that timed out); ``OrchestrationResult.retryable`` says what it
decides."""

_USAGE_FIELDS: tuple[str, ...] = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)

REFUSED_STATUSES = frozenset({429, 529})
"""Refusals: the API's rate limit or overload. Through a gate they close it for everyone."""
RETRY_AFTER_DEFAULT_S = 1.0
"""How long a refusal closes the gate when it names no ``retry-after``."""
RETRY_AFTER_MAX_S = 60.0
"""The longest a single refusal closes the gate (the SDK's own cap on ``retry-after``)."""

# Cap on exception text echoed back to the model for unexpected tool failures: enough to
# act on, not enough to flood the context with a giant repr.
_MAX_TOOL_ERROR_CHARS = 2000


@dataclass
class OrchestrationLimits:
    """Bounds on one orchestrated run, so a confused model cannot loop or spend forever."""

    max_iterations: int = 10
    """Model calls per run (every ``messages.create`` counts, including ``pause_turn``)."""
    max_tokens: int = 1024
    """``max_tokens`` for each ``messages.create`` call."""
    token_budget: int | None = None
    """Total ``input_tokens + output_tokens`` per run; ``None`` means unlimited."""
    timeout: float | None = 300.0
    """Seconds for the whole loop (model calls and tool calls); ``None`` means no limit."""


@dataclass
class ToolCallRecord:
    """One tool call the model asked for, kept for the run's audit trail."""

    name: str
    input: dict[str, Any]
    ok: bool
    output: Any
    """The JSON-serialisable result (a dict) when ``ok``; ``None`` otherwise."""
    error: str | None
    """What went wrong when not ``ok`` (the same text the model was shown)."""
    duration_ms: float


@dataclass
class OrchestrationResult:
    """Outcome of one orchestrated run, including a partial record when it failed."""

    ok: bool
    final_text: str
    """The last assistant text of the run (``""`` if the model never wrote any)."""
    error: str | None
    """Human-readable reason for a failure: which limit was hit or what failed."""
    error_kind: str | None
    """One of :data:`ERROR_KINDS`, or ``None`` on success."""
    retryable: bool
    """True when the failure came from the API's momentary state (see
    :data:`RETRYABLE_ERROR_KINDS`)."""
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    """Token totals over every response; always has all four usage keys."""
    model: str = ""
    iterations: int = 0
    """Number of model calls made."""
    refusals: int = 0
    """Calls the API refused (429/529) that the model gate sent again after its
    ``retry-after`` (0 without a gate)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy, for storing in the run record."""
        return asdict(self)


class _RunState:
    """The mutable record of a run, kept outside the timeout scope.

    It lives outside ``asyncio.timeout`` so that when the deadline fires mid-call, the
    tool calls, usage and iteration count gathered so far still reach the result.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self.iterations = 0
        self.usage: dict[str, int] = dict.fromkeys(_USAGE_FIELDS, 0)
        self.tool_calls: list[ToolCallRecord] = []
        self.last_text = ""
        self.refusals = 0  # model calls the API refused (429/529) and the gate sent again

    def add_usage(self, response: Message) -> None:
        for name in _USAGE_FIELDS:
            value = getattr(response.usage, name, None)
            if isinstance(value, int):
                self.usage[name] += value

    @property
    def budget_tokens(self) -> int:
        """Tokens counted against ``token_budget``: input plus output."""
        return self.usage["input_tokens"] + self.usage["output_tokens"]

    def success(self) -> OrchestrationResult:
        return OrchestrationResult(
            ok=True,
            final_text=self.last_text,
            error=None,
            error_kind=None,
            retryable=False,
            tool_calls=list(self.tool_calls),
            usage=dict(self.usage),
            model=self.model,
            iterations=self.iterations,
            refusals=self.refusals,
        )

    def failure(self, kind: str, message: str) -> OrchestrationResult:
        return OrchestrationResult(
            ok=False,
            final_text=self.last_text,
            error=message,
            error_kind=kind,
            retryable=retryable_kind(kind),
            tool_calls=list(self.tool_calls),
            usage=dict(self.usage),
            model=self.model,
            iterations=self.iterations,
            refusals=self.refusals,
        )


async def run_orchestration(
    client: anthropic.AsyncAnthropic | None,
    *,
    model: str,
    system: str,
    task_description: str,
    tools: list[dict[str, Any]],
    call_tool: ToolCaller,
    limits: OrchestrationLimits,
    gate: ModelGate | None = None,
) -> OrchestrationResult:
    """Let the model work on ``task_description`` with ``tools`` until it answers.

    ``client`` is ``None`` when no API key is configured; that is reported as a
    ``no_api_key`` failure instead of an exception so the scheduler can record the run.
    Only the tools named in ``tools`` are ever passed to ``call_tool``.

    With a ``gate`` every model call goes through it (``runs.model_gate``) and the
    client's own retries are turned off: a 429/529 closes the gate for every run for its
    ``retry-after`` and the call waits its turn again (within the run's timeout), while
    other transient failures are retried as the client would (``max_retries`` times).

    Returns an :class:`OrchestrationResult`; never raises except ``CancelledError``
    when the caller cancels.
    """
    state = _RunState(model)
    if client is None:
        return state.failure(
            "no_api_key",
            "orchestrated runs need an Anthropic API key: set ANTHROPIC_API_KEY",
        )

    loop = _Loop(
        client,
        state,
        gate=gate,
        model=model,
        system=system,
        task_description=task_description,
        tools=tools,
        call_tool=call_tool,
        limits=limits,
    )
    deadline = asyncio.timeout(limits.timeout)
    try:
        async with deadline:
            return await loop.run()
    except TimeoutError:
        if not deadline.expired():
            # A TimeoutError that is not ours (from a library); report it, don't hide it.
            logger.exception("orchestration: unexpected TimeoutError")
            return state.failure("api_error", "unexpected TimeoutError during the run")
        logger.info(
            "orchestration: timed out after %ss (%d iterations)",
            limits.timeout,
            state.iterations,
        )
        return state.failure(
            "timeout",
            f"timeout: the run did not finish within {limits.timeout:g} s "
            f"(limits.timeout); stopped after {state.iterations} model call(s)"
            + (
                f"; the API refused {state.refusals} call(s) (rate limit or overload) "
                "and the run waited for the model gate to reopen"
                if state.refusals
                else ""
            ),
        )
    except Exception as exc:  # a bug or an SDK surprise: record it rather than crash
        logger.exception("orchestration: unexpected error")
        return state.failure("api_error", f"unexpected error: {type(exc).__name__}: {exc}")


class _Loop:
    """One run's conversation with the model; :meth:`run` is the tool-use loop."""

    def __init__(
        self,
        client: anthropic.AsyncAnthropic,
        state: _RunState,
        *,
        gate: ModelGate | None = None,
        model: str,
        system: str,
        task_description: str,
        tools: list[dict[str, Any]],
        call_tool: ToolCaller,
        limits: OrchestrationLimits,
    ) -> None:
        self.gate = gate
        self.retries = client.max_retries
        # Through a gate the loop retries itself (_through_gate): the SDK's own retries
        # would send refused calls again on their own, past the gate.
        self.client = client if gate is None else client.with_options(max_retries=0)
        self.state = state
        self.model = model
        self.system = system
        self.call_tool = call_tool
        self.limits = limits
        self.tool_params = _with_cache_breakpoint(tools)
        self.allowed = [str(tool.get("name", "")) for tool in tools]
        self.messages: list[MessageParam] = [{"role": "user", "content": task_description}]

    async def run(self) -> OrchestrationResult:
        state, limits = self.state, self.limits
        while True:
            if state.iterations >= limits.max_iterations:
                return state.failure(
                    "iteration_limit",
                    f"iteration limit reached: the model was called {state.iterations} "
                    f"time(s) (limits.max_iterations={limits.max_iterations}) "
                    "without finishing the task",
                )
            state.iterations += 1
            try:
                response = await self._create()
            except anthropic.AnthropicError as exc:
                kind, message = _classify_api_error(exc)
                logger.warning(
                    "orchestration: API call %d failed (%s): %s", state.iterations, kind, message
                )
                return state.failure(kind, message)
            except ValueError as exc:
                # The SDK validates some arguments before sending (e.g. it refuses a
                # non-streaming call whose max_tokens could take over 10 minutes).
                return state.failure(
                    "bad_request", f"the Anthropic SDK refused to send the request: {exc}"
                )

            state.model = response.model or state.model
            state.add_usage(response)
            text = _joined_text(response)
            if text:
                state.last_text = text
            stop = response.stop_reason
            tool_uses = [block for block in response.content if isinstance(block, ToolUseBlock)]
            logger.debug(
                "orchestration: iteration %d stop_reason=%s tool_uses=%d usage=%s",
                state.iterations,
                stop,
                len(tool_uses),
                state.usage,
            )

            if stop in ("end_turn", "stop_sequence"):
                # The run is complete; a budget overrun on the final answer does not undo
                # the work already done, so it is not turned into a failure here.
                return state.success()
            if stop == "max_tokens":
                return state.failure(
                    "max_tokens",
                    f"the model's reply was cut off at max_tokens={limits.max_tokens} "
                    f"(iteration {state.iterations}); raise limits.max_tokens or ask for "
                    "shorter output",
                )
            if stop == "refusal":
                return state.failure("refusal", _refusal_message(response))
            if stop == "model_context_window_exceeded":
                return state.failure(
                    "context_window_exceeded",
                    "the conversation exceeded the model's context window after "
                    f"{state.iterations} model call(s); shorten the task or the tool outputs",
                )
            if stop not in ("tool_use", "pause_turn"):
                return state.failure(
                    "api_error", f"unexpected stop_reason {stop!r} from the Messages API"
                )

            if limits.token_budget is not None and state.budget_tokens > limits.token_budget:
                # Checked before acting on the response: running more tools (with their
                # side effects) for a run that cannot continue would be wasted work.
                return state.failure(
                    "token_budget",
                    f"token budget exceeded: {state.budget_tokens} input+output tokens used "
                    f"(limits.token_budget={limits.token_budget}) after "
                    f"{state.iterations} model call(s)",
                )

            self.messages.append(response.to_param())
            if stop == "pause_turn":
                # The API paused a long turn; sending the content back lets it resume.
                continue
            if not tool_uses:
                return state.failure(
                    "api_error", "stop_reason 'tool_use' but the response had no tool_use block"
                )
            results = [await self._run_tool(block) for block in tool_uses]
            self.messages.append({"role": "user", "content": results})

    async def _create(self) -> Message:
        if self.gate is None:
            return await self._send()
        return await _through_gate(self.gate, self._send, self.state, retries=self.retries)

    async def _send(self) -> Message:
        return await self.client.messages.create(
            model=self.model,
            max_tokens=self.limits.max_tokens,
            system=self.system if self.system else anthropic.omit,
            messages=self.messages,
            tools=(
                cast("list[ToolUnionParam]", self.tool_params)
                if self.tool_params
                else anthropic.omit
            ),
        )

    async def _run_tool(self, block: ToolUseBlock) -> ToolResultBlockParam:
        """Run one requested tool, record it, and build its ``tool_result``.

        Tools of one turn run one after another, in block order, not concurrently: the
        caller's ``call_tool`` may share a database session, which is not safe to use from
        concurrent tasks, and sequential calls keep side effects in a predictable order.
        """
        name = block.name
        tool_input = dict(block.input)
        if name not in self.allowed:
            message = (
                f"tool {name!r} is not allowed for this task; allowed tools: "
                f"{', '.join(self.allowed) or 'none'}"
            )
            self.state.tool_calls.append(
                ToolCallRecord(
                    name=name,
                    input=tool_input,
                    ok=False,
                    output=None,
                    error=message,
                    duration_ms=0.0,
                )
            )
            return _error_result(block.id, message)

        started = time.perf_counter()
        finished = False
        try:
            output, content, error = await self._execute(name, tool_input)
            finished = True
        finally:
            if not finished:
                # Cancelled mid-call (run timeout or caller): keep a trace of the attempt.
                self.state.tool_calls.append(
                    ToolCallRecord(
                        name=name,
                        input=tool_input,
                        ok=False,
                        output=None,
                        error="interrupted: the run was stopped while this tool was running",
                        duration_ms=_elapsed_ms(started),
                    )
                )
        self.state.tool_calls.append(
            ToolCallRecord(
                name=name,
                input=tool_input,
                ok=error is None,
                output=output,
                error=error,
                duration_ms=_elapsed_ms(started),
            )
        )
        if error is not None:
            return _error_result(block.id, error)
        return {"type": "tool_result", "tool_use_id": block.id, "content": content}

    async def _execute(
        self, name: str, tool_input: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, str, str | None]:
        """Call the tool; return ``(output, content_json, None)`` or ``(None, "", error)``.

        The error text is what the model sees, so it must say what to change: a
        ``ToolError`` already does; other exceptions are reduced to type and message.
        """
        try:
            output = await self.call_tool(name, tool_input)
        except ToolError as exc:
            return None, "", str(exc)
        except Exception as exc:
            logger.warning("orchestration: tool %r raised", name, exc_info=True)
            message = f"execution_failed: tool {name!r} failed: {type(exc).__name__}: {exc}"
            return None, "", message[:_MAX_TOOL_ERROR_CHARS]
        if not isinstance(output, dict):
            return (
                None,
                "",
                (
                    f"execution_failed: tool {name!r} returned {type(output).__name__}, "
                    "expected a JSON object"
                ),
            )
        try:
            content = json.dumps(output, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            logger.warning("orchestration: tool %r returned non-JSON output: %s", name, exc)
            return (
                None,
                "",
                (
                    f"execution_failed: tool {name!r} returned a result that is not "
                    f"JSON-serialisable ({exc})"
                ),
            )
        return output, content, None


async def _through_gate(
    gate: ModelGate, send: Callable[[], Awaitable[Message]], state: _RunState, *, retries: int
) -> Message:
    """``send()`` inside the gate. A refusal (429/529) closes the gate for everyone for
    its ``retry-after`` and the call queues again, however often: the gate's pacing
    makes refusals rare, and the run's timeout bounds the wait. Other transient failures
    (408, 409, 5xx, connection) are retried ``retries`` times after 0.5, 1, 2... s, as the
    SDK would; anything else, or the last failure, is raised to the loop."""
    failures = 0
    while True:
        async with gate.call() as ticket:
            try:
                return await send()
            except anthropic.APIStatusError as exc:
                if exc.status_code in REFUSED_STATUSES:
                    wait = _retry_after(exc)
                    logger.info(
                        "orchestration: HTTP %d; the model gate closes for %.3g s",
                        exc.status_code,
                        wait,
                    )
                    state.refusals += 1
                    await gate.close_for(wait, sent=ticket)
                    continue
                if failures >= retries or not _transient(exc.status_code):
                    raise
            except anthropic.APIConnectionError:
                if failures >= retries:
                    raise
        failures += 1
        await asyncio.sleep(min(8.0, 0.5 * 2 ** (failures - 1)))


def _transient(status: int) -> bool:
    """Statuses the SDK itself retries (besides 429): timeouts, conflicts, server errors."""
    return status in (408, 409) or status >= 500


def _retry_after(exc: anthropic.APIStatusError) -> float:
    """Seconds the API asks us to wait: ``retry-after-ms``, ``retry-after`` (seconds or
    an HTTP date), else ``RETRY_AFTER_DEFAULT_S``; at most ``RETRY_AFTER_MAX_S``."""
    headers = exc.response.headers
    seconds: float | None = None
    try:
        if "retry-after-ms" in headers:
            seconds = float(headers["retry-after-ms"]) / 1000.0
        elif "retry-after" in headers:
            value = headers["retry-after"]
            try:
                seconds = float(value)
            except ValueError:
                seconds = parsedate_to_datetime(value).timestamp() - time.time()
    except (ValueError, TypeError, OverflowError):
        seconds = None
    if seconds is None or seconds != seconds or seconds < 0:  # missing, unreadable, NaN
        seconds = RETRY_AFTER_DEFAULT_S
    return min(seconds, RETRY_AFTER_MAX_S)


def _with_cache_breakpoint(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copy ``tools`` and mark the last one with ``cache_control``.

    A cache breakpoint on the last tool caches the whole tool list (it is the prefix of
    every request in the loop). Copies keep the caller's definitions untouched, since they
    are often shared module-level constants.
    """
    copies = [dict(tool) for tool in tools]
    if copies:
        copies[-1].setdefault("cache_control", {"type": "ephemeral"})
    return copies


def _error_result(tool_use_id: str, message: str) -> ToolResultBlockParam:
    return {"type": "tool_result", "tool_use_id": tool_use_id, "content": message, "is_error": True}


def _joined_text(response: Message) -> str:
    """All text blocks of a response, concatenated as the model wrote them.

    Blocks are joined without a separator because the API may split one paragraph into
    several blocks (e.g. around citations).
    """
    parts = [block.text for block in response.content if block.type == "text"]
    return "".join(parts).strip()


def _refusal_message(response: Message) -> str:
    message = "the model refused the task (stop_reason 'refusal')"
    details = response.stop_details
    if details is not None:
        if details.category:
            message += f"; category: {details.category}"
        if details.explanation:
            message += f"; {details.explanation}"
    return message


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 3)


def _classify_api_error(exc: anthropic.AnthropicError) -> tuple[str, str]:
    """Map an SDK exception (raised after the SDK's own retries) to (error_kind, message).

    The order matters: ``OverloadedError`` subclasses ``InternalServerError`` and
    ``APITimeoutError`` subclasses ``APIConnectionError``.
    """
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        detail = exc.api_message or exc.message
        suffix = f" (request-id {exc.request_id})" if exc.request_id else ""
        if isinstance(exc, anthropic.OverloadedError) or status == 529:
            kind, what = "overloaded", "the Anthropic API is overloaded"
        elif isinstance(exc, anthropic.RateLimitError):
            kind, what = "rate_limit", "the Anthropic API rate limit was hit"
        elif isinstance(exc, anthropic.InternalServerError) or status >= 500:
            kind, what = "server_error", "the Anthropic API had a server error"
        elif isinstance(exc, anthropic.AuthenticationError | anthropic.PermissionDeniedError):
            kind, what = "authentication", "the Anthropic API rejected the API key"
        elif isinstance(exc, anthropic.BadRequestError):
            kind, what = "bad_request", "the Anthropic API rejected the request"
        else:
            kind, what = "api_error", "the Anthropic API returned an error"
        return kind, f"{what} (HTTP {status}): {detail}{suffix}"
    if isinstance(exc, anthropic.APITimeoutError):
        return "connection", f"the request to the Anthropic API timed out: {exc.message}"
    if isinstance(exc, anthropic.APIConnectionError):
        cause = f" ({type(exc.__cause__).__name__}: {exc.__cause__})" if exc.__cause__ else ""
        return "connection", f"could not reach the Anthropic API: {exc.message}{cause}"
    return "api_error", f"Anthropic SDK error: {type(exc).__name__}: {exc}"


def build_system_prompt(
    base_prompt: str,
    *,
    task_name: str,
    schedule: str,
    run_number: int,
    local_now: datetime,
    backfill_of: datetime | None = None,
) -> str:
    """``base_prompt`` plus a short block of facts about this run.

    The model has no clock and no memory of earlier runs; telling it the current local
    time (with offset and zone name, so "tomorrow at 9" is resolved in the user's zone),
    the schedule and which run this is lets it phrase and date its work correctly.
    ``backfill_of``: the past fire time a backfill run stands for, so the model does the
    work as of then, not as of now.

    ``local_now`` must be timezone-aware: a naive time would give the model a wrong
    offset, so it raises ``ValueError``.
    """
    offset = local_now.utcoffset()
    if offset is None:
        raise ValueError("local_now must be timezone-aware (e.g. datetime.now(ZoneInfo(...)))")
    tzinfo = local_now.tzinfo
    zone = getattr(tzinfo, "key", None) or local_now.tzname() or "UTC offset only"
    when = f"{local_now.isoformat(timespec='seconds')} ({zone}), {local_now.strftime('%A')}"
    context = "\n".join(
        [
            "## This run",
            f"- Task: {task_name}",
            f"- Schedule: {schedule}",
            f"- Run number: {run_number}",
            f"- Current local time: {when}",
        ]
    )
    if backfill_of is not None:
        context += (
            f"\n- Backfill: this run stands for the scheduled time "
            f"{backfill_of.isoformat(timespec='seconds')}, which has passed (it did not run "
            "then); do the task as of that time"
        )
    base = base_prompt.rstrip()
    return f"{base}\n\n{context}" if base else context
