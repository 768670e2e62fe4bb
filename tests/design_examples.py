"""Example create_task kwargs (the "Daily Inventory Check" and its companions), exactly as
an LLM following the tool's description would write them; shared by the tests that prove
they work."""

from __future__ import annotations

from typing import Any

INVENTORY: dict[str, Any] = {
    "name": "Daily Inventory Check",
    "frequency": "daily",
    "scheduled_time": "09:00:00",
    "execution_mode": "direct",
    "tool_name": "reminder_tool",
    "operation": "add_reminder",
    "parameters": {
        "title": "Check inventory levels",
        "date": "today",
        "description": "Review stock levels for popular items",
    },
}
SALES: dict[str, Any] = {
    "name": "Weekly Sales Analysis",
    "frequency": "weekly",
    "day_of_week": 0,
    "scheduled_time": "08:00:00",
    "execution_mode": "orchestrated",
    "task_description": "Generate a sales report for the past week, analyze top-selling "
    "products, and email a summary to the sales team.",
}
