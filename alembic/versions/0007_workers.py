"""task_scheduler_workers: the live processes, their role and the tools they run

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

Each worker writes its row at start, beats it while it runs and deletes it at a clean
stop; a run goes only to a worker that has its tool, and `task-scheduler workers` and
`health` read the deployment from here.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'task_scheduler_workers',
        sa.Column('id', sa.String(length=300), nullable=False),
        sa.Column('role', sa.String(length=10), nullable=False),
        sa.Column('host', sa.String(length=255), nullable=False),
        sa.Column('pid', sa.Integer(), nullable=False),
        sa.Column('tools', sa.JSON(), nullable=False),
        sa.Column('leader', sa.Boolean(), nullable=False),
        sa.Column('runs_in_flight', sa.Integer(), nullable=False),
        sa.Column('started_at', sa.DateTime(), nullable=False),
        sa.Column('beat_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )


def downgrade() -> None:
    op.drop_table('task_scheduler_workers')
