"""ThreadedScheduler: the service for synchronous hosts, from 8 threads and a WSGI app."""

from __future__ import annotations

import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from scheduler_service.threaded import ThreadedScheduler
from scheduler_service.tools import Tool, ToolContext, ToolError
from tests.conftest import make_settings
from tests.design_examples import INVENTORY

THREADS = 8


class BlockingTool(Tool):
    """A plain-``def`` host tool (as in a Flask app): runs in a worker thread."""

    name = "blocking_tool"
    description = "Counts calls (tests only)."
    input_schema = {"type": "object"}

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def run(  # type: ignore[override]
        self, operation: str, kwargs: Any, *, context: ToolContext
    ) -> dict[str, Any]:
        with self.lock:
            self.calls += 1
        return {"message": f"{operation} for {context.user_id}"}


def test_eight_threads_create_run_and_read_notifications(db_path: Path) -> None:
    tool = BlockingTool()
    with ThreadedScheduler(make_settings(db_path), tools=[tool]) as scheduler:
        assert scheduler.is_leader

        def user_session(n: int) -> tuple[str, int]:
            ctx = ToolContext(user_id=f"u{n}", conversation_id=f"c{n}")
            created = scheduler.call_tool(
                "create_task",
                {**INVENTORY, "tool_name": "blocking_tool", "operation": "ping", "parameters": {}},
                context=ctx,
            )
            task_id = created["task"]["task_id"]
            ran = scheduler.call_tool("execute_task_now", {"task_id": task_id}, context=ctx)
            assert ran["run"]["status"] == "succeeded"
            pending = scheduler.get_notifications(f"c{n}", user_id=f"u{n}")
            marked = scheduler.mark_notifications_displayed(
                [p["id"] for p in pending], user_id=f"u{n}"
            )
            listed = scheduler.call_tool("get_tasks", {}, context=ctx)
            assert [t["task_id"] for t in listed["tasks"]] == [task_id]
            return task_id, marked

        with ThreadPoolExecutor(THREADS) as pool:
            results = list(pool.map(user_session, range(THREADS)))
        assert len({task_id for task_id, _ in results}) == THREADS
        assert [marked for _, marked in results] == [1] * THREADS
        assert tool.calls == THREADS
        with pytest.raises(ToolError) as info:
            scheduler.call_tool("get_task", {"task_id": "nope"}, context=ToolContext("u0"))
        assert info.value.code == "not_found"
    assert not scheduler.running
    with pytest.raises(RuntimeError, match="not started"):
        scheduler.get_notifications("c0")


def make_wsgi_app(scheduler: ThreadedScheduler) -> Any:
    """The smallest WSGI host: POST /tool {operation, kwargs}; GET /notifications."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        user = environ.get("HTTP_X_USER", "anon")
        ctx = ToolContext(user_id=user, conversation_id=f"conv-{user}")
        try:
            if environ["REQUEST_METHOD"] == "POST":
                size = int(environ.get("CONTENT_LENGTH") or 0)
                body = json.loads(environ["wsgi.input"].read(size))
                result: Any = scheduler.call_tool(
                    body["operation"], body.get("kwargs"), context=ctx
                )
            else:
                result = scheduler.get_notifications(f"conv-{user}", user_id=user)
            status = "200 OK"
        except ToolError as exc:
            result, status = exc.to_dict(), "400 Bad Request"
        start_response(status, [("Content-Type", "application/json")])
        return [json.dumps(result).encode()]

    return app


def call_wsgi(app: Any, method: str, user: str, body: dict[str, Any] | None = None) -> Any:
    raw = json.dumps(body or {}).encode()
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "HTTP_X_USER": user,
        "CONTENT_LENGTH": str(len(raw)),
        "wsgi.input": io.BytesIO(raw),
    }
    setup_testing_defaults(environ)
    statuses: list[str] = []
    chunks = app(environ, lambda status, headers: statuses.append(status))
    return statuses[0], json.loads(b"".join(chunks))


def test_wsgi_app_from_threads(db_path: Path) -> None:
    scheduler = ThreadedScheduler(make_settings(db_path))
    scheduler.start()
    try:
        app = make_wsgi_app(scheduler)

        def request(n: int) -> str:
            status, created = call_wsgi(
                app, "POST", f"w{n}", {"operation": "create_task", "kwargs": INVENTORY}
            )
            assert status == "200 OK", created
            task_id = created["task"]["task_id"]
            run_now = {"operation": "execute_task_now", "kwargs": {"task_id": task_id}}
            call_wsgi(app, "POST", f"w{n}", run_now)
            status, notes = call_wsgi(app, "GET", f"w{n}")
            assert [x["task_id"] for x in notes] == [task_id]
            return status

        with ThreadPoolExecutor(THREADS) as pool:
            assert list(pool.map(request, range(THREADS))) == ["200 OK"] * THREADS
        status, error = call_wsgi(app, "POST", "w0", {"operation": "create_task", "kwargs": {}})
        assert status == "400 Bad Request" and error["error"]["code"] == "invalid_input"
    finally:
        scheduler.stop()
    scheduler.stop()  # idempotent
