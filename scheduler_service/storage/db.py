"""The database behind one narrow layer: engines, sessions, migrations.

Two engines point at the same database: an async one for the application's tables and a
sync one for APScheduler's job store (which is synchronous) and for short write
transactions run off the loop in one piece (``write_sync``). On SQLite both use WAL and a
busy timeout, and application writes in this process are serialised by one asyncio lock,
so concurrent runs queue for the file instead of failing with "database is locked".

Another process can still hold the SQLite write lock (a second worker, a CLI). A write
transaction therefore takes the lock up front (``BEGIN IMMEDIATE``): that is the only
statement that can then meet "database is locked", and it can be retried safely because
nothing has been done yet. ``storage.retry.retry_locked`` does the same for job-store
calls.

Locks inside a write transaction, one order for all of them (so two transactions never
wait for each other in a circle — PostgreSQL would abort one with "deadlock detected"):

1. a user's quota lock (``lock_user``), when creating a task;
2. the task row (``lock_task``), before reading or writing the task or any of its runs;
   several tasks in ascending id order;
3. then its runs and notifications.

On SQLite ``BEGIN IMMEDIATE`` already holds the one write lock for the whole
transaction, so both calls only read; on PostgreSQL they are ``SELECT … FOR UPDATE``
and a transaction-scoped advisory lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Select, create_engine, event, inspect, select, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.base import Executable

from scheduler_service.storage import names
from scheduler_service.storage.inline import InlineWriter, WriterBusy
from scheduler_service.storage.models import ScheduledTask
from scheduler_service.storage.retry import retry_locked
from scheduler_service.storage.sql import BEGIN_IMMEDIATE, TAKE_WRITE_LOCK
from scheduler_service.storage.urls import DatabaseUrl

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # scheduler_service/
PROJECT_ROOT = PACKAGE_DIR.parent
SQLITE_BUSY_TIMEOUT_MS = 10_000
# Connections a worker's own machinery may hold at once besides its runs' tools: a take,
# a group commit of outcomes, a fire claim, the leader's and heartbeat's statements, a
# notification, the stop-request poll, the wake-up NOTIFY (see ``pool_size_for``).
SERVICE_CONNECTIONS = 8
PING_AFTER_IDLE_S = 5.0  # a pooled connection unused this long is tested before use
QUOTA_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
T = TypeVar("T")


class SchemaError(RuntimeError):
    """The database is at a revision this code does not know: refuse to touch it."""


def sync_url(async_url: str) -> str:
    """The sync-driver URL for the same database (alembic and APScheduler use it). TLS
    options keep their libpq names, which psycopg takes as they are (asyncpg gets them
    through ``storage.urls``)."""
    return DatabaseUrl(make_url(async_url)).sync_url


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_pragmas(busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS) -> Callable[[Any, Any], None]:
    """A connect hook: WAL (readers never block the writer) and a busy timeout."""

    def apply(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return apply


def create_sync_engine(
    url: str, *, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS, **kwargs: Any
) -> Engine:
    """A sync engine (for the job store and migrations) with the SQLite pragmas applied."""
    if is_sqlite(url):
        engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        event.listen(engine, "connect", sqlite_pragmas(busy_timeout_ms))
        return engine
    engine = create_engine(url, **kwargs)
    ping_when_idle(engine)
    return engine


def ping_when_idle(engine: Engine, idle_s: float = PING_AFTER_IDLE_S) -> None:
    """Test a pooled connection at checkout only if it sat unused for ``idle_s`` seconds
    or its last use failed.

    SQLAlchemy's ``pool_pre_ping`` tests every checkout, and on asyncpg a test is three
    round trips (begin, an empty statement, rollback): on the run path, where a burst
    checks out a connection for every claim, start, tool write and record, that was a
    third of a replica's CPU. A connection in steady, successful use is proven by its
    last statement; one that sat idle may have been closed by the server or a proxy,
    and one whose last statement failed may be dead (an outage): those are tested, and
    a dead one is replaced (raising ``DisconnectionError`` makes the pool retry)."""

    def used(_dbapi: Any, record: Any) -> None:
        record.info["used_at"] = time.monotonic()

    def failed(context: Any) -> None:
        if context.connection is not None:
            with contextlib.suppress(Exception):  # an invalidated connection has no info
                context.connection.info["suspect"] = True

    def checked_out(dbapi: Any, record: Any, _proxy: Any) -> None:
        idle = time.monotonic() - record.info.get("used_at", 0.0) >= idle_s
        if not idle and not record.info.get("suspect"):
            return
        try:
            engine.dialect.do_ping(dbapi)
        except Exception as exc:
            raise DisconnectionError(f"a pooled connection failed its test: {exc}") from exc
        record.info.pop("suspect", None)

    event.listen(engine, "connect", used)
    event.listen(engine, "checkout", checked_out)
    event.listen(engine, "checkin", used)
    event.listen(engine, "handle_error", failed)


def pool_size_for(concurrent_runs: int) -> int:
    """Connections a PostgreSQL pool keeps open for a worker running ``concurrent_runs``
    at once: one for each run's tool (a tool that writes holds one while it runs) plus
    the service's own. A pool smaller than the work's concurrency opens an overflow
    connection for each surplus checkout and closes it at checkin: in a burst that was
    dozens of connections a second, each a new server backend warming its caches — more
    server CPU than the runs' statements."""
    return concurrent_runs + SERVICE_CONNECTIONS


