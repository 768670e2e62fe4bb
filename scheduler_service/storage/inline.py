"""Short SQLite write transactions on the event loop, when the write lock is free at once.

Creating a task is one small transaction: a quota count and two inserts, ~0.2 ms inside
sqlite3. Run in a worker thread it also pays the hop there and back (0.1–0.25 ms on a
2-vCPU VM), as much again. ``InlineWriter`` runs such a transaction on the loop, on a
connection of its own that never waits and never checkpoints:

* ``busy_timeout`` 0: ``BEGIN IMMEDIATE`` takes the write lock at once or fails at once
  (another process is writing; within this process ``Database.write_lock`` already
  keeps writers apart). On failure nothing was done and the caller takes the thread
  path, which waits the lock out.
* ``wal_autocheckpoint`` 0: a checkpoint copies the WAL into the database file and syncs
  it, milliseconds the loop would wait. Every ``CHECKPOINT_EVERY`` commits a passive
  checkpoint runs in a thread instead (and every other connection still checkpoints as
  usual when it commits).

Only for transactions whose size does not grow with the data (a create); anything that
may take milliseconds stays on the thread path (``Database.write_sync``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError

from scheduler_service.storage.retry import is_locked
from scheduler_service.storage.sql import TAKE_WRITE_LOCK

log = logging.getLogger(__name__)

T = TypeVar("T")

CHECKPOINT_EVERY = 200  # inline commits between passive checkpoints (in a thread)


class WriterBusy(Exception):
    """Another connection holds the write lock: nothing was done; use the thread path."""


def _no_autocheckpoint(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA wal_autocheckpoint=0")
    cursor.close()


class InlineWriter:
    """One SQLite connection used on the event loop only, one transaction at a time.

    ``engine``: a sync engine on the database with a busy timeout of 0 and one pooled
    connection (``StaticPool``); ``checkpoint_engine``: any other, for the checkpoints."""

    def __init__(self, engine: Engine, checkpoint_engine: Engine) -> None:
        self.engine = engine
        event.listen(self.engine, "connect", _no_autocheckpoint)
        self._checkpoint_engine = checkpoint_engine
        self._connection: Connection | None = None
        self._commits = 0
        self._checkpoint: asyncio.Task[None] | None = None

    def write(self, work: Callable[[Connection], T]) -> T:
        """``work(connection)`` in a transaction holding the write lock, committed unless
        it raises. ``WriterBusy`` if SQLite says the database is locked (the lock was not
        free at once, or, rarely, a later step met another connection): all of it is
        rolled back, and the caller runs ``work`` again on the thread path. The caller
        holds ``Database.write_lock``."""
        if self._connection is None:
            self._connection = self.engine.connect()
        connection = self._connection
        connection.begin()
        try:
            TAKE_WRITE_LOCK.execute(connection, {})  # fails at once if held: busy_timeout 0
            result = work(connection)
            connection.commit()
        except OperationalError as exc:
            connection.rollback()
            if is_locked(exc):
                raise WriterBusy from exc
            raise
        except BaseException:
            connection.rollback()
            raise
        self._committed()
        return result

    def _committed(self) -> None:
        self._commits += 1
        if self._commits < CHECKPOINT_EVERY:
            return
        if self._checkpoint is None or self._checkpoint.done():
            self._commits = 0
            self._checkpoint = asyncio.get_running_loop().create_task(
                asyncio.to_thread(self._run_checkpoint)
            )

    def _run_checkpoint(self) -> None:
        """Copy what the WAL holds into the database file, without waiting for anyone."""
        try:
            with self._checkpoint_engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception as exc:  # the next one (or any other connection's commit) retries
            log.warning("WAL checkpoint failed: %s", exc)

    async def close(self) -> None:
        if self._checkpoint is not None:
            await asyncio.gather(self._checkpoint, return_exceptions=True)
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self.engine.dispose()
