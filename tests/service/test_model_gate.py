"""The model gate: the real anthropic client over the scripted transport, the real gates
(in memory; leases and a shared row on PostgreSQL), and the service wiring them in."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select, text

from scheduler_service.runs.model_gate import LocalGate, ModelGate, SharedGate, Ticket
from scheduler_service.runs.orchestration import (
    OrchestrationLimits,
    OrchestrationResult,
    run_orchestration,
)
from scheduler_service.storage.db import Database
from scheduler_service.storage.models import ModelLease, TaskRun
from scheduler_service.testing import FakeAnthropic, Reply, error_body, text_message
from tests.conftest import ServiceFactory
from tests.design_examples import SALES
from tools import ToolContext


def refusal(retry_after: str, status: int = 429) -> Reply:
    kind = "rate_limit_error" if status == 429 else "overloaded_error"
    return error_body(status, kind, "slow down", headers={"retry-after": retry_after})


async def orchestrate(
    fake: FakeAnthropic, gate: ModelGate | None, *, max_retries: int = 2, timeout: float = 20
) -> OrchestrationResult:
    async def no_tools(name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("no tool is offered")

    return await run_orchestration(
        fake.client(max_retries=max_retries),
        model="claude-haiku-5-5",
        system="",
        task_description="Say done.",
        tools=[],
        call_tool=no_tools,
        limits=OrchestrationLimits(timeout=timeout),
        gate=gate,
    )


class Closings:
    """A gate's ``close_for`` observed: an event per closing, and when it closed."""

    def __init__(self, gate: LocalGate | SharedGate) -> None:
        self.closed = asyncio.Event()
        self.at: list[float] = []
        close_for = gate.close_for

        async def observed(seconds: float, *, sent: Ticket) -> None:
            await close_for(seconds, sent=sent)
            self.at.append(time.monotonic())
            self.closed.set()

        gate.close_for = observed  # type: ignore[method-assign]


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeAnthropic]:
    fake = FakeAnthropic()
    yield fake
    await fake.aclose()


async def test_a_refusal_closes_the_gate_for_every_run_for_its_retry_after(
    fake: FakeAnthropic,
) -> None:
    gate = LocalGate(5)
    closings = Closings(gate)
    fake.add(refusal("0.5")).add(text_message("A done.")).add(text_message("B done."))
    first = asyncio.create_task(orchestrate(fake, gate))
    await closings.closed.wait()  # run A was refused
    second = await orchestrate(fake, gate)  # run B starts while the gate is closed
    assert (await first).ok and second.ok
    assert len(fake.requests) == 3, "one refusal, then one call per run"
    refused_at = fake.request_times[0]
    assert min(fake.request_times[1:]) - refused_at >= 0.5, "nobody called before retry-after"
    assert {(await first).final_text, second.final_text} == {"A done.", "B done."}


async def test_through_the_gate_the_sdk_does_not_retry_a_refusal_itself(
    fake: FakeAnthropic,
) -> None:
    gate = LocalGate(2)
    closings = Closings(gate)
    fake.add(refusal("0.2", status=529)).add(text_message("Done."))
    result = await orchestrate(fake, gate, max_retries=2)
    assert result.ok and result.iterations == 1, "a refused call is the same iteration"
    assert result.refusals == 1
    assert len(fake.requests) == 2 and len(closings.at) == 1
    assert fake.request_times[1] - fake.request_times[0] >= 0.2
    # Without a gate the same client retries on its own, and gives up after its retries.
    fake.add(refusal("0")).add(refusal("0")).add(refusal("0"))
    alone = await orchestrate(fake, None, max_retries=2)
    assert alone.error_kind == "rate_limit" and len(fake.requests) == 2 + 3


async def test_other_transient_errors_are_retried_as_often_as_the_client_would(
    fake: FakeAnthropic,
) -> None:
    gate = LocalGate(2)
    fake.add(error_body(500, "api_error", "oops")).add(text_message("Done."))
    assert (await orchestrate(fake, gate, max_retries=1)).ok
    fake.add(error_body(500, "api_error", "oops")).add(error_body(500, "api_error", "again"))
    failed = await orchestrate(fake, gate, max_retries=1)
    assert failed.error_kind == "server_error" and "again" in (failed.error or "")
    fake.add(error_body(400, "invalid_request_error", "bad"))
    assert (await orchestrate(fake, gate, max_retries=1)).error_kind == "bad_request"
    assert len(fake.requests) == 2 + 2 + 1, "a 400 is not retried"


async def test_a_refused_run_still_ends_at_its_timeout(fake: FakeAnthropic) -> None:
    fake.add(refusal("30"))
    result = await orchestrate(fake, LocalGate(1), timeout=0.5)
    assert result.error_kind == "timeout" and len(fake.requests) == 1
    assert "the API refused 1 call(s)" in (result.error or ""), result.error


