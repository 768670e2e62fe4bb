"""Which process runs the scheduler, and whether the worker behind a run is alive.

Several processes may share one database: one of them holds the scheduling lock and
fires jobs; the others serve ``scheduler_tool`` calls (writing the shared job store
through a paused scheduler) and stand by, retrying the lock. Every lock here is one the
operating system or the database server drops when its holder dies — an ``flock`` on a
file next to the SQLite database, a session advisory lock on PostgreSQL — so a kill -9
never leaves a stale leader and nothing has to expire.

The same locks answer "is the worker that claimed this run still alive?": each service
instance holds a presence lock of its own from start to stop, and its runs carry its
worker id (``host:pid:instance``). Recovery interrupts only runs whose worker's presence
lock is free. Unlike ``os.kill(pid, 0)`` this is not fooled by pid reuse (containers
restart with the same small pids) or by pid namespaces (two containers sharing the
database volume), and on PostgreSQL it holds across hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import sys
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from scheduler_service.cluster.health import first_line

log = logging.getLogger(__name__)

LOCK_DIR_SUFFIX = ".scheduler-locks"  # tasks.db → tasks.db.scheduler-locks/
LEADER_NAME = "scheduler_service:leader"
MIGRATE_NAME = "scheduler_service:migrate"
WORKER_NAME = "scheduler_service:worker"
PG_CHECK_TIMEOUT_S = 5.0
MIGRATE_POLL_S = 0.05


class PresenceTaken(RuntimeError):
    """Another live worker holds the presence lock this one wanted."""


def new_worker_id() -> str:
    """``host:pid:instance`` — the instance part is what liveness is decided on; host and
    pid are there for the humans reading ``task_scheduler_runs``."""
    return f"{socket.gethostname()[:255]}:{os.getpid()}:{uuid.uuid4().hex}"


def instance_of(worker: str) -> str:
    return worker.rsplit(":", 1)[-1]


class Leadership(ABC):
    """The scheduling lock plus this worker's presence lock, for one service instance."""

    def __init__(self) -> None:
        self.worker = new_worker_id()

    @property
    def instance(self) -> str:
        return instance_of(self.worker)

    @abstractmethod
    async def open(self) -> None:
        """Take this worker's presence lock (held until ``close``)."""

    @contextlib.asynccontextmanager
    async def migrating(self) -> AsyncIterator[None]:
        """Held around schema migration: processes starting together on a fresh database
        would otherwise race to create the same tables."""
        yield

    @abstractmethod
    async def try_acquire(self) -> bool:
        """Become leader if nobody is; never waits."""

    async def held(self) -> bool:
        """Whether the scheduling lock taken by ``try_acquire`` is still ours."""
        return True

    @abstractmethod
    async def release(self) -> None:
        """Give up the scheduling lock (the presence lock stays)."""

    @abstractmethod
    async def is_alive(self, worker: str | None) -> bool:
        """Whether the worker that recorded a run still holds its presence lock.
        ``None`` (a row from before workers were recorded) counts as dead."""

    async def others_present(self) -> bool:
        """Whether another worker holds a presence lock (is running) now."""
        return False

    @abstractmethod
    async def close(self) -> None:
        """Release everything."""


class SoloLeadership(Leadership):
    """Nobody else can share the database (in-memory SQLite), or no lock primitive
    exists (no ``fcntl``): this process leads, and any other worker is dead — the
    behaviour from before leadership existed."""

    async def open(self) -> None:
        pass

    async def try_acquire(self) -> bool:
        return True

    async def release(self) -> None:
        pass

    async def is_alive(self, worker: str | None) -> bool:
        return worker is not None and instance_of(worker) == self.instance

    async def close(self) -> None:
        pass


