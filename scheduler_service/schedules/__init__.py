"""Schedules: what users ask for, as triggers (``parse``), as words (``describe``) and as
previews (``previews``: next runs and warnings).

Other packages import from here. ``parse`` is the entry point of parsing (and re-exports
the names of the modules it hands each kind of schedule to: ``frequencies``, ``rules``,
``phrase_schedules``, with ``model``, ``fields`` and ``fires`` below them); ``phrases``
is the phrase grammar's entry point: it takes the clauses out (``spelling``, ``clauses``,
``time_clauses``), reads the rest with the table in ``grammar`` (builders in
``repeating_forms`` and ``one_time_forms``, given a ``form_context``) and attaches the
limits (``phrase_limits``); results are ``phrase_model``. The vocabulary under them all:
``words``, ``dates``, ``days`` (RRULE lines), ``quartz``.
"""

from scheduler_service.schedules.describe import describe
from scheduler_service.schedules.parse import (
    CUSTOM_EXAMPLES,
    Schedule,
    ScheduleError,
    ScheduleInput,
    bounded_cost,
    build_trigger,
    fields_ignored_by,
    next_runs,
    parse_schedule,
)
from scheduler_service.schedules.previews import (
    first_run_in_past_warning,
    now_in_zone,
    past_once_warning,
    preview,
    preview_input,
    schedule_warnings,
)

__all__ = [
    "CUSTOM_EXAMPLES",
    "Schedule",
    "ScheduleError",
    "ScheduleInput",
    "bounded_cost",
    "build_trigger",
    "describe",
    "fields_ignored_by",
    "first_run_in_past_warning",
    "next_runs",
    "now_in_zone",
    "parse_schedule",
    "past_once_warning",
    "preview",
    "preview_input",
    "schedule_warnings",
]
