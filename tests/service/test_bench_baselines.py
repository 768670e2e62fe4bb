"""The benchmark's bare-APScheduler baselines do what docs/performance.md says they do: every
job of a burst runs once and, for the row jobs, its row is committed, on SQLite and
PostgreSQL. A baseline that dropped or skipped its writes would flatter it."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from bench import bare
from bench.run import bare_burst, sync_url

RUNS = 30


async def test_the_asyncio_baseline_has_no_grace_limit(tmp_path):
    engine = bare.sync_engine(f"sqlite:///{tmp_path / 'b.db'}")
    scheduler = bare.asyncio_scheduler(engine)
    scheduler.start(paused=True)
    try:
        when = datetime.now(UTC) + timedelta(days=1)
        job = scheduler.add_job(bare.async_noop_job, "date", run_date=when, args=[0, 0.0])
        assert job.misfire_grace_time is None
    finally:
        scheduler.shutdown(wait=False)
        engine.dispose()


@pytest.mark.parametrize("kind", ["async_row", "async_engine_row", "row"])
async def test_a_baseline_burst_commits_one_row_per_job(database_url, kind):
    url = sync_url(database_url)
    result = await bare_burst(url, RUNS, 5, kind, timeout=30)

    assert "error" not in result
    assert 0 <= result["first_start_s"] <= result["started_s"] <= result["recorded_s"]
    assert result["cpu_ms_per_run"] > 0 and not math.isnan(result["recorded_s"])
    engine = bare.sync_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(func.count(), func.count(bare.BENCH_RUNS.c.job.distinct()))
            ).one()
            fire_times = conn.execute(select(bare.BENCH_RUNS.c.fire_time).distinct()).all()
    finally:
        engine.dispose()
    # every job's row, each once, committed (a coroutine job that a thread pool called
    # instead of awaiting would write nothing)
    assert tuple(rows) == (RUNS, RUNS)
    assert len(fire_times) == 1  # all due at the one instant


async def test_the_asyncio_baseline_runs_a_no_op_burst(tmp_path):
    result = await bare_burst(f"sqlite:///{tmp_path / 'n.db'}", RUNS, 5, "async_noop", 30)

    assert "error" not in result
    assert len(bare.results()) == RUNS
