"""The README's generated parts and command list match the code."""

from __future__ import annotations

from pathlib import Path

from scheduler_service.cli.commands import COMMANDS
from scheduler_service.cli.reference import operations_table, readme_section
from scheduler_service.tasks.scheduler_tool import OPERATIONS

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_operations_table_is_generated_from_the_schema() -> None:
    text = README.read_text(encoding="utf-8")
    assert readme_section(text) == operations_table(), (
        "README.md's scheduler_tool table is stale: run "
        "`python -m scheduler_service.cli.reference README.md`"
    )
    for operation in OPERATIONS:  # preview_schedule included
        assert f"| `{operation}` |" in readme_section(text)


def test_readme_lists_every_cli_command() -> None:
    text = README.read_text(encoding="utf-8")
    for command in COMMANDS:
        assert command in text.split("## Operating it", 1)[1], command


def test_docs_exist_and_are_linked() -> None:
    text = README.read_text(encoding="utf-8")
    for doc in ("docs/operations.md", "docs/tools.md", "examples/assistant_app.py"):
        assert (README.parent / doc).is_file() and doc in text
