"""Runs waiting for a slot: served in ticket order (``SlotLine``), parked as plain values
the garbage collector does not walk (``parked``), and the same rows again when started."""

from __future__ import annotations

import gc
from datetime import UTC, datetime

from sqlalchemy import func, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from scheduler_service.runs.parked import park, unpark
from scheduler_service.runs.slots import SlotLine
from scheduler_service.storage.models import TaskRun


def test_a_slot_line_starts_at_most_its_size_lowest_ticket_first() -> None:
    line: SlotLine[str] = SlotLine(2)
    for ticket, item in [(5, "e"), (1, "a"), (3, "c")]:
        line.put(ticket, item)
    assert line.ready() == ["a", "c"]
    assert line.ready() == [] and line.waiting == 1
    line.put(2, "b")  # arrived earlier than "e": served first
    line.release()
    assert line.ready() == ["b"]
    line.release()
    line.release()
    assert line.ready() == ["e"] and line.waiting == 0


def test_a_slot_line_gives_up_its_waiting_items_in_ticket_order() -> None:
    line: SlotLine[str] = SlotLine(0)
    for ticket, item in [(3, "c"), (1, "a"), (2, "b")]:
        line.put(ticket, item)
    assert line.drop_waiting() == ["a", "b", "c"]
    assert line.waiting == 0 and line.drop_waiting() == []


def _claimed_run(engine: Engine) -> TaskRun:
    """A run as the claim leaves it: written by a session that does not expire it."""
    with Session(engine, expire_on_commit=False) as session:
        run = TaskRun(
            id="r1",
            task_id="t1",
            user_id="u1",
            kind="scheduled",
            fire_time=datetime(2030, 1, 1, 9, tzinfo=UTC),
            attempt=1,
            status="queued",
            worker="w1",
        )
        session.add(run)
        session.commit()
    return run


def test_a_parked_run_costs_the_garbage_collector_nothing(engine: Engine) -> None:
    parked = park(_claimed_run(engine))
    gc.collect()
    assert not gc.is_tracked(parked)


def test_an_unparked_run_is_the_claimed_row_again_detached(engine: Engine) -> None:
    claimed = _claimed_run(engine)
    run = unpark(park(claimed))
    columns = inspect(TaskRun).column_attrs.keys()
    assert {c: getattr(run, c) for c in columns} == {c: getattr(claimed, c) for c in columns}
    assert run.duration_ms is None and run.queued_at is not None
    assert inspect(run).detached and inspect(run).identity == ("r1",)
    with Session(engine) as session:  # added to a session it is the same row, not a new one
        session.add(run)
        run.status = "running"
        session.commit()
        assert session.scalar(select(func.count()).select_from(TaskRun)) == 1
        assert session.scalar(select(TaskRun.status)) == "running"
