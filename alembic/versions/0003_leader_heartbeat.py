"""task_scheduler_heartbeat: when the scheduling leader last woke up

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # One row (id 1), updated by whichever process leads; `task-scheduler health` reads it.
    table = op.create_table(
        'task_scheduler_heartbeat',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('worker', sa.String(length=300), nullable=True),
        sa.Column('beat_at', sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.bulk_insert(table, [{'id': 1, 'worker': None, 'beat_at': None}])


def downgrade() -> None:
    op.drop_table('task_scheduler_heartbeat')
