"""The scheduler's table names, all prefixed ``task_scheduler_`` so they cannot collide.

The service often shares a database with its host, whose tables may well be called
``reminders`` or whose own alembic history lives in ``alembic_version``. Every table,
index and the migration version table therefore carry the prefix. Databases written by
earlier versions used unprefixed names; migration 0004 renames them, and
``storage.db.adopt_legacy_version`` moves their revision out of ``alembic_version``.
"""

from __future__ import annotations

PREFIX = "task_scheduler_"
TASKS = "task_scheduler_tasks"
RUNS = "task_scheduler_runs"
NOTIFICATIONS = "task_scheduler_notifications"
REMINDERS = "task_scheduler_reminders"
JOBS = "task_scheduler_jobs"  # APScheduler's SQLAlchemyJobStore table
HEARTBEAT = "task_scheduler_heartbeat"
WORKERS = "task_scheduler_workers"
MODEL_GATE = "task_scheduler_model_gate"
MODEL_LEASES = "task_scheduler_model_leases"
BUDGET_NOTICES = "task_scheduler_budget_notices"
VERSION_TABLE = "task_scheduler_alembic_version"

LEGACY_VERSION_TABLE = "alembic_version"
LEGACY_TABLES = {
    "scheduled_tasks": TASKS,
    "task_runs": RUNS,
    "task_notifications": NOTIFICATIONS,
    "reminders": REMINDERS,
    "apscheduler_jobs": JOBS,
}
