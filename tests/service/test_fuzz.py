"""A hypothesis fuzz of scheduler_tool over every operation and field, on SQLite and
PostgreSQL.

Each example is a few calls by two users, mixing plausible values with hostile ones
(NUL characters, lone surrogates, huge or deep JSON, wrong types, out-of-range numbers,
other users' ids). After every call:

* only a ``ToolError`` ever escapes, and never ``execution_failed`` or ``unavailable``
  (those would mean a bad input reached the database or crashed the service);
* an answer is a JSON object;
* every live task has exactly one job and every job a live task (``scheduled`` tasks'
  jobs, plus paused tasks' paused jobs);
* no user holds more live tasks than the quota.

CI runs ``FUZZ_EXAMPLES`` examples per backend (default 80); run many more with e.g.
``FUZZ_EXAMPLES=10000 pytest tests/service/test_fuzz.py -k sqlite``. One service serves every
example (in an event loop of its own thread), so state accumulates as in real use.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections import Counter
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from config import LimitsConfig, SchedulerConfig, SchedulerToolConfig, Settings
from scheduler_service import SchedulerService
from scheduler_service.cluster.leadership import leadership_for
from scheduler_service.statuses import LIVE_TASK, TaskStatus
from scheduler_service.storage.models import ScheduledTask
from scheduler_service.tasks.scheduler_tool import OPERATIONS
from tests.conftest import RecordingTool
from tools import ToolContext, ToolError

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "80"))
QUOTA = 6
USERS = (
    ToolContext(user_id="fuzz-a", conversation_id="a1"),
    ToolContext(user_id="fuzz-a", conversation_id="a2"),
    ToolContext(user_id="fuzz-b", conversation_id="b1"),
)
T = TypeVar("T")


class LoopThread:
    """An event loop in a thread of its own: hypothesis drives examples synchronously."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Fuzzed:
    def __init__(self, loop: LoopThread, service: SchedulerService) -> None:
        self.loop = loop
        self.service = service
        self.task_ids: list[str] = []
        self.calls = 0
        self.answers: Counter[str] = Counter()  # "operation code", for the closing line


@pytest.fixture
def fuzzed(database_url: str) -> Iterator[Fuzzed]:
    loop = LoopThread()
    config = Settings(
        database_url=database_url,
        # A worker that does not lead (another holds the lock, below): nothing fires
        # on its own, so every change comes from a call; manual runs execute here.
        scheduler=SchedulerConfig(task_timeout=5),
        scheduler_tool=SchedulerToolConfig(max_tasks_per_user=QUOTA),
        limits=LimitsConfig(max_finished_tasks_per_user=3, schedule_eval_seconds=0.5),
        anthropic_api_key=None,
    )

    blocker = leadership_for(database_url)

    async def start() -> SchedulerService:
        await blocker.open()
        assert await blocker.try_acquire()
        service = SchedulerService(config)
        service.tools.register(RecordingTool())
        await service.start()
        return service

    service = loop.run(start())
    try:
        yield Fuzzed(loop, service)
    finally:
        loop.run(service.stop())
        loop.run(blocker.close())
        loop.close()


HOSTILE_TEXT = st.sampled_from(
    ["", " ", "\x00", "a\x00b", "\ud800", "x" * 300, "\n\r\x1b[2J", "[" * 50, "🙂" * 70]
)
TEXT = st.one_of(st.text(max_size=30), HOSTILE_TEXT)
HOSTILE_INT = st.sampled_from([-1, 0, 2**31, 2**63, -(2**63) - 1, 10**100])
INT = st.one_of(st.integers(-5, 40), HOSTILE_INT)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
ANY = st.one_of(JSON, TEXT, INT, st.booleans(), st.lists(INT, max_size=3))
MOSTLY = st.sampled_from([True, True, True, True, False])
HOSTILE_OPERATION = st.sampled_from(
    [["create_task"], {"op": "get_tasks"}, None, 7, "CREATE_TASK", " get_task", "x" * 1000]
)


def plausible(*values: Any) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(values), ANY)


FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "name": plausible("daily digest", "n" * 200),
    "description": plausible("what it does", "d" * 2001),
    "frequency": plausible("once", "minutely", "hourly", "daily", "weekly", "monthly", "custom"),
    "scheduled_time": plausible("09:00", "23:59:59", "2031-03-30T02:30:00", "00:00", "9" * 41),
    "day_of_week": plausible(0, 6, "monday", [0, 2, 4], ["mon", "fri", "mon"], list(range(60))),
    "day_of_month": plausible(1, 31, -1, 30),
    "custom_schedule": plausible(
        "every 3 days at 09:00",
        "every 2 hours",
        "every weekday at 08:00",
        "cron: 30 8 * * 1-5",
        "RRULE:FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=8;BYMINUTE=0",
        "RRULE:FREQ=DAILY;COUNT=5",
        "DTSTART:19000101T000000 RRULE:FREQ=DAILY;COUNT=100000",
        "DTSTART:09000101T000000 RRULE:FREQ=DAILY",
        "RRULE:FREQ=SECONDLY;BYMONTH=2;BYMONTHDAY=29;BYHOUR=3;BYMINUTE=7;BYSECOND=0",
        "RRULE:FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30",
    ),
    "timezone": plausible("UTC", "Europe/Paris", "America/New_York", "A" * 300, "../../etc"),
    "end_time": plausible("2035-01-01T00:00:00", "2020-01-01", "tomorrow"),
    "max_runs": plausible(1, 3, 1_000_000),
    "execution_mode": plausible("direct", "orchestrated", "DIRECT"),
    "tool_name": plausible("recording_tool", "reminder_tool", "scheduler_tool", "nope"),
    "operation": plausible("record", "fail", "add_reminder", "block"),
    "parameters": st.one_of(st.dictionaries(TEXT, JSON, max_size=4), ANY),
    "task_description": plausible("Summarise my week", "t" * 10_001),
    "task_prompt": plausible("Be brief."),
    "available_tools": plausible(["recording_tool"], ["scheduler_tool"], ["x"] * 80, []),
    "timeout": plausible(1, 30, 86_401),
    "max_retries": plausible(0, 3, 11),
    "misfire_grace_time": plausible(0, 60),
    "max_iterations": plausible(1, 10),
    "max_tokens": plausible(16, 1024, 21_334, 64_000),
    "token_budget": plausible(100, 10**9),
    "status": plausible("scheduled", "paused", ["cancelled", "completed"], "nope"),
    "limit": plausible(1, 20, 100, 101),
    "offset": plausible(0, 5, 2**63),
    "count": plausible(1, 5, 100, 101),
    "wait": plausible(True, False),
    "unknown_field": ANY,
}


VALID: list[dict[str, Any]] = [
    {"name": "direct", "frequency": "daily", "scheduled_time": "09:00",
     "tool_name": "recording_tool", "operation": "record", "parameters": {"k": 1}},
    {"name": "weekly", "frequency": "weekly", "day_of_week": [0, 3], "scheduled_time": "08:30",
     "timezone": "Europe/Paris", "execution_mode": "orchestrated",
     "task_description": "Summarise", "available_tools": ["recording_tool"]},
    {"name": "rule", "frequency": "custom", "custom_schedule": "RRULE:FREQ=DAILY;COUNT=5",
     "tool_name": "recording_tool", "operation": "fail", "max_runs": 3},
    {"name": "soon", "frequency": "once", "scheduled_time": "2031-01-01T10:00:00",
     "tool_name": "reminder_tool", "operation": "add_reminder",
     "parameters": {"title": "x", "due_date": "2031-01-01"}},
]  # fmt: skip


SCHEDULE = {"frequency", "scheduled_time", "day_of_week", "day_of_month", "custom_schedule",
            "timezone", "end_time", "max_runs"}  # fmt: skip
TASK_FIELDS = set(FIELDS) - {"status", "limit", "offset", "count", "wait", "unknown_field"}
ACCEPTED: dict[str, set[str]] = {
    "create_task": TASK_FIELDS,
    "update_task": TASK_FIELDS,
    "get_tasks": {"status", "frequency", "execution_mode", "limit", "offset"},
    "preview_schedule": SCHEDULE | {"count"},
    "execute_task_now": {"wait"},
}


