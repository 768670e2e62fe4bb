"""backfill_task on SQLite and PostgreSQL: a task's past fire times that never ran are
queued once each, run through the run queue, and reported.

* Each fire time of the window runs once, days past its misfire grace time, as a
  ``backfill`` run that neither counts toward run_count nor changes the task; a second
  backfill of the window finds them done; the cap leaves the latest out and says where
  to continue.
* Times that already have a row (missed here) are not run again, and times the schedule
  itself has not claimed yet are left to it.
* Two services backfilling one window at one instant queue each fire time once.
* Bad windows are refused with the field named, and nothing is stored.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from scheduler_service import SchedulerService
from scheduler_service.storage.models import ScheduledTask, TaskRun, utcnow
from scheduler_service.testing import FakeAnthropic, text_message
from scheduler_service.threaded import ThreadedScheduler
from tests.conftest import (
    RecordingTool,
    ServiceFactory,
    make_settings,
    next_notification,
    wait_for,
)
from tests.service.test_cli import run_json
from tools import ToolContext, ToolError

CTX = ToolContext(user_id="u1", conversation_id="c1")
DAYS = 5


def window() -> tuple[datetime, datetime, list[datetime]]:
    """The last ``DAYS`` whole UTC days, and the daily 03:00 fire times in them."""
    end = utcnow().replace(hour=0, minute=0, second=0, microsecond=0)
    start = end - timedelta(days=DAYS)
    return start, end, [start + timedelta(days=d, hours=3) for d in range(DAYS)]


async def create_aged(
    service: SchedulerService, *, days: int = 10, paused: bool = True, **fields: Any
) -> str:
    """A daily 03:00 UTC task whose schedule began ``days`` ago, paused since (a task
    made back then: its stored schedule and start moved back, as its row would be)."""
    kwargs = {
        "name": "daily report",
        "frequency": "daily",
        "scheduled_time": "03:00",
        "timezone": "UTC",
        "tool_name": "recording_tool",
        "operation": "record",
        "max_retries": 0,
        **fields,
    }
    created = await service.scheduler_tool.run("create_task", kwargs, context=CTX)
    task_id: str = created["task"]["task_id"]
    if paused:
        await service.scheduler_tool.run("pause_task", {"task_id": task_id}, context=CTX)
    async with service.db.write() as session:
        task = await session.get(ScheduledTask, task_id)
        assert task is not None
        task.start_at -= timedelta(days=days)
        task.schedule = {**task.schedule, "start_at": task.start_at.isoformat()}
    return task_id


async def backfill(
    service: SchedulerService, task_id: str, start: datetime, end: datetime, **extra: Any
) -> dict[str, Any]:
    kwargs = {"task_id": task_id, "start": start.isoformat(), "end": end.isoformat(), **extra}
    out: dict[str, Any] = await service.scheduler_tool.run("backfill_task", kwargs, context=CTX)
    return out


async def runs_of(service: SchedulerService, task_id: str) -> list[TaskRun]:
    async with service.db.read() as session:
        query = select(TaskRun).where(TaskRun.task_id == task_id).order_by(TaskRun.fire_time)
        return list((await session.scalars(query)).all())


async def test_each_past_fire_time_runs_once_and_the_cap_says_where_to_go_on(
    start_service: ServiceFactory,
) -> None:
    tool = RecordingTool()
    service = await start_service(tools=[tool])
    task_id = await create_aged(service)
    start, end, times = window()

    first = await backfill(service, task_id, start, end, max_backfill_runs=3)
    assert (first["fire_times"], first["queued"], first["capped"]) == (DAYS, 3, DAYS - 3)
    assert first["continue_from"] == times[3].isoformat()
    assert f"start={times[3].isoformat()}" in first["message"]
    statuses = [(await next_notification(service))["status"] for _ in range(3)]
    assert statuses == ["succeeded"] * 3

    rest = await backfill(service, task_id, start, end)
    assert (rest["queued"], rest["already_done"], rest["capped"]) == (DAYS - 3, 3, 0)
    for _ in range(DAYS - 3):
        await next_notification(service)
    again = await backfill(service, task_id, start, end)
    assert (again["queued"], again["already_done"]) == (0, DAYS)
    assert "not run again" in again["message"]

    runs = await runs_of(service, task_id)
    assert [(r.fire_time, r.kind, r.status) for r in runs] == [
        (t, "backfill", "succeeded") for t in times
    ]
    assert len(tool.calls) == DAYS  # days past the misfire grace time, and still run
    task = (await service.scheduler_tool.run("get_task", {"task_id": task_id}, context=CTX))["task"]
    assert (task["status"], task["run_count"], task["success_count"]) == ("paused", 0, DAYS)


async def test_a_fire_time_with_a_row_is_not_run_and_the_schedules_own_are_left_to_it(
    start_service: ServiceFactory,
) -> None:
    tool = RecordingTool()
    service = await start_service(tools=[tool], misfire_grace_time=1)
    task_id = await create_aged(service, paused=False)
    start, end, times = window()
    # The job store hands over day 3 late: it is recorded missed, and the task's next
    # run moves to day 4 (in the past: the schedule claims it on its next fire).
    await service.runner.on_fire(task_id, [times[2]])
    assert (await next_notification(service))["status"] == "missed"

    out = await backfill(service, task_id, start, end)
    assert out["queued_times"] == [t.isoformat() for t in times[:2]]
    assert (out["already_done"], out["left_to_schedule"]) == (1, DAYS - 3)
    for _ in range(2):
        await next_notification(service)
    runs = await runs_of(service, task_id)
    assert [(r.fire_time, r.kind, r.status) for r in runs] == [
        (times[0], "backfill", "succeeded"),
        (times[1], "backfill", "succeeded"),
        (times[2], "missed", "missed"),
    ]
    assert len(tool.calls) == 2


async def test_two_backfills_at_one_instant_queue_each_fire_time_once(
    start_service: ServiceFactory,
) -> None:
    """Two processes (two services on one database) backfill one window at once: the
    task's lock orders them, so one queues every time and the other finds them done."""
    tool = RecordingTool()
    one = await start_service(tools=[tool])
    two = await start_service(tools=[tool])
    task_id = await create_aged(one)
    start, end, times = window()

    answers = await asyncio.gather(
        backfill(one, task_id, start, end), backfill(two, task_id, start, end)
    )
    assert sorted(a["queued"] for a in answers) == [0, DAYS]
    assert sorted(a["already_done"] for a in answers) == [0, DAYS]

    async def all_ran() -> bool:
        runs = await runs_of(one, task_id)
        return len(runs) == DAYS and all(r.status == "succeeded" for r in runs)

    await wait_for(all_ran)  # executed by either service, through the run queue
    assert [r.fire_time for r in await runs_of(one, task_id)] == times
    assert len(tool.calls) == DAYS


