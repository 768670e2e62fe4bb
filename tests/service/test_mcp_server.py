"""`task-scheduler mcp` as a subprocess, driven by the official MCP client over stdio."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from scheduler_service.threaded import ThreadedScheduler
from tests.conftest import make_settings
from tests.design_examples import INVENTORY


def _payload(result: CallToolResult) -> Any:
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result.content[0].text)  # type: ignore[union-attr]


@pytest.mark.parametrize("worker", [False, True], ids=["client", "worker"])
async def test_mcp_server_schedules_runs_and_reports(tmp_path: Path, worker: bool) -> None:
    """A client by default (a worker in this process runs the task); with --worker, the
    MCP server runs it itself."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'mcp.db'}"
    with contextlib.ExitStack() as stack:
        if not worker:
            stack.enter_context(ThreadedScheduler(make_settings(url), role="worker"))
        await _schedule_run_and_report(tmp_path, url, ["--worker"] if worker else [])


async def _schedule_run_and_report(tmp_path: Path, url: str, extra: list[str]) -> None:
    server = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "scheduler_service",
            "mcp",
            "--user",
            "u1",
            "--conversation",
            "c1",
            "--database-url",
            url,
            *extra,
        ],
        env={"PYTHONPATH": os.pathsep.join(sys.path)},
        cwd=tmp_path,
    )
    async with Client(server, read_timeout_seconds=60) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"scheduler_tool", "get_notifications"}
        assert "preview_schedule" in (tools["scheduler_tool"].description or "")

        created = _payload(
            await client.call_tool(
                "scheduler_tool", {"operation": "create_task", "kwargs": INVENTORY}
            )
        )
        task_id = created["task"]["task_id"]
        assert created["task"]["next_run_time"]

        ran = _payload(
            await client.call_tool(
                "scheduler_tool", {"operation": "execute_task_now", "kwargs": {"task_id": task_id}}
            )
        )
        assert ran["run"]["status"] == "succeeded"

        notes = _payload(await client.call_tool("get_notifications", {}))
        assert [n["task_id"] for n in notes["notifications"]] == [task_id]
        assert notes["notifications"][0]["conversation_id"] == "c1"
        again = _payload(await client.call_tool("get_notifications", {}))
        assert again["count"] == 0  # marked displayed by the first call

        bad = await client.call_tool(
            "scheduler_tool", {"operation": "create_task", "kwargs": {"name": "x"}}
        )
        assert bad.is_error
        text = bad.content[0].text  # type: ignore[union-attr]
        assert "invalid_input: frequency" in text


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        (["--user", "", "--conversation", "c1"], "--user: must not be empty"),
        (["--user", "u1", "--conversation", "c" * 201], "--conversation: 201 characters"),
    ],
)
def test_mcp_refuses_an_empty_or_oversized_identity(
    tmp_path: Path, who: list[str], expected: str
) -> None:
    """The acting user is fixed by the command line: an empty one would act for nobody
    (or for every stored row with an empty user). Refused before anything starts."""
    done = subprocess.run(
        [sys.executable, "-m", "scheduler_service", "mcp", *who,
         "--database-url", f"sqlite:///{tmp_path / 'mcp.db'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and expected in done.stderr, done.stderr
    assert not (tmp_path / "mcp.db").exists()
