"""Worker processes for the multi-process tests, driven on stdin, observed on stdout.

A worker module (``tests.multiprocess_worker``, ``tests.replica_worker``) reads JSON
commands on stdin and prints one JSON event per line; ``Worker`` keeps the events and
lets a test await the one it needs (an event, never a sleep).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
Event = dict[str, Any]


class Worker:
    """A worker process and the events it has printed so far."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[Event] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def spawn(cls, module: str, *args: str, env: Mapping[str, str]) -> Worker:
        """Start ``python -m module args`` with the test environment ``env`` (and no
        ANTHROPIC*/SCHEDULER* variables of the caller's)."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC", "SCHED"))}
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", module, *args),
            cwd=ROOT,
            env={**clean, **env},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            async with self._changed:
                self.events.append(json.loads(line))
                self._changed.notify_all()
        async with self._changed:
            self.events.append({"event": "exited"})
            self._changed.notify_all()

    async def wait(self, match: Callable[[list[Event]], Any], timeout: float = 10) -> Any:
        """Await ``match(events)`` becoming truthy (re-checked on each new event)."""
        async with asyncio.timeout(timeout), self._changed:
            while not (found := match(self.events)):
                if self.events and self.events[-1]["event"] == "exited":
                    raise AssertionError(f"worker exited early: {self.events[:-1]}")
                await self._changed.wait()
            return found

    async def event(self, name: str, nth: int = 0, timeout: float = 10) -> Event:
        """The ``nth`` (from 0) event called ``name``, once printed."""

        def find(events: list[Event]) -> Event | None:
            named = [e for e in events if e["event"] == name]
            return named[nth] if len(named) > nth else None

        found: Event = await self.wait(find, timeout)
        return found

    def named(self, name: str) -> list[Event]:
        return [e for e in self.events if e["event"] == name]

    async def send(self, cmd: str, **args: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        await self.proc.stdin.drain()

    async def kill(self) -> None:
        """SIGKILL: no clean-up of any kind runs in the worker."""
        if self.alive:
            self.proc.kill()
        await self.proc.wait()
        await self._reader

    async def stop(self) -> None:
        if self.alive:
            with contextlib.suppress(Exception):
                await self.send("stop")
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        await self._reader
