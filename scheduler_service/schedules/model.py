"""What a schedule is: the fields a caller gives (``ScheduleInput``), the validated
``Schedule`` stored with a task (and read back from older rows), and ``ScheduleError``,
the refusal that names the field. Every other schedules module speaks these types."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

ELAPSED_UNITS = {"seconds": 1, "minutes": 60, "hours": 3600}


class ScheduleError(ValueError):
    """A schedule field is wrong. ``field`` names it; the message says what is accepted."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class ScheduleInput:
    """The schedule fields of create_task / update_task, as the caller gave them."""

    frequency: str
    scheduled_time: str | None = None
    day_of_week: int | str | list[int | str] | None = None
    day_of_month: int | None = None
    custom_schedule: str | None = None
    timezone: str | None = None
    end_time: str | None = None
    max_runs: int | None = None
    except_dates: list[str] | None = None


@dataclass(frozen=True)
class Schedule:
    """A validated schedule. ``start_at`` is the first fire time (UTC).

    Kinds: ``once``; elapsed (``unit`` minutes/hours); wall-clock (``unit`` days/weeks/
    months with ``at``); a rule (``expression`` in ``syntax`` "cron" or "rrule").
    """

    frequency: str
    timezone: str
    start_at: datetime
    unit: str | None = None  # minutes | hours | days | weeks | months; None for once / rules
    interval: int = 1
    at: time | None = None
    weekdays: tuple[int, ...] = field(default_factory=tuple)
    day_of_month: int | None = None
    end_time: datetime | None = None
    max_runs: int | None = None
    expression: str | None = None  # cron: "30 8 * * 1-5"; rrule: "DTSTART:…\nRRULE:…"
    syntax: str | None = None  # "cron" | "rrule" when expression is set
    except_dates: tuple[date, ...] = field(default_factory=tuple)  # local dates without runs
    phrase: str | None = None  # the custom_schedule phrase a rule was compiled from
    spread: int = 0  # seconds each fire time is moved later (schedules.spread); 0: none
    # Things to tell the caller about the input (not stored): an ISO offset that is not
    # the zone's, a past start whose phase was kept.
    notes: tuple[str, ...] = field(default_factory=tuple, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON form stored with the task, from which its trigger is rebuilt."""
        return {
            "frequency": self.frequency,
            "timezone": self.timezone,
            "start_at": self.start_at.isoformat(),
            "unit": self.unit,
            "interval": self.interval,
            "at": self.at.isoformat() if self.at else None,
            "weekdays": list(self.weekdays),
            "day_of_month": self.day_of_month,
            "end_time": self.end_time.isoformat() if self.end_time else None,
            "max_runs": self.max_runs,
            "expression": self.expression,
            "syntax": self.syntax,
            "except_dates": [d.isoformat() for d in self.except_dates],
            "phrase": self.phrase,
            "spread": self.spread,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        """Read a dict from ``to_dict`` — also those written before a key existed."""
        return cls(
            frequency=data["frequency"],
            timezone=data["timezone"],
            start_at=datetime.fromisoformat(data["start_at"]),
            unit=data.get("unit"),
            interval=int(data.get("interval") or 1),
            at=time.fromisoformat(data["at"]) if data.get("at") else None,
            weekdays=tuple(data.get("weekdays") or ()),
            day_of_month=data.get("day_of_month"),
            end_time=datetime.fromisoformat(data["end_time"]) if data.get("end_time") else None,
            max_runs=data.get("max_runs"),
            expression=data.get("expression"),
            syntax=data.get("syntax"),
            except_dates=tuple(date.fromisoformat(d) for d in data.get("except_dates") or ()),
            phrase=data.get("phrase"),
            spread=int(data.get("spread") or 0),
        )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def elapsed(self) -> bool:
        return self.unit in ELAPSED_UNITS