@pytest.mark.parametrize(
    ("kwargs", "code", "words"),
    [
        ({"end": "2999-01-01"}, "invalid_input", "end: 2999-01-01T00:00:00+00:00 is in the future"),
        ({"start": "2000-01-02", "end": "2000-01-01"}, "invalid_input", "start: must be before"),
        ({"start": "last week"}, "invalid_input", "start: not an ISO 8601 date or datetime"),
        ({"max_backfill_runs": 101}, "invalid_input", "max_backfill_runs: at most 100 a call"),
        ({"max_backfill_runs": 0}, "invalid_input", "max_backfill_runs:"),
        ({"end": None}, "invalid_input", "end:"),
    ],
)
async def test_bad_windows_name_the_field_and_store_nothing(
    start_service: ServiceFactory, kwargs: dict[str, Any], code: str, words: str
) -> None:
    service = await start_service(tools=[RecordingTool()])
    task_id = await create_aged(service)
    start, end, _ = window()
    call = {"task_id": task_id, "start": start.isoformat(), "end": end.isoformat(), **kwargs}
    with pytest.raises(ToolError) as refused:
        await service.scheduler_tool.run("backfill_task", call, context=CTX)
    assert refused.value.code == code and words in refused.value.message, refused.value
    assert await runs_of(service, task_id) == []


