"""indexes for keyset pages of a user's tasks and for the run queue

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28

get_tasks pages by (next_run_at, created_at, id) within a user: one composite index serves
every page at any depth. The run queue takes unassigned queued runs by fire time: a
partial index holds just those rows.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUED = sa.text("status = 'queued' AND worker IS NULL")


def upgrade() -> None:
    op.create_index(
        'ix_task_scheduler_tasks_listing',
        'task_scheduler_tasks',
        ['user_id', 'next_run_at', 'created_at', 'id'],
    )
    op.create_index(
        'ix_task_scheduler_runs_queue',
        'task_scheduler_runs',
        ['fire_time'],
        postgresql_where=QUEUED,
        sqlite_where=QUEUED,
    )


def downgrade() -> None:
    op.drop_index('ix_task_scheduler_runs_queue', table_name='task_scheduler_runs')
    op.drop_index('ix_task_scheduler_tasks_listing', table_name='task_scheduler_tasks')
