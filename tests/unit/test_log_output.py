"""The service's own stderr handler follows ``sys.stderr``.

A host (or pytest, between tests) replaces and closes ``sys.stderr``; a handler bound to
the stream of its creation would then write to a closed file ("--- Logging error ---" on
every line) or to a stream nobody reads.
"""

from __future__ import annotations

import io
import logging

import pytest

from scheduler_service.logs import StderrHandler, make_formatter


def test_the_handler_writes_to_the_current_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    handler = StderrHandler()
    handler.setFormatter(make_formatter("text"))
    logger = logging.getLogger("scheduler_service.tests.log_output")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning("one")
        first.close()  # the stream it was made with is gone
        monkeypatch.setattr("sys.stderr", second)
        logger.warning("two")
    finally:
        logger.removeHandler(handler)
    assert "one" not in second.getvalue() and "two" in second.getvalue()
