"""Pacing of model calls: when the next call may start, learned from the API's refusals.

A concurrency bound alone does not keep a burst under the API's request rate: a provider
that answers in 50 ms lets 20 slots send 400 requests a second. So the model gate also
spaces call starts, at a rate it learns:

* Nothing known yet (no refusal seen): *slow start*. Calls are spaced at ``floor`` starts
  a second (the gate's concurrency) or at twice the starts made in the last second,
  whichever is faster, so an unknown limit is found within a second or two, with one
  refused call instead of a slot-wide burst of them.
* On a 429/529: the gate closes for ``retry-after`` for every caller, and the rate drops
  to ``BACKOFF`` x the starts the API accepted in the last second (the refused start is
  not counted): what the API just showed it takes, a little under.
* Then the rate grows by ``GROWTH`` of itself per second while nothing is refused
  (additive increase), to follow a limit that rises again; after ``FORGET`` seconds
  without a refusal the learned rate is dropped and slow start finds the limit afresh
  (the next top-of-the-hour burst may meet another limit, or none).

The state is a plain value of floats (seconds on one clock) so that the in-process gate
keeps it in memory and the PostgreSQL gate keeps it in one row, under one row lock,
applying the same functions; nothing here does I/O or reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BACKOFF", "FORGET", "GROWTH", "MIN_RATE", "Pacing", "admit", "allowed_rate", "refuse"]

BACKOFF = 0.95
"""After a refusal, the rate is this fraction of the starts the API accepted in the last
second: close to the limit, so little time is lost, and under it, so the next refusal
waits for the growth to cross it again."""
GROWTH = 0.001
"""Additive increase: the rate grows by this fraction of itself per second without a
refusal (0.1 %/s: from ``BACKOFF`` back to the limit in about fifty seconds). Slow on
purpose: pacing within a few percent of the limit, a late wake-up of one caller already
puts one start too many in a window, and each refusal costs its ``retry-after``."""
FORGET = 60.0
"""Seconds without a refusal after which the learned rate is dropped (slow start again)."""
MIN_RATE = 0.2
"""Starts per second the rate never drops under, so a run still gets a turn."""
WINDOW = 1.0
"""Seconds over which starts are counted."""
RECENT = 128
"""Starts remembered (their instants) to count them: a rate up to this many a second is
measured over a whole window, and the row rewritten on every booking stays small."""


@dataclass
class Pacing:
    """The gate's shared state; instants are seconds on the clock of whoever keeps it."""

    closed_until: float = 0.0
    """No call starts before this instant (the last ``retry-after``)."""
    next_start: float = 0.0
    """The earliest instant the next call may start (the spacing of starts)."""
    rate: float | None = None
    """Learned starts per second; ``None`` until the API refuses a call."""
    rate_since: float = 0.0
    """When ``rate`` was set: it grows from there, and a refusal of a call started
    before it was already accounted for."""
    recent: list[float] = field(default_factory=list)
    """The instants of the last ``RECENT`` starts booked, in order (some may be ahead of
    now: a call waiting for its turn); a refused start is taken out."""


def rate_before(state: Pacing, instant: float) -> tuple[float, bool]:
    """Starts per second before ``instant`` (starts at or after it not counted), and
    whether that is the exact count over the ``WINDOW``. Past ``RECENT`` starts a
    second the remembered starts do not reach back a window: their span measures the
    rate at which calls were sent, not how many the API took in a window."""
    before = [start for start in state.recent if start < instant]
    inside = [start for start in before if start >= instant - WINDOW]
    if len(inside) < len(before) or len(state.recent) < RECENT or not before:
        return len(inside) / WINDOW, True  # every start of the window is remembered
    return len(before) / max(instant - before[0], 1e-3), False


def allowed_rate(state: Pacing, now: float, floor: float) -> float:
    """Starts per second allowed at ``now``: slow start, or the learned rate grown."""
    if state.rate is not None and now - state.rate_since > FORGET:
        state.rate = None
    if state.rate is None:
        return max(floor, 2.0 * rate_before(state, now)[0])
    grown = state.rate * (1.0 + GROWTH * max(0.0, now - state.rate_since))
    return max(MIN_RATE, grown)


def admit(state: Pacing, now: float, floor: float) -> float:
    """Book the next call's start: the instant (``>= now``) it may begin."""
    start = max(now, state.closed_until, state.next_start)
    state.recent = [*state.recent[-(RECENT - 1) :], start]
    state.next_start = start + 1.0 / allowed_rate(state, start, floor)
    return start


def refuse(state: Pacing, now: float, retry_after: float, started: float, floor: float) -> None:
    """The API refused a call that started at ``started``: close the gate for
    ``retry_after`` and, once per refusal episode, lower the rate to what it accepted."""
    state.closed_until = max(state.closed_until, now + retry_after)
    state.next_start = max(state.next_start, state.closed_until)
    # Calls booked to start while the gate is now closed will book again: not starts.
    state.recent = [start for start in state.recent if not now < start < state.closed_until]
    if started in state.recent:  # it was not accepted: not a start that counts
        state.recent.remove(started)
    if started < state.rate_since:
        return  # sent before the last decrease: that decrease already counted it
    current = allowed_rate(state, now, floor)
    accepted, exact = rate_before(state, started)
    # Under one accepted start a second there is no evidence of the limit (the gate was
    # idle or closed), and over RECENT a second it is not counted: halve what was allowed.
    estimate = accepted if exact and accepted >= 1.0 else current / 2.0
    state.rate = max(MIN_RATE, BACKOFF * min(current, estimate))
    state.rate_since = state.closed_until
