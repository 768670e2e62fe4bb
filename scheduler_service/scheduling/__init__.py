"""APScheduler, adapted to this service: the scheduler, its executor, job control and the
job store. The only package that touches APScheduler's internals."""

from scheduler_service.scheduling.executor import MAX_LIVE_JOBS, FireTimeExecutor
from scheduler_service.scheduling.job_control import JobControl, retry_job_id, task_of_job
from scheduler_service.scheduling.scheduler import (
    PG_POLL_INTERVAL_S,
    POLL_INTERVAL_S,
    ResilientAsyncIOScheduler,
    build_scheduler,
)

__all__ = [
    "MAX_LIVE_JOBS",
    "PG_POLL_INTERVAL_S",
    "POLL_INTERVAL_S",
    "FireTimeExecutor",
    "JobControl",
    "ResilientAsyncIOScheduler",
    "build_scheduler",
    "retry_job_id",
    "task_of_job",
]