class Database:
    """Owns the async engine and hands out sessions. ``pool_size``: the connections kept
    open on PostgreSQL (``pool_size_for``); more may open for a moment (overflow)."""

    def __init__(
        self, url: str, *, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS, pool_size: int = 5
    ) -> None:
        self.url = url
        self.sync_url = sync_url(url)
        self.sqlite = is_sqlite(url)
        if self.sqlite:
            self.engine: AsyncEngine = create_async_engine(url)
            event.listen(self.engine.sync_engine, "connect", sqlite_pragmas(busy_timeout_ms))
        else:
            self.engine = create_async_engine(url, pool_size=pool_size, max_overflow=10)
            ping_when_idle(self.engine.sync_engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # One statement, its own transaction (``write_one``); shares the engine's pool.
        self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.sync_engine = create_sync_engine(self.sync_url, busy_timeout_ms=busy_timeout_ms)
        self._inline = (
            InlineWriter(
                create_sync_engine(self.sync_url, busy_timeout_ms=0, poolclass=StaticPool),
                self.sync_engine,
            )
            if self.sqlite
            else None
        )
        self._write_lock: asyncio.Lock | None = None

    @property
    def sync_engines(self) -> tuple[Engine, ...]:
        """Every synchronous engine that writes: the thread path's, and on SQLite the
        event loop's (``write_short``)."""
        if self._inline is None:
            return (self.sync_engine,)
        return (self.sync_engine, self._inline.engine)

    @property
    def write_lock(self) -> asyncio.Lock:
        if self._write_lock is None:
            self._write_lock = asyncio.Lock()
        return self._write_lock

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    async def read_sync(self, work: Callable[[Session], T]) -> T:
        """``work(session)``, a read of a few statements, with a synchronous session.

        The read counterpart of ``write_sync``: through aiosqlite every statement costs
        several hand-offs between the event loop and its thread (~0.5 ms each here, and
        up to a GIL switch interval, 5 ms, each while another thread computes), so a read
        of a few statements (a page of tasks and their count) runs in one worker thread
        on the sync engine instead, inside one read transaction (``BEGIN``: the count and
        the page agree). No write lock: WAL readers never wait for the writer. On
        PostgreSQL asyncpg already sends one message a statement: ``work`` runs in an
        ordinary session (read committed: each statement sees its own snapshot)."""
        if not self.sqlite:
            async with self.read() as session:
                return await session.run_sync(work)
        return await asyncio.to_thread(self._sqlite_read, work)

    def _sqlite_read(self, work: Callable[[Session], T]) -> T:
        with Session(self.sync_engine, expire_on_commit=False) as session:
            session.execute(text("BEGIN"))  # one snapshot; closing the session rolls back
            return work(session)

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One short write transaction; commits on success, rolls back on error."""
        if not self.sqlite:
            async with self.sessions() as session, session.begin():
                yield session
            return
        async with self.write_lock:
            session = await retry_locked(self._begin_immediate, "write transaction")
            async with session:
                try:
                    yield session
                    await session.commit()
                except BaseException:
                    await session.rollback()
                    raise

    async def write_sync(self, work: Callable[[Connection], T]) -> T:
        """One write transaction whose statements run together: ``work(connection)``
        with a synchronous connection, committed unless it raises.

        Through the async driver every statement of an SQLite transaction is several
        hand-offs between the event loop and aiosqlite's thread (~0.5 ms each here);
        a short transaction on the hot path (creating a task) pays that five or six
        times. On SQLite ``work`` therefore runs in a worker thread on the sync engine
        (plain sqlite3: microseconds a statement), holding this process's write lock and
        ``BEGIN IMMEDIATE`` like ``write``. On PostgreSQL asyncpg already sends one
        message a statement: ``work`` runs in an ordinary transaction. ``work`` gets a
        Connection, not a Session: it runs Core statements, and the ORM's unit of work
        would cost more than the statements on this path."""
        if not self.sqlite:
            async with self.engine.begin() as connection:
                return await connection.run_sync(work)
        async with self.write_lock:  # "locked" beyond the busy timeout: tried again, as write
            return await retry_locked(
                lambda: asyncio.to_thread(self._sqlite_write, work), "write transaction"
            )

    async def write_short(self, work: Callable[[Connection], T]) -> T:
        """``write_sync`` for a transaction that stays short whatever the data (a create:
        a bounded count and a few inserts). On SQLite it runs on the event loop when the
        write lock is free at once (``storage.inline``: the hop to a thread would cost
        as much as the statements), else on the thread path, which waits for it. ``work``
        may then run twice: only its transaction's effects may count."""
        if self._inline is None:
            return await self.write_sync(work)
        async with self.write_lock:
            try:
                return self._inline.write(work)
            except WriterBusy:
                log.debug("write lock held elsewhere; writing from a thread")
        return await self.write_sync(work)

    async def write_orm(self, work: Callable[[Session], T]) -> T:
        """``write_sync`` with an ORM session on the transaction's connection, flushed
        before the commit: for a short transaction that loads rows and changes them (a
        claim), in one trip off the loop on SQLite. The objects stay loaded (nothing
        expires) for the caller to read afterwards."""

        def in_session(connection: Connection) -> T:
            with Session(bind=connection, expire_on_commit=False) as session:
                result = work(session)
                session.flush()
                return result

        return await self.write_sync(in_session)

    async def write_one(self, work: Callable[[Session], T]) -> T:
        """``work(session)`` sends ONE statement, atomic by itself (an ``UPDATE … RETURNING``
        whose subquery locks what it changes): on PostgreSQL it is its own transaction, in
        autocommit — one round trip instead of three (``BEGIN``, the statement,
        ``COMMIT``), which on the run path is most of what a statement costs. On SQLite,
        ``write_orm``. Objects loaded stay loaded, as there."""
        if self.sqlite:
            return await self.write_orm(work)

        def in_session(connection: Connection) -> T:
            with Session(bind=connection, expire_on_commit=False) as session:
                return work(session)

        async with self._autocommit.connect() as connection:
            return await connection.run_sync(in_session)

    async def execute_one(self, statement: Executable, params: dict[str, Any]) -> None:
        """One Core statement that stands alone (a tool's INSERT of its own row): on
        PostgreSQL in autocommit on an async connection, without an ORM session (which
        cost as much as the statement); on SQLite, ``write_short``."""
        if self.sqlite:
            await self.write_short(lambda connection: connection.execute(statement, params))
            return
        async with self._autocommit.connect() as connection:
            await connection.execute(statement, params)

    def _sqlite_write(self, work: Callable[[Connection], T]) -> T:
        with self.sync_engine.connect() as connection:
            connection.begin()  # SQLAlchemy's transaction; pysqlite sends nothing for it
            TAKE_WRITE_LOCK.execute(connection, {})  # waits out another process (busy_timeout)
            try:
                result = work(connection)
                connection.commit()
            except BaseException:
                connection.rollback()
                raise
            return result

    def lock_user(self, connection: Connection, user_id: str) -> None:
        """Serialise transactions that count and add a user's tasks (the quota); inside
        ``write_sync``. A row lock cannot guard rows that do not exist yet, so PostgreSQL
        takes a transaction-scoped advisory lock keyed by the user; SQLite's ``BEGIN
        IMMEDIATE`` already holds the one write lock."""
        if not self.sqlite:
            connection.execute(QUOTA_LOCK, {"key": _quota_key(user_id)})

    async def lock_task(self, session: AsyncSession, task_id: str) -> ScheduledTask | None:
        """The task row, locked until the transaction ends (None if it is gone).

        Every transaction that claims, starts, records or deletes a run of a task, or
        changes the task, takes this first: two of them on one task never interleave."""
        task: ScheduledTask | None = await session.get(
            ScheduledTask, task_id, with_for_update=not self.sqlite, populate_existing=True
        )
        return task

    async def lock_tasks(
        self, session: AsyncSession, task_ids: Sequence[str]
    ) -> dict[str, ScheduledTask]:
        """Several task rows, locked in ascending id order (the lock order), by id."""
        query = self._lock_tasks_query(task_ids)
        return {task.id: task for task in (await session.scalars(query)).all()}

    def lock_tasks_sync(
        self, session: Session, task_ids: Sequence[str]
    ) -> dict[str, ScheduledTask]:
        """``lock_tasks`` inside ``write_orm``."""
        query = self._lock_tasks_query(task_ids)
        return {task.id: task for task in session.scalars(query).all()}

    def _lock_tasks_query(self, task_ids: Sequence[str]) -> Select[ScheduledTask]:
        query = (
            select(ScheduledTask)
            .where(ScheduledTask.id.in_(sorted(set(task_ids))))
            .order_by(ScheduledTask.id)
            .execution_options(populate_existing=True)
        )
        return query if self.sqlite else query.with_for_update()

    async def _begin_immediate(self) -> AsyncSession:
        """A session holding SQLite's write lock, so nothing later in it meets SQLITE_BUSY."""
        session = self.sessions()
        try:
            await session.execute(BEGIN_IMMEDIATE)
        except BaseException:
            await session.close()
            raise
        return session

    @contextlib.asynccontextmanager
    async def serialized(self) -> AsyncIterator[None]:
        """Hold the SQLite write lock without a session (for job-store calls)."""
        if self.sqlite:
            async with self.write_lock:
                yield
        else:
            yield

    async def migrate(self) -> None:
        """Bring the schema to head; refuse a database at an unknown revision."""
        await asyncio.to_thread(migrate_to_head, self.sync_url)

    async def check_schema(self) -> None:
        """For a process that must not change the database (a read-only command): the
        database exists and its schema is at head, else a one-line ``SchemaError``."""
        await asyncio.to_thread(check_at_head, self.sync_url)

    async def dispose(self) -> None:
        if self._inline is not None:
            await self._inline.close()
        await self.engine.dispose()
        self.sync_engine.dispose()


def _quota_key(user_id: str) -> str:
    return f"task_scheduler:quota:{user_id}"


def migrations_dir() -> Path:
    """The alembic scripts: ``alembic/`` in a checkout (and an editable install); the wheel
    carries the same directory as ``scheduler_service/migrations``."""
    installed = PACKAGE_DIR / "migrations"
    return installed if installed.is_dir() else PACKAGE_DIR.parent / "alembic"


def alembic_config(url: str) -> Any:
    """An alembic Config for ``url`` that needs no alembic.ini (works from any directory)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logging"] = False
    return cfg


def current_revisions(conn: Connection) -> set[str]:
    """The revisions recorded in the scheduler's own version table."""
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(conn, opts={"version_table": names.VERSION_TABLE})
    return set(context.get_current_heads())


def adopt_legacy_version(conn: Connection, script: Any) -> str | None:
    """Move a revision written by an earlier version out of the shared ``alembic_version``.

    Earlier versions kept their revision in alembic's default table, which a host using
    alembic also writes. Adopt it into ``task_scheduler_alembic_version`` only when it is
    one of ours and the scheduler's (unprefixed) tables are there; a host's own revision
    is never touched. Returns the adopted revision.
    """
    from alembic.runtime.migration import MigrationContext

    tables = set(inspect(conn).get_table_names())
    if names.VERSION_TABLE in tables or names.LEGACY_VERSION_TABLE not in tables:
        return None
    if not set(names.LEGACY_TABLES) & tables:
        return None
    known = {rev.revision for rev in script.walk_revisions()}
    legacy = names.LEGACY_VERSION_TABLE
    rows = [row[0] for row in conn.execute(text(f"SELECT version_num FROM {legacy}"))]
    ours = [rev for rev in rows if rev in known]
    if not ours:
        return None
    revision = str(ours[0])
    context = MigrationContext.configure(conn, opts={"version_table": names.VERSION_TABLE})
    context.stamp(script, revision)
    conn.execute(text(f"DELETE FROM {legacy} WHERE version_num = :rev"), {"rev": revision})
    if len(rows) == 1:
        conn.execute(text(f"DROP TABLE {legacy}"))
    log.info("adopted schema revision %s from %s", revision, legacy)
    return revision


def schema_advice(current: list[str], head: str | None, known: frozenset[str]) -> str:
    """What to do about a schema that is not at ``head``. A revision this code does not
    know was written by a newer version: `db upgrade` would refuse it, so the advice is
    to upgrade the installed scheduler instead."""
    newer = sorted(set(current) - known)
    if newer:
        return (
            f"revision {', '.join(newer)} was written by a newer version of the scheduler "
            "than this one; run the version that wrote it (this one can neither use nor "
            "migrate it)"
        )
    return "run `task-scheduler db upgrade`"


def shipped_revisions(url: str) -> tuple[str | None, frozenset[str]]:
    """(the head revision this code ships, every revision it knows)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(url))
    return script.get_current_head(), frozenset(r.revision for r in script.walk_revisions())


def missing_sqlite_file(url: str) -> str | None:
    """The path of a SQLite file ``url`` names that does not exist (connecting would
    create it), else None."""
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    return None if Path(database).is_file() else database


def check_at_head(url: str) -> None:
    """Raise ``SchemaError`` unless the database at ``url`` exists with its schema at head.
    Never creates anything: a mistyped SQLite path is an error, not a new empty file."""
    where = make_url(url).render_as_string(hide_password=True)
    missing = missing_sqlite_file(url)
    if missing is not None:
        raise SchemaError(
            f"no database at {missing}: check DATABASE_URL / --database-url "
            "(`task-scheduler db upgrade` creates one)"
        )
    head, known = shipped_revisions(url)
    engine = create_sync_engine(url)
    try:
        with engine.connect() as conn:
            current = current_revisions(conn)
    finally:
        engine.dispose()
    if current != {head}:
        found = ", ".join(sorted(current)) or "none (no scheduler tables)"
        advice = schema_advice(sorted(current), head, known)
        raise SchemaError(
            f"the database at {where} is at schema revision {found}, not {head}: {advice}"
        )


def migrate_to_head(url: str) -> None:
    from alembic import command
    from alembic.script import ScriptDirectory

    cfg = alembic_config(url)
    script = ScriptDirectory.from_config(cfg)
    known = {rev.revision for rev in script.walk_revisions()}
    engine = create_sync_engine(url)
    try:
        with engine.begin() as conn:
            adopt_legacy_version(conn, script)
        with engine.connect() as conn:
            current = current_revisions(conn)
    finally:
        engine.dispose()
    unknown = current - known
    if unknown:
        raise SchemaError(
            f"the database at {make_url(url).render_as_string()} is at schema revision "
            f"{', '.join(sorted(unknown))}, which this version of the scheduler does not know "
            f"(known: {', '.join(sorted(known))}). It was probably written by a newer version; "
            "upgrade the scheduler or point DATABASE_URL at another database."
        )
    if current != {script.get_current_head()}:
        log.info("migrating database schema to %s", script.get_current_head())
        command.upgrade(cfg, "head")
