"""Orchestrated runs due at once against a rate-limited API: how many requests are refused?

A fake Messages API behind the real ``anthropic`` client (the default client: its own
``max_retries=2``) admits at most ``--rate`` requests in any one-second window and answers
the rest 429 with ``retry-after: 1``, as a provider's request limit does. ``--runs``
orchestrated one-time tasks (one model call each) fall due at the same instant on a fresh
SQLite file with 20 slots (``max_concurrent_tasks``); with ``--gate N`` (the default: 20)
the model gate is set to N (``scheduler.model_concurrency``), with ``--gate 0`` it is off.

It prints the requests sent, the share refused, whether every run succeeded, and the time
from the fire time to the last run's notification against ``runs / rate``, the least the
rate allows.

    .venv/bin/python -m bench.model_gate --runs 400 --rate 10
    .venv/bin/python -m bench.model_gate --runs 200 --rate 20 --gate 0
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import httpx2

from scheduler_service import SchedulerService
from scheduler_service.config import SchedulerConfig, SchedulerToolConfig, Settings
from scheduler_service.testing import text_message
from scheduler_service.tools import ToolContext

SLOTS = 20


class RateLimitedApi:
    """A Messages API admitting ``rate`` requests in any one-second window; 429 beyond.

    Each admitted request is answered with a final text after ``latency`` seconds.
    """

    def __init__(self, rate: int, latency: float) -> None:
        self.rate = rate
        self.latency = latency
        self.admitted: collections.deque[float] = collections.deque()
        self.sent = 0
        self.refused = 0
        self.first = self.last = 0.0  # wall-clock instants of the first and last request

    async def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.sent += 1
        now = time.monotonic()
        self.last = time.time()
        self.first = self.first or self.last
        while self.admitted and self.admitted[0] <= now - 1.0:
            self.admitted.popleft()
        if len(self.admitted) >= self.rate:
            self.refused += 1
            return httpx2.Response(
                429,
                headers={"retry-after": "1"},
                json={
                    "type": "error",
                    "error": {"type": "rate_limit_error", "message": "rate limit exceeded"},
                },
            )
        self.admitted.append(now)
        if self.latency:
            await asyncio.sleep(self.latency)
        return httpx2.Response(200, json=text_message("Done."))

    def client(self) -> anthropic.AsyncAnthropic:
        transport = httpx2.MockTransport(self.handle)
        return anthropic.AsyncAnthropic(
            api_key="bench", http_client=httpx2.AsyncClient(transport=transport)
        )


def settings(url: str, gate: int) -> Settings:
    options: dict[str, Any] = {"max_concurrent_tasks": SLOTS, "log_level": "ERROR"}
    if gate and "model_concurrency" in SchedulerConfig.model_fields:
        options["model_concurrency"] = gate
    return Settings(
        database_url=url,
        scheduler=SchedulerConfig(**options),
        scheduler_tool=SchedulerToolConfig(max_tasks_per_user=1_000_000),
        anthropic_api_key=None,
        tools=[],
    )


async def measure(runs: int, rate: int, gate: int, latency: float) -> dict[str, Any]:
    api = RateLimitedApi(rate, latency)
    finished: list[dict[str, Any]] = []
    all_done = asyncio.Event()

    async def on_notification(notification: dict[str, Any]) -> None:
        finished.append(notification)
        if len(finished) >= runs:
            all_done.set()

    with tempfile.TemporaryDirectory() as tmp:
        config = settings(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}", gate)
        service = SchedulerService(
            config, anthropic_client=api.client(), on_notification=on_notification
        )
        async with service:
            ctx = ToolContext(user_id="bench", conversation_id="bench")
            due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5 + runs // 25)
            for i in range(runs):
                await service.scheduler_tool.run(
                    "create_task",
                    {
                        "name": f"r{i}",
                        "frequency": "once",
                        "scheduled_time": due.isoformat(),
                        "execution_mode": "orchestrated",
                        "task_description": "Say done.",
                    },
                    context=ctx,
                )
            await asyncio.wait_for(all_done.wait(), timeout=600)
            elapsed = (datetime.now(UTC) - due).total_seconds()
    succeeded = sum(1 for n in finished if n.get("status") == "succeeded")
    return {
        "runs": runs,
        "rate": rate,
        "gate": gate if "model_concurrency" in SchedulerConfig.model_fields else 0,
        "latency_s": latency,
        "requests_sent": api.sent,
        "refused": api.refused,
        "refused_pct": round(100.0 * api.refused / max(api.sent, 1), 1),
        "all_succeeded": succeeded == runs,
        "succeeded": succeeded,
        "total_s": round(elapsed, 1),
        "first_request_s": round(api.first - due.timestamp(), 1),
        "last_request_s": round(api.last - due.timestamp(), 1),
        "ideal_s": round(runs / rate, 1),
        "x_ideal": round(elapsed / (runs / rate), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--rate", type=int, default=10, help="requests/s the fake API admits")
    parser.add_argument("--gate", type=int, default=SLOTS, help="model_concurrency; 0: off")
    parser.add_argument("--latency", type=float, default=0.0, help="s per admitted request")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.runs, args.rate, args.gate, args.latency))))


if __name__ == "__main__":
    main()
