"""storage.sql.one_of: fixed constants written into a statement built once."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, select

from scheduler_service.statuses import LIVE_TASK
from scheduler_service.storage.models import Base, ScheduledTask
from scheduler_service.storage.sql import one_of
from scheduler_service.tasks.admission import ADMISSION


def test_one_of_writes_the_values_into_the_sql_so_nothing_is_rendered_per_execution() -> None:
    sql = str(select(ScheduledTask.id).where(one_of(ScheduledTask.status, LIVE_TASK)))
    assert "IN ('scheduled', 'paused')" in sql
    assert "POSTCOMPILE" not in str(ADMISSION)  # the create path's statement


def test_one_of_selects_the_rows_with_those_values() -> None:
    engine = create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        for status in ("scheduled", "paused", "cancelled"):
            conn.exec_driver_sql(
                "INSERT INTO task_scheduler_tasks (id, user_id, name, frequency, timezone, "
                "schedule, start_at, execution_mode, status, run_count, success_count, "
                "failure_count, consecutive_failures, created_at, updated_at) VALUES "
                f"('{status}', 'u', 'n', 'daily', 'UTC', '{{}}', '2030-01-01', 'direct', "
                f"'{status}', 0, 0, 0, 0, '2030-01-01', '2030-01-01')"
            )
        found = conn.scalars(
            select(ScheduledTask.id).where(one_of(ScheduledTask.status, LIVE_TASK))
        )
        assert sorted(found) == ["paused", "scheduled"]


@pytest.mark.parametrize("value", ["it's", "A", "x) OR (1=1", ""])
def test_one_of_refuses_anything_but_plain_constants(value: str) -> None:
    with pytest.raises(ValueError, match="plain lower-case constants"):
        one_of(ScheduledTask.status, ["scheduled", value])
