"""an index of manual runs by user, for the per-user manual-run rate

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

execute_task_now counts the user's manual runs of the last minute in its claim
transaction: a partial index holds just the manual runs, by user and time.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MANUAL = sa.text("kind = 'manual'")


def upgrade() -> None:
    op.create_index(
        'ix_task_scheduler_runs_manual',
        'task_scheduler_runs',
        ['user_id', 'queued_at'],
        postgresql_where=MANUAL,
        sqlite_where=MANUAL,
    )


def downgrade() -> None:
    op.drop_index('ix_task_scheduler_runs_manual', table_name='task_scheduler_runs')
