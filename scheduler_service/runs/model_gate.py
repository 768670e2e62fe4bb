"""The model gate: how many orchestrated runs may be in a model call at once, and when.

Every model call of an orchestrated run goes through the gate (``async with
gate.call() as ticket``). The gate bounds the calls in flight to its concurrency, spaces
their starts at the rate the API is learned to accept (``runs.pacing``), and when the API
refuses a call (429/529), ``gate.close_for(retry_after, sent=ticket)`` closes it for
*every* caller for that long, instead of each run retrying on its own and spending the
account's rejections.

Two gates, one behaviour:

* ``LocalGate`` (SQLite: runs execute in the one leading process): a semaphore and the
  pacing state in memory.
* ``SharedGate`` (PostgreSQL: every replica executes runs): the calls in flight are rows
  of ``task_scheduler_model_leases`` and the pacing state is the one row of
  ``task_scheduler_model_gate``, both changed in one transaction under that row's lock,
  with instants on the database's clock. A holder renews its leases every third of
  their length (``LEASE_S``); a process killed mid-call stops renewing, and its slots
  free themselves when its leases expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from typing import Protocol

from sqlalchemy import Connection, delete, func, insert, select, text, update

from scheduler_service.runs.pacing import Pacing, admit, refuse
from scheduler_service.storage.db import Database
from scheduler_service.storage.models import ModelGateRow, ModelLease

__all__ = ["LEASE_S", "LocalGate", "ModelGate", "SharedGate", "Ticket", "model_gate_for"]

log = logging.getLogger(__name__)

LEASE_S = 30.0
"""A lease not renewed for this long is a slot whose holder died."""
SLOT_POLL_S = 0.2
"""How often a caller waiting for a slot held by another process looks again."""
GATE_ROW = 1


@dataclass(frozen=True)
class Ticket:
    """A call let through the gate: when it started, on the gate's clock (a refusal of
    a call started before the gate's last slow-down does not slow it down again)."""

    started: float


class ModelGate(Protocol):
    """What the orchestration loop needs from a gate."""

    concurrency: int

    def call(self) -> contextlib.AbstractAsyncContextManager[Ticket]:
        """Wait for a slot and for the call's turn; hold the slot inside the block."""
        ...

    async def close_for(self, seconds: float, *, sent: Ticket) -> None:
        """The API refused the call of ``sent``: no call starts for ``seconds``."""
        ...

    async def aclose(self) -> None:
        """Stop background work (the service is stopping)."""
        ...


