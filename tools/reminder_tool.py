"""``tools.reminder_tool`` in a checkout: the code lives in ``scheduler_service.tools.reminder_tool``."""

from scheduler_service.tools.reminder_tool import (
    AddReminder,
    GetReminders,
    ReminderRef,
    ReminderTool,
    reminder_to_dict,
    resolve_date,
)

__all__ = [
    "AddReminder",
    "GetReminders",
    "ReminderRef",
    "ReminderTool",
    "reminder_to_dict",
    "resolve_date",
]
