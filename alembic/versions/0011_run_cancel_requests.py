"""a run can be asked to stop (overlap cancel_previous)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04

A fire of a task whose overlap policy is cancel_previous asks the task's run in flight
to stop by stamping it; the worker executing it looks for its stamped runs (a partial
index holds only those, by worker) and cancels them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REQUESTED = sa.text("cancel_requested_at IS NOT NULL")


def upgrade() -> None:
    op.add_column(
        'task_scheduler_runs', sa.Column('cancel_requested_at', sa.DateTime(), nullable=True)
    )
    op.create_index(
        'ix_task_scheduler_runs_cancel',
        'task_scheduler_runs',
        ['worker'],
        postgresql_where=REQUESTED,
        sqlite_where=REQUESTED,
    )


def downgrade() -> None:
    op.drop_index('ix_task_scheduler_runs_cancel', table_name='task_scheduler_runs')
    with op.batch_alter_table('task_scheduler_runs') as batch:
        batch.drop_column('cancel_requested_at')
