"""initial schema

The tables carry the ``task_scheduler_`` prefix (0004 renames the unprefixed tables that
earlier versions of this revision created).

Revision ID: 0001
Revises: 
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # APScheduler's job store table, exactly as SQLAlchemyJobStore defines it (with
    # tablename='task_scheduler_jobs'). Created here
    # so that two processes starting together never race to create it.
    op.create_table('task_scheduler_jobs',
    sa.Column('id', sa.Unicode(length=191), nullable=False),
    sa.Column('next_run_time', sa.Float(precision=25), nullable=True),
    sa.Column('job_state', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_task_scheduler_jobs_next_run_time', 'task_scheduler_jobs', ['next_run_time'])
    op.create_table('task_scheduler_reminders',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('user_id', sa.String(length=200), nullable=False),
    sa.Column('conversation_id', sa.String(length=200), nullable=True),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('due_date', sa.String(length=10), nullable=False),
    sa.Column('due_at', sa.DateTime(), nullable=True),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('completed_at', sa.DateTime(), nullable=True),
    sa.Column('source_task_id', sa.String(length=40), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('task_scheduler_reminders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_task_scheduler_reminders_user_id'), ['user_id'], unique=False)

    op.create_table('task_scheduler_tasks',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('user_id', sa.String(length=200), nullable=False),
    sa.Column('conversation_id', sa.String(length=200), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('frequency', sa.String(length=20), nullable=False),
    sa.Column('scheduled_time', sa.String(length=40), nullable=True),
    sa.Column('day_of_week', sa.JSON(), nullable=True),
    sa.Column('day_of_month', sa.Integer(), nullable=True),
    sa.Column('custom_schedule', sa.String(length=200), nullable=True),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('schedule', sa.JSON(), nullable=False),
    sa.Column('start_at', sa.DateTime(), nullable=False),
    sa.Column('end_time', sa.DateTime(), nullable=True),
    sa.Column('max_runs', sa.Integer(), nullable=True),
    sa.Column('execution_mode', sa.String(length=20), nullable=False),
    sa.Column('tool_name', sa.String(length=100), nullable=True),
    sa.Column('operation', sa.String(length=100), nullable=True),
    sa.Column('parameters', sa.JSON(), nullable=True),
    sa.Column('task_description', sa.Text(), nullable=True),
    sa.Column('task_prompt', sa.Text(), nullable=True),
    sa.Column('available_tools', sa.JSON(), nullable=True),
    sa.Column('timeout', sa.Integer(), nullable=True),
    sa.Column('max_retries', sa.Integer(), nullable=True),
    sa.Column('misfire_grace_time', sa.Integer(), nullable=True),
    sa.Column('options', sa.JSON(), nullable=True),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('run_count', sa.Integer(), nullable=False),
    sa.Column('success_count', sa.Integer(), nullable=False),
    sa.Column('failure_count', sa.Integer(), nullable=False),
    sa.Column('consecutive_failures', sa.Integer(), nullable=False),
    sa.Column('last_run_at', sa.DateTime(), nullable=True),
    sa.Column('last_status', sa.String(length=20), nullable=True),
    sa.Column('last_result', sa.JSON(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('next_run_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('task_scheduler_tasks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_task_scheduler_tasks_next_run_at'), ['next_run_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_task_scheduler_tasks_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_task_scheduler_tasks_user_id'), ['user_id'], unique=False)

    op.create_table('task_scheduler_notifications',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('task_id', sa.String(length=40), nullable=False),
    sa.Column('run_id', sa.String(length=40), nullable=True),
    sa.Column('user_id', sa.String(length=200), nullable=False),
    sa.Column('conversation_id', sa.String(length=200), nullable=True),
    sa.Column('task_name', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('displayed_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('task_scheduler_notifications', schema=None) as batch_op:
        batch_op.create_index('ix_task_scheduler_notifications_pending', ['conversation_id', 'displayed_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_task_scheduler_notifications_task_id'), ['task_id'], unique=False)

    op.create_table('task_scheduler_runs',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('task_id', sa.String(length=40), nullable=False),
    sa.Column('user_id', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('fire_time', sa.DateTime(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('queued_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('duration_ms', sa.Integer(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('error_kind', sa.String(length=40), nullable=True),
    sa.Column('usage', sa.JSON(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('task_id', 'fire_time', 'attempt', name='uq_task_scheduler_runs_fire')
    )
    with op.batch_alter_table('task_scheduler_runs', schema=None) as batch_op:
        batch_op.create_index('ix_task_scheduler_runs_status', ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_task_scheduler_runs_task_id'), ['task_id'], unique=False)

    # ### end Alembic commands ###


def downgrade() -> None:
    # ### commands auto generated by Alembic - please adjust! ###
    with op.batch_alter_table('task_scheduler_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_task_scheduler_runs_task_id'))
        batch_op.drop_index('ix_task_scheduler_runs_status')

    op.drop_table('task_scheduler_runs')
    with op.batch_alter_table('task_scheduler_notifications', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_task_scheduler_notifications_task_id'))
        batch_op.drop_index('ix_task_scheduler_notifications_pending')

    op.drop_table('task_scheduler_notifications')
    with op.batch_alter_table('task_scheduler_tasks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_task_scheduler_tasks_user_id'))
        batch_op.drop_index(batch_op.f('ix_task_scheduler_tasks_status'))
        batch_op.drop_index(batch_op.f('ix_task_scheduler_tasks_next_run_at'))

    op.drop_table('task_scheduler_tasks')
    with op.batch_alter_table('task_scheduler_reminders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_task_scheduler_reminders_user_id'))

    op.drop_table('task_scheduler_reminders')
    op.drop_index('ix_task_scheduler_jobs_next_run_time', table_name='task_scheduler_jobs')
    op.drop_table('task_scheduler_jobs')
