"""Schedule computations are bounded by their own budget checks: a rule too costly to
search raises ``BudgetExceeded`` in the computing thread, promptly, and the thread and
the event loop are free again; results are dateutil's own."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from dateutil import rrule as du

from scheduler_service.clock.budget import BudgetExceeded, check, within
from scheduler_service.clock.rrule import CheckedRRule, checked_rrule
from scheduler_service.schedules import ScheduleInput, preview_input
from scheduler_service.tasks.evaluation import Evaluator
from scheduler_service.triggers import LocalRRuleTrigger

NOW = datetime(2026, 12, 4, 12, tzinfo=UTC)
# A search that finds nothing for 8,000 years, one period a day (dateutil checks UNTIL
# only on a match, so no bound stops it): seconds to minutes unbounded.
NEVER = "RRULE:FREQ=DAILY;BYMONTH=1;BYYEARDAY=100"
# Valid but sparse: 29 February at 03:07:00, searched second by second (~9 s unbounded).
SPARSE = "RRULE:FREQ=SECONDLY;BYMONTH=2;BYMONTHDAY=29;BYHOUR=3;BYMINUTE=7;BYSECOND=0"
SLACK = 0.5  # one step (a day of a SECONDLY rule) and a loaded machine's scheduling


def preview(rule: str, count: int = 3) -> dict[str, object]:
    data = ScheduleInput(frequency="custom", custom_schedule=rule)
    return preview_input(data, now=NOW, default_timezone="UTC", count=count)


@pytest.mark.parametrize("rule", [NEVER, SPARSE])
def test_a_costly_search_raises_budget_exceeded_within_its_budget(rule: str) -> None:
    started = time.monotonic()
    with pytest.raises(BudgetExceeded) as info, within(0.3):
        preview(rule)
    assert time.monotonic() - started < 0.3 + SLACK
    assert info.value.seconds == 0.3
    assert isinstance(info.value, Exception)  # ordinary: library code handles it as usual


def test_a_budget_binds_only_the_computation_inside_it() -> None:
    """Another thread (the run path's, APScheduler's) computing the same trigger while a
    request's budget is spent is not refused: the budget belongs to its own block."""
    trigger = LocalRRuleTrigger(
        expression="DTSTART:20260101T090000 RRULE:FREQ=DAILY;BYMONTH=2;BYMONTHDAY=29",
        timezone="UTC",
        not_before=NOW,
    )
    with within(0.001):
        time.sleep(0.01)  # the budget is spent
        with pytest.raises(BudgetExceeded):
            trigger.get_next_fire_time(None, NOW)
        with ThreadPoolExecutor(1) as pool:
            fire = pool.submit(trigger.get_next_fire_time, None, NOW).result()
    assert fire == datetime(2028, 2, 29, 9, tzinfo=UTC)
    check()  # no budget: nothing to raise


def test_a_spent_budget_is_gone_after_its_block() -> None:
    with pytest.raises(BudgetExceeded), within(0.05):
        preview(NEVER)
    shown = preview("RRULE:FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0")
    assert shown["next_runs"] == [
        "2026-12-07T09:00:00+00:00", "2026-12-14T09:00:00+00:00", "2026-12-21T09:00:00+00:00",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "rule",
    [
        "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO",
        "FREQ=MONTHLY;BYDAY=-1FR;BYSETPOS=-1",
        "FREQ=WEEKLY;INTERVAL=3;BYDAY=TU,TH;BYHOUR=8,20;BYMINUTE=30",
        "FREQ=DAILY;BYMONTH=3,10;BYMONTHDAY=25,31",
        "FREQ=HOURLY;INTERVAL=5;BYMINUTE=0,45",
        "FREQ=MINUTELY;INTERVAL=7;BYHOUR=9,10",
        "FREQ=SECONDLY;INTERVAL=3600;BYSECOND=0",
        "FREQ=YEARLY;BYWEEKNO=1,53;BYDAY=SU;COUNT=12",
    ],
)
def test_checked_rules_find_what_dateutil_finds(rule: str) -> None:
    start = datetime(2025, 3, 1, 7, 15)
    plain = du.rrulestr(f"RRULE:{rule}", dtstart=start)
    checked = checked_rrule(f"RRULE:{rule}", start)
    moved = checked.replace(dtstart=datetime(2025, 6, 2, 0, 0))
    assert isinstance(checked, CheckedRRule) and isinstance(moved, CheckedRRule)
    with within(30):
        assert list(checked.xafter(start, count=40)) == list(plain.xafter(start, count=40))
        again = plain.replace(dtstart=datetime(2025, 6, 2, 0, 0))
        assert list(moved.xafter(start, count=40)) == list(again.xafter(start, count=40))


async def test_the_evaluator_refuses_frees_its_thread_and_the_loop_keeps_serving() -> None:
    """One thread: after the costly rule is refused, the same thread computes the next
    request; meanwhile the event loop keeps ticking."""
    evaluator = Evaluator(workers=1, budget=0.5)
    loop = asyncio.get_running_loop()
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(loop.time())
            await asyncio.sleep(0.01)

    ticker = asyncio.ensure_future(tick())
    try:
        started = loop.time()
        with pytest.raises(BudgetExceeded):
            await evaluator.run(preview, SPARSE)
        assert loop.time() - started < 0.5 + SLACK
        assert len(ticks) > 10 and max(b - a for a, b in itertools.pairwise(ticks)) < 0.4
        shown = await evaluator.run(preview, "RRULE:FREQ=DAILY;BYHOUR=9;BYMINUTE=0", count=1)
        assert shown["next_runs"] == ["2026-12-05T09:00:00+00:00"]
    finally:
        ticker.cancel()
        evaluator.close()


async def test_an_abandoned_evaluation_ends_at_its_budget() -> None:
    """A caller that stops waiting (cancelled) leaves no thread computing past the
    budget: the next computation gets the one thread after it."""
    evaluator = Evaluator(workers=1, budget=0.4)
    loop = asyncio.get_running_loop()
    try:
        costly = asyncio.ensure_future(evaluator.run(preview, NEVER))
        await asyncio.sleep(0.05)
        costly.cancel()
        started = loop.time()
        names = await evaluator.run(lambda: threading.current_thread().name)
        assert names.startswith("schedule-eval")
        assert loop.time() - started < 0.4 + SLACK
    finally:
        evaluator.close()
