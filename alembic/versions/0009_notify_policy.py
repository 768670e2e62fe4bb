"""tasks: notification policy, when the user was last notified, pause note

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04

A task may notify only on changes, when the model says so, or on failures; it records
when it last notified, a hash of its last successful result (to tell a change), when
its current failure streak was last reported (to space out failure alerts), and an
optional note saying why it was paused. All nullable: existing tasks notify as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ('notify_policy', sa.String(length=20)),
    ('last_notified_at', sa.DateTime()),
    ('result_fingerprint', sa.String(length=64)),
    ('failure_alert_at', sa.DateTime()),
    ('pause_note', sa.Text()),
)


def upgrade() -> None:
    with op.batch_alter_table('task_scheduler_tasks', schema=None) as batch_op:
        for name, kind in COLUMNS:
            batch_op.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('task_scheduler_tasks', schema=None) as batch_op:
        for name, _kind in reversed(COLUMNS):
            batch_op.drop_column(name)
