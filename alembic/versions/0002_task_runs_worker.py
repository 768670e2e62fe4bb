"""task runs .worker: which service instance claimed a run

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _runs_table() -> str:
    # A database created by an early 0001 still has the unprefixed name (0004 renames it).
    names = sa.inspect(op.get_bind()).get_table_names()
    return 'task_runs' if 'task_runs' in names else 'task_scheduler_runs'


def upgrade() -> None:
    # Nullable: rows written before this revision have no worker and count as dead.
    with op.batch_alter_table(_runs_table(), schema=None) as batch_op:
        batch_op.add_column(sa.Column('worker', sa.String(length=300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table(_runs_table(), schema=None) as batch_op:
        batch_op.drop_column('worker')
