"""Statements a reminder run costs on PostgreSQL: ``python -m bench.statements_pg --runs 300``.

One worker process (this one) on a fresh PostgreSQL database runs N one-time reminder
tasks due at one instant; a SQLAlchemy listener counts the statements its engines send
during the burst, by their first words, and ``pg_stat_database`` gives the transactions
the server committed. Printed per run: statements, server transactions and this
process's CPU, then the statements by kind. Round trips are statements plus a ``BEGIN``
and a ``COMMIT`` for each transaction of more than one statement.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, event, text

from bench.burst_pg import reminder_task
from bench.run import pg_database, sync_url
from scheduler_service import SchedulerService
from scheduler_service.config import SchedulerConfig, SchedulerToolConfig, Settings
from scheduler_service.tools import ToolContext


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def count(n: int) -> None:
    with pg_database() as url:
        settings = Settings(
            database_url=url,
            scheduler=SchedulerConfig(log_level="WARNING"),
            scheduler_tool=SchedulerToolConfig(max_tasks_per_user=n + 1),
            anthropic_api_key=None,
        )
        database = url.rsplit("/", 1)[1]
        reader = create_engine(sync_url(url))

        def committed() -> int:
            query = text("SELECT xact_commit FROM pg_stat_database WHERE datname = :d")
            with reader.connect() as conn:
                return int(conn.execute(query, {"d": database}).scalar_one())

        def finished() -> int:
            query = text("SELECT count(*) FROM task_scheduler_runs WHERE finished_at IS NOT NULL")
            with reader.connect() as conn:
                return int(conn.execute(query).scalar_one())

        statements: Counter[str] = Counter()

        def on_statement(_c: Any, _cur: Any, statement: str, *_rest: Any) -> None:
            statements[" ".join(statement.split()[:3])[:60]] += 1

        async with SchedulerService(settings) as service:
            due = (datetime.now(UTC) + timedelta(seconds=4 + n / 40)).replace(microsecond=0)
            context = ToolContext(user_id="u", conversation_id="c")
            for i in range(n):
                await service.scheduler_tool.run(
                    "create_task", reminder_task(i, due), context=context
                )
            await asyncio.sleep((due - datetime.now(UTC)).total_seconds() - 0.2)
            for engine in (service.db.engine.sync_engine, service.db.sync_engine):
                event.listen(engine, "before_cursor_execute", on_statement)
            commits0, cpu0 = committed(), cpu_s()
            while finished() < n:  # noqa: ASYNC110 (rows the service writes)
                await asyncio.sleep(0.2)
            commits, cpu = committed() - commits0, cpu_s() - cpu0
        reader.dispose()
    total = sum(statements.values())
    print(
        f"{n} runs: {total / n:.2f} statements, {commits / n:.2f} server transactions, "
        f"{cpu / n * 1000:.2f} ms CPU of this process, per run"
    )
    for kind, number in statements.most_common(12):
        print(f"  {number / n:6.2f}  {kind}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    asyncio.run(count(parser.parse_args().runs))


if __name__ == "__main__":
    main()
