"""the model gate: its shared state and the leases of model calls in flight

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04

On PostgreSQL every process books its model calls through one row (when the API may be
called next, how fast) and counts the calls in flight by their leases, which expire
when a process dies without releasing them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    gate = op.create_table(
        'task_scheduler_model_gate',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('closed_until', sa.Float(), nullable=False),
        sa.Column('next_start', sa.Float(), nullable=False),
        sa.Column('rate', sa.Float(), nullable=True),
        sa.Column('rate_since', sa.Float(), nullable=False),
        sa.Column('recent', sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.bulk_insert(
        gate,
        [
            {
                'id': 1,
                'closed_until': 0.0,
                'next_start': 0.0,
                'rate': None,
                'rate_since': 0.0,
                'recent': [],
            }
        ],
    )
    op.create_table(
        'task_scheduler_model_leases',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('holder', sa.String(length=300), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index(
        'ix_task_scheduler_model_leases_expires_at',
        'task_scheduler_model_leases',
        ['expires_at'],
    )


def downgrade() -> None:
    op.drop_index(
        'ix_task_scheduler_model_leases_expires_at', table_name='task_scheduler_model_leases'
    )
    op.drop_table('task_scheduler_model_leases')
    op.drop_table('task_scheduler_model_gate')
