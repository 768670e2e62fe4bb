"""Helpers for statements built once and run on hot paths.

``column.in_([...])`` with Python values compiles to an *expanding* parameter: SQLAlchemy
then re-renders the statement's SQL string on every execution (about half the cost of a
short statement on SQLite). For fixed sets of our own constants (statuses) ``one_of``
writes the values into the statement instead, so its compiled form is reused as is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import ColumnElement, literal_column

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