async def test_too_many_fire_times_and_finished_tasks_are_refused(
    start_service: ServiceFactory,
) -> None:
    service = await start_service(tools=[RecordingTool()])
    minutely = await create_aged(service, frequency="minutely", scheduled_time=None)
    start = utcnow() - timedelta(days=8)
    with pytest.raises(ToolError) as refused:
        await backfill(service, minutely, start, start + timedelta(days=7))
    assert refused.value.code == "invalid_input"
    assert "start/end: the window holds more than 10,000 fire times" in refused.value.message

    task_id = await create_aged(service)
    await service.scheduler_tool.run("cancel_task", {"task_id": task_id}, context=CTX)
    start, end, _ = window()
    with pytest.raises(ToolError) as refused:
        await backfill(service, task_id, start, end)
    assert refused.value.code == "conflict" and "is cancelled" in refused.value.message
    assert await runs_of(service, task_id) == [] and await runs_of(service, minutely) == []


async def test_an_orchestrated_backfill_run_is_told_its_fire_time(
    start_service: ServiceFactory,
) -> None:
    """The real anthropic client over the scripted transport: the model's system prompt
    names the past time the run stands for, next to the current time."""
    fake = FakeAnthropic(text_message("Reported for that day."))
    service = await start_service(tools=[RecordingTool()], anthropic_client=fake.client())
    task_id = await create_aged(
        service,
        execution_mode="orchestrated",
        tool_name=None,
        operation=None,
        task_description="Report the day's orders",
    )
    start, end, times = window()
    out = await backfill(service, task_id, start, end, max_backfill_runs=1)
    assert out["queued_times"] == [times[0].isoformat()]
    assert (await next_notification(service))["status"] == "succeeded"
    system = str(fake.requests[0]["system"])
    assert f"Backfill: this run stands for the scheduled time {times[0].isoformat()}" in system
    assert "Current local time" in system
    await fake.aclose()


async def test_a_window_before_the_schedule_began_says_so(service: SchedulerService) -> None:
    created = await service.scheduler_tool.run(
        "create_task",
        {
            "name": "new",
            "frequency": "daily",
            "scheduled_time": "03:00",
            "timezone": "UTC",
            "tool_name": "reminder_tool",
            "operation": "add_reminder",
            "parameters": {"title": "x", "date": "today"},
        },
        context=CTX,
    )
    start, end, _ = window()
    out = await backfill(service, created["task"]["task_id"], start, end)
    assert (out["fire_times"], out["queued"]) == (0, 0)
    assert "no fire time in that window (its schedule starts at" in out["message"]


def test_the_cli_backfills_for_the_worker(
    capsys: pytest.CaptureFixture[str], db_path: Path
) -> None:
    """`backfill` from a shell (a client): the worker runs the queued fire times."""
    db = ("--database-url", f"sqlite:///{db_path}")
    tool = RecordingTool()
    with ThreadedScheduler(make_settings(db_path), tools=[tool], role="worker") as worker:
        task_id = worker.submit(create_aged)
        start, end, times = window()
        out = run_json(
            capsys, "backfill", task_id, "--from", start.isoformat(), "--to", end.isoformat(),
            "--max", "2", *db,
        )  # fmt: skip
        assert (out["queued"], out["capped"]) == (2, DAYS - 2)

        async def ran(service: SchedulerService) -> bool:
            runs = await runs_of(service, task_id)
            return [r.status for r in runs] == ["succeeded", "succeeded"]

        worker.submit(lambda service: wait_for(lambda: ran(service)))
    runs = run_json(capsys, "runs", task_id, *db)
    assert [(r["kind"], datetime.fromisoformat(r["fire_time"])) for r in runs] == [
        ("backfill", times[1].astimezone(UTC)),
        ("backfill", times[0].astimezone(UTC)),
    ]
    assert out["continue_from"] == times[2].isoformat()