class LocalGate:
    """The gate of one process: a semaphore and the pacing state in memory."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.state = Pacing()
        self._slots = asyncio.Semaphore(concurrency)
        self.in_flight = 0

    @contextlib.asynccontextmanager
    async def call(self) -> AsyncIterator[Ticket]:
        async with self._slots:
            while True:
                now = time.monotonic()
                start = admit(self.state, now, self.concurrency)
                await asyncio.sleep(max(0.0, start - now))
                if self.state.closed_until <= start:
                    break  # not closed since the booking: go
            self.in_flight += 1
            try:
                yield Ticket(start)
            finally:
                self.in_flight -= 1

    async def close_for(self, seconds: float, *, sent: Ticket) -> None:
        refuse(self.state, time.monotonic(), seconds, sent.started, self.concurrency)

    async def aclose(self) -> None:
        return None


class SharedGate:
    """The gate of every process on one PostgreSQL database (see the module doc)."""

    def __init__(self, db: Database, concurrency: int, *, lease: float = LEASE_S) -> None:
        self.db = db
        self.concurrency = concurrency
        self.lease = lease
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._local = asyncio.Semaphore(concurrency)  # never more waiters than slots here
        self._held: set[str] = set()
        self._renewing: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def call(self) -> AsyncIterator[Ticket]:
        async with self._local:
            lease = f"lease_{uuid.uuid4().hex[:16]}"
            try:  # from the insert on: cancelled (a run's timeout) or not, it is released
                start, now = await self._take_slot(lease)
                while True:
                    await asyncio.sleep(max(0.0, start - now))
                    closed_until, now = await self.db.write_sync(_closed_until)
                    if closed_until <= start:
                        break
                    start, now = await self.db.write_sync(lambda c: _rebook(c, self.concurrency))
                yield Ticket(start)
            finally:
                await self._release(lease)

    async def close_for(self, seconds: float, *, sent: Ticket) -> None:
        def work(connection: Connection) -> None:
            now = _db_now(connection)
            state = _lock_state(connection)
            refuse(state, now, seconds, sent.started, self.concurrency)
            _save_state(connection, state)

        await self.db.write_sync(work)

    async def aclose(self) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewing
            self._renewing = None

    async def _take_slot(self, lease: str) -> tuple[float, float]:
        """Insert our lease once fewer than ``concurrency`` are in flight; book a start."""
        while True:
            booked = await self.db.write_sync(
                lambda c: _book(c, self.concurrency, lease, self.holder, self.lease)
            )
            if booked is not None:
                self._held.add(lease)
                self._keep_renewing()
                return booked
            await asyncio.sleep(SLOT_POLL_S)  # another process holds the slots

    async def _release(self, lease: str) -> None:
        self._held.discard(lease)
        try:
            await self.db.write_sync(
                lambda c: c.execute(delete(ModelLease).where(ModelLease.id == lease))
            )
        except Exception:  # the slot frees itself when the lease expires
            log.warning("model gate: could not release lease %s", lease, exc_info=True)

    def _keep_renewing(self) -> None:
        if self._renewing is None or self._renewing.done():
            self._renewing = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        """Push this process's leases' expiry forward while it holds any."""
        while self._held:
            await asyncio.sleep(self.lease / 3)
            held = list(self._held)

            def work(connection: Connection, held: list[str] = held) -> None:
                connection.execute(
                    update(ModelLease)
                    .where(ModelLease.id.in_(held))
                    .values(expires_at=_db_now(connection) + self.lease)
                )

            try:
                await self.db.write_sync(work)
            except Exception:
                log.warning("model gate: could not renew leases", exc_info=True)


def model_gate_for(db: Database, concurrency: int | None) -> ModelGate | None:
    """The gate for ``db`` (shared on PostgreSQL), or ``None`` when not configured."""
    if concurrency is None:
        return None
    return LocalGate(concurrency) if db.sqlite else SharedGate(db, concurrency)


# -- the shared gate's statements (PostgreSQL) -------------------------------------------


def _db_now(connection: Connection) -> float:
    """The database's clock, in seconds since the epoch: one clock for every host."""
    return float(connection.execute(text("SELECT extract(epoch FROM clock_timestamp())")).one()[0])


def _lock_state(connection: Connection) -> Pacing:
    """The gate row, locked until the transaction ends (created if missing)."""
    row = connection.execute(
        select(ModelGateRow).where(ModelGateRow.id == GATE_ROW).with_for_update()
    ).first()
    if row is None:
        connection.execute(
            text(
                "INSERT INTO task_scheduler_model_gate (id, closed_until, next_start, rate, "
                "rate_since, recent) VALUES (1, 0, 0, NULL, 0, '[]') ON CONFLICT (id) DO NOTHING"
            )
        )
        return _lock_state(connection)
    values = row._mapping
    return Pacing(
        closed_until=values["closed_until"],
        next_start=values["next_start"],
        rate=values["rate"],
        rate_since=values["rate_since"],
        recent=[float(start) for start in values["recent"] or []],
    )


def _save_state(connection: Connection, state: Pacing) -> None:
    connection.execute(
        update(ModelGateRow).where(ModelGateRow.id == GATE_ROW).values(**asdict(state))
    )


def _book(
    connection: Connection, concurrency: int, lease: str, holder: str, lease_s: float
) -> tuple[float, float] | None:
    """Take a slot (insert ``lease``) and book the call's start: ``(start, now)``, or
    ``None`` when every slot is held. One transaction, under the gate row's lock, so no
    other booking's count and insert interleave with this one's."""
    now = _db_now(connection)
    state = _lock_state(connection)
    connection.execute(delete(ModelLease).where(ModelLease.expires_at < now))
    in_flight = connection.execute(select(func.count()).select_from(ModelLease)).scalar_one()
    if in_flight >= concurrency:
        return None
    connection.execute(insert(ModelLease).values(id=lease, holder=holder, expires_at=now + lease_s))
    start = admit(state, now, concurrency)
    _save_state(connection, state)
    return start, now


def _rebook(connection: Connection, concurrency: int) -> tuple[float, float]:
    """Book a new start for a call that holds its slot (the gate closed meanwhile)."""
    now = _db_now(connection)
    state = _lock_state(connection)
    start = admit(state, now, concurrency)
    _save_state(connection, state)
    return start, now


def _closed_until(connection: Connection) -> tuple[float, float]:
    """The instant the gate reopens, and the database's clock now."""
    row = connection.execute(
        select(ModelGateRow.closed_until).where(ModelGateRow.id == GATE_ROW)
    ).first()
    return (float(row[0]) if row is not None else 0.0), _db_now(connection)