# -- SQLite: flock -----------------------------------------------------------------------
def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file ``fd`` has open (not unlinked or replaced)."""
    try:
        st, now = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino)


def _flock(path: Path, *, create: bool = True) -> int | None:
    """An fd holding an exclusive flock on ``path``; None if another holds it.

    Raises FileNotFoundError when ``create`` is false and the file is gone. If the file
    is unlinked between open and lock (a sweep of dead workers' files), the lock is on a
    file nobody can see: try again on the new one.
    """
    import fcntl

    flags = os.O_RDWR | (os.O_CREAT if create else 0)
    while True:
        fd = os.open(path, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            return fd
        os.close(fd)
        if not create:
            raise FileNotFoundError(path)


class FileLeadership(Leadership):
    """SQLite: flocks on files in ``<database>.scheduler-locks/``.

    ``leader`` is the scheduling lock, ``migrate`` serialises migrations, and
    ``worker-<instance>`` is each live worker's presence lock. ``flock`` locks belong to
    an open file description, so two services in one process exclude each other too.
    """

    def __init__(self, database: Path) -> None:
        super().__init__()
        self.dir = database.with_name(database.name + LOCK_DIR_SUFFIX)
        self._leader_fd: int | None = None
        self._presence_fd: int | None = None

    def _worker_path(self, instance: str) -> Path:
        return self.dir / f"worker-{instance}"

    async def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = _flock(self._worker_path(self.instance))
        if fd is None:  # nobody else uses this random name
            raise PresenceTaken(f"presence lock of worker {self.worker} is taken")
        self._presence_fd = fd

    @contextlib.asynccontextmanager
    async def migrating(self) -> AsyncIterator[None]:
        # Polled, not a blocking flock in a thread: a cancelled start must not leave a
        # thread that later takes the lock and never lets it go.
        self.dir.mkdir(parents=True, exist_ok=True)
        while (fd := _flock(self.dir / "migrate")) is None:  # noqa: ASYNC110 (another process)
            await asyncio.sleep(MIGRATE_POLL_S)
        try:
            yield
        finally:
            os.close(fd)

    async def try_acquire(self) -> bool:
        if self._leader_fd is None:
            self._leader_fd = _flock(self.dir / "leader")
            if self._leader_fd is not None:
                self._sweep()
        return self._leader_fd is not None

    async def held(self) -> bool:
        return self._leader_fd is not None and _same_file(self._leader_fd, self.dir / "leader")

    async def release(self) -> None:
        if self._leader_fd is not None:
            os.close(self._leader_fd)
            self._leader_fd = None

    async def is_alive(self, worker: str | None) -> bool:
        if worker is None:
            return False
        instance = instance_of(worker)
        if instance == self.instance:
            return True
        return not self._claim_if_dead(self._worker_path(instance))

    def _claim_if_dead(self, path: Path) -> bool:
        """True (and the file removed) if nobody holds the presence lock at ``path``."""
        try:
            fd = _flock(path, create=False)
        except FileNotFoundError:
            return True
        if fd is None:
            return False
        path.unlink(missing_ok=True)  # unlinked while locked: a late opener retries
        os.close(fd)
        return True

    def _sweep(self) -> None:
        """Remove presence files of dead workers (a kill -9 leaves its file behind)."""
        for path in self.dir.glob("worker-*"):
            if path.name != f"worker-{self.instance}":
                self._claim_if_dead(path)

    async def close(self) -> None:
        await self.release()
        if self._presence_fd is not None:
            self._worker_path(self.instance).unlink(missing_ok=True)
            os.close(self._presence_fd)
            self._presence_fd = None


# -- PostgreSQL: session advisory locks -------------------------------------------------
def advisory_key(name: str, bits: int = 64) -> int:
    """A stable signed key for ``pg_advisory_lock`` derived from ``name``."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[: bits // 8], "big", signed=True)


class PgLeadership(Leadership):
    """PostgreSQL: session advisory locks on one dedicated connection per service.

    The leader lock is ``pg_try_advisory_lock(bigint)``; presence locks use the
    two-integer key space (``WORKER_NAME``, instance), so they never meet the leader's.
    The server drops them when the connection dies, so ``held`` checks the connection:
    a leader whose connection dropped must assume another replica has taken over.
    Session locks need a real session: a transaction-pooling proxy (PgBouncer in
    transaction mode) breaks them.
    """

    def __init__(self, url: str, *, leader_name: str = LEADER_NAME) -> None:
        super().__init__()
        self._engine = create_async_engine(url, poolclass=NullPool)
        self._conn: AsyncConnection | None = None
        self._lock = asyncio.Lock()  # one statement at a time on the connection
        self._leader_key = advisory_key(leader_name)
        self._leading = False

    async def _query(self, sql: str, **params: Any) -> Any:
        async with self._lock:
            if self._conn is None:
                self._conn = await self._connect()
            try:
                return (await self._conn.execute(text(sql), params)).scalar()
            except BaseException:
                await self._drop()
                raise

    async def _connect(self) -> AsyncConnection:
        """A fresh session, taking this worker's presence lock again first."""
        conn = await self._engine.connect()
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        key = self._worker_key(self.instance)
        if not (await conn.execute(text(_TRY_WORKER), key)).scalar():
            await conn.close()
            raise PresenceTaken(f"presence lock of worker {self.worker} is taken")
        return conn

    async def _drop(self) -> None:
        conn, self._conn, self._leading = self._conn, None, False
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    @staticmethod
    def _worker_key(instance: str) -> dict[str, int]:
        return {"c": advisory_key(WORKER_NAME, 32), "o": advisory_key(instance, 32)}

    async def open(self) -> None:
        for _ in range(3):  # a 32-bit presence key can collide with a live one: redraw
            try:
                await self._query("SELECT 1")
                return
            except PresenceTaken:
                self.worker = new_worker_id()
        raise PresenceTaken(f"no free presence lock for worker {self.worker}")

    @contextlib.asynccontextmanager
    async def migrating(self) -> AsyncIterator[None]:
        key = advisory_key(MIGRATE_NAME)
        await self._query("SELECT pg_advisory_lock(CAST(:k AS bigint))", k=key)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                await self._query("SELECT pg_advisory_unlock(CAST(:k AS bigint))", k=key)

    async def try_acquire(self) -> bool:
        if not self._leading:
            sql = "SELECT pg_try_advisory_lock(CAST(:k AS bigint))"
            self._leading = bool(await self._query(sql, k=self._leader_key))
        return self._leading

    async def held(self) -> bool:
        if not self._leading:
            return False
        try:
            async with asyncio.timeout(PG_CHECK_TIMEOUT_S):
                await self._query("SELECT 1")
        except Exception as exc:  # expected in an outage: one line, no traceback
            log.warning("the scheduling lock's database connection failed: %s", first_line(exc))
            await self._drop()
        return self._leading

    async def release(self) -> None:
        if self._leading:
            self._leading = False
            with contextlib.suppress(Exception):
                await self._query(
                    "SELECT pg_advisory_unlock(CAST(:k AS bigint))", k=self._leader_key
                )

    async def is_alive(self, worker: str | None) -> bool:
        if worker is None:
            return False
        instance = instance_of(worker)
        if instance == self.instance:  # advisory locks are re-entrant: never ask ourselves
            return True
        key = self._worker_key(instance)
        if not await self._query(_TRY_WORKER, **key):
            return True
        await self._query(
            "SELECT pg_advisory_unlock(CAST(:c AS integer), CAST(:o AS integer))", **key
        )
        return False

    async def others_present(self) -> bool:
        """Counts the presence locks held on the server (pg_locks shows a two-integer
        advisory key as classid, objid with objsubid 2)."""
        key = self._worker_key(self.instance)
        held = await self._query(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 "
            "AND granted AND classid = CAST(:c AS oid) AND database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())",
            c=key["c"] % 2**32,
        )
        return int(held or 0) > 1  # ours is one of them

    async def close(self) -> None:
        await self.release()
        async with self._lock:
            await self._drop()
        await self._engine.dispose()


_TRY_WORKER = "SELECT pg_try_advisory_lock(CAST(:c AS integer), CAST(:o AS integer))"


def leadership_for(url: str) -> Leadership:
    """The leadership that fits the database behind ``url`` (an async SQLAlchemy URL)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql":
        return PgLeadership(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return SoloLeadership()
    if sys.platform == "win32":
        log.warning("no flock on this platform: every process on %s schedules", database)
        return SoloLeadership()
    return FileLeadership(Path(database).resolve())
