"""Helpers for statements built once and run on hot paths.

``column.in_([...])`` with Python values compiles to an *expanding* parameter: SQLAlchemy
then re-renders the statement's SQL string on every execution (about half the cost of a
short statement on SQLite). For fixed sets of our own constants (statuses) ``one_of``
writes the values into the statement instead, so its compiled form is reused as is.

Even a cached statement costs SQLAlchemy's execute path more than SQLite spends running
it; ``Prepared`` runs a statement compiled once straight on the driver's cursor.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

from sqlalchemy import ColumnElement, literal_column, text
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ClauseElement

_PLAIN = re.compile(r"[a-z_]+")


def one_of(column: Any, values: Iterable[str]) -> ColumnElement[bool]:
    """``column IN ('a', 'b')`` with the values inline. Only for fixed constants of
    this code (lower-case words): they are written into the SQL unescaped."""
    fixed = list(values)
    for value in fixed:
        if not _PLAIN.fullmatch(value):
            raise ValueError(f"one_of takes plain lower-case constants, not {value!r}")
    in_list: ColumnElement[bool] = column.in_([literal_column(f"'{value}'") for value in fixed])
    return in_list


class Prepared:
    """A Core statement compiled once per dialect and run on the DBAPI cursor.

    For the few statements on a hot path (a create's quota check and inserts). Through
    ``Connection.execute`` each costs ~0.1 ms of Python here (cache lookup, execution
    context, result set-up) around tens of microseconds in sqlite3. ``Prepared`` skips
    that: the SQL is rendered once, each parameter goes through its column type's own
    ``bind_processor`` (the conversion SQLAlchemy applies, so rows read back the same),
    and the tuple goes to the driver. Only for SQLite's positional paramstyle; on other
    dialects it simply runs through ``Connection.execute``. Engine events such as
    ``before_cursor_execute`` do not see these statements."""

    def __init__(self, statement: Executable) -> None:
        checked: Any = cast(ClauseElement, statement).compile()
        if checked.post_compile_params:
            raise ValueError("Prepared takes no expanding parameters; use one_of for constants")
        self.statement = statement
        self._forms: dict[str, _Form | None] = {}

    def execute(self, connection: Connection, params: Mapping[str, Any]) -> None:
        """Run a statement that returns no rows (an insert, update or delete)."""
        form = self._form(connection.dialect)
        if form is None:
            connection.execute(self.statement, params)
            return
        _run(connection, form, params).close()

    def first(self, connection: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row of a select, or None."""
        form = self._form(connection.dialect)
        if form is None:
            row = connection.execute(self.statement, params).first()
            return None if row is None else tuple(row)
        cursor = _run(connection, form, params)
        try:
            found = cursor.fetchone()
        finally:
            cursor.close()
        return None if found is None else tuple(found)

    def _form(self, dialect: Dialect) -> _Form | None:
        if dialect.name not in self._forms:
            self._forms[dialect.name] = _Form.of(self.statement, dialect)
        return self._forms[dialect.name]


def _run(connection: Connection, form: _Form, params: Mapping[str, Any]) -> Any:
    """The driver's cursor after running ``form``; a driver error is raised as
    SQLAlchemy raises it (``DBAPIError`` subclasses), so callers handle one family."""
    values = form.parameters(params)
    cursor = connection.connection.cursor()
    try:
        cursor.execute(form.sql, values)
    except Exception as exc:
        cursor.close()
        driver_error = connection.dialect.loaded_dbapi.Error
        if isinstance(exc, driver_error):
            raise DBAPIError.instance(form.sql, values, exc, driver_error) from exc
        raise
    return cursor


class _Form:
    """A statement's SQL for one dialect and how to turn named values into its tuple."""

    def __init__(
        self,
        sql: str,
        order: list[tuple[str, Callable[[Any], Any] | None]],
        defaults: dict[str, Any],
    ) -> None:
        self.sql = sql
        self.order = order
        self.defaults = defaults

    @classmethod
    def of(cls, statement: Executable, dialect: Dialect) -> _Form | None:
        """None where the statement goes through SQLAlchemy: a dialect other than
        SQLite, or parameters SQLAlchemy renders into the SQL per execution."""
        if dialect.name != "sqlite":
            return None
        compiled: Any = cast(ClauseElement, statement).compile(dialect=dialect)
        if compiled.positiontup is None or compiled.literal_execute_params:
            return None
        binds = compiled.binds
        # the dialect's own form of each type (SQLite's DATETIME, not the generic one),
        # as SQLAlchemy looks it up before converting a value
        order = [
            (name, binds[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in compiled.positiontup
        ]
        defaults = {name: bind.value for name, bind in binds.items() if bind.value is not None}
        return cls(compiled.string, order, defaults)

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        merged = {**self.defaults, **values}
        try:
            return tuple(
                merged[name] if process is None else process(merged[name])
                for name, process in self.order
            )
        except KeyError as exc:
            raise KeyError(f"no value for the statement's parameter {exc.args[0]!r}") from None


BEGIN_IMMEDIATE = text("BEGIN IMMEDIATE")  # SQLite: a transaction holding the write lock now
TAKE_WRITE_LOCK = Prepared(BEGIN_IMMEDIATE)  # on the driver's cursor (waits per busy_timeout)
