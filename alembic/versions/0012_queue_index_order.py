"""the run queue's index covers its whole order (fire time, then queue time)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04

Workers take queued runs ordered by (fire_time, queued_at). The queue's partial index had
fire_time only, so taking five runs out of a burst of twenty thousand due at one instant
sorted all twenty thousand (an incremental sort over one fire time): each take cost as
much as the queue was long. Indexing the whole order makes a take read just the rows it
takes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUED = sa.text("status = 'queued' AND worker IS NULL")


def _queue_index(columns: list[str]) -> None:
    op.drop_index('ix_task_scheduler_runs_queue', table_name='task_scheduler_runs')
    op.create_index(
        'ix_task_scheduler_runs_queue',
        'task_scheduler_runs',
        columns,
        postgresql_where=QUEUED,
        sqlite_where=QUEUED,
    )


def upgrade() -> None:
    _queue_index(['fire_time', 'queued_at'])


def downgrade() -> None:
    _queue_index(['fire_time'])
