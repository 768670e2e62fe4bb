"""storage.sql: fixed constants written into a statement built once (``one_of``), and
statements run on the driver's cursor (``Prepared``) storing what SQLAlchemy stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import bindparam, create_engine, insert, select, text
from sqlalchemy.engine import Engine

from scheduler_service.statuses import LIVE_TASK
from scheduler_service.storage.models import Base, ScheduledTask
from scheduler_service.storage.sql import Prepared, one_of
from scheduler_service.tasks.admission import ADMISSION, COLUMNS, admission, draft_task

TASKS: Any = ScheduledTask.__table__


def test_one_of_writes_the_values_into_the_sql_so_nothing_is_rendered_per_execution() -> None:
    sql = str(select(ScheduledTask.id).where(one_of(ScheduledTask.status, LIVE_TASK)))
    assert "IN ('scheduled', 'paused')" in sql
    assert "POSTCOMPILE" not in str(ADMISSION.statement)  # the create path's statement


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


def _row(task_id: str, **changes: Any) -> dict[str, Any]:
    """A task row with every kind of column: text, JSON (dict, list, None), aware
    datetimes in another zone, integers, NULLs."""
    paris = timezone(timedelta(hours=1))
    values = {
        **dict.fromkeys(COLUMNS),
        "id": task_id,
        "user_id": "u1",
        "name": "tea — ünïcode",
        "frequency": "weekly",
        "day_of_week": ["mon", "fri"],
        "timezone": "Europe/Paris",
        "schedule": {"frequency": "weekly", "at": "07:30", "nested": {"a": [1, None]}},
        "start_at": datetime(2030, 1, 2, 7, 30, tzinfo=paris),
        "execution_mode": "direct",
        "parameters": {"message": 'it\'s "quoted"'},
        "status": "scheduled",
        "run_count": 0,
        "success_count": 0,
        "failure_count": 0,
        "consecutive_failures": 0,
        "next_run_at": datetime(2030, 1, 2, 6, 30, 0, 123456, tzinfo=UTC),
        "created_at": datetime(2029, 12, 31, tzinfo=UTC),
        "updated_at": datetime(2029, 12, 31, tzinfo=UTC),
    }
    return values | changes


def _stored(engine: Engine, task_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        # text() without column types: the values as the driver returns them, unconverted
        query = text(f"SELECT * FROM {TASKS.name} WHERE id = :id")
        raw = conn.execute(query, {"id": task_id}).one()._asdict()
    return {k: v for k, v in raw.items() if k != "id"}


def test_a_prepared_insert_stores_exactly_what_sqlalchemy_stores(engine: Engine) -> None:
    with engine.begin() as conn:
        Prepared(insert(TASKS)).execute(conn, _row("task_prepared"))
        conn.execute(insert(TASKS), _row("task_core"))
    assert _stored(engine, "task_prepared") == _stored(engine, "task_core")
    with engine.connect() as conn:
        read = conn.execute(select(TASKS).where(TASKS.c.id == "task_prepared")).one()._asdict()
    assert read == _row("task_prepared")  # read back through the column types, unchanged


def test_a_prepared_select_returns_the_first_row_with_defaults_applied(engine: Engine) -> None:
    with engine.begin() as conn:
        for n, status in enumerate(["scheduled", "paused", "scheduled", "completed"]):
            Prepared(insert(TASKS)).execute(conn, _row(f"task_{n}", status=status))
        # ADMISSION's LIMIT carries an OFFSET parameter with a default of its own
        assert admission(conn, "u1", up_to=10, keep=0) == (3, True)
        assert admission(conn, "u1", up_to=2, keep=1) == (2, False)
        assert ADMISSION.first(conn, {"user_id": "nobody", "up_to": 5, "keep": 0}) == (0, False)


def test_a_prepared_statement_names_a_missing_parameter(engine: Engine) -> None:
    statement = Prepared(select(TASKS.c.id).where(TASKS.c.user_id == bindparam("user_id")))
    with engine.connect() as conn, pytest.raises(Exception, match="user_id"):
        statement.first(conn, {})


def test_a_prepared_statement_refuses_an_expanding_in() -> None:
    with pytest.raises(ValueError, match="one_of"):
        Prepared(select(TASKS.c.id).where(TASKS.c.status.in_(["scheduled"])))


def test_a_draft_task_has_every_column_and_nothing_else() -> None:
    draft = draft_task(id="task_x", name="n")
    assert set(vars(draft)) == {column.key for column in TASKS.columns}
    assert (draft.id, draft.name, draft.status) == ("task_x", "n", None)
