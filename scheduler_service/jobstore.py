"""APScheduler's SQLAlchemy job store, writing a whole wake-up in one transaction.

In a wake-up APScheduler updates or removes every due job one at a time, each in its
own transaction. At the top of the hour — a thousand reminders due in the same second —
that is a thousand commits, made while the service's claims wait for the same database
(SQLite has one writer): the first run would start only after the last job was
written. ``OneTransactionJobStore.one_transaction`` makes every statement the store runs
in the calling thread share one connection and one transaction, committed when the
wake-up ends (rolled back, all of it, if it fails: the jobs are then still due, fire
again, and the claims — keyed by task and fire time — run each fire time once).

Only the thread running the wake-up sees the shared connection (a thread-local
``engine``); every other caller uses the real engine as before.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from sqlalchemy.engine import Connection, Engine


class _SharedTransaction:
    """Stands in for the engine inside ``one_transaction``: ``begin()`` and ``connect()``
    hand out the one connection, and commit nothing."""

    def __init__(self, connection: Connection, engine: Engine) -> None:
        self._connection = connection
        self._engine = engine

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        yield self._connection

    @contextlib.contextmanager
    def connect(self) -> Iterator[Connection]:
        yield self._connection

    def __getattr__(self, name: str) -> Any:  # url, dialect, dispose: the real engine's
        return getattr(self._engine, name)


class OneTransactionJobStore(SQLAlchemyJobStore):  # type: ignore[misc]
    """A ``SQLAlchemyJobStore`` whose writes can be grouped in one transaction."""

    def __init__(self, **options: Any) -> None:
        self._local = threading.local()
        super().__init__(**options)

    @property
    def engine(self) -> Any:
        shared = getattr(self._local, "shared", None)
        return shared if shared is not None else self._engine

    @engine.setter
    def engine(self, value: Engine) -> None:
        self._engine = value

    @contextlib.contextmanager
    def one_transaction(self) -> Iterator[None]:
        """Every store call made by this thread inside the block shares one transaction."""
        with self._engine.begin() as connection:
            self._local.shared = _SharedTransaction(connection, self._engine)
            try:
                yield
            finally:
                self._local.shared = None
