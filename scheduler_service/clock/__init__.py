"""Pure time arithmetic: zones and their offset changes, cron and RRULE expressions.

Nothing here knows APScheduler; ``scheduler_service.triggers`` wraps this math in the
trigger classes the job store keeps, and ``scheduler_service.schedules`` uses it to parse
and describe schedules.
"""