async def test_at_most_the_gates_concurrency_of_calls_are_in_flight(fake: FakeAnthropic) -> None:
    release = asyncio.Event()
    two_in_flight = asyncio.Event()
    third = asyncio.Event()
    in_flight = 0

    async def held(_: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        nonlocal in_flight
        in_flight += 1
        if in_flight == 2:
            two_in_flight.set()
        if in_flight > 2:
            third.set()
        await release.wait()
        in_flight -= 1
        return 200, text_message("Done.")

    for _ in range(4):
        fake.add(held)
    gate = LocalGate(2)
    runs = [asyncio.create_task(orchestrate(fake, gate)) for _ in range(4)]
    await two_in_flight.wait()
    with pytest.raises(TimeoutError):  # slow start allows a start every 0.5 s: 1.5 s is 3
        await asyncio.wait_for(third.wait(), 1.5)
    release.set()
    assert all(result.ok for result in await asyncio.gather(*runs))
    assert gate.in_flight == 0


# -- the service: the gate is wired into every orchestrated run, on both backends -------


async def test_the_service_runs_orchestrated_calls_through_its_gate(
    start_service: ServiceFactory, ctx: ToolContext, fake: FakeAnthropic, database_url: str
) -> None:
    fake.add(refusal("0.3")).add(text_message("Done."))
    service = await start_service(anthropic_client=fake.client(max_retries=2), model_concurrency=3)
    gate = service.model_gate
    assert isinstance(gate, LocalGate if database_url.startswith("sqlite") else SharedGate)
    created = await service.scheduler_tool.run("create_task", SALES, context=ctx)
    task_id = created["task"]["task_id"]
    out = await service.scheduler_tool.run("execute_task_now", {"task_id": task_id}, context=ctx)
    assert out["run"]["status"] == "succeeded", out["run"]
    assert out["run"]["details"]["refusals"] == 1
    async with service.db.read() as session:
        runs = (await session.scalars(select(TaskRun))).all()
    assert [(run.attempt, run.status) for run in runs] == [(1, "succeeded")], (
        "the refusal waited at the gate instead of failing the run"
    )
    assert len(fake.requests) == 2 and fake.request_times[1] - fake.request_times[0] >= 0.3
    if isinstance(gate, SharedGate):
        async with service.db.read() as session:
            assert (await session.scalars(select(ModelLease))).all() == [], "leases released"


async def test_without_the_setting_there_is_no_gate(service: Any) -> None:
    assert service.model_gate is None and service.execution.gate is None


# -- PostgreSQL: one gate for every process ----------------------------------------------


@pytest_asyncio.fixture
async def two_databases(pg_url: str) -> AsyncIterator[tuple[Database, Database]]:
    """Two engines on one PostgreSQL database: what two replicas hold."""
    first, second = Database(pg_url), Database(pg_url)
    yield first, second
    await first.dispose()
    await second.dispose()


async def test_replicas_share_the_slots_and_the_closing(
    two_databases: tuple[Database, Database],
) -> None:
    one, other = SharedGate(two_databases[0], 1), SharedGate(two_databases[1], 1)
    entered = asyncio.Event()
    leave = asyncio.Event()

    async def hold() -> None:
        async with one.call():
            entered.set()
            await leave.wait()

    holder = asyncio.create_task(hold())
    await entered.wait()
    waiting = asyncio.create_task(_enter(other))
    with pytest.raises(TimeoutError):  # the one slot is the other replica's
        await asyncio.wait_for(asyncio.shield(waiting), 1.0)
    async with two_databases[0].read() as session:
        holders = (await session.scalars(select(ModelLease.holder))).all()
    assert holders == [one.holder], "the waiting replica took no slot"
    leave.set()
    await holder
    await waiting  # the slot is free: the other replica goes

    async with one.call() as ticket:
        await one.close_for(0.6, sent=ticket)
    started = time.monotonic()
    await _enter(other)
    assert time.monotonic() - started >= 0.5, "the other replica waited out the retry-after"
    await one.aclose()
    await other.aclose()


async def test_a_dead_replicas_slot_frees_itself_when_its_lease_expires(
    two_databases: tuple[Database, Database],
) -> None:
    db = two_databases[0]
    async with db.write() as session:  # a replica killed mid-call, and one long dead
        await session.execute(
            text(
                "INSERT INTO task_scheduler_model_leases (id, holder, expires_at) VALUES "
                "('lease_killed', 'killed', extract(epoch FROM clock_timestamp()) + 1), "
                "('lease_dead', 'dead', extract(epoch FROM clock_timestamp()) - 60)"
            )
        )
    wide = SharedGate(two_databases[1], 2)
    started = time.monotonic()
    await _enter(wide)  # the long-dead lease does not count: one slot is free now
    assert time.monotonic() - started < 0.9
    await wide.aclose()
    gate = SharedGate(two_databases[1], 1)
    await _enter(gate)  # the only slot is the killed replica's until its lease expires
    assert time.monotonic() - started >= 0.9
    async with db.read() as session:
        assert (await session.scalars(select(ModelLease.holder))).all() == []
    await gate.aclose()


async def test_a_live_replica_keeps_its_slot_past_the_lease_length(
    two_databases: tuple[Database, Database],
) -> None:
    one = SharedGate(two_databases[0], 1, lease=0.6)
    other = SharedGate(two_databases[1], 1, lease=0.6)
    async with one.call():
        with pytest.raises(TimeoutError):  # renewed every 0.2 s: never expires while held
            await asyncio.wait_for(_enter(other), 1.5)
    await _enter(other)
    await one.aclose()
    await other.aclose()


async def _enter(gate: SharedGate) -> None:
    async with gate.call():
        pass
