"""prefix every table with task_scheduler_ so it cannot collide with the host's

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10

Databases created before this revision have unprefixed tables (``scheduled_tasks``,
``reminders``, ...). Rename them, with their indexes and (on PostgreSQL, where index and
constraint names share the schema's namespace) their primary keys and unique constraint.
A database created fresh already has the new names, and nothing happens.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = {
    'scheduled_tasks': 'task_scheduler_tasks',
    'task_runs': 'task_scheduler_runs',
    'task_notifications': 'task_scheduler_notifications',
    'reminders': 'task_scheduler_reminders',
    'apscheduler_jobs': 'task_scheduler_jobs',
}
# (old index, new index, table after renaming, columns)
INDEXES = [
    ('ix_apscheduler_jobs_next_run_time', 'ix_task_scheduler_jobs_next_run_time', 'task_scheduler_jobs', ['next_run_time']),
    ('ix_reminders_user_id', 'ix_task_scheduler_reminders_user_id', 'task_scheduler_reminders', ['user_id']),
    ('ix_scheduled_tasks_next_run_at', 'ix_task_scheduler_tasks_next_run_at', 'task_scheduler_tasks', ['next_run_at']),
    ('ix_scheduled_tasks_status', 'ix_task_scheduler_tasks_status', 'task_scheduler_tasks', ['status']),
    ('ix_scheduled_tasks_user_id', 'ix_task_scheduler_tasks_user_id', 'task_scheduler_tasks', ['user_id']),
    ('ix_task_notifications_pending', 'ix_task_scheduler_notifications_pending', 'task_scheduler_notifications', ['conversation_id', 'displayed_at']),
    ('ix_task_notifications_task_id', 'ix_task_scheduler_notifications_task_id', 'task_scheduler_notifications', ['task_id']),
    ('ix_task_runs_status', 'ix_task_scheduler_runs_status', 'task_scheduler_runs', ['status']),
    ('ix_task_runs_task_id', 'ix_task_scheduler_runs_task_id', 'task_scheduler_runs', ['task_id']),
]


def upgrade() -> None:
    bind = op.get_bind()
    postgres = bind.dialect.name == 'postgresql'
    tables = set(sa.inspect(bind).get_table_names())
    renamed = [(old, new) for old, new in TABLES.items() if old in tables and new not in tables]
    for old, new in renamed:
        op.rename_table(old, new)
    if not renamed:
        return
    inspector = sa.inspect(bind)
    for old_ix, new_ix, table, columns in INDEXES:
        if old_ix not in {ix['name'] for ix in inspector.get_indexes(table)}:
            continue
        if postgres:
            op.execute(f'ALTER INDEX {old_ix} RENAME TO {new_ix}')
        else:  # SQLite cannot rename an index; its names are database-wide too
            op.drop_index(old_ix, table_name=table)
            op.create_index(new_ix, table, columns)
    if postgres:
        for old, new in renamed:
            pk = inspector.get_pk_constraint(new).get('name')
            if pk == f'{old}_pkey':
                op.execute(f'ALTER TABLE {new} RENAME CONSTRAINT {pk} TO {new}_pkey')
        uniques = {u['name'] for u in inspector.get_unique_constraints('task_scheduler_runs')}
        if 'uq_task_runs_fire' in uniques:
            op.execute(
                'ALTER TABLE task_scheduler_runs RENAME CONSTRAINT uq_task_runs_fire '
                'TO uq_task_scheduler_runs_fire'
            )


def downgrade() -> None:
    # Fresh databases had the prefixed names from 0001 on: nothing to undo for them.
    pass
