"""The job store's wake-up transaction: per-job writes are grouped, and still atomic.

A real ``OneTransactionJobStore`` on the test's database (a SQLite file, then
PostgreSQL), attached to a scheduler that is never started (nothing fires; the test plays
the wake-up): what one ``one_transaction`` block writes is what the per-job statements
would have written, in a handful of statements, and nothing of it if the block fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import event

from scheduler_service.scheduling import jobstore
from scheduler_service.scheduling.jobstore import DELETE_CHUNK, OneTransactionJobStore
from scheduler_service.storage.db import create_sync_engine, sync_url

JOBS = 2 * DELETE_CHUNK + 7  # more than two DELETE chunks


def noop() -> None:
    """The stored jobs' function (never called: the scheduler stays paused)."""


@pytest.fixture
def store(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[OneTransactionJobStore]:
    """The store on the test's database (SQLite file or PostgreSQL)."""
    monkeypatch.setattr(jobstore, "DUE_JOBS_PER_WAKEUP", JOBS + 1)  # all due in one wake-up
    engine = create_sync_engine(sync_url(database_url))
    store = OneTransactionJobStore(engine=engine, tablename="jobs")
    store.start(BackgroundScheduler(timezone=UTC), "default")
    try:
        yield store
    finally:
        engine.dispose()


def add_job(store: OneTransactionJobStore, job_id: str, trigger: Any, due: datetime) -> None:
    options = {"misfire_grace_time": None, "coalesce": False, "max_instances": 1}
    job = Job(
        store._scheduler,
        id=job_id,
        func=noop,
        trigger=trigger,
        executor="default",
        args=[],
        kwargs={},
        name=job_id,
        next_run_time=due,
        **options,
    )
    store.add_job(job)


def add_jobs(store: OneTransactionJobStore, due: datetime) -> None:
    for i in range(JOBS):
        add_job(store, f"once-{i:04d}", DateTrigger(due, timezone=UTC), due)
    add_job(store, "hourly", IntervalTrigger(hours=1, timezone=UTC), due)


def statements(store: OneTransactionJobStore) -> list[str]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement.split(" ", 1)[0])

    event.listen(store._engine, "before_cursor_execute", record)
    return seen


def test_a_wakeup_writes_its_removals_and_updates_together(
    store: OneTransactionJobStore,
) -> None:
    due = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    add_jobs(store, due)
    seen = statements(store)
    later = due + timedelta(hours=1)
    with store.one_transaction():
        jobs = store.get_due_jobs(datetime.now(UTC))
        for job in jobs:
            if job.id == "hourly":
                job._modify(next_run_time=later)
                store.update_job(job)
            else:
                store.remove_job(job.id)
        assert store.get_next_run_time() == later  # a read in the block sees the writes
    assert len(jobs) == JOBS + 1
    assert seen.count("DELETE") == 3 and seen.count("UPDATE") == 1
    assert [job.id for job in store.get_all_jobs()] == ["hourly"]
    assert store.lookup_job("hourly").next_run_time == later


def test_a_failed_wakeup_writes_nothing(store: OneTransactionJobStore) -> None:
    due = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    add_jobs(store, due)
    with pytest.raises(RuntimeError), store.one_transaction():
        for job in store.get_due_jobs(datetime.now(UTC)):
            store.remove_job(job.id)
        store.get_next_run_time()  # the removals are sent here, then rolled back
        raise RuntimeError("the wake-up failed")
    assert len(store.get_due_jobs(datetime.now(UTC))) == JOBS + 1


def test_outside_a_wakeup_a_missing_job_is_still_reported(
    store: OneTransactionJobStore,
) -> None:
    with pytest.raises(JobLookupError):
        store.remove_job("no-such-job")


def test_a_wakeup_takes_at_most_its_share_of_due_jobs_earliest_first(
    store: OneTransactionJobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten thousand due jobs are not unpickled at once: each wake-up takes the earliest
    ``DUE_JOBS_PER_WAKEUP``, and the store's next run time (already past) brings the
    next wake-up at once for the rest."""
    monkeypatch.setattr(jobstore, "DUE_JOBS_PER_WAKEUP", 5)
    now = datetime.now(UTC).replace(microsecond=0)
    for i in range(12):  # job-11 is the most overdue
        add_job(store, f"job-{i:02d}", DateTrigger(now, timezone=UTC), now - timedelta(seconds=i))
    add_job(store, "later", DateTrigger(now, timezone=UTC), now + timedelta(hours=1))
    taken: list[list[str]] = []
    while due := store.get_due_jobs(now):
        taken.append([job.id for job in due])
        with store.one_transaction():
            for job in due:
                store.remove_job(job.id)
            assert store.get_next_run_time() is not None
    expected = [f"job-{i:02d}" for i in reversed(range(12))]
    assert taken == [expected[:5], expected[5:10], expected[10:]]
    assert [job.id for job in store.get_all_jobs()] == ["later"]
