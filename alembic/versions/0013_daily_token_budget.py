"""the daily token budget: a user's runs with usage by time, and the once-a-day notice

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04

An orchestrated run, when a daily token budget per user is configured, sums the tokens
the user's runs recorded since local midnight: a partial index holds just the runs that
have usage, by user and finish time. The notice that the budget is spent is told once a
day per user; its row, keyed by user, is claimed by an upsert where the skip is recorded.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0013'
down_revision: str | None = '0012'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WITH_USAGE = sa.text("usage IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        'ix_task_scheduler_runs_usage',
        'task_scheduler_runs',
        ['user_id', 'finished_at'],
        postgresql_where=WITH_USAGE,
        sqlite_where=WITH_USAGE,
    )
    op.create_table(
        'task_scheduler_budget_notices',
        sa.Column('user_id', sa.String(length=200), nullable=False),
        sa.Column('quiet_until', sa.DateTime(), nullable=False),
        sa.Column('run_id', sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint('user_id'),
    )


def downgrade() -> None:
    op.drop_table('task_scheduler_budget_notices')
    op.drop_index('ix_task_scheduler_runs_usage', table_name='task_scheduler_runs')
