"""examples/assistant_app.py end to end: ASGI lifespan, HTTP, the real anthropic client
over the fake transport, a real run and its notification in the conversation."""

from __future__ import annotations

from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager

from examples.assistant_app import create_app
from scheduler_service import SchedulerService
from scheduler_service.testing import FakeAnthropic, text_message, tool_use_message
from scheduler_service.tools import ToolContext
from tests.conftest import make_settings

WEEKDAYS_AT_9 = {
    "operation": "create_task",
    "kwargs": {
        "name": "Stretch",
        "frequency": "custom",
        "custom_schedule": "every weekday at 09:00",
        "timezone": "Europe/Paris",
        "execution_mode": "direct",
        "tool_name": "reminder_tool",
        "operation": "add_reminder",
        "parameters": {"title": "Stretch", "date": "today"},
    },
}


async def test_remind_me_every_weekday_at_9(db_path: Path) -> None:
    fake = FakeAnthropic(
        tool_use_message(("scheduler_tool", WEEKDAYS_AT_9)),
        text_message("Done: I will remind you every weekday at 09:00."),
    )
    app = create_app(make_settings(db_path), anthropic_client=fake.client())
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://assistant"
        ) as http,
    ):
        reply = await http.post(
            "/conversations/c1/messages",
            json={
                "user_id": "u1",
                "text": "remind me every weekday at 9",
                "timezone": "Europe/Paris",
            },
        )
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["ok"] and body["reply"].startswith("Done")
        assert [c["ok"] for c in body["tool_calls"]] == [True]
        sent = fake.requests[0]
        assert {t["name"] for t in sent["tools"]} == {"scheduler_tool", "reminder_tool"}

        service: SchedulerService = app.state.scheduler
        owner = ToolContext(user_id="u1", conversation_id="c1")
        tasks = (await service.scheduler_tool.run("get_tasks", {}, context=owner))["tasks"]
        assert [(t["name"], t["schedule"]) for t in tasks] == [
            ("Stretch", "every weekday (Monday–Friday) at 09:00 (Europe/Paris)")
        ]
        assert tasks[0]["next_run_time"].endswith(("T09:00:00+01:00", "T09:00:00+02:00"))

        ran = await service.scheduler_tool.run(
            "execute_task_now", {"task_id": tasks[0]["task_id"]}, context=owner
        )
        assert ran["run"]["status"] == "succeeded"

        # Without a user there is no answer at all (not every user's notifications).
        for params in ({}, {"user_id": ""}, {"user_id": "u" * 201}):
            refused = await http.get("/conversations/c1/notifications", params=params)
            assert refused.status_code == 422 and "user_id" in refused.text
        other_user = {"user_id": "u2"}
        assert (await http.get("/conversations/c1/notifications", params=other_user)).json() == []
        notes = (await http.get("/conversations/c1/notifications", params={"user_id": "u1"})).json()
        assert [(n["task_name"], n["status"]) for n in notes] == [("Stretch", "succeeded")]
        assert (
            await http.get("/conversations/c1/notifications", params={"user_id": "u1"})
        ).json() == []
        mine = {"user_id": "u1"}
        assert (await http.get("/conversations/other/notifications", params=mine)).json() == []
    assert fake.pending == 0 and fake.unexpected_requests == 0
    await fake.aclose()