class TaskRef:
    """The n-th task created so far (resolved when the call is made, so that what
    hypothesis draws does not depend on earlier examples)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def resolve(self, task_ids: list[str]) -> str:
        return task_ids[self.n % len(task_ids)] if task_ids else "task_0000000000000000"


class JsonText:
    """kwargs to send as a JSON string (made when the call is made)."""

    def __init__(self, value: Any) -> None:
        self.value = value


@st.composite
def calls(draw: st.DrawFn) -> tuple[Any, Any, ToolContext]:
    pick = draw(st.integers(0, len(OPERATIONS) + 3))
    if pick < len(OPERATIONS):
        operation: Any = OPERATIONS[pick]
    elif pick < len(OPERATIONS) + 2:
        operation = "create_task"
    else:
        operation = draw(st.one_of(HOSTILE_OPERATION, ANY))
    names = draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=8, unique=True))
    base: dict[str, Any] = {}
    if draw(MOSTLY):  # a well-formed call with a field or two changed goes deeper
        accepted = ACCEPTED.get(operation, set()) if isinstance(operation, str) else set()
        names = [n for n in names if n in accepted][: draw(st.integers(0, 2))]
        if operation == "create_task":
            base = draw(st.sampled_from(VALID))
    kwargs: Any = {**base, **{name: draw(FIELDS[name]) for name in names}}
    ids = st.builds(TaskRef, st.integers(0, 50))
    if operation != "create_task" and draw(MOSTLY):
        kwargs["task_id"] = draw(ids) if draw(MOSTLY) else draw(st.one_of(TEXT, INT))
    shape = draw(st.integers(0, 19))
    if shape == 0:
        kwargs = JsonText(kwargs)
    elif shape == 1:
        kwargs = draw(st.one_of(ANY, st.sampled_from(["[" * 100_000, '{"a":' * 5000, "{"])))
    return operation, kwargs, draw(st.sampled_from(USERS))


async def check_invariants(service: SchedulerService) -> None:
    async with service.db.read() as session:
        rows = (await session.execute(select(ScheduledTask.id, ScheduledTask.status))).all()
        live = (
            await session.execute(
                select(ScheduledTask.user_id, func.count())
                .where(ScheduledTask.status.in_(LIVE_TASK))
                .group_by(ScheduledTask.user_id)
            )
        ).all()
    jobs = {j for j in await service.jobs.job_ids() if not j.startswith("retry:")}
    scheduled = {i for i, s in rows if s == TaskStatus.SCHEDULED}
    paused = {i for i, s in rows if s == TaskStatus.PAUSED}
    assert scheduled <= jobs, f"scheduled tasks without a job: {scheduled - jobs}"
    assert jobs <= scheduled | paused, f"jobs without a live task: {jobs - scheduled - paused}"
    for user, count in live:
        assert count <= QUOTA, f"{user} holds {count} live tasks, quota {QUOTA}"


async def one_call(fuzzed: Fuzzed, operation: Any, kwargs: Any, ctx: ToolContext) -> None:
    service = fuzzed.service
    value = kwargs.value if isinstance(kwargs, JsonText) else kwargs
    if isinstance(value, dict) and isinstance(value.get("task_id"), TaskRef):
        value = {**value, "task_id": value["task_id"].resolve(fuzzed.task_ids)}
        kwargs = JsonText(value) if isinstance(kwargs, JsonText) else value
    if isinstance(kwargs, JsonText):  # kwargs as a JSON string, as some models send them
        kwargs = json.dumps(kwargs.value, default=str)
    try:
        out = await service.scheduler_tool.run(operation, kwargs, context=ctx)
    except ToolError as exc:
        fuzzed.answers[f"{operation if isinstance(operation, str) else '?'} {exc.code}"] += 1
        assert exc.code not in ("execution_failed", "unavailable"), (operation, kwargs, exc)
        assert len(exc.message) < 2000, exc.message[:300]
    else:
        fuzzed.answers[f"{operation} ok"] += 1
        assert isinstance(out, dict)
        json.dumps(out)
        task = out.get("task")
        if operation == "create_task" and isinstance(task, dict):
            fuzzed.task_ids.append(task["task_id"])
    await service.runner.settled()
    await check_invariants(service)
    fuzzed.calls += 1


def test_fuzz_scheduler_tool(fuzzed: Fuzzed) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        database=None,
        # No shrinking: a call that hangs would be retried, a minute each, for as long as
        # shrinking goes on; the failing example is reported as found.
        phases=(Phase.explicit, Phase.reuse, Phase.generate),
    )
    @given(data=st.data())
    def example(data: st.DataObject) -> None:
        for _ in range(data.draw(st.integers(1, 4))):
            operation, kwargs, ctx = data.draw(calls())
            fuzzed.loop.run(one_call(fuzzed, operation, kwargs, ctx))

    example()
    print(f"fuzz: {fuzzed.calls} calls, {len(fuzzed.task_ids)} tasks created")
    print("fuzz answers:", dict(sorted(fuzzed.answers.items())))
