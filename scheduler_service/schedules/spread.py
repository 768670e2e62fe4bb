"""Spread: a recurring task runs at a fixed offset after each of its schedule's times.

Ten thousand hourly tasks created "every hour at :00" would all call their tools (and the
model) in the same second. A task created with ``spread`` instead runs each time at an
offset derived from its id: stable (the same task always runs at the same offset), spread
evenly over the tasks, and bounded by ``SPREAD_FRACTION`` of the schedule's period and
``SPREAD_MAX_S``, so an hourly task runs at most 6 minutes late and a daily one at most
15 minutes.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import datetime

from scheduler_service.schedules.parse import Schedule, ScheduleError, build_trigger
from scheduler_service.statuses import Frequency

__all__ = ["SPREAD_FRACTION", "SPREAD_MAX_S", "spread_bound", "spread_offset", "with_spread"]

SPREAD_FRACTION = 0.1
"""The offset is at most this fraction of the schedule's period..."""
SPREAD_MAX_S = 900
"""...and at most this many seconds (15 minutes)."""


def spread_bound(period_s: float) -> int:
    """The largest offset, in whole seconds, for a schedule of this period."""
    return int(min(period_s * SPREAD_FRACTION, SPREAD_MAX_S))


def spread_offset(key: str, period_s: float) -> int:
    """The offset of the task with id ``key``: a hash of the id, within the bound."""
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return digest % (spread_bound(period_s) + 1)


def with_spread(schedule: Schedule, key: str, now: datetime) -> Schedule:
    """``schedule`` moved by the spread of task ``key``. Its period is the gap between its
    next two times (a monthly schedule: the month ahead). A one-time schedule, or one
    with fewer than two times left, cannot be spread: ``ScheduleError``."""
    plain = dataclasses.replace(schedule, spread=0)
    if schedule.frequency == Frequency.ONCE:
        raise ScheduleError(
            "spread",
            "only a recurring task can be spread; a once task runs at its time "
            "(leave spread out, or false)",
        )
    trigger = build_trigger(plain)
    first = trigger.get_next_fire_time(None, max(now, schedule.start_at))
    second = trigger.get_next_fire_time(first, first) if first is not None else None
    if first is None or second is None:
        raise ScheduleError(
            "spread",
            "the schedule has fewer than two runs left, so there is nothing to spread "
            "(leave spread out, or false)",
        )
    return dataclasses.replace(plain, spread=spread_offset(key, (second - first).total_seconds()))
