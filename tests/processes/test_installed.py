"""The wheel as a user gets it: a fresh virtualenv, a non-editable install, the CLI run as a
subprocess from a host project directory that has its own ``config.py`` and ``tools/``.

Slow (one ``pip install`` per session, shared by every test here), marked ``installed``;
CI runs it like every other test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import venv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.installed

ROOT = Path(__file__).resolve().parents[2]
HOST_TOOL = """
from scheduler_service.tools import Tool


class WeatherTool(Tool):
    name = "weather"
    description = "Weather (host test tool)."
    input_schema = {"type": "object"}

    async def run(self, operation, kwargs, *, context):
        return {"message": f"sunny for {context.user_id}"}
"""


class Host:
    """A host project directory and the venv the scheduler is installed in."""

    def __init__(self, venv_dir: Path, project: Path) -> None:
        self.bin = venv_dir / "bin"
        self.project = project
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))},
            "DATABASE_URL": f"sqlite:///{project / 'host.db'}",
            "TOOLS": '["tools.weather:WeatherTool"]',
            "SCHEDULER__CHECK_INTERVAL": "5",
        }

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.bin / "task-scheduler"), *args],
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check:
            assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    base = tmp_path_factory.mktemp("installed")
    venv_dir = base / "venv"
    venv.EnvBuilder(with_pip=True).create(venv_dir)
    subprocess.run(
        [str(venv_dir / "bin" / "python"), "-m", "pip", "install", "--quiet", str(ROOT)],
        check=True,
        capture_output=True,
        timeout=900,
    )
    project = base / "host-project"
    (project / "tools").mkdir(parents=True)
    # The host's own modules named like the repository's top-level ones.
    (project / "config.py").write_text("HOST_SETTING = 'the host owns this module'\n")
    (project / "tools" / "__init__.py").write_text("HOST_TOOLS = True\n")
    (project / "tools" / "weather.py").write_text(HOST_TOOL)
    yield Host(venv_dir, project)


def test_wheel_ships_only_the_package_and_its_migrations(host: Host) -> None:
    code = (
        "import importlib.util, scheduler_service, pathlib;"
        "print(importlib.util.find_spec('config'), importlib.util.find_spec('tools'));"
        "print((pathlib.Path(scheduler_service.__file__).parent / 'migrations' / 'env.py').is_file())"
    )
    done = subprocess.run(
        [str(host.bin / "python"), "-c", code],
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
        env=host.env,
    )
    assert done.stdout.split() == ["None", "None", "True"]


def test_cli_from_a_host_project(host: Host) -> None:
    assert "at head" in host.cli("db", "upgrade").stdout
    assert host.json("db", "current")["at_head"]

    task = {
        "name": "Weather check",
        "frequency": "daily",
        "scheduled_time": "07:30",
        "tool_name": "weather",
        "operation": "today",
        "parameters": {},
    }
    created = host.json(
        "tool", "create_task", json.dumps(task), "--user", "u1", "--conversation", "c1"
    )
    task_id = created["task"]["task_id"]
    assert [t["task_id"] for t in host.json("tasks")] == [task_id]
    refused = host.cli("run-now", task_id, check=False)  # the CLI is a client
    assert refused.returncode == 1 and "no worker is running" in refused.stderr  # it stays queued

    assert host.cli("health", check=False).returncode == 1  # no leader yet
    server = subprocess.Popen(
        [str(host.bin / "task-scheduler"), "run"],
        cwd=host.project,
        env=host.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while host.cli("health", check=False).returncode != 0:  # another process's state
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "no healthy leader within 60 s"
            time.sleep(0.2)
        assert host.json("health")["leader_alive"]
        assert [w["tools"] for w in host.json("workers")] == [
            ["reminder_tool", "scheduler_tool", "weather"]
        ]
        while [r["status"] for r in host.json("runs", task_id)] != ["succeeded"]:
            assert time.monotonic() < deadline, "the queued run was not run by the worker"
            time.sleep(0.2)  # the worker took the run queued while none was running
        notes = host.json("notifications", "--conversation", "c1")
        assert notes[0]["message"] == "sunny for u1"
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0

    helped = host.cli("mcp", "--help").stdout
    assert "--user" in helped and "--conversation" in helped


def test_postgres_without_its_extra_is_one_clear_line(host: Host) -> None:
    done = host.cli("tasks", "--database-url", "postgres://op:hunter2@127.0.0.1:9/db", check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: PostgreSQL needs the postgres extra: pip install 'task-scheduler[postgres]' "
        "(missing module asyncpg)"
    ]
